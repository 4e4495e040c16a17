//! `uses: tofu`: `init`, `plan -out`, the summary read from `show -json`, and — on a push to
//! the default branch, a dispatch with `mode: apply` or `/pipewright apply` — `apply` of that saved plan only.
//! A plan that would destroy fails before apply unless `allow_destroy`.

use pipewright_pipelines::EventKind;
use serde_json::Value;

use crate::{ActionContext, ActionError, Inputs, bad, in_workspace, relative_path};

/// OpenTofu version of the default image when `with` names neither `version` nor `image`.
pub const DEFAULT_VERSION: &str = "1.8.2";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tofu {
    pub image: String,
    /// Working directory in the container (`/workspace/iac`).
    pub workdir: String,
    /// The module path as written, for messages (`iac`).
    pub path: String,
    pub var_files: Vec<String>,
    pub backend_config: Vec<String>,
    /// Whether this run applies (after a plan that passes the checks).
    pub apply: bool,
    pub allow_destroy: bool,
    pub fail_on_changes: bool,
    /// The saved plan, relative to `workdir`.
    pub plan_file: String,
    /// The plan file is in place already (the reviewed plan of a pull request): no `plan`.
    pub saved_plan: bool,
    /// The plan that reviewers saw: this run applies only a plan with the same changes
    /// (set by the runner, not by `with:`).
    pub reviewed: Option<Reviewed>,
}

/// The plan a pull request's reviewers saw in its plan comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub pr: i64,
    pub changes: Vec<ResourceChange>,
}

impl Tofu {
    pub(crate) fn prepare(with: &Inputs, cx: &ActionContext) -> Result<Tofu, ActionError> {
        let path = relative_path("path", &with.string("path")?.unwrap_or_else(|| ".".into()))?;
        let image = match (with.string("image")?, with.string("version")?) {
            (Some(_), Some(_)) => return Err(bad("image", "give `image` or `version`, not both")),
            (Some(image), None) => image,
            (None, version) => format!(
                "ghcr.io/opentofu/opentofu:{}",
                version.as_deref().unwrap_or(DEFAULT_VERSION)
            ),
        };
        let command = with.string("command")?.unwrap_or_else(|| "auto".into());
        // A pull request never applies, whatever `command` says: review happens before merge.
        let apply = match command.as_str() {
            _ if cx.event == EventKind::PullRequest => false,
            // A comment command plans or applies as it says (`/pipewright apply` sets
            // `mode: apply` once the apply requirements hold), whatever `command` says,
            // except that `command: plan` never applies.
            "plan" => false,
            _ if cx.event == EventKind::Comment => cx.input("mode") == Some("apply"),
            "auto" => {
                cx.is_default_branch_push()
                    || (cx.event == EventKind::Dispatch && cx.input("mode") == Some("apply"))
            }
            "apply" => true,
            other => {
                return Err(bad(
                    "command",
                    format!("expected auto, plan or apply, found `{other}`"),
                ));
            }
        };
        let backend_config = match with.get("backend_config") {
            Some(pipewright_pipelines::Resolved::Map(_)) => with
                .map("backend_config")?
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            _ => with.list("backend_config")?,
        };
        let var_files = with.list("var_files")?;
        for f in &var_files {
            relative_path("var_files", f)?;
        }
        Ok(Tofu {
            image,
            workdir: in_workspace(&path),
            path,
            var_files,
            backend_config,
            apply,
            allow_destroy: with.bool("allow_destroy")?.unwrap_or(false),
            fail_on_changes: with.bool("fail_on_changes")?.unwrap_or(false),
            plan_file: format!(".pipewright-{}.tfplan", cx.step),
            saved_plan: false,
            reviewed: None,
        })
    }

    pub fn init(&self) -> Vec<String> {
        let mut args = vec![
            "tofu".into(),
            "init".into(),
            "-input=false".into(),
            "-no-color".into(),
        ];
        args.extend(
            self.backend_config
                .iter()
                .map(|c| format!("-backend-config={c}")),
        );
        args
    }

    pub fn plan(&self) -> Vec<String> {
        let mut args = vec![
            "tofu".into(),
            "plan".into(),
            "-input=false".into(),
            "-no-color".into(),
            format!("-out={}", self.plan_file),
        ];
        args.extend(self.var_files.iter().map(|f| format!("-var-file={f}")));
        args
    }

    /// `show -json` of the saved plan: its standard output is the JSON, not a log.
    pub fn show(&self) -> Vec<String> {
        vec![
            "tofu".into(),
            "show".into(),
            "-json".into(),
            self.plan_file.clone(),
        ]
    }

    pub fn apply(&self) -> Vec<String> {
        vec![
            "tofu".into(),
            "apply".into(),
            "-input=false".into(),
            "-no-color".into(),
            self.plan_file.clone(),
        ]
    }

    /// What to do once the plan is read.
    pub fn decide(&self, plan: &PlanSummary) -> Decision {
        if self.fail_on_changes && plan.has_changes() {
            return Decision::Fail(format!("{} (drift: fail_on_changes)", plan.describe()));
        }
        if !self.apply {
            return Decision::Done(plan.describe());
        }
        if let Some(reviewed) = &self.reviewed
            && plan.has_changes()
            && !plan.differences(&reviewed.changes).is_empty()
        {
            return Decision::Fail(format!(
                "plan differs from the plan reviewed in #{}",
                reviewed.pr
            ));
        }
        let destroyed = plan.destroyed();
        if !self.allow_destroy && !destroyed.is_empty() {
            return Decision::Fail(format!(
                "plan destroys {} without allow_destroy: {}",
                destroyed.len(),
                destroyed.join(", ")
            ));
        }
        if !plan.has_changes() {
            return Decision::Done(format!("{}; nothing to apply", plan.describe()));
        }
        Decision::Apply
    }
}

/// The next step after reading the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Stop here, successfully; the description for the status.
    Done(String),
    /// Apply the saved plan.
    Apply,
    /// Fail the step before applying; why.
    Fail(String),
}

/// A change to one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceChange {
    pub address: String,
    /// `create`, `update`, `delete`, `replace`.
    pub action: &'static str,
}

impl ResourceChange {
    /// A change with one of the four actions (as stored), or `None`.
    pub fn new(address: &str, action: &str) -> Option<ResourceChange> {
        let action = ["create", "update", "delete", "replace"]
            .into_iter()
            .find(|a| *a == action)?;
        Some(ResourceChange {
            address: address.to_string(),
            action,
        })
    }
}

/// What a plan would do, counted like OpenTofu's own "Plan: N to add…" line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub changes: Vec<ResourceChange>,
}

impl PlanSummary {
    /// Reads `tofu show -json` output (`resource_changes[].change.actions`).
    pub fn from_show_json(json: &[u8]) -> Result<PlanSummary, String> {
        let plan: Value = serde_json::from_slice(json)
            .map_err(|e| format!("`tofu show -json` printed no plan JSON: {e}"))?;
        let mut summary = PlanSummary::default();
        for rc in plan["resource_changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let address = rc["address"].as_str().unwrap_or("?").to_string();
            let actions: Vec<&str> = rc["change"]["actions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let action = match actions.as_slice() {
                ["create"] => {
                    summary.add += 1;
                    "create"
                }
                ["update"] => {
                    summary.change += 1;
                    "update"
                }
                ["delete"] => {
                    summary.destroy += 1;
                    "delete"
                }
                ["delete", "create"] | ["create", "delete"] => {
                    summary.add += 1;
                    summary.destroy += 1;
                    "replace"
                }
                _ => continue, // no-op, read
            };
            summary.changes.push(ResourceChange { address, action });
        }
        Ok(summary)
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Addresses the plan destroys (replacements included).
    pub fn destroyed(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| matches!(c.action, "delete" | "replace"))
            .map(|c| c.address.clone())
            .collect()
    }

    /// `plan: 2 to add, 1 to change, 0 to destroy`.
    pub fn describe(&self) -> String {
        format!(
            "plan: {} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )
    }

    /// How this plan's resource changes differ from `reviewed`'s, one line per address
    /// (empty: the same addresses with the same actions).
    pub fn differences(&self, reviewed: &[ResourceChange]) -> Vec<String> {
        let find = |list: &[ResourceChange], address: &str| {
            list.iter().find(|c| c.address == address).map(|c| c.action)
        };
        let mut lines = Vec::new();
        for c in &self.changes {
            match find(reviewed, &c.address) {
                Some(action) if action == c.action => {}
                Some(action) => lines.push(format!(
                    "- `{}`: {} now, {action} in the reviewed plan",
                    c.address, c.action
                )),
                None => lines.push(format!(
                    "- `{}`: {} now, not in the reviewed plan",
                    c.address, c.action
                )),
            }
        }
        for c in reviewed {
            if find(&self.changes, &c.address).is_none() {
                lines.push(format!(
                    "- `{}`: {} in the reviewed plan, not planned now",
                    c.address, c.action
                ));
            }
        }
        lines
    }

    /// The comment of a plan that differs from the reviewed one: what differs, and why
    /// nothing was applied.
    pub fn differences_comment(
        &self,
        marker: &str,
        title: &str,
        reviewed: &Reviewed,
        run_url: &str,
    ) -> String {
        const LISTED: usize = 50;
        let lines = self.differences(&reviewed.changes);
        let mut body = format!(
            "{marker}\n### {title}: not applied, the plan differs from the plan reviewed in #{}\n\n",
            reviewed.pr
        );
        for line in lines.iter().take(LISTED) {
            body.push_str(line);
            body.push('\n');
        }
        if lines.len() > LISTED {
            body.push_str(&format!(
                "- … and {} more: see the run\n",
                lines.len() - LISTED
            ));
        }
        body.push_str(&format!(
            "\nPlan again and review the new plan before it is applied. [Full plan and logs]({run_url})\n"
        ));
        body
    }

    /// The pull-request comment: the summary and the addresses that change, folded and cut
    /// when long, with a pointer to the run. `marker` lets the next push find and edit it.
    pub fn comment(&self, marker: &str, title: &str, run_url: &str) -> String {
        const LISTED: usize = 50;
        let mut body = format!("{marker}\n### {title}: {}\n\n", self.describe());
        if self.changes.is_empty() {
            body.push_str("No changes.\n");
        } else {
            body.push_str("<details><summary>Resources that change</summary>\n\n");
            for c in self.changes.iter().take(LISTED) {
                body.push_str(&format!("- `{}` {}\n", c.address, c.action));
            }
            if self.changes.len() > LISTED {
                body.push_str(&format!(
                    "- … and {} more: see the run\n",
                    self.changes.len() - LISTED
                ));
            }
            body.push_str("\n</details>\n");
        }
        body.push_str(&format!("\n[Full plan and logs]({run_url})\n"));
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, prepare};
    use pipewright_pipelines::{GitRef, Resolved};

    fn tofu(
        event: EventKind,
        branch: &str,
        with: &[(&str, &str)],
        inputs: &[(String, String)],
    ) -> Tofu {
        let with: Vec<(String, Resolved)> = with
            .iter()
            .map(|(k, v)| (k.to_string(), Resolved::Str(v.to_string())))
            .collect();
        let git_ref = GitRef::Branch(branch.into());
        let cx = ActionContext {
            event,
            git_ref: &git_ref,
            default_branch: "main",
            inputs,
            step: "tofu",
        };
        match prepare("tofu", &with, &cx).unwrap() {
            Action::Tofu(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn when_it_applies() {
        assert!(tofu(EventKind::Push, "main", &[], &[]).apply);
        assert!(!tofu(EventKind::Push, "feature", &[], &[]).apply);
        assert!(!tofu(EventKind::PullRequest, "main", &[], &[]).apply);
        assert!(
            !tofu(EventKind::PullRequest, "main", &[("command", "apply")], &[]).apply,
            "never on pull requests"
        );
        assert!(
            !tofu(
                EventKind::Dispatch,
                "main",
                &[],
                &[("mode".into(), "plan".into())]
            )
            .apply
        );
        assert!(
            tofu(
                EventKind::Dispatch,
                "main",
                &[],
                &[("mode".into(), "apply".into())]
            )
            .apply
        );
        assert!(!tofu(EventKind::Push, "main", &[("command", "plan")], &[]).apply);
        assert!(!tofu(EventKind::Schedule, "main", &[], &[]).apply);
        let mode = |m: &str| vec![("mode".to_string(), m.to_string())];
        assert!(tofu(EventKind::Comment, "main", &[], &mode("apply")).apply);
        assert!(!tofu(EventKind::Comment, "main", &[], &mode("plan")).apply);
        assert!(
            !tofu(
                EventKind::Comment,
                "main",
                &[("command", "apply")],
                &mode("plan")
            )
            .apply,
            "a comment's `/pipewright plan` never applies"
        );
        assert!(
            !tofu(
                EventKind::Comment,
                "main",
                &[("command", "plan")],
                &mode("apply")
            )
            .apply
        );
    }

    #[test]
    fn commands() {
        let t = tofu(
            EventKind::Push,
            "main",
            &[
                ("path", "iac/"),
                ("version", "1.8.2"),
                ("var_files", "prod.tfvars"),
            ],
            &[],
        );
        assert_eq!(t.image, "ghcr.io/opentofu/opentofu:1.8.2");
        assert_eq!(t.workdir, "/workspace/iac");
        assert_eq!(
            t.plan().join(" "),
            "tofu plan -input=false -no-color -out=.pipewright-tofu.tfplan -var-file=prod.tfvars"
        );
        assert_eq!(
            t.show().join(" "),
            "tofu show -json .pipewright-tofu.tfplan"
        );
        let git_ref = GitRef::Branch("main".into());
        let cx = ActionContext {
            event: EventKind::Push,
            git_ref: &git_ref,
            default_branch: "main",
            inputs: &[],
            step: "s",
        };
        let err = prepare(
            "tofu",
            &[("path".into(), Resolved::Str("../etc".into()))],
            &cx,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`with.path`: `../etc` must be a path inside the repository"
        );
    }

    fn empty_plan() -> PlanSummary {
        PlanSummary::from_show_json(br#"{"resource_changes": []}"#).unwrap()
    }

    fn change(address: &str, actions: &[&str]) -> Value {
        serde_json::json!({ "address": address, "change": { "actions": actions } })
    }

    #[test]
    fn plan_summaries_and_decisions() {
        let json = serde_json::json!({ "resource_changes": [
            change("terraform_data.a", &["create"]),
            change("terraform_data.b", &["update"]),
            change("terraform_data.c", &["delete", "create"]),
            change("terraform_data.d", &["no-op"]),
            change("data.x.y", &["read"]),
        ]});
        let summary = PlanSummary::from_show_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(
            summary.describe(),
            "plan: 2 to add, 1 to change, 1 to destroy"
        );
        assert_eq!(summary.destroyed(), ["terraform_data.c"]);
        let apply = tofu(EventKind::Push, "main", &[], &[]);
        assert_eq!(
            apply.decide(&summary),
            Decision::Fail("plan destroys 1 without allow_destroy: terraform_data.c".into())
        );
        let allowed = tofu(EventKind::Push, "main", &[("allow_destroy", "true")], &[]);
        assert_eq!(allowed.decide(&summary), Decision::Apply);
        let plan_only = tofu(EventKind::PullRequest, "main", &[], &[]);
        assert_eq!(
            plan_only.decide(&summary),
            Decision::Done("plan: 2 to add, 1 to change, 1 to destroy".into())
        );
        let drift = tofu(
            EventKind::Schedule,
            "main",
            &[("command", "plan"), ("fail_on_changes", "true")],
            &[],
        );
        assert!(matches!(drift.decide(&summary), Decision::Fail(why) if why.contains("drift")));
        let empty = PlanSummary::from_show_json(br#"{"resource_changes": []}"#).unwrap();
        assert_eq!(
            drift.decide(&empty),
            Decision::Done("plan: 0 to add, 0 to change, 0 to destroy".into())
        );
        assert!(PlanSummary::from_show_json(b"Error: no plan").is_err());
        let mut reviewed = tofu(EventKind::Push, "main", &[("allow_destroy", "true")], &[]);
        reviewed.reviewed = Some(Reviewed {
            pr: 4,
            changes: summary.changes.clone(),
        });
        assert_eq!(
            reviewed.decide(&summary),
            Decision::Apply,
            "the reviewed changes"
        );
        assert_eq!(
            reviewed.decide(&empty_plan()),
            Decision::Done("plan: 0 to add, 0 to change, 0 to destroy; nothing to apply".into()),
            "nothing left"
        );
        let mut other = summary.clone();
        other.changes[1].action = "delete";
        other.changes.remove(0);
        other.changes.push(ResourceChange {
            address: "terraform_data.e".into(),
            action: "create",
        });
        assert_eq!(
            reviewed.decide(&other),
            Decision::Fail("plan differs from the plan reviewed in #4".into())
        );
        assert_eq!(
            other.differences(&summary.changes),
            [
                "- `terraform_data.b`: delete now, update in the reviewed plan",
                "- `terraform_data.e`: create now, not in the reviewed plan",
                "- `terraform_data.a`: create in the reviewed plan, not planned now",
            ]
        );
        expect_test::expect![[r#"
            <!-- pipewright:plan iac -->
            ### pipewright/iac: plan: 2 to add, 1 to change, 1 to destroy

            <details><summary>Resources that change</summary>

            - `terraform_data.a` create
            - `terraform_data.b` update
            - `terraform_data.c` replace

            </details>

            [Full plan and logs](https://ci/runs/3)
        "#]]
        .assert_eq(&summary.comment(
            "<!-- pipewright:plan iac -->",
            "pipewright/iac",
            "https://ci/runs/3",
        ));
    }
}

//! From a pipeline and an event to a plan: the steps to run, with every template rendered
//! and every environment variable decided. The runner executes plans, never YAML.

use std::time::Duration;

use crate::{
    model::{EventKind, InputKind, Pipeline, RunsAfter, Shell, StepKind, Volume, WithValue},
    parse::check_input_value,
    select::{GitRef, step_applies},
    template::{Template, Var},
};

/// Facts about the run that plans may use.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// `owner/name`.
    pub repo: String,
    pub sha: String,
    /// The pushed ref; for a pull request its base branch.
    pub git_ref: GitRef,
    pub event: EventKind,
    /// Pull request number.
    pub pr: Option<u64>,
    pub run_id: String,
    /// Dispatch inputs, already checked by [`resolve_inputs`].
    pub inputs: Vec<(String, String)>,
    /// Who caused the run, as the run records it (`${{ actor }}`): the event's sender
    /// login, `api` for a dispatch through the API, `schedule` for a schedule.
    pub actor: String,
}

/// A step ready to run.
#[derive(Clone, Debug)]
pub struct PlannedStep {
    /// Index in the pipeline, from 0 (the log API's `n`).
    pub index: usize,
    pub name: String,
    /// False when the step's `when` excludes this event: it is reported as skipped.
    pub applies: bool,
    pub action: PlannedAction,
    /// The step's environment: Pipewright's variables, then the pipeline's, then the step's.
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub continue_on_error: bool,
    /// `when.status`: whether it runs while the run succeeds, after a failure, or both.
    pub runs_after: RunsAfter,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedAction {
    Run {
        image: String,
        script: String,
        shell: Shell,
    },
    Uses {
        action: String,
        with: Vec<(String, Resolved)>,
    },
}

/// A rendered action input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Str(String),
    List(Vec<Resolved>),
    Map(Vec<(String, Resolved)>),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub pipeline: String,
    pub concurrency_group: String,
    pub cancel_in_progress: bool,
    pub timeout: Duration,
    pub steps: Vec<PlannedStep>,
}

/// Checks a dispatch's inputs against the pipeline's declaration and fills in defaults.
/// Every problem is reported, each naming the input.
pub fn resolve_inputs(
    pipeline: &Pipeline,
    given: &[(String, String)],
) -> Result<Vec<(String, String)>, Vec<String>> {
    let Some(dispatch) = &pipeline.on.dispatch else {
        return Err(vec![format!(
            "pipeline `{}` has no `on.dispatch`: it cannot be dispatched",
            pipeline.name
        )]);
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (name, _) in given {
        let declared = dispatch.inputs.iter().any(|i| &i.name == name)
            || (dispatch.confirm && name == "confirm");
        if !declared {
            errors.push(format!("unknown input `{name}`"));
        }
    }
    for input in &dispatch.inputs {
        match given.iter().rev().find(|(n, _)| n == &input.name) {
            Some((_, value)) => match check_input_value(&input.kind, value) {
                Ok(()) => out.push((input.name.clone(), value.clone())),
                Err(why) => errors.push(format!("input `{}`: {why}", input.name)),
            },
            None => match &input.default {
                Some(d) => out.push((input.name.clone(), d.clone())),
                None if input.required => {
                    errors.push(format!("missing required input `{}`", input.name))
                }
                None if input.kind == InputKind::Boolean => {
                    out.push((input.name.clone(), "false".into()))
                }
                None => out.push((input.name.clone(), String::new())),
            },
        }
    }
    if dispatch.confirm {
        match given.iter().rev().find(|(n, _)| n == "confirm") {
            Some((_, v)) if v == &pipeline.name => out.push(("confirm".into(), v.clone())),
            Some((_, v)) => errors.push(format!(
                "input `confirm` must be `{}` to run this pipeline, found `{v}`",
                pipeline.name
            )),
            None => errors.push(format!(
                "missing input `confirm`: this pipeline runs only with confirm={}",
                pipeline.name
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Input values outside dispatches: the declared defaults.
pub fn default_inputs(pipeline: &Pipeline) -> Vec<(String, String)> {
    let inputs = pipeline
        .on
        .dispatch
        .as_ref()
        .map(|d| d.inputs.as_slice())
        .unwrap_or_default();
    inputs
        .iter()
        .map(|i| (i.name.clone(), i.default.clone().unwrap_or_default()))
        .collect()
}

/// Environment variable carrying a dispatch input.
pub fn input_env_name(name: &str) -> String {
    format!(
        "PIPEWRIGHT_INPUT_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

impl RunContext {
    fn lookup(&self, var: &Var) -> String {
        match var {
            Var::Sha => self.sha.clone(),
            Var::ShortSha => self.sha.chars().take(8).collect(),
            Var::RefName => self.git_ref.name().to_string(),
            Var::Repo => self.repo.clone(),
            Var::RepoOwner => self.repo.split_once('/').map_or("", |(o, _)| o).to_string(),
            Var::RepoName => self
                .repo
                .split_once('/')
                .map_or(self.repo.as_str(), |(_, n)| n)
                .to_string(),
            Var::Actor => self.actor.clone(),
            Var::Input(name) => self
                .inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        }
    }

    /// The ref the run is about: the pushed ref, or `refs/pull/N/head` for a pull request
    /// and a comment command on one (whose `git_ref` is its base branch).
    pub fn event_ref(&self) -> String {
        match (self.event, self.pr) {
            (EventKind::PullRequest | EventKind::Comment, Some(n)) => format!("refs/pull/{n}/head"),
            _ => self.git_ref.full(),
        }
    }

    fn render(&self, t: &Template) -> String {
        t.render(|v| self.lookup(v))
    }

    /// The variables every step of the run gets, before the pipeline's own.
    pub fn base_env(&self, pipeline: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("CI".to_string(), "true".to_string()),
            ("PIPEWRIGHT_REPO".into(), self.repo.clone()),
            ("PIPEWRIGHT_SHA".into(), self.sha.clone()),
            ("PIPEWRIGHT_REF".into(), self.event_ref()),
            (
                "PIPEWRIGHT_BRANCH".into(),
                self.git_ref.branch().unwrap_or_default().to_string(),
            ),
            ("PIPEWRIGHT_EVENT".into(), self.event.as_str().to_string()),
            (
                "PIPEWRIGHT_PR".into(),
                self.pr.map(|n| n.to_string()).unwrap_or_default(),
            ),
            ("PIPEWRIGHT_RUN_ID".into(), self.run_id.clone()),
            ("PIPEWRIGHT_PIPELINE".into(), pipeline.to_string()),
        ];
        env.extend(
            self.inputs
                .iter()
                .map(|(n, v)| (input_env_name(n), v.clone())),
        );
        env
    }
}

fn resolve(cx: &RunContext, v: &WithValue) -> Resolved {
    match v {
        WithValue::Scalar(t) => Resolved::Str(cx.render(t)),
        WithValue::List(items) => Resolved::List(items.iter().map(|i| resolve(cx, i)).collect()),
        WithValue::Map(entries) => Resolved::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), resolve(cx, v)))
                .collect(),
        ),
    }
}

/// Plans a run of `pipeline` for the event in `cx`.
pub fn plan(pipeline: &Pipeline, cx: &RunContext) -> Plan {
    let base = cx.base_env(&pipeline.name);
    let steps = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let action = match &step.kind {
                StepKind::Run {
                    image,
                    script,
                    shell,
                } => PlannedAction::Run {
                    image: cx.render(image),
                    script: script.clone(),
                    shell: *shell,
                },
                StepKind::Uses { action, with } => PlannedAction::Uses {
                    action: action.clone(),
                    with: with
                        .iter()
                        .map(|(k, v)| (k.clone(), resolve(cx, v)))
                        .collect(),
                },
            };
            let mut env = base.clone();
            env.extend(pipeline.env.iter().cloned());
            env.extend(step.env.iter().cloned());
            let mut volumes = pipeline.volumes.clone();
            volumes.extend(step.volumes.iter().cloned());
            PlannedStep {
                index,
                name: step.name.clone(),
                applies: step_applies(step, cx.event, &cx.git_ref),
                action,
                env,
                volumes,
                timeout: step.timeout,
                memory: step.memory,
                pids: step.pids,
                continue_on_error: step.continue_on_error,
                runs_after: step.runs_after(),
            }
        })
        .collect();
    let concurrency_group = match &pipeline.concurrency.group {
        Some(t) => cx.render(t),
        None => format!("{}/{}/{}", cx.repo, pipeline.name, cx.event_ref()),
    };
    Plan {
        pipeline: pipeline.name.clone(),
        concurrency_group,
        cancel_in_progress: pipeline.concurrency.cancel_in_progress,
        timeout: pipeline.timeout,
        steps,
    }
}

//! `uses: image`: build `context` with `dockerfile` on the host's engine (no engine socket
//! in any container), tag it, and push it — by default only on a push to the default
//! branch, never on a pull request unless `push: true` says so.
//!
//! A pull request never builds under the names its pipeline gives: its image is named
//! [`pull_request_name`] (per repository and run), so that it cannot replace a local image
//! another run uses; the runner removes that name when the run ends.

use crate::{ActionContext, ActionError, Inputs, bad, relative_path};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Build context, relative to the workspace.
    pub context: String,
    /// Dockerfile, relative to the context.
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: Vec<(String, String)>,
    pub push: bool,
    pub registry: Option<String>,
    pub username: Option<String>,
    /// The step environment variable (a Vault secret) holding the registry password.
    pub password_secret: Option<String>,
}

impl Image {
    pub(crate) fn prepare(with: &Inputs, cx: &ActionContext) -> Result<Image, ActionError> {
        let context = relative_path(
            "context",
            &with.string("context")?.unwrap_or_else(|| ".".into()),
        )?;
        let dockerfile = relative_path(
            "dockerfile",
            &with
                .string("dockerfile")?
                .unwrap_or_else(|| "Dockerfile".into()),
        )?;
        let tags = with.list("tags")?;
        if tags.is_empty() {
            return Err(bad("tags", "at least one image name with a tag"));
        }
        for tag in &tags {
            if tag.is_empty() || tag.chars().any(char::is_whitespace) || tag.ends_with(':') {
                return Err(bad("tags", format!("`{tag}` is not an image reference")));
            }
        }
        let push = with
            .bool("push")?
            .unwrap_or_else(|| cx.is_default_branch_push());
        let password_secret = with.string("password_secret")?;
        let username = with.string("username")?;
        if username.is_some() != password_secret.is_some() {
            return Err(bad(
                "password_secret",
                "`username` and `password_secret` go together",
            ));
        }
        Ok(Image {
            context,
            dockerfile,
            tags,
            build_args: with.map("build_args")?,
            push,
            registry: with.string("registry")?,
            username,
            password_secret,
        })
    }
}

/// Where a pull request's image is built: `pipewright-pr/<owner>-<name>/run-<run>:<step>`,
/// the repository folded into the characters an image name allows (lower-case letters,
/// digits, single `-` between them).
pub fn pull_request_name(repo: &str, run_id: &str, step: usize) -> String {
    let mut folded = String::with_capacity(repo.len());
    for c in repo.chars() {
        if c.is_ascii_alphanumeric() {
            folded.push(c.to_ascii_lowercase());
        } else if !folded.is_empty() && !folded.ends_with('-') {
            folded.push('-');
        }
    }
    let folded = folded.trim_end_matches('-');
    let folded = if folded.is_empty() { "repo" } else { folded };
    let run: String = run_id.chars().filter(char::is_ascii_digit).collect();
    format!("pipewright-pr/{folded}/run-{run}:{step}")
}

#[cfg(test)]
mod tests {
    use super::pull_request_name;
    use crate::{Action, ActionContext, prepare};

    #[test]
    fn pull_request_names_are_valid_image_names() {
        assert_eq!(
            pull_request_name("Org/My_App.v2", "17", 3),
            "pipewright-pr/org-my-app-v2/run-17:3"
        );
        assert_eq!(
            pull_request_name("--/__", "5", 0),
            "pipewright-pr/repo/run-5:0"
        );
    }
    use pipewright_pipelines::{EventKind, GitRef, Resolved};

    #[test]
    fn pushes_on_the_default_branch_by_default() {
        let with = vec![(
            "tags".to_string(),
            Resolved::List(vec![Resolved::Str("reg/app:1".into())]),
        )];
        let push_of = |event, branch: &str, with: &[(String, Resolved)]| {
            let git_ref = GitRef::Branch(branch.into());
            let cx = ActionContext {
                event,
                git_ref: &git_ref,
                default_branch: "main",
                inputs: &[],
                step: "build",
            };
            match prepare("image", with, &cx).unwrap() {
                Action::Image(i) => i.push,
                other => panic!("{other:?}"),
            }
        };
        assert!(push_of(EventKind::Push, "main", &with));
        assert!(!push_of(EventKind::Push, "dev", &with));
        assert!(!push_of(EventKind::PullRequest, "main", &with));
        let mut asked = with.clone();
        asked.push(("push".into(), Resolved::Str("true".into())));
        assert!(
            push_of(EventKind::PullRequest, "main", &asked),
            "only when asked"
        );
    }
}

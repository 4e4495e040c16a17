//! Built-in actions (`uses: tofu`, `image`, `postgres`): what each one runs, decided from
//! its `with:` inputs and the event, and how its results are read (the tofu plan summary).
//!
//! The *format* of each action's `with:` lives in the pipelines crate (so `validate` and the
//! JSON Schema know it); this crate owns behaviour and does no I/O: the runner executes the
//! commands it returns and hands back their output.

pub mod image;
pub mod postgres;
pub mod tofu;

use pipewright_pipelines::{EventKind, GitRef, Resolved};

/// What an action needs to know about the run.
#[derive(Clone, Copy, Debug)]
pub struct ActionContext<'a> {
    pub event: EventKind,
    /// The pushed ref; for a pull request its base branch.
    pub git_ref: &'a GitRef,
    pub default_branch: &'a str,
    pub inputs: &'a [(String, String)],
    pub step: &'a str,
}

impl ActionContext<'_> {
    /// A push to the default branch: where applies and pushes happen by default.
    pub fn is_default_branch_push(&self) -> bool {
        self.event == EventKind::Push && self.git_ref.branch() == Some(self.default_branch)
    }

    fn input(&self, name: &str) -> Option<&str> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A prepared action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Tofu(tofu::Tofu),
    Image(image::Image),
    Postgres(postgres::Postgres),
}

/// Why an action step cannot run as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("unknown action `{0}`")]
    Unknown(String),
    #[error("`with.{key}`: {why}")]
    Input { key: String, why: String },
}

/// Prepares an action step from its rendered `with:` inputs.
pub fn prepare(
    action: &str,
    with: &[(String, Resolved)],
    cx: &ActionContext,
) -> Result<Action, ActionError> {
    let inputs = Inputs(with);
    match action {
        "tofu" => tofu::Tofu::prepare(&inputs, cx).map(Action::Tofu),
        "image" => image::Image::prepare(&inputs, cx).map(Action::Image),
        "postgres" => postgres::Postgres::prepare(&inputs, cx).map(Action::Postgres),
        other => Err(ActionError::Unknown(other.to_string())),
    }
}

/// Typed access to rendered `with:` values.
struct Inputs<'a>(&'a [(String, Resolved)]);

fn bad(key: &str, why: impl Into<String>) -> ActionError {
    ActionError::Input {
        key: key.to_string(),
        why: why.into(),
    }
}

impl Inputs<'_> {
    fn get(&self, key: &str) -> Option<&Resolved> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn string(&self, key: &str) -> Result<Option<String>, ActionError> {
        match self.get(key) {
            None => Ok(None),
            Some(Resolved::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(key, "expected a single value")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ActionError> {
        match self.string(key)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(bad(key, format!("expected true or false, found `{other}`"))),
        }
    }

    fn list(&self, key: &str) -> Result<Vec<String>, ActionError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Resolved::Str(s)) => Ok(vec![s.clone()]),
            Some(Resolved::List(items)) => items
                .iter()
                .map(|i| match i {
                    Resolved::Str(s) => Ok(s.clone()),
                    _ => Err(bad(key, "expected a list of values")),
                })
                .collect(),
            Some(Resolved::Map(_)) => Err(bad(key, "expected a list, found a mapping")),
        }
    }

    fn map(&self, key: &str) -> Result<Vec<(String, String)>, ActionError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Resolved::Map(entries)) => entries
                .iter()
                .map(|(k, v)| match v {
                    Resolved::Str(s) => Ok((k.clone(), s.clone())),
                    _ => Err(bad(key, "expected values, not lists or mappings")),
                })
                .collect(),
            Some(_) => Err(bad(key, "expected a mapping")),
        }
    }
}

/// A path relative to the workspace, without `..`: where the action works.
fn relative_path(key: &str, path: &str) -> Result<String, ActionError> {
    let trimmed = path.trim().trim_start_matches("./").trim_end_matches('/');
    if trimmed.starts_with('/') || trimmed.split('/').any(|c| c == "..") {
        return Err(bad(
            key,
            format!("`{path}` must be a path inside the repository"),
        ));
    }
    Ok(if trimmed.is_empty() {
        ".".to_string()
    } else {
        trimmed.to_string()
    })
}

/// `/workspace/<path>`.
pub fn in_workspace(path: &str) -> String {
    if path == "." {
        "/workspace".to_string()
    } else {
        format!("/workspace/{path}")
    }
}

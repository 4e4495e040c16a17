//! Built-in actions (`uses: tofu`, `image`, `postgres`): each turns a planned step into the
//! container steps that carry it out, and reads their results.
//!
//! The file format of every action (its `with:` keys) is part of the pipelines crate so that
//! `validate` and the JSON Schema know it; this crate owns what the actions do.

use pipewright_pipelines::{PlannedAction, PlannedStep};

/// Why an action step cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The action is part of the pipeline format, but this build cannot run it yet.
    #[error(
        "the built-in action `{action}` cannot run in this build of Pipewright yet; only `run:` steps can"
    )]
    NotAvailable { action: String },
    #[error("step `{step}` is not an action step")]
    NotAnAction { step: String },
}

/// Checks that an action step can run here, and says what is missing when it cannot.
pub fn check(step: &PlannedStep) -> Result<(), ActionError> {
    match &step.action {
        PlannedAction::Uses { action, .. } => Err(ActionError::NotAvailable {
            action: action.clone(),
        }),
        PlannedAction::Run { .. } => Err(ActionError::NotAnAction {
            step: step.name.clone(),
        }),
    }
}

//! What the API and the pages both do to runs: cancel, re-run and dispatch, each one
//! function whichever answer (JSON or a page) follows.
//!
//! Dispatch itself (reading the pipeline at the ref's commit, checking the inputs, offline
//! dispatch when Gitea cannot be reached) is the intake layer's (`intake/dispatch.rs`),
//! shared with Gitea Actions tasks; here its refusals become API errors.

use axum::http::StatusCode;

use crate::server::{
    App,
    http::errors::{ApiError, internal},
    intake::{self, dispatch::Refused, spec::Source},
};
use crate::store::{Run, RunSpec, RunState, now_ms};

pub use crate::server::intake::dispatch::Dispatchable;

fn api_error(refused: Refused) -> ApiError {
    ApiError(refused.0, refused.1)
}

/// Reads pipeline `pipeline_name` of `owner/name` at `wanted` (a branch or tag; default:
/// the default branch), as [`crate::server::intake::dispatch::dispatchable`] does.
pub async fn dispatchable(
    app: &App,
    owner: &str,
    name: &str,
    pipeline_name: &str,
    wanted: Option<&str>,
) -> Result<Dispatchable, ApiError> {
    intake::dispatch::dispatchable(&app.intake(), owner, name, pipeline_name, wanted)
        .await
        .map_err(api_error)
}

/// Dispatches a pipeline read by [`dispatchable`] with the inputs given (as text), for
/// `actor`; the new run.
pub async fn dispatch(
    app: &App,
    target: &Dispatchable,
    given: &[(String, String)],
    actor: &str,
) -> Result<Run, ApiError> {
    let source = Source::Dispatch {
        actor,
        at_ms: now_ms(),
    };
    let id = intake::dispatch::dispatch(&app.intake(), target, given, source)
        .await
        .map_err(api_error)?;
    stored(app, id).await
}

async fn stored(app: &App, id: i64) -> Result<Run, ApiError> {
    app.store.run(id).await.map_err(internal)?.ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_owned(),
        )
    })
}

/// Cancels a queued or running run (`why` becomes its description); 409 when it ended.
pub async fn cancel(app: &App, run: &Run, why: &str) -> Result<(), ApiError> {
    match run.state {
        RunState::Running => {
            app.scheduler.cancel(run.id, why);
        }
        RunState::Queued => {
            app.store
                .finish_run(run.id, RunState::Cancelled, why)
                .await
                .map_err(internal)?;
            app.reporter_wake.notify_one();
            app.scheduler.wake();
        }
        _ => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("run {} has already ended ({})", run.id, run.state.as_str()),
            ));
        }
    }
    Ok(())
}

/// Queues another attempt of a run; the new run.
pub async fn rerun(app: &App, old: &Run) -> Result<Run, ApiError> {
    let new = RunSpec::rerun(old, now_ms());
    let enqueued = app.enqueue(None, &[new]).await.map_err(internal)?;
    stored(app, enqueued.ids[0]).await
}

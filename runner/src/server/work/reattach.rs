//! Re-attaching after a crash: the runs a previous process of this instance left
//! `running` are adopted at start (lease taken again, kept from the reaper), and each goes
//! on from its recorded steps and the containers left on the engine: the step under way is
//! followed from where its log ends, the rest run as they would have. Nothing is retried:
//! a step that had started is never started again. Shared by `serve` and every other
//! process that runs steps (`settle_interrupted` adopts, the claim loop goes on).

use std::time::Duration;

use pipewright_containers::{
    Executor, LABEL_INSTANCE, LABEL_RUN, LABEL_STEP, LABEL_STEP_INDEX, LeftContainer, LeftState,
};
use pipewright_pipelines::{Plan, PlannedAction};
use tracing::{info, warn};

use super::Work;
use crate::{
    run::{Resume, ResumedStep, RunResult},
    store::{Run, StepRow, StepState, now_ms},
};

/// A run that ended before its steps were recorded (before its checkout).
pub const BEFORE_FIRST_STEP: &str =
    "interrupted: Pipewright stopped while it ran; not retried automatically";

/// At start: takes over the runs this instance left running (its lease again, an entry in
/// the registry so that reaping keeps their containers) and queues them for the claim
/// loop. Returns their ids.
pub async fn adopt(work: &Work<'_>) -> anyhow::Result<Vec<i64>> {
    let mut adopted = Vec::new();
    for run in work.store.running_runs_of(&work.scheduler.owner).await? {
        match work.store.renew_lease(run.id, &work.scheduler.owner).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(run_id = run.id, error = ?e, "failed to take the lease of an interrupted run");
                continue;
            }
        }
        info!(run_id = run.id, repo = %run.repo, "re-attaching to a run a previous process left running");
        work.scheduler.register(run.id);
        adopted.push(run.id);
        work.scheduler
            .resumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(run);
    }
    Ok(adopted)
}

/// Whether an adopted run had begun: a step of it ended, a container of it was started
/// (whatever its steps recorded: recording a step's start can fail), or a step is an
/// action (which may do work of its own before its first container) or was about to
/// start its container (the start mark is written just before the engine is asked, so a
/// mark without any container may have run). One that had not goes through its whole
/// plan again, as if it had just been claimed: nothing of it ran, so nothing is done twice
/// (its checkout and login are done again). The containers it created and never started
/// are removed.
pub async fn had_begun(work: &Work<'_>, run: &Run, planned: &Plan) -> Result<bool, String> {
    let rows = work
        .store
        .steps(run.id)
        .await
        .map_err(|e| format!("database: {e}"))?;
    if rows.iter().any(|row| row.state.is_over()) {
        return Ok(true);
    }
    let left = left_of(work, run).await?;
    if left.iter().any(|c| c.state != LeftState::Created) {
        return Ok(true);
    }
    for row in &rows {
        if row.state == StepState::Running && !is_run_step(planned, row) {
            return Ok(true);
        }
        // Every row, not only the one recorded running: recording a start can fail.
        let marked = work
            .logs
            .output_start(run.id, row.idx)
            .map_err(|e| format!("the step's log: {e}"))?;
        if marked.is_some() && !left.iter().any(|c| is_of_step(c, row)) {
            return Ok(true);
        }
    }
    for container in &left {
        remove(work, container).await;
    }
    info!(
        run_id = run.id,
        "the run had not started a step: it starts over"
    );
    Ok(false)
}

/// The step containers this instance left for `run`, oldest first.
async fn left_of(work: &Work<'_>, run: &Run) -> Result<Vec<LeftContainer>, String> {
    work.executor
        .left_containers(&[
            (LABEL_INSTANCE.to_string(), work.instance.to_string()),
            (LABEL_RUN.to_string(), run.id.to_string()),
        ])
        .await
        .map_err(|e| format!("the Docker engine failed: {}", crate::error_chain(&e)))
}

async fn remove(work: &Work<'_>, container: &LeftContainer) {
    if let Err(e) = work.executor.remove_container(&container.id).await {
        warn!(container = %container.id, error = %crate::error_chain(&e), "failed to remove a container of an interrupted run");
    }
}

/// Where an adopted run goes on, from its recorded steps and the containers it left.
/// Containers of the run that are not followed are removed (a created one is never
/// started). `Err` is the run's `error` description.
pub async fn prepare(work: &Work<'_>, run: &Run, planned: &Plan) -> Result<Resume, String> {
    let rows = work
        .store
        .steps(run.id)
        .await
        .map_err(|e| format!("database: {e}"))?;
    if rows.is_empty() {
        return Err(BEFORE_FIRST_STEP.into());
    }
    let same = rows.len() == planned.steps.len()
        && rows
            .iter()
            .zip(&planned.steps)
            .all(|(row, step)| row.idx == step.index as i64 && row.name == step.name);
    if !same {
        return Err(
            "interrupted: the pipeline's steps are no longer the ones the run recorded; not retried automatically"
                .into(),
        );
    }
    let left = left_of(work, run).await?;
    let from = rows
        .iter()
        .position(|row| !row.state.is_over())
        .unwrap_or(rows.len());
    let verdict = verdict_of(planned, &rows[..from]);
    let elapsed = since(run.started_at);
    // The newest container of the step under way, if it has one.
    let current = rows
        .get(from)
        .and_then(|row| left.iter().rev().find(|c| is_of_step(c, row)));
    // Where its container's own output began in its log; `None`: it never started.
    let output_start = match rows.get(from) {
        Some(row) => work
            .logs
            .output_start(run.id, row.idx)
            .map_err(|e| format!("the step's log: {e}"))?,
        None => None,
    };
    // The workspace's checkout is complete once a step has run (each waited for it).
    let checked_out = rows[..from].iter().any(|r| r.exit_code.is_some());
    let step = match (rows.get(from), current) {
        (None, _) => None,
        (Some(row), Some(container)) if container.state != LeftState::Created => {
            let skip_lines = skipped_lines(work, run.id, row.idx, output_start).await?;
            info!(
                run_id = run.id,
                step = %row.name,
                container = %container.id,
                skip_lines,
                "following the step's container"
            );
            Some(ResumedStep::Follow {
                container: container.id.clone(),
                skip_lines,
                elapsed: since(row.started_at),
                env: container.env.clone(),
            })
        }
        // Not started: it starts now, as it would have, once the checkout is known to be
        // complete. A `run:` step whose container was created and not started, or which
        // recorded no start mark (stopped during the pull; the mark is written before the
        // engine is asked to start the container), never ran; an action that recorded
        // nothing of its own either (it may do work of its own between its containers).
        (Some(row), current)
            if checked_out
                && if is_run_step(planned, row) {
                    current.is_some() || output_start.is_none()
                } else {
                    row.state != StepState::Running
                        && output_start.is_none()
                        && current.is_none()
                } =>
        {
            None
        }
        (Some(_), Some(_)) => Some(ResumedStep::Lost(
            "interrupted: Pipewright stopped between creating the step's container and starting it; not started, not retried automatically".into(),
        )),
        (Some(_), None) if output_start.is_some() => {
            Some(ResumedStep::Lost(
                "interrupted: the step's container is gone (Pipewright stopped while it ran); not retried automatically".into(),
            ))
        }
        (Some(row), None) if row.state == StepState::Running && checked_out => {
            Some(ResumedStep::Lost(
                "interrupted: Pipewright stopped during the step, before its container started; not retried automatically".into(),
            ))
        }
        (Some(_), None) => Some(ResumedStep::Lost(
            "interrupted: Pipewright stopped before the step started, while the workspace may have been incomplete; not retried automatically".into(),
        )),
    };
    let followed = match &step {
        Some(ResumedStep::Follow { container, .. }) => Some(container.as_str()),
        _ => None,
    };
    for container in left.iter().filter(|c| Some(c.id.as_str()) != followed) {
        remove(work, container).await;
    }
    Ok(Resume {
        from,
        verdict: Some(verdict),
        elapsed,
        step,
    })
}

/// Lines of the step's log that came from its container (those after its pull's
/// progress): the container's log starts with them, and they are not written again.
/// `output_start` is where they began; `None` (the container started, its start not
/// recorded yet): none of them are.
async fn skipped_lines(
    work: &Work<'_>,
    run: i64,
    step: i64,
    output_start: Option<u64>,
) -> Result<u64, String> {
    let Some(before) = output_start else {
        return Ok(0);
    };
    let lines = work
        .logs
        .line_count(run, step)
        .await
        .map_err(|e| format!("the step's log: {e}"))?;
    Ok(lines.saturating_sub(before))
}

/// Whether the step is a `run:` step (one container, nothing of Pipewright's own between).
fn is_run_step(planned: &Plan, row: &StepRow) -> bool {
    planned
        .steps
        .get(row.idx as usize)
        .is_some_and(|s| matches!(s.action, PlannedAction::Run { .. }))
}

/// Whether a left container ran this step (by its index; by its name for a container
/// made before the index label existed).
fn is_of_step(container: &LeftContainer, row: &StepRow) -> bool {
    match container.label(LABEL_STEP_INDEX) {
        Some(index) => index == row.idx.to_string(),
        None => container.label(LABEL_STEP) == Some(row.name.as_str()),
    }
}

/// Time since a stored instant (milliseconds), zero when there is none.
fn since(at: Option<i64>) -> Duration {
    at.map_or(Duration::ZERO, |at| {
        Duration::from_millis(now_ms().saturating_sub(at).max(0) as u64)
    })
}

/// The verdict that the recorded steps make, as `run_plan` made it while they ran: the
/// first failure's, else success.
fn verdict_of(planned: &Plan, rows: &[StepRow]) -> RunResult {
    let mut result = RunResult::Success;
    for row in rows {
        if result != RunResult::Success {
            break;
        }
        let continues = planned
            .steps
            .get(row.idx as usize)
            .is_some_and(|s| s.continue_on_error);
        result = match row.state {
            StepState::Cancelled => RunResult::Cancelled,
            StepState::Error => RunResult::Error(format!("step {}: {}", row.name, row.description)),
            StepState::Failure if !continues => RunResult::Failure {
                step: row.name.clone(),
                why: row.description.clone(),
            },
            _ => RunResult::Success,
        };
    }
    result
}

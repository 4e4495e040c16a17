//! Runs and steps as the API shows them, and times as RFC 3339.

use serde::Serialize;

use crate::server::{App, present::clip};
use crate::store::{Run, RunState, StepRow, labels_cover};

/// A run as the API shows it.
#[derive(Serialize)]
pub struct RunDto {
    id: i64,
    repo: String,
    pipeline: String,
    pipeline_file: String,
    event: String,
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    pull_request: Option<i64>,
    actor: String,
    state: &'static str,
    description: String,
    concurrency_group: String,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    url: String,
    /// Why a queued run is not claimed, when this server can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepDto>>,
}

#[derive(Serialize)]
pub struct StepDto {
    index: i64,
    name: String,
    state: String,
    description: String,
    exit_code: Option<i64>,
    started_at: Option<String>,
    finished_at: Option<String>,
    log_url: String,
}

pub fn run_dto(app: &App, run: &Run, steps: Option<&[StepRow]>) -> RunDto {
    let url = format!("{}/runs/{}", app.public_url(), run.id);
    RunDto {
        id: run.id,
        repo: run.repo.clone(),
        pipeline: run.pipeline.clone(),
        pipeline_file: run.pipeline_file.clone(),
        event: run.event.as_str().to_string(),
        git_ref: run.git_ref.full(),
        sha: run.sha.clone(),
        pull_request: run.pr,
        actor: run.actor.clone(),
        state: run.state.as_str(),
        description: clip(&run.description),
        concurrency_group: run.concurrency_group.clone(),
        created_at: rfc3339(run.created_at),
        started_at: run.started_at.map(rfc3339),
        finished_at: run.finished_at.map(rfc3339),
        steps: steps.map(|steps| {
            steps
                .iter()
                .map(|s| StepDto {
                    index: s.idx,
                    name: s.name.clone(),
                    state: s.state.as_str().to_string(),
                    description: s.description.clone(),
                    exit_code: s.exit_code,
                    started_at: s.started_at.map(rfc3339),
                    finished_at: s.finished_at.map(rfc3339),
                    log_url: format!(
                        "{}/api/v1/runs/{}/steps/{}/log",
                        app.public_url(),
                        run.id,
                        s.idx
                    ),
                })
                .collect()
        }),
        url,
        waiting_reason: waiting_reason(app, run),
    }
}

/// Why a queued run waits, when it is for want of an agent's labels: `runs_on` is matched
/// against this server's `[agent].labels` (no other agents exist yet).
pub fn waiting_reason(app: &App, run: &Run) -> Option<String> {
    (run.state == RunState::Queued && !labels_cover(&app.config.agent.labels, &run.runs_on))
        .then(|| format!("no agent with labels [{}]", run.runs_on.join(", ")))
}

/// Epoch milliseconds as RFC 3339 UTC (`2026-11-22T05:35:15.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

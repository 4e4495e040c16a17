//! Schedules: every minute, the `on.schedule` crons of the pipelines on each known
//! repository's default branch (as its mirror has it: pushes keep it current; only
//! repositories `[[repos]]` allows) are checked,
//! and a due pipeline gets a run on that branch's head. A run per pipeline and minute at
//! most, also across restarts (its dedupe key names the minute).

use std::time::Duration;

use pipewright_containers::CancellationToken;
use pipewright_pipelines::{EventKind, GitRef, RunContext, default_inputs, schedule_due};
use tracing::{info, warn};

use crate::server::{
    intake::Intake,
    intake::spec::{FileAt, Source},
};
use crate::{
    error_chain,
    events::RepoInfo,
    store::{RunSpec, now_ms},
};

pub async fn run(intake: Intake<'_>, stop: CancellationToken) {
    loop {
        // Just past the next minute boundary.
        let now = now_ms();
        let wait = 60_000 - now.rem_euclid(60_000) + 1_000;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = stop.cancelled() => return,
        }
        match tick(&intake, now_ms() / 1000).await {
            Ok(0) => {}
            Ok(n) => info!(runs = n, "scheduled runs queued"),
            Err(why) => warn!(error = %why, "schedules failed"),
        }
    }
}

/// Queues the runs due in the minute of `epoch_secs`; returns how many.
pub async fn tick(intake: &Intake<'_>, epoch_secs: i64) -> Result<usize, String> {
    let minute = epoch_secs / 60;
    let mut queued = 0;
    for known in intake
        .store
        .known_repos()
        .await
        .map_err(|e| error_chain(&e))?
    {
        // A repository remembered from before `[[repos]]` left it out is not run.
        if !intake.config.repo_allowed(&known.repo) {
            continue;
        }
        let repo = RepoInfo::from_known(&known);
        let Ok(mirror) = intake.git.open(&repo.full_name, false).await else {
            continue;
        };
        let Some(head) = intake
            .git
            .resolve(&mirror, &format!("refs/heads/{}", repo.default_branch))
            .await
        else {
            continue;
        };
        let files = match intake.git.pipelines_at(&mirror, &head).await {
            Ok(files) => files,
            Err(e) => {
                warn!(repo = %repo.full_name, error = %error_chain(&e), "schedules: failed to read pipelines");
                continue;
            }
        };
        drop(mirror);
        let mut runs = Vec::new();
        for pipeline in files.into_iter().filter_map(|f| f.result.ok()) {
            if !pipeline
                .on
                .schedule
                .iter()
                .any(|s| schedule_due(&s.cron, &s.timezone, epoch_secs))
            {
                continue;
            }
            let source = Source::Schedule { minute };
            let key = source.dedupe_key(&repo.full_name, &pipeline.name);
            if intake
                .store
                .dedupe_used(&key)
                .await
                .map_err(|e| error_chain(&e))?
            {
                continue;
            }
            let cx = RunContext {
                repo: repo.full_name.clone(),
                sha: head.clone(),
                git_ref: GitRef::Branch(repo.default_branch.clone()),
                event: EventKind::Schedule,
                pr: None,
                run_id: String::new(),
                inputs: default_inputs(&pipeline),
                actor: source.actor().to_string(),
            };
            runs.push(RunSpec::new(&repo, &cx, FileAt::Valid(&pipeline), source));
        }
        if runs.is_empty() {
            continue;
        }
        let enqueued = intake
            .queue
            .enqueue(None, &runs)
            .await
            .map_err(|e| error_chain(&e))?;
        queued += enqueued.ids.len();
    }
    Ok(queued)
}

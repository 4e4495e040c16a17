//! From stored deliveries to queued runs: fetch the commit, compute the changed paths with
//! git, read `.pipewright/` at the commit, select pipelines, enqueue runs with `pending`
//! statuses. Deliveries stay stored until this succeeds, so none is lost to a crash.

use std::{collections::HashMap, sync::Arc, time::Duration};

use pipewright_containers::CancellationToken;
use pipewright_pipelines::{
    Changes, Diagnostic, EventKind, GitRef, ParsedFile, Pipeline, RunContext, Trigger,
    default_inputs, parse_files, plan, selects,
};
use tracing::{Instrument, info, info_span, warn};

use super::App;
use crate::{
    events::{Event, RepoInfo, parse},
    git::{GitError, Mirror, is_zero},
    store::{DeliveryState, Enqueued, NewRun, RunState, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tries a failing delivery this many times (with growing pauses) before giving up on it.
const ATTEMPTS: u32 = 6;

pub async fn run(app: Arc<App>, stop: CancellationToken) {
    let mut failures: HashMap<i64, (u32, tokio::time::Instant)> = HashMap::new();
    loop {
        let pending = match app.store.pending_deliveries(64).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = ?e, "failed to read pending deliveries");
                Vec::new()
            }
        };
        let mut next_retry: Option<tokio::time::Instant> = None;
        for delivery in pending {
            if stop.is_cancelled() {
                return;
            }
            if let Some((_, at)) = failures.get(&delivery.id)
                && *at > tokio::time::Instant::now()
            {
                next_retry = Some(next_retry.map_or(*at, |n| n.min(*at)));
                continue;
            }
            let span =
                info_span!("delivery", delivery_id = %delivery.delivery_id, repo = %delivery.repo);
            let result = process(&app, delivery.id, &delivery.event_type, &delivery.payload)
                .instrument(span.clone())
                .await;
            let _enter = span.enter();
            match result {
                Ok(note) => {
                    failures.remove(&delivery.id);
                    info!(note = %note, "delivery processed");
                }
                Err(e) => {
                    let entry = failures
                        .entry(delivery.id)
                        .or_insert((0, tokio::time::Instant::now()));
                    entry.0 += 1;
                    if entry.0 >= ATTEMPTS {
                        warn!(error = %error_chain(&e), "giving up on the delivery");
                        failures.remove(&delivery.id);
                        let _ = app
                            .store
                            .finish_delivery(delivery.id, DeliveryState::Failed, &error_chain(&e))
                            .await;
                        continue;
                    }
                    let pause = Duration::from_secs(1 << entry.0.min(6));
                    entry.1 = tokio::time::Instant::now() + pause;
                    next_retry = Some(next_retry.map_or(entry.1, |n| n.min(entry.1)));
                    warn!(error = %error_chain(&e), attempt = entry.0, retry_in = ?pause, "failed to process the delivery");
                }
            }
        }
        let wait = next_retry.map_or(Duration::from_secs(30), |at| {
            at.saturating_duration_since(tokio::time::Instant::now())
        });
        tokio::select! {
            _ = app.ingest_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

pub use crate::error_chain;

async fn process(
    app: &App,
    id: i64,
    event_type: &str,
    payload: &[u8],
) -> Result<String, IngestError> {
    let event = match parse(event_type, payload) {
        Ok(Some(event)) => event,
        Ok(None) => {
            app.store
                .finish_delivery(id, DeliveryState::Processed, "nothing to run")
                .await?;
            return Ok("nothing to run".into());
        }
        Err(e) => {
            app.store
                .finish_delivery(id, DeliveryState::Failed, &e.to_string())
                .await?;
            return Ok(e.to_string());
        }
    };
    if !app.config.repo_allowed(&event.repo().full_name) {
        app.store
            .finish_delivery(
                id,
                DeliveryState::Processed,
                "repository not in [[repos]]: ignored",
            )
            .await?;
        return Ok("repository not allowed by [[repos]]".into());
    }
    let key = event.dedupe_key();
    if app.store.active_dedupe(&key).await? {
        app.store
            .finish_delivery(
                id,
                DeliveryState::Duplicate,
                "the same event's runs are still queued or running",
            )
            .await?;
        return Ok("duplicate of an event still running".into());
    }
    let enqueued = enqueue_event(app, Some(id), &event).await?;
    Ok(format!("{} runs", enqueued.ids.len()))
}

/// Selects and enqueues the runs of an event (also used by catch-up, without a delivery).
pub async fn enqueue_event(
    app: &App,
    delivery: Option<i64>,
    event: &Event,
) -> Result<Enqueued, IngestError> {
    let repo = event.repo();
    app.store.remember_repo(&repo.known()).await?;
    let mirror = app
        .git
        .fetch(&repo.full_name, &repo.clone_url, repo.sha256)
        .await?;
    let sha = event.sha().to_string();
    let from_fork = matches!(
        event,
        Event::PullRequest {
            from_fork: true,
            ..
        }
    );
    // The changed paths and the pipeline files, read at once: each is a git process or two.
    let changes = async {
        match event {
            Event::Push {
                git_ref: GitRef::Tag(_),
                ..
            } => Ok(Changes::All),
            Event::Push {
                git_ref: GitRef::Branch(branch),
                before,
                after,
                ..
            } => push_changes(app, &mirror, branch, &repo.default_branch, before, after).await,
            Event::PullRequest {
                base_branch,
                head_sha,
                ..
            } => {
                let base_ref = format!("refs/heads/{base_branch}");
                match app.git.merge_base(&mirror, &base_ref, head_sha).await {
                    Some(base) => app
                        .git
                        .changed_files(&mirror, &base, head_sha)
                        .await
                        .map(Changes::Files),
                    None => app
                        .git
                        .all_files(&mirror, head_sha)
                        .await
                        .map(Changes::Files),
                }
            }
        }
    };
    let (changes, files) = match tokio::try_join!(changes, app.git.pipeline_files(&mirror, &sha)) {
        Ok(both) => both,
        Err(e) => {
            // Say the plain thing when the commit itself is missing.
            app.git
                .require_commit(&mirror, &repo.full_name, &sha)
                .await?;
            return Err(e.into());
        }
    };
    drop(mirror);
    let (trigger, pr, actor) = match event {
        Event::Push { git_ref, actor, .. } => (
            Trigger {
                kind: EventKind::Push,
                git_ref: git_ref.clone(),
                changes,
            },
            None,
            actor.clone(),
        ),
        Event::PullRequest {
            number,
            base_branch,
            actor,
            ..
        } => {
            let trigger = Trigger {
                kind: EventKind::PullRequest,
                git_ref: GitRef::Branch(base_branch.clone()),
                changes,
            };
            (trigger, Some(*number), actor.clone())
        }
    };
    let parsed = parse_repo_files(files);

    let mut runs = Vec::new();
    for file in parsed {
        let (pipeline, state, description) = match file.result {
            Ok(p) if selects(&p, &trigger) => (Some(p), RunState::Queued, "queued".to_string()),
            Ok(_) => continue,
            Err(diags) => (None, RunState::Error, invalid_description(&diags)),
        };
        let cx = RunContext {
            repo: repo.full_name.clone(),
            sha: sha.clone(),
            git_ref: trigger.git_ref.clone(),
            event: trigger.kind,
            pr: pr.map(|n| n as u64),
            run_id: String::new(),
            inputs: pipeline.as_ref().map(default_inputs).unwrap_or_default(),
        };
        let (group, cancel_in_progress) = match &pipeline {
            Some(p) => {
                let planned = plan(p, &cx);
                (planned.concurrency_group, planned.cancel_in_progress)
            }
            None => (
                format!("{}/{}/{}", repo.full_name, file.name, cx.event_ref()),
                false,
            ),
        };
        runs.push(NewRun {
            repo: repo.full_name.clone(),
            repo_id: repo.id,
            owner_id: repo.owner_id,
            clone_url: repo.clone_url.clone(),
            default_branch: repo.default_branch.clone(),
            status_repo: repo.full_name.clone(),
            pipeline: file.name.clone(),
            pipeline_file: file.file.clone(),
            event: trigger.kind.as_str().to_string(),
            git_ref: trigger.git_ref.full(),
            sha: sha.clone(),
            pr,
            actor: actor.clone(),
            from_fork,
            attempt: 1,
            inputs: cx.inputs.clone(),
            dedupe_key: event.dedupe_key(),
            concurrency_group: group,
            cancel_in_progress,
            state,
            description,
        });
    }
    let enqueued = app.enqueue(delivery, &runs).await?;
    Ok(enqueued)
}

/// Changed files of a branch push, computed with git, never taken from the payload.
async fn push_changes(
    app: &App,
    mirror: &Mirror,
    branch: &str,
    default_branch: &str,
    before: &str,
    after: &str,
) -> Result<Changes, GitError> {
    if !is_zero(before)
        && let Ok(files) = app.git.changed_files(mirror, before, after).await
    {
        return Ok(Changes::Files(files));
    }
    // A new branch (or an unknown `before`, after a force push): compare with the default
    // branch; the default branch itself with nothing to compare counts every file.
    if branch != default_branch
        && let Some(base) = app
            .git
            .merge_base(mirror, &format!("refs/heads/{default_branch}"), after)
            .await
    {
        return Ok(Changes::Files(
            app.git.changed_files(mirror, &base, after).await?,
        ));
    }
    Ok(Changes::Files(app.git.all_files(mirror, after).await?))
}

/// Pipeline files read from git, non-UTF-8 ones reported like any other invalid file.
fn parse_repo_files(files: Vec<(String, Result<String, String>)>) -> Vec<ParsedFile> {
    let mut texts = Vec::new();
    let mut broken = Vec::new();
    for (path, text) in files {
        match text {
            Ok(t) => texts.push((path, t)),
            Err(why) => broken.push((path, why)),
        }
    }
    let mut parsed = parse_files(&texts);
    for (path, why) in broken {
        let stem = path
            .rsplit('/')
            .next()
            .unwrap_or(&path)
            .trim_end_matches(".yaml")
            .trim_end_matches(".yml")
            .to_string();
        let diag = Diagnostic {
            file: path.clone(),
            pos: pipewright_pipelines::Pos { line: 1, col: 1 },
            message: why,
        };
        parsed.push(ParsedFile {
            file: path,
            name: stem,
            result: Err(vec![diag]),
        });
    }
    parsed
}

/// `invalid pipeline: .pipewright/x.yml:3:5: unknown key … (+2 more)`.
fn invalid_description(diags: &[Diagnostic]) -> String {
    let first = diags.first().map(|d| d.to_string()).unwrap_or_default();
    match diags.len() {
        0 | 1 => format!("invalid pipeline: {first}"),
        n => format!("invalid pipeline: {first} (+{} more)", n - 1),
    }
}

/// A queued run of a valid pipeline (dispatches and schedules).
pub fn queued_run(
    repo: &RepoInfo,
    pipeline: &Pipeline,
    cx: &RunContext,
    actor: &str,
    dedupe_key: String,
    description: &str,
) -> NewRun {
    let planned = plan(pipeline, cx);
    NewRun {
        repo: repo.full_name.clone(),
        repo_id: repo.id,
        owner_id: repo.owner_id,
        clone_url: repo.clone_url.clone(),
        default_branch: repo.default_branch.clone(),
        status_repo: repo.full_name.clone(),
        pipeline: pipeline.name.clone(),
        pipeline_file: pipeline.file.clone(),
        event: cx.event.as_str().to_string(),
        git_ref: cx.git_ref.full(),
        sha: cx.sha.clone(),
        pr: None,
        actor: actor.to_string(),
        from_fork: false,
        attempt: 1,
        inputs: cx.inputs.clone(),
        dedupe_key,
        concurrency_group: planned.concurrency_group,
        cancel_in_progress: planned.cancel_in_progress,
        state: RunState::Queued,
        description: description.to_string(),
    }
}

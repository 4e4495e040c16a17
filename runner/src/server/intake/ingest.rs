//! From stored deliveries to queued runs: fetch the commit, compute the changed paths with
//! git, read `.pipewright/` at the commit, select pipelines, enqueue runs with `pending`
//! statuses. Deliveries stay stored until this succeeds, so none is lost to a crash.

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use futures_util::FutureExt;

use pipewright_containers::CancellationToken;
use pipewright_pipelines::{
    Changes, Diagnostic, EventKind, GitRef, RunContext, Trigger, default_inputs, selects,
};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::server::{
    App,
    intake::Intake,
    intake::spec::{FileAt, Source},
};
use crate::{
    error_chain,
    events::{Decoded, Event, decode},
    git::{GitError, Mirror, is_zero},
    gitea::GiteaError,
    store::{Delivery, DeliveryState, Enqueued, RunSpec, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to ask Gitea")]
    Gitea(#[from] GiteaError),
    #[error("processing panicked: {0}")]
    Panicked(String),
}

/// A delivery is started this many times at most (failures and crashes of the process
/// alike, counted in the database) before it is given up with a log line.
const ATTEMPTS: i64 = 5;

/// Deliveries processed at once, each of its own repository: a repository whose remote
/// stalls holds one of these until `[gitea].git_timeout`, never the others.
const PARALLEL: usize = 8;

/// What became of one delivery's processing.
struct Done {
    id: i64,
    repo: String,
    result: Result<String, IngestError>,
}

pub async fn run(app: Arc<App>, stop: CancellationToken) {
    // Deliveries that failed: how often in this process, and when they may be tried again.
    let mut failures: HashMap<i64, (u32, tokio::time::Instant)> = HashMap::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<Done> = JoinSet::new();
    loop {
        let pending = match app.store.pending_deliveries(256).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = ?e, "failed to read pending deliveries");
                Vec::new()
            }
        };
        let mut next_retry: Option<tokio::time::Instant> = None;
        for delivery in pending {
            if stop.is_cancelled() || tasks.len() >= PARALLEL {
                break;
            }
            if busy.contains(&delivery.repo) {
                continue;
            }
            if let Some((_, at)) = failures.get(&delivery.id)
                && *at > tokio::time::Instant::now()
            {
                next_retry = Some(next_retry.map_or(*at, |n| n.min(*at)));
                continue;
            }
            busy.insert(delivery.repo.clone());
            let span =
                info_span!("delivery", delivery_id = %delivery.delivery_id, repo = %delivery.repo);
            let app = app.clone();
            tasks.spawn(
                async move {
                    // A panic is this delivery's failure, not the loop's.
                    let result = AssertUnwindSafe(attempt(&app.intake(), &delivery))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| Err(IngestError::Panicked(panic_text(&*panic))));
                    Done {
                        id: delivery.id,
                        repo: delivery.repo,
                        result,
                    }
                }
                .instrument(span),
            );
        }
        let wait = next_retry.map_or(Duration::from_secs(30), |at| {
            at.saturating_duration_since(tokio::time::Instant::now())
        });
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(done) = done {
                    busy.remove(&done.repo);
                    settle(&done, &mut failures);
                }
            }
            _ = app.ingest_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Logs how processing ended and schedules a retry after a failure.
fn settle(done: &Done, failures: &mut HashMap<i64, (u32, tokio::time::Instant)>) {
    match &done.result {
        Ok(note) => {
            failures.remove(&done.id);
            info!(delivery = done.id, note = %note, "delivery processed");
        }
        Err(e) => {
            let entry = failures
                .entry(done.id)
                .or_insert((0, tokio::time::Instant::now()));
            entry.0 += 1;
            let pause = Duration::from_secs(1 << entry.0.min(6));
            entry.1 = tokio::time::Instant::now() + pause;
            warn!(delivery = done.id, error = %error_chain(e), attempt = entry.0, retry_in = ?pause, "failed to process the delivery");
        }
    }
}

/// One start of a delivery's processing: counted durably first, so that a delivery that
/// crashes the process is given up after [`ATTEMPTS`] starts instead of crashing every
/// restart; given up, too, after that many ordinary failures. A delivery of a repository
/// outside `[[repos]]` (an organization's webhook sends every repository's) is set aside
/// in one write, uncounted: a comparison of its stored name cannot crash anything, and
/// each write here is a disk sync that a webhook's answer may have to wait behind.
async fn attempt(intake: &Intake<'_>, delivery: &Delivery) -> Result<String, IngestError> {
    if !intake.config.repo_allowed(&delivery.repo) {
        intake
            .store
            .finish_delivery(
                delivery.id,
                DeliveryState::Processed,
                "repository not in [[repos]]: ignored",
            )
            .await?;
        return Ok("repository not allowed by [[repos]]".into());
    }
    let started = intake.store.start_delivery(delivery.id).await?;
    if started > ATTEMPTS {
        let why = format!(
            "given up: its processing was started {} times without finishing (failures, or crashes of the process)",
            started - 1
        );
        warn!(delivery = delivery.id, "{why}");
        intake
            .store
            .finish_delivery(delivery.id, DeliveryState::Failed, &why)
            .await?;
        return Ok(why);
    }
    process(intake, delivery.id, &delivery.event_type, &delivery.payload).await
}

async fn process(
    intake: &Intake<'_>,
    id: i64,
    event_type: &str,
    payload: &[u8],
) -> Result<String, IngestError> {
    let event = match decode(event_type, payload) {
        Ok(Decoded::Act(event)) => event,
        Ok(Decoded::Command(command)) => {
            return super::commands::answer(intake, id, &command).await;
        }
        Ok(Decoded::Ping | Decoded::Ignore(_)) => {
            intake
                .store
                .finish_delivery(id, DeliveryState::Processed, "nothing to run")
                .await?;
            return Ok("nothing to run".into());
        }
        Err(e) => {
            let why = error_chain(&e);
            intake
                .store
                .finish_delivery(id, DeliveryState::Failed, &why)
                .await?;
            return Ok(why);
        }
    };
    if !intake.config.repo_allowed(&event.repo().full_name) {
        intake
            .store
            .finish_delivery(
                id,
                DeliveryState::Processed,
                "repository not in [[repos]]: ignored",
            )
            .await?;
        return Ok("repository not allowed by [[repos]]".into());
    }
    let enqueued = enqueue_event(intake, Some(id), &event).await?;
    if enqueued.duplicate {
        return Ok("the same event already has runs: nothing added".into());
    }
    Ok(format!("{} runs", enqueued.ids.len()))
}

/// Selects and enqueues the runs of an event (also used by catch-up, without a delivery).
pub async fn enqueue_event(
    intake: &Intake<'_>,
    delivery: Option<i64>,
    event: &Event,
) -> Result<Enqueued, IngestError> {
    let repo = event.repo();
    intake.store.remember_repo(&repo.known()).await?;
    let mirror = intake.git.fetch(&repo.full_name, repo.sha256).await?;
    debug!(repo = %repo.full_name, "fetched");
    let sha = event.sha().to_string();
    if let Some(why) = not_on_its_ref(intake, &mirror, event).await {
        drop(mirror);
        warn!(repo = %repo.full_name, sha = %sha, reason = %why, "event refused: its commit is not on its ref");
        if let Some(d) = delivery {
            intake
                .store
                .finish_delivery(d, DeliveryState::Processed, &why)
                .await?;
        }
        return Ok(Enqueued::default());
    }
    let from_fork = match event {
        Event::PullRequest { .. } => untrusted_pull_request(intake, event).await?,
        Event::Push { .. } => false,
    };
    if let Event::Push {
        git_ref: GitRef::Branch(branch),
        after,
        ..
    } = event
        && *branch == repo.default_branch
    {
        super::commands::remember_merge(intake, repo, after).await?;
    }
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
            } => push_changes(intake, &mirror, branch, &repo.default_branch, before, after).await,
            Event::PullRequest {
                base_branch,
                head_sha,
                ..
            } => {
                let base_ref = format!("refs/heads/{base_branch}");
                match intake.git.merge_base(&mirror, &base_ref, head_sha).await {
                    Some(base) => intake
                        .git
                        .changed_files(&mirror, &base, head_sha)
                        .await
                        .map(Changes::Files),
                    None => intake
                        .git
                        .all_files(&mirror, head_sha)
                        .await
                        .map(Changes::Files),
                }
            }
        }
    };
    let (changes, files) = match tokio::try_join!(changes, intake.git.pipelines_at(&mirror, &sha)) {
        Ok(both) => both,
        Err(e) => {
            // Say the plain thing when the commit itself is missing.
            intake
                .git
                .require_commit(&mirror, &repo.full_name, &sha)
                .await?;
            return Err(e.into());
        }
    };
    drop(mirror);
    let (trigger, pr) = match event {
        Event::Push { git_ref, .. } => (
            Trigger {
                kind: EventKind::Push,
                git_ref: git_ref.clone(),
                changes,
            },
            None,
        ),
        Event::PullRequest {
            number,
            base_branch,
            ..
        } => {
            let trigger = Trigger {
                kind: EventKind::PullRequest,
                git_ref: GitRef::Branch(base_branch.clone()),
                changes,
            };
            (trigger, Some(*number))
        }
    };
    let parsed = files;

    let source = Source::Event { event, from_fork };
    let mut runs = Vec::new();
    for file in parsed {
        let invalid;
        let (pipeline, file_at) = match &file.result {
            Ok(p) if selects(p, &trigger) => (Some(p), FileAt::Valid(p)),
            Ok(_) => continue,
            Err(diags) => {
                invalid = invalid_description(diags);
                let file_at = FileAt::Invalid {
                    name: &file.name,
                    file: &file.file,
                    description: &invalid,
                };
                (None, file_at)
            }
        };
        let cx = RunContext {
            repo: repo.full_name.clone(),
            sha: sha.clone(),
            git_ref: trigger.git_ref.clone(),
            event: trigger.kind,
            pr: pr.map(|n| n as u64),
            run_id: String::new(),
            inputs: pipeline.map(default_inputs).unwrap_or_default(),
            actor: source.actor().to_string(),
        };
        runs.push(RunSpec::new(repo, &cx, file_at, source));
    }
    let enqueued = intake.queue.enqueue(delivery, &runs).await?;
    Ok(enqueued)
}

/// Why the event's commit is not on its ref in the mirror just fetched, if it is not: a
/// push's `after` must be its branch's head or behind it (a tag's must be the tag), a pull
/// request's head must be `refs/pull/<n>/head` or behind it. A payload can name any commit
/// of the repository; only a verified ref ends up in a run and its identity token.
async fn not_on_its_ref(intake: &Intake<'_>, mirror: &Mirror, event: &Event) -> Option<String> {
    let (git_ref, sha, exact) = match event {
        Event::Push { git_ref, after, .. } => (
            git_ref.full(),
            after.as_str(),
            matches!(git_ref, GitRef::Tag(_)),
        ),
        Event::PullRequest {
            number, head_sha, ..
        } => (format!("refs/pull/{number}/head"), head_sha.as_str(), false),
    };
    let Some(tip) = intake.git.resolve(mirror, &git_ref).await else {
        return Some(format!("{git_ref} does not exist in the repository"));
    };
    let Some(commit) = intake.git.resolve(mirror, sha).await else {
        return Some(format!("commit {sha} is not in the repository"));
    };
    if tip == commit || (!exact && intake.git.is_ancestor(mirror, &commit, &tip).await) {
        return None;
    }
    Some(format!(
        "commit {sha} is not on {git_ref} (its tip is {tip})"
    ))
}

/// Whether a pull request runs as untrusted (no secrets, identity token or host volumes):
/// when its head is in another repository, when the payload does not say which (ids
/// missing or 0), and when its author may not write to the base repository (Gitea's AGit
/// flow lets a reader open a pull request whose head is the base repository).
pub(super) async fn untrusted_pull_request(
    intake: &Intake<'_>,
    event: &Event,
) -> Result<bool, IngestError> {
    let Event::PullRequest {
        repo,
        head_repo_id,
        author,
        ..
    } = event
    else {
        return Ok(false);
    };
    if *head_repo_id <= 0 || repo.id <= 0 || *head_repo_id != repo.id || author.is_empty() {
        return Ok(true);
    }
    Ok(!intake.gitea.can_write(&repo.full_name, author).await?)
}

/// Changed files of a branch push, computed with git, never taken from the payload.
async fn push_changes(
    intake: &Intake<'_>,
    mirror: &Mirror,
    branch: &str,
    default_branch: &str,
    before: &str,
    after: &str,
) -> Result<Changes, GitError> {
    if !is_zero(before)
        && let Ok(files) = intake.git.changed_files(mirror, before, after).await
    {
        return Ok(Changes::Files(files));
    }
    // A new branch (or an unknown `before`, after a force push): compare with the default
    // branch; the default branch itself with nothing to compare counts every file.
    if branch != default_branch
        && let Some(base) = intake
            .git
            .merge_base(mirror, &format!("refs/heads/{default_branch}"), after)
            .await
    {
        return Ok(Changes::Files(
            intake.git.changed_files(mirror, &base, after).await?,
        ));
    }
    Ok(Changes::Files(intake.git.all_files(mirror, after).await?))
}

/// `invalid pipeline: .pipewright/x.yml:3:5: unknown key … (+2 more)`.
fn invalid_description(diags: &[Diagnostic]) -> String {
    let first = diags.first().map(|d| d.to_string()).unwrap_or_default();
    match diags.len() {
        0 | 1 => format!("invalid pipeline: {first}"),
        n => format!("invalid pipeline: {first} (+{} more)", n - 1),
    }
}

//! The local agent: claims queued runs (respecting concurrency groups and capacity), runs
//! them on the local Docker engine with leases renewed while they run, and records steps,
//! logs and the final state. One cancellation token per running run.

use super::{Work, agents};
use std::{
    io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use pipewright_containers::{CancellationToken, Executor, Outcome, Stream};
use pipewright_pipelines::{EventKind, PlannedStep, RunContext, plan};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::server::{
    App, work::access::RunAccess, work::plans, work::reattach, work::registry::live_runs_filter,
};
use crate::{
    error_chain,
    logs::LogWriter,
    run::{
        Reports, RunFacts, RunObserver, RunResult, RunSetup, StepResult, run_plan, run_plan_resumed,
    },
    step_io::ReviewedPlan,
    store::{
        Claimant, ReviewedPlanRow, Run, RunEnd, RunState, StepState, comments::NewComment, now_ms,
    },
};

/// At start: the runs this instance left `running` (a previous process of it, killed)
/// are adopted to be re-attached (`reattach.rs`): the claim loop ([`run`]) goes on with
/// them first. Containers of no live run are removed. Nothing is retried on its own: a
/// step that had started is followed, or ends the run as `error` "interrupted" when its
/// container is gone, and is never started again. Other instances' runs are theirs: they
/// end only when their lease expires ([`settle_lost`]).
pub async fn settle_interrupted(work: &Work<'_>) -> anyhow::Result<()> {
    reattach::adopt(work).await?;
    let removed = work
        .executor
        .reap(&live_runs_filter(work.scheduler, work.instance))
        .await?;
    if removed > 0 {
        info!(removed, "removed containers left by a previous process");
    }
    plans::retain(work).await;
    Ok(())
}

/// Ends the runs whose owner stopped renewing their leases (another instance that died,
/// or this one's runs from before a lost database connection that it no longer runs).
pub async fn settle_lost(work: &Work<'_>) {
    let keep = work.scheduler.running_ids();
    match work.store.settle_lost_leases(now_ms(), &keep).await {
        Ok(settled) => {
            for (run_id, owner) in &settled {
                warn!(run_id, owner = %owner, "the run's lease expired: its agent was lost");
            }
            if !settled.is_empty() {
                work.reporter_wake.notify_one();
                work.scheduler.wake();
            }
        }
        Err(e) => warn!(error = ?e, "failed to look for expired leases"),
    }
}

/// Claims and runs until `shutdown`; then waits for the runs under way. Expired leases
/// (of any agent) are looked for every third of a lease, at most every 10 s. With
/// `[agent].capacity = 0` it claims nothing and writes no agent row: it only settles lost
/// leases (a `serve` whose agents run the jobs). It claims only while the engine answers,
/// and wakes on the runs channel (PostgreSQL), on this process's own changes, or every 2 s.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    let capacity = app.config.agent.capacity;
    let name = app.config.agent.name();
    let lease = app.config.agent.lease;
    let _live = (capacity > 0).then(|| AgentLive::new(&app.metrics));
    let stop_helpers = CancellationToken::new();
    let docker_up = Arc::new(AtomicBool::new(false));
    let mut helpers = JoinSet::new();
    helpers.spawn(agents::listen(app.clone(), stop_helpers.clone()).in_current_span());
    if capacity > 0 {
        helpers.spawn(
            agents::heartbeat(
                app.clone(),
                name.clone(),
                docker_up.clone(),
                shutdown.clone(),
                stop_helpers.clone(),
            )
            .in_current_span(),
        );
    }
    let lease_check = (lease / 3).min(Duration::from_secs(10));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut leases_checked: Option<tokio::time::Instant> = None;
    // The runs a previous process of this instance left, adopted at start, go on first.
    for run in app.scheduler.take_resumes() {
        let span = info_span!("run", run_id = run.id, repo = %run.repo, sha = %run.sha, pipeline = %run.pipeline);
        let app2 = app.clone();
        tasks.spawn(async move { execute_in(app2.work(), run, true).await }.instrument(span));
    }
    loop {
        if leases_checked.is_none_or(|at| at.elapsed() >= lease_check) {
            settle_lost(&app.work()).await;
            leases_checked = Some(tokio::time::Instant::now());
        }
        while tasks.len() < capacity
            && !shutdown.is_cancelled()
            && docker_up.load(Ordering::Relaxed)
        {
            let who = Claimant {
                owner: &app.scheduler.owner,
                agent: &name,
                labels: &app.config.agent.labels,
                lease,
            };
            match app.store.claim(&who).await {
                Ok(Some(run)) => {
                    let span = info_span!("run", run_id = run.id, repo = %run.repo, sha = %run.sha, pipeline = %run.pipeline);
                    let app2 = app.clone();
                    tasks.spawn(async move { execute(app2, run).await }.instrument(span));
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(error = ?e, "failed to claim a run");
                    break;
                }
            }
        }
        if shutdown.is_cancelled() {
            app.metrics.agent_draining(true);
        }
        tokio::select! {
            _ = app.scheduler.wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep(Duration::from_secs(2).min(lease_check)) => {}
            _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
        }
        if shutdown.is_cancelled() && tasks.is_empty() {
            break;
        }
    }
    stop_helpers.cancel();
    while helpers.join_next().await.is_some() {}
}

/// Marks the claim loop live in the metrics while it is held.
struct AgentLive<'a>(&'a crate::server::metrics::Metrics);

impl<'a> AgentLive<'a> {
    fn new(metrics: &'a crate::server::metrics::Metrics) -> AgentLive<'a> {
        metrics.agent_live(true);
        AgentLive(metrics)
    }
}

impl Drop for AgentLive<'_> {
    fn drop(&mut self) {
        self.0.agent_live(false);
        self.0.agent_draining(false);
    }
}

async fn execute(app: Arc<App>, run: Run) {
    execute_in(app.work(), run, false).await
}

/// Runs a claimed run, or goes on with one a restart adopted (`resumed`).
async fn execute_in(work: Work<'_>, run: Run, resumed: bool) {
    debug!(resumed, "claimed");
    let (cancel, reason) = work.scheduler.register(run.id);
    let lease = {
        let (store, owner) = (work.store.clone(), work.scheduler.owner.clone());
        let (id, cancel) = (run.id, cancel.clone());
        let lease = work.config.agent.lease;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew_lease_for(id, &owner, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!(run_id = id, "lost the lease of the run: stopping it");
                        cancel.cancel();
                        return;
                    }
                    Err(e) => warn!(run_id = id, error = ?e, "failed to renew the lease"),
                }
            }
        })
    };
    let reviewed = plans::reviewed_for(&work, &run).await;
    let outcome = match &reviewed {
        Ok(reviewed) => run_checked_out(&work, &run, reviewed.as_ref(), &cancel, resumed).await,
        Err(why) => Err(why.clone()),
    };
    let reviewed = reviewed.ok().flatten();
    let reports = outcome.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
    let (state, description) = match outcome.map(|(result, _)| result) {
        Ok(RunResult::Success) => (
            RunState::Success,
            reports
                .summary
                .clone()
                .unwrap_or_else(|| "all steps succeeded".to_string()),
        ),
        Ok(RunResult::Failure { step, why }) => (RunState::Failure, format!("step {step} {why}")),
        Ok(RunResult::Error(why)) => (RunState::Error, why),
        Ok(RunResult::Cancelled) => {
            let why = reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "cancelled".into());
            (RunState::Cancelled, why)
        }
        Err(why) => (RunState::Error, why),
    };
    lease.abort();
    info!(state = state.as_str(), description = %description, "run finished");
    let comment = match (run.pr, reports.plan_comment.clone()) {
        // A merge whose plan is not the reviewed one: the pull request says what differs.
        (None, Some(comment)) if state == RunState::Failure => reviewed
            .as_ref()
            .and_then(|r| merge_differences(&work, &run, r, &comment.plan)),
        (Some(pr), Some(comment)) => {
            let marker = plan_marker(&run.pipeline);
            let body = comment.plan.comment(
                &marker,
                &format!("pipewright/{}", run.pipeline),
                &format!("{}/runs/{}", work.public_url, run.id),
            );
            let repo = run.status_repo.clone();
            Some(NewComment {
                repo,
                pr,
                marker,
                body,
            })
        }
        _ => None,
    };
    // A pull request's plan becomes the reviewed plan once its files are kept.
    let keeps = state == RunState::Success
        && plans::is_pull_request_plan(&run)
        && !reports.saved_plans.is_empty();
    let kept = if keeps {
        match plans::keep(&work, run.id, &reports.saved_plans) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "failed to keep the plan files: the plan cannot be applied with /pipewright apply");
                false
            }
        }
    } else {
        false
    };
    let reviewed_row = match (&reports.plan_comment, run.pr) {
        (Some(comment), Some(pr)) if kept => Some(ReviewedPlanRow {
            repo: run.repo.clone(),
            pr,
            pipeline: run.pipeline.clone(),
            sha: run.sha.clone(),
            run_id: run.id,
            changes: comment.plan.changes.clone(),
            applied_run: None,
        }),
        _ => None,
    };
    let applied = (state == RunState::Success && plans::is_comment_apply(&run)).then(|| {
        (
            run.repo.as_str(),
            run.pr.unwrap_or_default(),
            run.pipeline.as_str(),
        )
    });
    let end = RunEnd {
        comment: comment.as_ref(),
        reviewed: reviewed_row.as_ref(),
        applied,
    };
    match work
        .store
        .finish_run_reviewing(run.id, state, &description, &end)
        .await
    {
        Ok(Some(replaced)) => plans::forget(&work, replaced),
        Ok(None) => {}
        Err(e) => {
            warn!(error = ?e, "failed to record the end of the run");
            if kept {
                plans::forget(&work, run.id);
            }
        }
    }
    work.scheduler
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&run.id);
    work.scheduler.wake();
    work.reporter_wake.notify_one();
}

/// Marks Pipewright's plan comment of a pipeline, so the next push edits it.
fn plan_marker(pipeline: &str) -> String {
    format!("<!-- pipewright:plan {pipeline} -->")
}

/// The comment on a merged pull request whose merge planned other changes than the
/// reviewed ones (and so applied nothing).
fn merge_differences(
    work: &Work<'_>,
    run: &Run,
    reviewed: &ReviewedPlan,
    plan: &pipewright_actions::tofu::PlanSummary,
) -> Option<NewComment> {
    let reviewed = &reviewed.reviewed;
    if !plan.has_changes() || plan.differences(&reviewed.changes).is_empty() {
        return None;
    }
    let marker = format!("<!-- pipewright:merge {} {} -->", run.pipeline, run.sha);
    let body = plan.differences_comment(
        &marker,
        &format!("pipewright/{}", run.pipeline),
        reviewed,
        &format!("{}/runs/{}", work.public_url, run.id),
    );
    Some(NewComment {
        repo: run.status_repo.clone(),
        pr: reviewed.pr,
        marker,
        body,
    })
}

/// Reads the pipeline at the run's commit, checks it out, and runs its plan. `Err` is a
/// description for an `error` status.
type Ran = Result<(RunResult, Reports), String>;

async fn run_checked_out(
    work: &Work<'_>,
    run: &Run,
    reviewed: Option<&ReviewedPlan>,
    cancel: &CancellationToken,
    resumed: bool,
) -> Ran {
    let mirror = work
        .git
        .with_commit(&run.repo, &run.sha)
        .await
        .map_err(|e| format!("git: {}", error_chain(&e)))?;
    let pipeline = work
        .git
        .pipelines_at(&mirror, &run.sha)
        .await
        .map_err(|e| format!("git: {}", error_chain(&e)))?
        .into_iter()
        .find(|f| f.name == run.pipeline)
        .and_then(|f| f.result.ok())
        .ok_or_else(|| {
            format!(
                "pipeline {} is no longer valid at {}",
                run.pipeline, run.sha
            )
        })?;
    let cx = RunContext {
        repo: run.repo.clone(),
        sha: run.sha.clone(),
        git_ref: run.git_ref.clone(),
        event: run.event,
        pr: run.pr.map(|n| n as u64),
        run_id: run.id.to_string(),
        inputs: run.inputs.clone(),
        actor: run.actor.clone(),
    };
    debug!("pipeline read");
    let mut planned = plan(&pipeline, &cx);
    check_volumes(work, run, &mut planned)?;
    // An adopted run that had not begun starts over; one that had goes on.
    let go_on = match resumed {
        true => reattach::had_begun(work, run, &planned).await?,
        false => false,
    };
    // Vault before anything else: when it fails, no step runs. An adopted run takes over
    // the secret files its containers may mount.
    let access = RunAccess::open_for(work, run, &pipeline, resumed).await?;
    let result = match go_on {
        false => run_with_access(work, run, &planned, mirror, &access, reviewed, cancel).await,
        true => go_on_with_access(work, run, &planned, &access, reviewed, cancel).await,
    };
    access.close(work).await;
    result.map_err(|why| access.masker().mask_str(&why))
}

async fn run_with_access(
    work: &Work<'_>,
    run: &Run,
    planned: &pipewright_pipelines::Plan,
    mirror: crate::git::Mirror,
    access: &RunAccess<'_>,
    reviewed: Option<&ReviewedPlan>,
    cancel: &CancellationToken,
) -> Ran {
    let names: Vec<(i64, String)> = planned
        .steps
        .iter()
        .map(|s| (s.index as i64, s.name.clone()))
        .collect();
    work.store
        .insert_steps(run.id, &names)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let workspace = workspace_dir(work, run.id);
    let _ = std::fs::remove_dir_all(&workspace);
    // Removed on every way out: a failed checkout, the end of the run, a panic.
    let removal = RemovedOnDrop(&workspace);
    // The directory exists before the checkout fills it, so that the first step's
    // container can be created (with its bind mount) while git works.
    std::fs::create_dir_all(&workspace).map_err(|e| format!("workspace: {e}"))?;
    let (opener, workspace_ready) = pipewright_containers::StartGate::new();
    let checkout = async {
        let checked = work
            .git
            .checkout(&mirror, &run.sha, &workspace)
            .await
            .map_err(|e| format!("checkout: {}", error_chain(&e)));
        debug!("checked out");
        drop(mirror);
        opener.open(checked.clone());
        checked
    };
    let extras = |step: &PlannedStep| access.extras(work, step);
    let run_id = run.id.to_string();
    let setup = run_setup(
        work,
        run,
        &run_id,
        &workspace,
        &extras,
        access,
        reviewed,
        Some(workspace_ready),
    );
    let mut observer = StoreObserver {
        work,
        run_id: run.id,
        writer: Err(String::new()),
        log_lost: None,
        followed: None,
    };
    let executor = crate::server::work::images::Pinned {
        inner: work.executor.clone(),
        store: work.store.clone(),
        repo: run.repo.clone(),
        run_id: run.id,
        trusted: is_trusted(run),
        registries: work.registries.clone(),
    };
    let (checked, result) = tokio::join!(
        checkout,
        run_plan(&executor, planned, &setup, &mut observer, cancel)
    );
    drop(removal);
    checked?;
    let (result, reports) =
        result.map_err(|e| format!("the Docker engine failed: {}", error_chain(&e)))?;
    // A step's log whose end could not be written: the run is an error, as when a line
    // could not be.
    let result = match (result, observer.log_lost.take()) {
        (RunResult::Success | RunResult::Failure { .. }, Some(why)) => RunResult::Error(why),
        (result, _) => result,
    };
    let result = match result {
        RunResult::Failure { step, why } => RunResult::Failure {
            step,
            why: access.masker().mask_str(&why),
        },
        RunResult::Error(why) => RunResult::Error(access.masker().mask_str(&why)),
        other => other,
    };
    Ok((result, reports))
}

/// What `run_plan` is given for a run of the server: its facts, its workspace, its access.
#[allow(clippy::too_many_arguments)]
fn run_setup<'a>(
    work: &'a Work<'_>,
    run: &'a Run,
    run_id: &'a str,
    workspace: &'a Path,
    extras: crate::step_io::Extras<'a>,
    access: &'a RunAccess<'_>,
    reviewed: Option<&'a ReviewedPlan>,
    workspace_ready: Option<pipewright_containers::StartGate>,
) -> RunSetup<'a> {
    RunSetup {
        run_id,
        instance: work.instance,
        workspace,
        defaults: work.defaults,
        extras,
        facts: RunFacts {
            repo: &run.repo,
            from_fork: run.from_fork,
            event: run.event,
            git_ref: &run.git_ref,
            default_branch: &run.default_branch,
            inputs: &run.inputs,
            reviewed,
        },
        services: access,
        network: work.config.docker.network.as_deref(),
        volumes_resolved: true,
        workspace_ready,
        remove_pushed: Some(&work.config.docker.pin_images),
    }
}

/// [`run_with_access`] for a run a restart adopted: its workspace is the one its steps
/// left (not checked out again), and it goes on where `reattach::prepare` says.
async fn go_on_with_access(
    work: &Work<'_>,
    run: &Run,
    planned: &pipewright_pipelines::Plan,
    access: &RunAccess<'_>,
    reviewed: Option<&ReviewedPlan>,
    cancel: &CancellationToken,
) -> Ran {
    let workspace = workspace_dir(work, run.id);
    let resume = reattach::prepare(work, run, planned).await?;
    // Removed however the run ends, as a run's workspace always is.
    let _removal = RemovedOnDrop(&workspace);
    if resume.from < planned.steps.len() && !workspace.is_dir() {
        return Err(
            "interrupted: the run's workspace is gone since Pipewright stopped; not retried automatically"
                .into(),
        );
    }
    let extras = |step: &PlannedStep| access.extras(work, step);
    let run_id = run.id.to_string();
    let setup = run_setup(
        work, run, &run_id, &workspace, &extras, access, reviewed, None,
    );
    let mut observer = StoreObserver {
        work,
        run_id: run.id,
        writer: Err(String::new()),
        log_lost: None,
        followed: match resume.step {
            Some(crate::run::ResumedStep::Follow { .. }) => Some(resume.from),
            _ => None,
        },
    };
    let executor = crate::server::work::images::Pinned {
        inner: work.executor.clone(),
        store: work.store.clone(),
        repo: run.repo.clone(),
        run_id: run.id,
        trusted: is_trusted(run),
        registries: work.registries.clone(),
    };
    let (result, reports) =
        run_plan_resumed(&executor, planned, &setup, &mut observer, cancel, &resume)
            .await
            .map_err(|e| format!("the Docker engine failed: {}", error_chain(&e)))?;
    let result = match result {
        RunResult::Failure { step, why } => RunResult::Failure {
            step,
            why: access.masker().mask_str(&why),
        },
        RunResult::Error(why) => RunResult::Error(access.masker().mask_str(&why)),
        other => other,
    };
    Ok((result, reports))
}

/// Host paths may be mounted only when the repository's policy lists them (or a parent),
/// compared once both are resolved (symbolic links followed); the resolved path is what is
/// mounted. A path that does not exist is refused, and a fork's pull request mounts nothing.
fn check_volumes(
    work: &Work<'_>,
    run: &Run,
    planned: &mut pipewright_pipelines::Plan,
) -> Result<(), String> {
    let repo = &run.repo;
    let allowed: Vec<PathBuf> = work
        .config
        .repo_policy(repo)
        .map(|p| p.host_volumes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| std::fs::canonicalize(a).ok())
        .collect();
    for step in &mut planned.steps {
        for volume in &mut step.volumes {
            if run.from_fork {
                return Err(format!(
                    "step {} mounts {}: a pull request from a fork gets no host volumes",
                    step.name, volume.host
                ));
            }
            let resolved = std::fs::canonicalize(&volume.host).map_err(|e| {
                format!(
                    "step {} mounts {}, which cannot be resolved on the host: {e}",
                    step.name, volume.host
                )
            })?;
            if !allowed.iter().any(|a| resolved.starts_with(a)) {
                return Err(format!(
                    "step {} mounts {}, which [[repos]] host_volumes does not allow for {repo}",
                    step.name, volume.host
                ));
            }
            volume.host = resolved
                .to_str()
                .ok_or_else(|| format!("step {} mounts a path that is not UTF-8", step.name))?
                .to_string();
        }
    }
    Ok(())
}

/// A run whose ref only people with write access move: it must not run images that an
/// untrusted run could have made (see `images.rs`).
fn is_trusted(run: &Run) -> bool {
    match run.event {
        EventKind::Push => run.git_ref.branch() == Some(run.default_branch.as_str()),
        EventKind::Dispatch | EventKind::Schedule => true,
        EventKind::PullRequest | EventKind::Comment => false,
    }
}

/// A run's workspace, removed when this is dropped.
struct RemovedOnDrop<'a>(&'a Path);

impl Drop for RemovedOnDrop<'_> {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(self.0) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                warn!(error = %e, path = %self.0.display(), "failed to remove the workspace")
            }
            _ => {}
        }
    }
}

fn workspace_dir(work: &Work<'_>, run: i64) -> PathBuf {
    work.config
        .server
        .data_dir
        .join("workspaces")
        .join(format!("run-{run}"))
}

/// Records steps in the database and their output in the log store.
struct StoreObserver<'a> {
    work: &'a Work<'a>,
    run_id: i64,
    /// The step's log, or why it could not be created.
    writer: Result<LogWriter, String>,
    /// Why the end of a step's log could not be written (the run then ends as `error`).
    log_lost: Option<String>,
    /// The step a restart follows: its log goes on, its start stays the recorded one.
    followed: Option<usize>,
}

impl RunObserver for StoreObserver<'_> {
    async fn step_started(&mut self, step: &PlannedStep) {
        if self.followed == Some(step.index) {
            self.writer = self
                .work
                .logs
                .appender(self.run_id, step.index as i64)
                .await
                .map_err(|e| {
                    warn!(error = %e, step = %step.name, "failed to open the step's log");
                    e.to_string()
                });
            return;
        }
        self.writer = match self.work.logs.writer(self.run_id, step.index as i64) {
            Ok(w) => Ok(w),
            Err(e) => {
                warn!(error = %e, step = %step.name, "failed to create the step's log");
                Err(e.to_string())
            }
        };
        if let Err(e) = self
            .work
            .store
            .step_started(self.run_id, step.index as i64)
            .await
        {
            warn!(error = ?e, step = %step.name, "failed to record the step's start");
        }
    }

    fn step_output(&mut self, step: &PlannedStep, _stream: Stream, line: &[u8]) -> io::Result<()> {
        match &mut self.writer {
            Ok(w) => w.line(line).inspect_err(|e| {
                warn!(run_id = self.run_id, step = %step.name, error = %e, "the step's log cannot be written; stopping the step");
            }),
            Err(why) => Err(io::Error::other(why.clone())),
        }
    }

    fn output_begins(&mut self, _step: &PlannedStep) -> io::Result<()> {
        match &self.writer {
            Ok(w) => w.mark_output_start(),
            Err(_) => Ok(()),
        }
    }

    async fn step_finished(
        &mut self,
        step: &PlannedStep,
        result: &StepResult,
        elapsed: Duration,
    ) -> bool {
        // The rest of the log is written before the step's end is recorded: a finished
        // step's log is complete (in the database, lines wait in batches).
        let log_lost = match std::mem::replace(&mut self.writer, Err(String::new())) {
            Ok(writer) => writer.finish().await.err(),
            Err(_) => None,
        };
        let (mut state, mut description, exit_code) = match result {
            StepResult::Skipped => (
                StepState::Skipped,
                "its `when` excludes this event".to_string(),
                None,
            ),
            StepResult::NotRun => (
                StepState::NotRun,
                "an earlier step failed".to_string(),
                None,
            ),
            StepResult::NotNeeded => (
                StepState::Skipped,
                "it runs only after a failure (`when.status`)".to_string(),
                None,
            ),
            StepResult::Ran(Outcome::Succeeded) => {
                (StepState::Success, "succeeded".to_string(), Some(0))
            }
            StepResult::Ran(o @ Outcome::Failed { exit_code }) => {
                (StepState::Failure, o.to_string(), Some(*exit_code))
            }
            StepResult::Ran(o @ Outcome::Cancelled) => (StepState::Cancelled, o.to_string(), None),
            StepResult::Ran(
                o @ (Outcome::ImageUnavailable { .. } | Outcome::StartFailed { .. }),
            ) => (StepState::Error, o.to_string(), None),
            StepResult::Ran(o) => (StepState::Failure, o.to_string(), None),
            StepResult::Failed(why) => (StepState::Failure, why.clone(), None),
            StepResult::Unrunnable(why) => (StepState::Error, why.clone(), None),
        };
        if let Some(e) = log_lost
            && state != StepState::Error
        {
            warn!(run_id = self.run_id, step = %step.name, error = %e, "the end of the step's log cannot be written");
            state = StepState::Error;
            description = e.to_string();
            self.log_lost.get_or_insert_with(|| e.to_string());
        }
        if !matches!(
            result,
            StepResult::Skipped | StepResult::NotRun | StepResult::NotNeeded
        ) {
            self.work.metrics.step(state, elapsed);
        }
        match self
            .work
            .store
            .step_finished(
                self.run_id,
                step.index as i64,
                state,
                &description,
                exit_code,
            )
            .await
        {
            Ok(()) => true,
            Err(e) => {
                warn!(error = ?e, step = %step.name, "failed to record the step's end; its container is left for the reaper");
                false
            }
        }
    }
}

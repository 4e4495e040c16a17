//! Pipewright as a Gitea Actions runner (`[gitea_actions]`): registration kept in
//! `data_dir/gitea-runner.json`, `Declare` at start, `FetchTask` every 2 s while idle (with
//! Gitea's tasks version), each task dispatched as a Pipewright pipeline, and its run
//! reported back: the masked step output as log rows (`UpdateLog`), the state as a
//! heartbeat and then the result (`UpdateTask`), whose answer is how a cancel in Gitea
//! reaches the run.
//!
//! A task maps to the pipeline named by its job's `env.PIPEWRIGHT_PIPELINE`, else by the
//! workflow file's name without extension, of the task's repository at its ref; the inputs
//! come from `context.event.inputs` (text; an empty value takes the default) and are checked
//! like any dispatch's. A task that cannot be mapped fails at once with a log row saying
//! why. Which task started which run is stored (`gitea_tasks`), so that a restart finishes
//! reporting what it took. Gitea unreachable: the poller backs off (2 s doubling to 30 s)
//! and carries on where it was.
//!
//! Gitea's step list is the stub workflow's: all of the run's output is its first step's
//! log, each Pipewright step opened by a `── <step>` row and closed by one with its state;
//! further stub steps are reported skipped.

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use pipewright_containers::CancellationToken;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Intake, dispatch, spec::Source};
use crate::{
    config::Secret,
    error_chain,
    gitea::{
        actions::{
            ActionsClient, ActionsError, LogRow, RunnerCredentials, StepState as GiteaStep, Task,
            TaskResult, TaskState,
        },
        http_client,
    },
    logs::{LogCursor, LogStore},
    store::{GiteaTask, Run, RunState, StepRow, StepState, now_ms},
    time::rfc3339,
};

/// How often Gitea is asked for a task while nothing runs.
const POLL: Duration = Duration::from_secs(2);
/// How often a running task's log and state are sent (well under Gitea's 10 min zombie
/// timeout).
const BUSY_POLL: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Rows per `UpdateLog`.
const LOG_BATCH: usize = 500;
/// Gitea cuts a row at 64 KiB (`MaxLineSize`).
const MAX_ROW: usize = 64 << 10;
/// The file that keeps the runner's registration.
pub const CREDENTIALS_FILE: &str = "gitea-runner.json";

/// What the runner uses: the intake's parts (to dispatch, to cancel through the
/// scheduler), the step logs, and the public URL for the link to the run.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    pub intake: Intake<'a>,
    pub logs: &'a LogStore,
    pub data_dir: &'a Path,
    pub public_url: &'a str,
}

/// The registration as kept on disk (mode 0600): Gitea's uuid and token of this runner.
#[derive(Serialize, Deserialize)]
struct Stored {
    gitea: String,
    id: String,
    uuid: String,
    token: String,
    name: String,
}

/// Runs until `stop`: does nothing when `[gitea_actions]` is off.
pub async fn run(parts: Parts<'_>, stop: CancellationToken) {
    let config = &parts.intake.config;
    if !config.gitea_actions.enabled() {
        stop.cancelled().await;
        return;
    }
    let client = match http_client(config.gitea.ca_file.as_deref()) {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %error_chain(&e), "Gitea Actions: no HTTP client");
            stop.cancelled().await;
            return;
        }
    };
    let url = config.gitea.url.clone().unwrap_or_default();
    let mut runner = Runner {
        parts,
        client: ActionsClient::new(&url, client),
        url,
        credentials: None,
        declared: false,
        tasks_version: 0,
        rows: HashMap::new(),
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match runner.pass().await {
            Ok(busy) => {
                if backoff > FIRST_BACKOFF {
                    info!("Gitea Actions: Gitea answers again");
                }
                backoff = FIRST_BACKOFF;
                if busy { BUSY_POLL } else { POLL }
            }
            Err(why) => {
                warn!(error = %why, retry_in = ?backoff, "Gitea Actions");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

struct Runner<'a> {
    parts: Parts<'a>,
    client: ActionsClient,
    url: String,
    credentials: Option<RunnerCredentials>,
    declared: bool,
    tasks_version: i64,
    /// Per open task, where its log rows stand, so that a pass reads only what is new.
    rows: HashMap<i64, Rows>,
}

/// Why a pass stopped; the poller waits (backing off) and tries again.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Gitea(#[from] ActionsError),
    #[error("the database failed")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Local(String),
}

impl Runner<'_> {
    fn version() -> String {
        format!("pipewright {}", env!("CARGO_PKG_VERSION"))
    }

    fn labels(&self) -> &[String] {
        &self.parts.intake.config.gitea_actions.labels
    }

    /// One round: registration, the open tasks reported, a new task asked for when there
    /// is room. `Ok(true)`: tasks are open.
    async fn pass(&mut self) -> Result<bool, PassError> {
        let result = self.pass_inner().await;
        if let Err(PassError::Gitea(e)) = &result
            && e.is_unregistered()
        {
            // Deleted in Gitea's settings: a new registration next time.
            warn!("Gitea Actions: Gitea no longer knows this runner; registering again");
            let _ = std::fs::remove_file(self.credentials_path());
            self.credentials = None;
            self.declared = false;
        }
        result
    }

    async fn pass_inner(&mut self) -> Result<bool, PassError> {
        let credentials = self.credentials().await?;
        if !self.declared {
            self.client
                .declare(&credentials, &Self::version(), self.labels())
                .await?;
            self.declared = true;
            info!(labels = ?self.labels(), "Gitea Actions: runner declared");
        }
        let open = self.parts.intake.store.open_gitea_tasks().await?;
        let mut still_open = 0;
        for task in &open {
            if !self.report(&credentials, task).await? {
                still_open += 1;
            }
        }
        if still_open >= self.parts.intake.config.agent.capacity {
            return Ok(true);
        }
        let fetched = self
            .client
            .fetch_task(&credentials, self.tasks_version)
            .await?;
        // Gitea's version only grows; after a task, look again whatever it says.
        self.tasks_version = self.tasks_version.max(fetched.tasks_version);
        match fetched.task {
            Some(task) => {
                self.tasks_version = 0;
                self.take(&task).await?;
                Ok(true)
            }
            None => Ok(still_open > 0),
        }
    }

    fn credentials_path(&self) -> PathBuf {
        self.parts.data_dir.join(CREDENTIALS_FILE)
    }

    /// The kept registration, or a new one (written before it is used).
    async fn credentials(&mut self) -> Result<RunnerCredentials, PassError> {
        if let Some(c) = &self.credentials {
            return Ok(c.clone());
        }
        let path = self.credentials_path();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) if stored.gitea == self.url => {
                    let c = RunnerCredentials {
                        uuid: stored.uuid,
                        token: Secret::new(stored.token),
                    };
                    self.credentials = Some(c.clone());
                    return Ok(c);
                }
                Ok(stored) => warn!(
                    file = %path.display(), registered_with = %stored.gitea,
                    "Gitea Actions: the kept registration is another Gitea's; registering again"
                ),
                Err(e) => warn!(file = %path.display(), error = %e,
                    "Gitea Actions: the kept registration cannot be read; registering again"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(PassError::Local(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
        let config = &self.parts.intake.config.gitea_actions;
        let Some(token) = &config.registration_token else {
            return Err(PassError::Local("no registration token".to_owned()));
        };
        let runner = self
            .client
            .register(token, &config.name, &Self::version(), &config.labels)
            .await?;
        let stored = Stored {
            gitea: self.url.clone(),
            id: runner.id.to_string(),
            uuid: runner.uuid.clone(),
            token: runner.token.clone(),
            name: runner.name.clone(),
        };
        write_private(
            &path,
            &serde_json::to_vec_pretty(&stored).unwrap_or_default(),
        )
        .map_err(|e| PassError::Local(format!("cannot write {}: {e}", path.display())))?;
        info!(uuid = %runner.uuid, name = %runner.name, "Gitea Actions: registered as a runner");
        let c = RunnerCredentials {
            uuid: runner.uuid,
            token: Secret::new(runner.token),
        };
        self.credentials = Some(c.clone());
        // Register stored the labels; Declare adds the version on every start.
        self.declared = false;
        Ok(c)
    }

    /// A task from Gitea: dispatched, or refused with the reason; recorded either way, so
    /// that it is reported (a fetched task never goes unreported).
    async fn take(&self, task: &Task) -> Result<(), PassError> {
        let store = self.parts.intake.store;
        let (steps, mapped) = match map_task(task) {
            Ok((steps, mapped)) => (steps, Ok(mapped)),
            Err((steps, why)) => (steps, Err(why)),
        };
        let outcome = match mapped {
            Ok(m) => self.dispatch(task.id, &m).await,
            Err(why) => Err(why),
        };
        match outcome {
            Ok(run) => {
                info!(task = task.id, run, "Gitea Actions: task dispatched");
                store
                    .take_gitea_task(task.id, Some(run), None, steps)
                    .await?
            }
            Err(why) => {
                info!(task = task.id, reason = %why, "Gitea Actions: task refused");
                store
                    .take_gitea_task(task.id, None, Some(&why), steps)
                    .await?
            }
        }
        Ok(())
    }

    async fn dispatch(&self, task_id: i64, m: &Mapped) -> Result<i64, String> {
        let intake = &self.parts.intake;
        let target =
            dispatch::dispatchable(intake, &m.owner, &m.name, &m.pipeline, Some(&m.git_ref))
                .await
                .map_err(|r| r.1)?;
        let source = Source::GiteaTask {
            actor: &m.actor,
            task_id,
        };
        dispatch::dispatch(intake, &target, &m.inputs, source)
            .await
            .map_err(|r| r.1)
    }

    /// Sends what is new of a task (log rows, state); `Ok(true)` once Gitea has its end.
    async fn report(
        &mut self,
        credentials: &RunnerCredentials,
        task: &GiteaTask,
    ) -> Result<bool, PassError> {
        let store = self.parts.intake.store;
        let (run, steps) = match task.run_id {
            Some(id) => match store.run(id).await? {
                Some(run) => {
                    let steps = store.steps(id).await?;
                    (Some(run), steps)
                }
                None => (None, Vec::new()),
            },
            None => (None, Vec::new()),
        };
        let now = now_ms();
        let rows = self.rows.entry(task.task_id).or_default();
        let result = match (&task.refusal, &run) {
            (Some(why), _) => {
                rows.only(format!("Pipewright cannot run this task: {why}"));
                Some(TaskResult::Failure)
            }
            (None, None) => {
                rows.only(format!(
                    "Pipewright run {} no longer exists",
                    task.run_id.unwrap_or_default()
                ));
                Some(TaskResult::Failure)
            }
            (None, Some(run)) => {
                let over = run.state.is_finished();
                rows.read(self.parts.logs, run.id, over, &steps, task.log_acked)
                    .await;
                let result = run.state.is_finished().then(|| result_of(run.state));
                if result.is_some() && !rows.ended {
                    rows.ended = true;
                    rows.push(format!(
                        "Pipewright run {} ended: {} ({}) {}/runs/{}",
                        run.id,
                        run.state.as_str(),
                        run.description,
                        self.parts.public_url,
                        run.id
                    ));
                }
                result
            }
        };
        let total = rows.next;
        let mut acked = task.log_acked.min(total);
        while acked < total {
            rows.acked(acked);
            let last = acked + rows.pending.len().min(LOG_BATCH) as i64 == total;
            let batch: Vec<LogRow> = rows
                .pending
                .iter()
                .take(LOG_BATCH)
                .map(|content| LogRow {
                    time: rfc3339(now),
                    content: content.clone(),
                })
                .collect();
            match self
                .client
                .update_log(
                    credentials,
                    task.task_id,
                    acked,
                    &batch,
                    last && result.is_some(),
                )
                .await
            {
                Ok(ack) if ack > acked => acked = ack.min(total),
                Ok(_) => break,
                // The log was closed by Gitea (a cancel or a zombie stop): nothing more
                // can be added.
                Err(ActionsError::Connect { message, .. })
                    if message.contains("AlreadyExists") || message.contains("archived") =>
                {
                    acked = total;
                    break;
                }
                Err(e) if e.is_transient() || e.is_unregistered() => return Err(e.into()),
                Err(e) => {
                    warn!(task = task.task_id, error = %e, "Gitea Actions: log rows refused");
                    break;
                }
            }
            store.gitea_task_acked(task.task_id, acked).await?;
        }
        rows.acked(acked);
        store.gitea_task_acked(task.task_id, acked).await?;

        let started = run
            .as_ref()
            .and_then(|r| r.started_at)
            .or(run.as_ref().map(|r| r.created_at))
            .unwrap_or(now);
        let stopped = run.as_ref().and_then(|r| r.finished_at).unwrap_or(now);
        let state = TaskState {
            id: task.task_id,
            result: result.unwrap_or_default(),
            started_at: Some(rfc3339(started)),
            stopped_at: result.map(|_| rfc3339(stopped)),
            steps: (0..task.steps.max(1))
                .map(|i| {
                    if i == 0 {
                        GiteaStep {
                            id: 0,
                            result: result.unwrap_or_default(),
                            started_at: Some(rfc3339(started)),
                            stopped_at: result.map(|_| rfc3339(stopped)),
                            log_index: 0,
                            log_length: acked,
                        }
                    } else {
                        GiteaStep {
                            id: i,
                            result: match result {
                                Some(_) => TaskResult::Skipped,
                                None => TaskResult::Unspecified,
                            },
                            started_at: None,
                            stopped_at: result.map(|_| rfc3339(stopped)),
                            log_index: acked,
                            log_length: 0,
                        }
                    }
                })
                .collect(),
        };
        let held = match self.client.update_task(credentials, &state).await {
            Ok(held) => held,
            Err(e) if e.is_transient() || e.is_unregistered() => return Err(e.into()),
            Err(e) => {
                // Not this runner's task any more, or unknown to Gitea: nothing to report to.
                warn!(task = task.task_id, error = %e, "Gitea Actions: the task's state is refused; giving it up");
                store.gitea_task_reported(task.task_id).await?;
                self.rows.remove(&task.task_id);
                return Ok(true);
            }
        };
        if result.is_some() {
            store.gitea_task_reported(task.task_id).await?;
            self.rows.remove(&task.task_id);
            return Ok(true);
        }
        if held != TaskResult::Unspecified
            && let Some(run) = &run
        {
            // Cancelled in Gitea (or given up by it): the run stops; its end is reported
            // when it comes.
            let why = match held {
                TaskResult::Cancelled => "cancelled in Gitea".to_owned(),
                other => format!("Gitea ended the task ({})", other.name()),
            };
            self.cancel(run, &why).await?;
        }
        Ok(false)
    }

    /// Cancels a queued or running run (`Scheduler::cancel` for a running one).
    async fn cancel(&self, run: &Run, why: &str) -> Result<(), PassError> {
        let queue = &self.parts.intake.queue;
        match run.state {
            RunState::Running => {
                queue.scheduler.cancel(run.id, why);
            }
            RunState::Queued => {
                queue
                    .store
                    .finish_run(run.id, RunState::Cancelled, why)
                    .await?;
                queue.reporter_wake.notify_one();
                queue.scheduler.wake();
            }
            _ => {}
        }
        Ok(())
    }
}

/// A task as a dispatch: what to run, where, with what, for whom.
#[derive(Debug, PartialEq, Eq)]
struct Mapped {
    owner: String,
    name: String,
    pipeline: String,
    git_ref: String,
    inputs: Vec<(String, String)>,
    actor: String,
}

/// The task's workflow steps (at least 1) and its dispatch, or why it cannot be one.
fn map_task(task: &Task) -> Result<(i64, Mapped), (i64, String)> {
    let text = String::from_utf8_lossy(&task.workflow_payload);
    let workflow = pipewright_pipelines::yaml_to_json(&text)
        .map_err(|e| (1, format!("the task's workflow is not YAML: {e}")))?;
    let jobs = workflow
        .get("jobs")
        .and_then(serde_json::Value::as_object)
        .filter(|jobs| jobs.len() == 1)
        .ok_or((
            1,
            "the task's workflow does not have exactly one job".to_owned(),
        ))?;
    let job = jobs.values().next().cloned().unwrap_or_default();
    let steps = job
        .get("steps")
        .and_then(serde_json::Value::as_array)
        .map_or(0, |s| s.iter().filter(|s| !s.is_null()).count());
    let steps = i64::try_from(steps).unwrap_or(1).max(1);
    let refuse = |why: String| (steps, why);
    let event_name = task.context_str("event_name");
    if event_name != "workflow_dispatch" {
        return Err(refuse(format!(
            "Pipewright runs only \"Run workflow\" (workflow_dispatch) tasks, and this one is from `{event_name}`"
        )));
    }
    let pipeline = match job
        .get("env")
        .and_then(|env| env.get("PIPEWRIGHT_PIPELINE"))
    {
        Some(serde_json::Value::String(name)) if !name.trim().is_empty() => name.trim().to_owned(),
        Some(_) => {
            return Err(refuse(
                "the job's `env.PIPEWRIGHT_PIPELINE` is not a pipeline name".to_owned(),
            ));
        }
        None => {
            let file = task.context_str("workflow");
            let file = file.rsplit('/').next().unwrap_or(file);
            let stem = file
                .strip_suffix(".yml")
                .or_else(|| file.strip_suffix(".yaml"))
                .unwrap_or(file);
            if stem.is_empty() {
                return Err(refuse(
                    "the task names no workflow file, and its job no `env.PIPEWRIGHT_PIPELINE`"
                        .to_owned(),
                ));
            }
            stem.to_owned()
        }
    };
    let repository = task.context_str("repository");
    let (owner, name) = repository.split_once('/').ok_or_else(|| {
        refuse(format!(
            "the task's repository {repository:?} is not owner/name"
        ))
    })?;
    let git_ref = task.context_str("ref");
    if git_ref.is_empty() {
        return Err(refuse("the task names no ref".to_owned()));
    }
    let mut inputs = Vec::new();
    if let Some(given) = task
        .context
        .get("event")
        .and_then(|e| e.get("inputs"))
        .and_then(serde_json::Value::as_object)
    {
        for (key, value) in given {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            // The form's empty field: the input's default.
            if !value.is_empty() {
                inputs.push((key.clone(), value));
            }
        }
    }
    let actor = match task.context_str("actor") {
        "" => "gitea".to_owned(),
        actor => actor.to_owned(),
    };
    Ok((
        steps,
        Mapped {
            owner: owner.to_owned(),
            name: name.to_owned(),
            pipeline,
            git_ref: git_ref.to_owned(),
            inputs,
            actor,
        },
    ))
}

fn result_of(state: RunState) -> TaskResult {
    match state {
        RunState::Success => TaskResult::Success,
        RunState::Failure | RunState::Error => TaskResult::Failure,
        RunState::Cancelled => TaskResult::Cancelled,
        RunState::Superseded => TaskResult::Skipped,
        RunState::Queued | RunState::Running => TaskResult::Unspecified,
    }
}

/// A task's log rows: the run's output as Gitea's rows, only ever appended to (steps run
/// one after another, and a step's rows are given only up to what it has written, its last
/// line without a newline once it is over). Each pass reads on from where the last one
/// stopped; the rows Gitea has not acknowledged yet wait in `pending`.
#[derive(Debug, Default)]
struct Rows {
    /// The number of the next row.
    next: i64,
    /// Rows `next - pending.len()` .. `next`, not acknowledged yet.
    pending: VecDeque<String>,
    /// Rows before this number are not kept (Gitea has them).
    skip_below: i64,
    /// Where the reading stands: the step (by its place in the run) and, once its opening
    /// row is written, how far into its log.
    step: usize,
    in_step: Option<LogCursor>,
    /// The run's closing row is written.
    ended: bool,
}

/// How much of a step's log one read takes.
const READ_BUDGET: usize = 256 << 10;

impl Rows {
    fn push(&mut self, row: String) {
        if self.next >= self.skip_below {
            self.pending.push_back(row);
        }
        self.next += 1;
    }

    /// A task whose whole log is one row.
    fn only(&mut self, row: String) {
        if self.next == 0 {
            self.push(row);
        }
    }

    /// Gitea has every row before `acked`.
    fn acked(&mut self, acked: i64) {
        let first = self.next - self.pending.len() as i64;
        let drop = (acked - first).clamp(0, self.pending.len() as i64);
        self.pending.drain(..drop as usize);
        self.skip_below = self.skip_below.max(acked);
    }

    /// Reads on: the rows of what run `run`'s steps wrote since the last read (`run_over`:
    /// it has ended). After a restart (nothing read yet) the rows before `acked` are
    /// counted, not kept.
    async fn read(
        &mut self,
        logs: &LogStore,
        run: i64,
        run_over: bool,
        steps: &[StepRow],
        acked: i64,
    ) {
        self.skip_below = self.skip_below.max(acked);
        let mut steps: Vec<&StepRow> = steps.iter().collect();
        steps.sort_by_key(|s| s.idx);
        while let Some(step) = steps.get(self.step) {
            let never_ran = matches!(step.state, StepState::Skipped | StepState::NotRun)
                || (step.state == StepState::Pending && run_over);
            if never_ran && self.in_step.is_none() {
                self.push(format!("── {}: {}", step.name, step.state.as_str()));
                self.step += 1;
                continue;
            }
            if step.state == StepState::Pending && self.in_step.is_none() {
                return;
            }
            // Over before reading: then its log is complete.
            let over = step.state.is_over() || run_over;
            let mut at = match self.in_step {
                Some(at) => at,
                None => {
                    self.push(format!("── {}", step.name));
                    LogCursor::at_line(0)
                }
            };
            loop {
                match logs.read_lines(run, step.idx, at, READ_BUDGET).await {
                    Ok((lines, next)) if !lines.is_empty() => {
                        for line in &lines {
                            self.push(row(line));
                        }
                        at = next;
                    }
                    // Nothing more, or no log at all.
                    _ => break,
                }
            }
            self.in_step = Some(at);
            if !over {
                return;
            }
            let rest = logs.read_rest(run, step.idx, at).await.unwrap_or_default();
            if !rest.is_empty() {
                self.push(row(&rest));
            }
            let exit = step
                .exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            self.push(format!("── {}: {}{exit}", step.name, step.state.as_str()));
            self.in_step = None;
            self.step += 1;
        }
    }
}

/// One row: valid UTF-8, no CR, at most 64 KiB.
fn row(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).replace('\r', "");
    if text.len() > MAX_ROW {
        let mut cut = MAX_ROW;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Writes a file only its owner may read (0600), replacing it whole.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.new");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn step(idx: i64, name: &str, state: StepState, exit_code: Option<i64>) -> StepRow {
        StepRow {
            idx,
            name: name.into(),
            state,
            description: String::new(),
            exit_code,
            started_at: None,
            finished_at: None,
            log_removed: false,
        }
    }

    #[tokio::test]
    async fn rows_are_read_on_from_where_the_last_pass_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::new(dir.path().to_path_buf());
        let mut first = logs.writer(7, 0).unwrap();
        first.line(b"one").unwrap();
        let mut rows = Rows::default();
        let running = [
            step(0, "build", StepState::Running, None),
            step(1, "test", StepState::Pending, None),
        ];
        rows.read(&logs, 7, false, &running, 0).await;
        assert_eq!(rows.pending, ["── build", "one"]);
        rows.acked(2);
        first.line(b"two").unwrap();
        first.line(b"three").unwrap();
        rows.read(&logs, 7, false, &running, 2).await;
        assert_eq!(rows.pending, ["two", "three"]);
        drop(first);
        let ended = [
            step(0, "build", StepState::Success, Some(0)),
            step(1, "test", StepState::Skipped, None),
        ];
        rows.read(&logs, 7, true, &ended, 2).await;
        let all = [
            "── build",
            "one",
            "two",
            "three",
            "── build: success, exit code 0",
            "── test: skipped",
        ];
        assert_eq!(rows.pending, &all[2..]);
        assert_eq!(rows.next, 6);

        // After a restart: the same rows, those Gitea has counted but not kept.
        let mut again = Rows::default();
        again.read(&logs, 7, true, &ended, 4).await;
        assert_eq!(again.next, 6);
        assert_eq!(again.pending, &all[4..]);
        let mut whole = Rows::default();
        whole.read(&logs, 7, true, &ended, 0).await;
        assert_eq!(whole.pending, all);
    }

    fn task(workflow: &str, context: serde_json::Value) -> Task {
        let b64 = base64::engine::general_purpose::STANDARD.encode(workflow);
        serde_json::from_value(serde_json::json!({
            "id": "5", "workflowPayload": b64, "context": context,
        }))
        .unwrap()
    }

    fn dispatch_context() -> serde_json::Value {
        serde_json::json!({
            "event_name": "workflow_dispatch", "workflow": "restore.yml",
            "repository": "lab/infra", "ref": "refs/heads/main", "actor": "ana",
            "event": {"inputs": {"target": "db", "dry_run": "", "count": "3"}},
        })
    }

    #[test]
    fn a_dispatch_task_maps_to_its_pipeline() {
        let workflow = "name: restore\non:\n  workflow_dispatch:\njobs:\n  run:\n    runs-on: pipewright\n    steps:\n      - name: pipewright\n        run: 'true'\n";
        let (steps, m) = map_task(&task(workflow, dispatch_context())).unwrap();
        assert_eq!(steps, 1);
        assert_eq!(
            m,
            Mapped {
                owner: "lab".into(),
                name: "infra".into(),
                pipeline: "restore".into(),
                git_ref: "refs/heads/main".into(),
                inputs: vec![("target".into(), "db".into()), ("count".into(), "3".into())],
                actor: "ana".into(),
            }
        );
        let named = "jobs:\n  run:\n    env:\n      PIPEWRIGHT_PIPELINE: recover\n    steps: [{run: a}, {run: b}]\n";
        let (steps, m) = map_task(&task(named, dispatch_context())).unwrap();
        assert_eq!((steps, m.pipeline.as_str()), (2, "recover"));
    }

    #[test]
    fn unmappable_tasks_say_why() {
        let mut push = dispatch_context();
        push["event_name"] = "push".into();
        let one = "jobs:\n  run:\n    steps: [{run: a}]\n";
        assert!(map_task(&task(one, push)).unwrap_err().1.contains("`push`"));
        let two = "jobs:\n  a: {}\n  b: {}\n";
        assert_eq!(
            map_task(&task(two, dispatch_context())).unwrap_err().1,
            "the task's workflow does not have exactly one job"
        );
        assert!(
            map_task(&task("jobs: [", dispatch_context()))
                .unwrap_err()
                .1
                .starts_with("the task's workflow is not YAML")
        );
    }

    #[test]
    fn hostile_workflows_are_refused_by_name_of_what_is_wrong() {
        let not_yaml = |workflow: &str| {
            let (steps, why) = map_task(&task(workflow, dispatch_context())).unwrap_err();
            assert_eq!(steps, 1);
            assert!(
                why.starts_with("the task's workflow is not YAML: "),
                "{why}"
            );
            why
        };
        // Far deeper than the parser goes, in flow and block form.
        let deep = format!("jobs:\n  run:\n    env: {}", "[".repeat(200_000));
        let why = not_yaml(&deep);
        assert!(
            why.contains("deeper than 64") || why.contains("recursion limit"),
            "{why}"
        );
        let block: String = (0..500).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let why = not_yaml(&block);
        assert!(
            why.contains("deeper than 64") || why.contains("recursion limit"),
            "{why}"
        );
        // Larger than any pipeline file, and an alias bomb.
        let huge = format!(
            "jobs:\n  run:\n    env: {{ X: '{}' }}\n",
            "x".repeat(2 << 20)
        );
        not_yaml(&huge);
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for n in 1..10 {
            bomb.push_str(&format!(
                "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                (b'a' + n) as char,
                (b'a' + n) as char,
                p = (b'a' + n - 1) as char
            ));
        }
        not_yaml(&format!("{bomb}jobs:\n  run: {{}}\n"));

        // Option-like and path-like names map as plain names; the lookup among the
        // repository's pipelines (`dispatch::dispatchable`) refuses them.
        for name in ["--upload-pack=touch /tmp/pwned", "../../etc/passwd", "-c"] {
            let workflow = format!(
                "jobs:\n  run:\n    env:\n      PIPEWRIGHT_PIPELINE: {}\n    steps: [{{run: a}}]\n",
                serde_json::to_string(name).unwrap()
            );
            let (_, m) = map_task(&task(&workflow, dispatch_context())).unwrap();
            assert_eq!(m.pipeline, name);
        }
    }

    #[test]
    fn rows_are_clean_lines() {
        assert_eq!(row(b"a\r"), "a");
        assert_eq!(row(b"\xffb"), "\u{fffd}b");
        assert_eq!(row(&vec![b'x'; MAX_ROW + 10]).len(), MAX_ROW);
    }
}

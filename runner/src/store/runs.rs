//! Runs and their steps: the queue, its concurrency groups and leases.

use std::time::Duration;

use pipewright_pipelines::{EventKind, GitRef};
use sqlx::{Any, Row, Transaction, any::AnyRow};

use super::{Store, StoreError, now_ms, outbox};

/// Where a run is in its life. The commit status follows from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    Queued,
    Running,
    Success,
    Failure,
    Error,
    Cancelled,
    /// A newer run of the same concurrency group replaced it while it waited.
    Superseded,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failure => "failure",
            RunState::Error => "error",
            RunState::Cancelled => "cancelled",
            RunState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        [
            RunState::Queued,
            RunState::Running,
            RunState::Success,
            RunState::Failure,
            RunState::Error,
            RunState::Cancelled,
            RunState::Superseded,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// Where a step is. Stored as text, converted only here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Recorded as the run starts, not started yet.
    Pending,
    Running,
    Success,
    Failure,
    Cancelled,
    /// Pipewright could not run it (its image, a start failure, a refused setting).
    Error,
    /// Its `when` excludes the event.
    Skipped,
    /// An earlier step failed.
    NotRun,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Success => "success",
            StepState::Failure => "failure",
            StepState::Cancelled => "cancelled",
            StepState::Error => "error",
            StepState::Skipped => "skipped",
            StepState::NotRun => "not_run",
        }
    }

    fn parse(s: &str) -> Option<StepState> {
        [
            StepState::Pending,
            StepState::Running,
            StepState::Success,
            StepState::Failure,
            StepState::Cancelled,
            StepState::Error,
            StepState::Skipped,
            StepState::NotRun,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether the step will not change any more (or never start).
    pub fn is_over(self) -> bool {
        !matches!(self, StepState::Pending | StepState::Running)
    }
}

/// The declared type of a dispatch input whose value is not text: the value is stored as
/// text and shown typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputType {
    Boolean,
    Number,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Boolean => "boolean",
            InputType::Number => "number",
        }
    }

    fn parse(s: &str) -> Option<InputType> {
        [InputType::Boolean, InputType::Number]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

fn types_to_json(types: &[(String, InputType)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = types
        .iter()
        .map(|(name, t)| (name.clone(), t.as_str().into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn types_from_json(text: &str) -> Result<Vec<(String, InputType)>, StoreError> {
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("run input types: {e}")))?;
    map.into_iter()
        .map(|(name, t)| {
            InputType::parse(&t)
                .map(|t| (name, t))
                .ok_or_else(|| StoreError::Corrupt(format!("run input type `{t}`")))
        })
        .collect()
}

/// Filters of a runs list, newest first, paged by id.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only these repositories (`None`: all).
    pub repos: Option<Vec<String>>,
    pub pipeline: Option<String>,
    pub state: Option<RunState>,
    /// Only runs with a smaller id (the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A run to enqueue: built by one constructor per source (`server/spec.rs`).
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub repo: String,
    pub repo_id: i64,
    pub owner_id: i64,
    pub default_branch: String,
    /// The repository whose commit gets the status (the base repository for fork PRs).
    pub status_repo: String,
    pub pipeline: String,
    pub pipeline_file: String,
    pub event: EventKind,
    pub git_ref: GitRef,
    pub sha: String,
    pub pr: Option<i64>,
    pub actor: String,
    /// An untrusted pull request: its head is in another repository, the payload did not
    /// say which, or its author may not write to the base repository (AGit flow). Such a
    /// run gets no secrets, identity token or host volumes.
    pub from_fork: bool,
    /// 1, or one more than the run it re-runs.
    pub attempt: i64,
    pub inputs: Vec<(String, String)>,
    /// The declared types of the inputs that are not text.
    pub input_types: Vec<(String, InputType)>,
    /// The run this one re-runs.
    pub rerun_of: Option<i64>,
    /// The pipeline's `runs_on`: an agent claims the run only with all of these labels.
    pub runs_on: Vec<String>,
    /// Runs with a key that is already used add nothing: ever for most events (a push's
    /// (repository, ref, after), a schedule's minute; dispatches and re-runs have keys of
    /// their own), while its runs are queued or running for a pull request's.
    pub dedupe_key: String,
    /// Prefixed with the repository (`owner/name/…`): groups never span repositories.
    pub concurrency_group: String,
    pub cancel_in_progress: bool,
    /// `Queued`, or `Error` for a pipeline that cannot run (invalid file).
    pub state: RunState,
    pub description: String,
}

/// A stored run.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: i64,
    pub repo: String,
    pub repo_id: i64,
    pub owner_id: i64,
    pub default_branch: String,
    pub status_repo: String,
    pub pipeline: String,
    pub pipeline_file: String,
    pub event: EventKind,
    pub git_ref: GitRef,
    pub sha: String,
    pub pr: Option<i64>,
    pub actor: String,
    pub from_fork: bool,
    pub attempt: i64,
    pub inputs: Vec<(String, String)>,
    pub input_types: Vec<(String, InputType)>,
    pub rerun_of: Option<i64>,
    pub runs_on: Vec<String>,
    pub concurrency_group: String,
    pub cancel_in_progress: bool,
    pub state: RunState,
    pub description: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The instance that claimed it, while it runs.
    pub lease_owner: Option<String>,
    /// The name of the agent that claimed it (kept after the run ends).
    pub agent: Option<String>,
}

/// A stored step.
#[derive(Clone, Debug)]
pub struct StepRow {
    pub idx: i64,
    pub name: String,
    pub state: StepState,
    pub description: String,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Its log was deleted by `[retention].logs` (the run's are removed together).
    pub log_removed: bool,
}

/// What enqueueing did to other runs of the same groups.
#[derive(Clone, Debug, Default)]
pub struct Enqueued {
    pub ids: Vec<i64>,
    /// The runs were not added: runs with their dedupe key exist (see [`RunSpec::dedupe_key`]).
    pub duplicate: bool,
    /// Running runs that a `cancel_in_progress` group asks to stop.
    pub cancel_running: Vec<i64>,
    /// The final states of the runs this enqueueing ended: runs added already finished,
    /// and the queued runs of their groups it cancelled or superseded.
    pub ended: Vec<RunState>,
}

/// Lease length for a claimed run when the agent sets none (`[agent].lease`); the worker
/// renews it well before it runs out.
pub const LEASE: Duration = Duration::from_secs(60);

/// The channel on which PostgreSQL announces that runs were queued, claimed or ended, so
/// that idle agents claim at once and the server's reporter sends the new statuses.
pub const RUNS_CHANNEL: &str = "pipewright_runs";

/// Who claims a run: the agent's instance id (the lease owner), its name (recorded with
/// the run), its labels and the length of its leases.
#[derive(Clone, Copy, Debug)]
pub struct Claimant<'a> {
    pub owner: &'a str,
    pub agent: &'a str,
    pub labels: &'a [String],
    pub lease: Duration,
}

/// Within a transaction on PostgreSQL, announces a change of the queue on
/// [`RUNS_CHANNEL`] (sent when the transaction commits, dropped when it rolls back).
/// Nothing on SQLite, whose single process wakes its own worker.
pub(super) async fn notify_runs(
    tx: &mut Transaction<'_, Any>,
    what: &str,
) -> Result<(), StoreError> {
    if tx.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RUNS_CHANNEL)
            .bind(what)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Whether an agent with `labels` may run a run that needs `runs_on`.
pub fn labels_cover(labels: &[String], runs_on: &[String]) -> bool {
    runs_on.iter().all(|l| labels.contains(l))
}

const RUN_COLUMNS: &str = "id, repo, repo_id, owner_id, default_branch, status_repo, pipeline, pipeline_file, event, git_ref, sha, pr, actor, from_fork, attempt, inputs, runs_on, concurrency_group, cancel_in_progress, state, description, created_at, started_at, finished_at, lease_owner, rerun_of, input_types, agent";

fn run_from_row(row: &AnyRow) -> Result<Run, StoreError> {
    let state: String = row.try_get("state")?;
    let inputs: String = row.try_get("inputs")?;
    let runs_on: String = row.try_get("runs_on")?;
    let event: String = row.try_get("event")?;
    let git_ref: String = row.try_get("git_ref")?;
    let input_types: String = row.try_get("input_types")?;
    Ok(Run {
        id: row.try_get("id")?,
        repo: row.try_get("repo")?,
        repo_id: row.try_get("repo_id")?,
        owner_id: row.try_get("owner_id")?,
        default_branch: row.try_get("default_branch")?,
        status_repo: row.try_get("status_repo")?,
        pipeline: row.try_get("pipeline")?,
        pipeline_file: row.try_get("pipeline_file")?,
        event: EventKind::parse(&event)
            .ok_or_else(|| StoreError::Corrupt(format!("run event `{event}`")))?,
        git_ref: GitRef::from_full(&git_ref)
            .ok_or_else(|| StoreError::Corrupt(format!("run ref `{git_ref}`")))?,
        sha: row.try_get("sha")?,
        pr: row.try_get("pr")?,
        actor: row.try_get("actor")?,
        from_fork: row.try_get::<i64, _>("from_fork")? != 0,
        attempt: row.try_get("attempt")?,
        inputs: serde_json::from_str(&inputs)
            .map_err(|e| StoreError::Corrupt(format!("run inputs: {e}")))?,
        input_types: types_from_json(&input_types)?,
        rerun_of: row.try_get("rerun_of")?,
        runs_on: serde_json::from_str(&runs_on)
            .map_err(|e| StoreError::Corrupt(format!("run labels: {e}")))?,
        concurrency_group: row.try_get("concurrency_group")?,
        cancel_in_progress: row.try_get::<i64, _>("cancel_in_progress")? != 0,
        state: RunState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("run state `{state}`")))?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        lease_owner: row.try_get("lease_owner")?,
        agent: row.try_get("agent")?,
    })
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(8)]
}

async fn run_in(tx: &mut Transaction<'_, Any>, id: i64) -> Result<Run, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    run_from_row(&row)
}

/// Ends a run inside a transaction and queues its final status.
pub(super) async fn finish_in(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: RunState,
    description: &str,
) -> Result<bool, StoreError> {
    finish_if(tx, id, state, description, None).await
}

/// Ends a run that is not ended yet, and, when `lost` is given, only while that owner's
/// lease on it has expired by that time (a renewal in between keeps it running).
async fn finish_if(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    state: RunState,
    description: &str,
    lost: Option<(&str, i64)>,
) -> Result<bool, StoreError> {
    let (owner, before) = lost.unzip();
    let changed = sqlx::query(
        "UPDATE runs SET state = $1, description = $2, finished_at = $3, lease_owner = NULL, lease_until = NULL
         WHERE id = $4 AND state IN ('queued', 'running')
         AND ($5 = 0 OR (state = 'running' AND lease_owner = $6 AND lease_until < $7))",
    )
    .bind(state.as_str())
    .bind(description)
    .bind(now_ms())
    .bind(id)
    .bind(i64::from(lost.is_some()))
    .bind(owner.unwrap_or_default())
    .bind(before.unwrap_or_default())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    let run = run_in(tx, id).await?;
    outbox::insert(
        tx,
        &run.status_repo,
        &run.sha,
        run.id,
        &run.pipeline,
        state,
        description,
    )
    .await?;
    notify_runs(tx, "ended").await?;
    Ok(true)
}

impl Store {
    /// Enqueues runs for one delivery and marks it processed, in one transaction, applying
    /// concurrency groups: `cancel_in_progress` cancels queued runs of the group (and asks
    /// for running ones to be stopped); otherwise queued runs of the group are superseded.
    pub async fn enqueue_runs(
        &self,
        delivery: Option<i64>,
        runs: &[RunSpec],
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let out = enqueue_in(&mut tx, delivery, runs).await?;
        tx.commit().await?;
        self.ends.add_all(&out.ended);
        Ok(out)
    }
}

/// [`Store::enqueue_runs`] inside a transaction (which the caller commits).
pub(super) async fn enqueue_in(
    tx: &mut Transaction<'_, Any>,
    delivery: Option<i64>,
    runs: &[RunSpec],
) -> Result<Enqueued, StoreError> {
    {
        let mut out = Enqueued::default();
        let mut keys: Vec<&str> = runs.iter().map(|r| r.dedupe_key.as_str()).collect();
        keys.dedup();
        for (key, new) in keys
            .iter()
            .filter_map(|k| runs.iter().find(|r| r.dedupe_key == *k).map(|r| (k, r)))
        {
            let active_only = new.event == EventKind::PullRequest;
            let used: i64 = sqlx::query(
                "SELECT COUNT(*) FROM runs WHERE dedupe_key = $1 AND ($2 = 0 OR state IN ('queued', 'running'))",
            )
            .bind(*key)
            .bind(i64::from(active_only))
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
            if used > 0 {
                out.duplicate = true;
            }
        }
        if out.duplicate {
            if let Some(d) = delivery {
                sqlx::query("UPDATE deliveries SET state = 'duplicate', note = $1 WHERE id = $2")
                    .bind("the same event already has runs")
                    .bind(d)
                    .execute(&mut **tx)
                    .await?;
            }
            return Ok(out);
        }
        for new in runs {
            let now = now_ms();
            let inputs = serde_json::to_string(&new.inputs)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let runs_on = serde_json::to_string(&new.runs_on)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let id: i64 = sqlx::query(
                "INSERT INTO runs (delivery, repo, repo_id, owner_id, clone_url, default_branch, status_repo, pipeline,
                   pipeline_file, event, git_ref, sha, pr, actor, inputs, dedupe_key, concurrency_group,
                   cancel_in_progress, state, description, created_at, finished_at, from_fork, attempt, runs_on,
                   input_types, rerun_of)
                 VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)
                 RETURNING id",
            )
            .bind(delivery)
            .bind(&new.repo)
            .bind(new.repo_id)
            .bind(new.owner_id)
            .bind(&new.default_branch)
            .bind(&new.status_repo)
            .bind(&new.pipeline)
            .bind(&new.pipeline_file)
            .bind(new.event.as_str())
            .bind(new.git_ref.full())
            .bind(&new.sha)
            .bind(new.pr)
            .bind(&new.actor)
            .bind(inputs)
            .bind(&new.dedupe_key)
            .bind(&new.concurrency_group)
            .bind(i64::from(new.cancel_in_progress))
            .bind(new.state.as_str())
            .bind(&new.description)
            .bind(now)
            .bind(new.state.is_finished().then_some(now))
            .bind(i64::from(new.from_fork))
            .bind(new.attempt)
            .bind(runs_on)
            .bind(types_to_json(&new.input_types))
            .bind(new.rerun_of)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
            outbox::insert(
                tx,
                &new.status_repo,
                &new.sha,
                id,
                &new.pipeline,
                new.state,
                &new.description,
            )
            .await?;
            out.ids.push(id);
            if new.state.is_finished() {
                out.ended.push(new.state);
            }
            if new.state != RunState::Queued {
                continue;
            }
            notify_runs(tx, "queued").await?;
            // A pull request's run (or a comment's) affects only runs of the same pull request, and other runs
            // never affect a pull request's (a superseded run reports `success`, which on a
            // pull request's head would pass a check that never ran).
            let older: Vec<(i64, String)> = sqlx::query(
                "SELECT id, state FROM runs WHERE concurrency_group = $1 AND id < $2 AND state IN ('queued', 'running')
                 AND ((event IN ('pull_request', 'comment')) = ($3 = 1)) AND ($3 = 0 OR pr = $4)",
            )
            .bind(&new.concurrency_group)
            .bind(id)
            .bind(i64::from(matches!(
                new.event,
                EventKind::PullRequest | EventKind::Comment
            )))
            .bind(new.pr)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
            for (old, state) in older {
                match (state.as_str(), new.cancel_in_progress) {
                    ("queued", true) => {
                        let why =
                            format!("cancelled: superseded by run {id} ({})", short(&new.sha));
                        if finish_in(tx, old, RunState::Cancelled, &why).await? {
                            out.ended.push(RunState::Cancelled);
                        }
                    }
                    ("queued", false) => {
                        let why = format!("superseded by {}", short(&new.sha));
                        if finish_in(tx, old, RunState::Superseded, &why).await? {
                            out.ended.push(RunState::Superseded);
                        }
                    }
                    ("running", true) => out.cancel_running.push(old),
                    _ => {}
                }
            }
        }
        if let Some(d) = delivery {
            sqlx::query("UPDATE deliveries SET state = 'processed', note = $1 WHERE id = $2")
                .bind(format!("{} runs", runs.len()))
                .bind(d)
                .execute(&mut **tx)
                .await?;
        }
        Ok(out)
    }
}

impl Store {
    /// Claims the oldest queued run whose concurrency group is free (no running run, no
    /// older queued run) and whose `runs_on` labels are all among `labels`, for `owner`,
    /// with a lease of [`LEASE`].
    pub async fn claim_next(
        &self,
        owner: &str,
        labels: &[String],
    ) -> Result<Option<Run>, StoreError> {
        self.claim(&Claimant {
            owner,
            agent: owner,
            labels,
            lease: LEASE,
        })
        .await
    }

    /// [`Store::claim_next`] for an agent with a name and a lease of its own. On
    /// PostgreSQL several agents claim at once: the candidate row is locked with
    /// `FOR UPDATE SKIP LOCKED` (another agent's candidate is skipped, not waited for)
    /// and the labels are matched in SQL (`jsonb <@`), so that a row locked is a row
    /// claimed. Only the oldest queued run of a group is ever a candidate, and a claimed
    /// run is `running`, so the group rule holds across agents too. SQLite has one writer
    /// and matches labels here.
    pub async fn claim(&self, who: &Claimant<'_>) -> Result<Option<Run>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let chosen = match self.backend {
            super::Backend::Postgres => {
                let labels = serde_json::to_string(who.labels)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                sqlx::query(
                    "SELECT r.id FROM runs r WHERE r.state = 'queued'
                     AND CAST(r.runs_on AS jsonb) <@ CAST($1 AS jsonb)
                     AND NOT EXISTS (
                        SELECT 1 FROM runs o WHERE o.concurrency_group = r.concurrency_group
                        AND (o.state = 'running' OR (o.state = 'queued' AND o.id < r.id)))
                     ORDER BY r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED",
                )
                .bind(labels)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()?
            }
            super::Backend::Sqlite => {
                // At most one candidate per free group; labels are matched here rather
                // than in SQL (a JSON list, portably).
                let candidates = sqlx::query(
                    "SELECT r.id, r.runs_on FROM runs r WHERE r.state = 'queued' AND NOT EXISTS (
                        SELECT 1 FROM runs o WHERE o.concurrency_group = r.concurrency_group
                        AND (o.state = 'running' OR (o.state = 'queued' AND o.id < r.id)))
                     ORDER BY r.id",
                )
                .fetch_all(&mut *tx)
                .await?;
                let mut chosen = None;
                for row in &candidates {
                    let runs_on: String = row.try_get(1)?;
                    let runs_on: Vec<String> = serde_json::from_str(&runs_on)
                        .map_err(|e| StoreError::Corrupt(format!("run labels: {e}")))?;
                    if labels_cover(who.labels, &runs_on) {
                        chosen = Some(row.try_get::<i64, _>(0)?);
                        break;
                    }
                }
                chosen
            }
        };
        let Some(id) = chosen else {
            tx.rollback().await?;
            return Ok(None);
        };
        let now = now_ms();
        let claimed = sqlx::query(
            "UPDATE runs SET state = 'running', started_at = $1, lease_owner = $2, lease_until = $3, description = 'running', agent = $5
             WHERE id = $4 AND state = 'queued'",
        )
        .bind(now)
        .bind(who.owner)
        .bind(now + who.lease.as_millis() as i64)
        .bind(id)
        .bind(who.agent)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let run = run_in(&mut tx, id).await?;
        // Gitea shows `pending` "running" from here on, not "queued".
        outbox::insert(
            &mut tx,
            &run.status_repo,
            &run.sha,
            run.id,
            &run.pipeline,
            RunState::Running,
            &run.description,
        )
        .await?;
        notify_runs(&mut tx, "claimed").await?;
        tx.commit().await?;
        Ok(Some(run))
    }

    /// Extends the lease of a run this owner holds; false when it lost it.
    pub async fn renew_lease(&self, id: i64, owner: &str) -> Result<bool, StoreError> {
        self.renew_lease_for(id, owner, LEASE).await
    }

    /// [`Store::renew_lease`] with a lease of `lease` from now.
    pub async fn renew_lease_for(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query("UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running'")
            .bind(now_ms() + lease.as_millis() as i64)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(changed > 0)
    }

    /// Ends a run (if it is not ended already) and queues its final status.
    pub async fn finish_run(
        &self,
        id: i64,
        state: RunState,
        description: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = finish_in(&mut tx, id, state, description).await?;
        tx.commit().await?;
        if changed {
            self.ends.add(state);
        }
        Ok(changed)
    }

    /// Ends, as `error` "agent <name> lost", every running run whose lease expired before
    /// `now` (its owner stopped renewing it: it crashed, or lost the database), except the
    /// runs in `keep` (the caller's own, which it still runs). The name is the agent's that
    /// claimed it (the lease owner's instance id for runs claimed without one). Such runs
    /// are never retried on their own. Returns the ended runs with their agents' names.
    pub async fn settle_lost_leases(
        &self,
        now: i64,
        keep: &[i64],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let expired = sqlx::query(
            "SELECT id, lease_owner, agent FROM runs WHERE state = 'running' AND lease_until < $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        let mut settled = Vec::new();
        for row in &expired {
            let id: i64 = row.try_get(0)?;
            let owner: Option<String> = row.try_get(1)?;
            let owner = owner.unwrap_or_default();
            let agent: Option<String> = row.try_get(2)?;
            let name = agent.unwrap_or_else(|| owner.clone());
            if keep.contains(&id) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let why = format!("agent {name} lost");
            let ended = finish_if(&mut tx, id, RunState::Error, &why, Some((&owner, now))).await?;
            tx.commit().await?;
            if ended {
                self.ends.add(RunState::Error);
                settled.push((id, name));
            }
        }
        Ok(settled)
    }

    /// Records the steps of a run as it starts.
    pub async fn insert_steps(
        &self,
        run_id: i64,
        names: &[(i64, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (idx, name) in names {
            sqlx::query(
                "INSERT INTO steps (run_id, idx, name, state, description) VALUES ($1, $2, $3, 'pending', '')
                 ON CONFLICT (run_id, idx) DO NOTHING",
            )
            .bind(run_id)
            .bind(idx)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn step_started(&self, run_id: i64, idx: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE steps SET state = 'running', started_at = $1 WHERE run_id = $2 AND idx = $3",
        )
        .bind(now_ms())
        .bind(run_id)
        .bind(idx)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn step_finished(
        &self,
        run_id: i64,
        idx: i64,
        state: StepState,
        description: &str,
        exit_code: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE steps SET state = $1, description = $2, exit_code = $3, finished_at = $4 WHERE run_id = $5 AND idx = $6",
        )
        .bind(state.as_str())
        .bind(description)
        .bind(exit_code)
        .bind(now_ms())
        .bind(run_id)
        .bind(idx)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// Runs, newest first, optionally of one repository.
    pub async fn runs(&self, repo: Option<&str>, limit: i64) -> Result<Vec<Run>, StoreError> {
        let rows = match repo {
            Some(repo) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE repo = $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(repo)
                .bind(limit)
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(&self.read)
                .await?
            }
        };
        rows.iter().map(run_from_row).collect()
    }

    /// Runs newest first through a filter: every condition in SQL on indexed columns, a
    /// page ends where its smallest id is (keyset paging). Several repositories are one
    /// query per repository in a `UNION ALL`, each reading its newest runs from the
    /// `(repo, …, id)` indexes, so no list sorts more than a page per repository.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        /// More repositories than this are one `repo IN (…)`.
        const UNION_MAX: usize = 200;
        enum Bind<'a> {
            Text(&'a str),
            Int(i64),
        }
        let mut binds: Vec<Bind<'_>> = Vec::new();
        // The conditions besides the repository, with their values bound again per use.
        fn others<'a>(filter: &'a RunFilter, binds: &mut Vec<Bind<'a>>) -> Vec<String> {
            let mut conditions = Vec::new();
            if let Some(pipeline) = &filter.pipeline {
                binds.push(Bind::Text(pipeline));
                conditions.push(format!("pipeline = ${}", binds.len()));
            }
            if let Some(state) = filter.state {
                binds.push(Bind::Text(state.as_str()));
                conditions.push(format!("state = ${}", binds.len()));
            }
            if let Some(before) = filter.before {
                binds.push(Bind::Int(before));
                conditions.push(format!("id < ${}", binds.len()));
            }
            conditions
        }
        let select = |conditions: Vec<String>| {
            let condition = if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            };
            format!("SELECT {RUN_COLUMNS} FROM runs{condition} ORDER BY id DESC")
        };
        let sql = match &filter.repos {
            Some(repos) if repos.is_empty() => return Ok(Vec::new()),
            Some(repos) if repos.len() > 1 && repos.len() <= UNION_MAX => {
                let mut parts = Vec::new();
                for (i, repo) in repos.iter().enumerate() {
                    binds.push(Bind::Text(repo));
                    let mut conditions = vec![format!("repo = ${}", binds.len())];
                    conditions.extend(others(filter, &mut binds));
                    binds.push(Bind::Int(filter.limit));
                    parts.push(format!(
                        "SELECT * FROM ({} LIMIT ${}) AS part{i}",
                        select(conditions),
                        binds.len()
                    ));
                }
                format!("{} ORDER BY id DESC", parts.join(" UNION ALL "))
            }
            Some(repos) => {
                let first = binds.len() + 1;
                binds.extend(repos.iter().map(|r| Bind::Text(r)));
                let marks: Vec<String> = (first..first + repos.len())
                    .map(|n| format!("${n}"))
                    .collect();
                let mut conditions = vec![if repos.len() == 1 {
                    format!("repo = ${first}")
                } else {
                    format!("repo IN ({})", marks.join(", "))
                }];
                conditions.extend(others(filter, &mut binds));
                select(conditions)
            }
            None => {
                let conditions = others(filter, &mut binds);
                select(conditions)
            }
        };
        binds.push(Bind::Int(filter.limit));
        let sql = format!("{sql} LIMIT ${}", binds.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in binds {
            query = match value {
                Bind::Text(text) => query.bind(text),
                Bind::Int(n) => query.bind(n),
            };
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// A run of the group, other than `id`, that is running (the one a queued run waits for).
    pub async fn running_in_group(&self, group: &str, id: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM runs WHERE concurrency_group = $1 AND state = 'running' AND id <> $2 ORDER BY id LIMIT 1",
        )
        .bind(group)
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// Runs that `owner` holds a lease on (at start-up, to settle the ones a previous
    /// process of this instance left).
    pub async fn running_runs_of(&self, owner: &str) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND lease_owner = $1 ORDER BY id"
        )))
        .bind(owner)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn steps(&self, run_id: i64) -> Result<Vec<StepRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.idx, s.name, s.state, s.description, s.exit_code, s.started_at, s.finished_at,
                    r.logs_removed_at
             FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.run_id = $1 ORDER BY s.idx",
        )
        .bind(run_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(StepRow {
                    idx: r.try_get("idx")?,
                    name: r.try_get("name")?,
                    state: StepState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("step state `{state}`")))?,
                    description: r.try_get("description")?,
                    exit_code: r.try_get("exit_code")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    log_removed: r.try_get::<Option<i64>, _>("logs_removed_at")?.is_some(),
                })
            })
            .collect()
    }

    /// Whether any run exists for this commit of this repository (catch-up).
    pub async fn has_runs_for(&self, repo: &str, sha: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM runs WHERE repo = $1 AND sha = $2")
            .bind(repo)
            .bind(sha)
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Whether any run, in any state, carries this dedupe key (a schedule's minute).
    pub async fn dedupe_used(&self, key: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM runs WHERE dedupe_key = $1")
            .bind(key)
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }
}

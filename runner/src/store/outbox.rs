//! The status outbox: commit statuses written in the same transaction as the run state they
//! report, sent later by the reporter. A row names its run and pipeline and says nothing of
//! how Gitea shows it (context, link and clipping belong to the reporter).

use sqlx::{Any, Row, Transaction};

use super::{RunState, Store, StoreError, now_ms};

/// Gitea's four commit states, the only ones Pipewright sends (DESIGN "Statuses").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

impl CommitState {
    /// Gitea's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
            CommitState::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<CommitState> {
        [
            CommitState::Pending,
            CommitState::Success,
            CommitState::Failure,
            CommitState::Error,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl From<RunState> for CommitState {
    fn from(state: RunState) -> CommitState {
        match state {
            RunState::Queued | RunState::Running => CommitState::Pending,
            RunState::Success | RunState::Superseded => CommitState::Success,
            RunState::Failure => CommitState::Failure,
            RunState::Error | RunState::Cancelled => CommitState::Error,
        }
    }
}

/// A commit status waiting to be sent.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub id: i64,
    /// The repository whose commit gets the status.
    pub repo: String,
    pub sha: String,
    pub run_id: i64,
    pub pipeline: String,
    pub state: CommitState,
    /// The run's description as it was stored, whole.
    pub description: String,
    pub attempts: i64,
}

/// Queues the status of a run's state, inside the transaction that changed it.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    status_repo: &str,
    sha: &str,
    run_id: i64,
    pipeline: &str,
    state: RunState,
    description: &str,
) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO status_outbox (repo, sha, run_id, pipeline, state, description, created_at, attempts, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7)",
    )
    .bind(status_repo)
    .bind(sha)
    .bind(run_id)
    .bind(pipeline)
    .bind(CommitState::from(state).as_str())
    .bind(description)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Queues a status on its own, outside a run's state change (tests, and statuses that
    /// report no state of a run).
    pub async fn queue_status(
        &self,
        status_repo: &str,
        sha: &str,
        run_id: i64,
        pipeline: &str,
        state: RunState,
        description: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert(
            &mut tx,
            status_repo,
            sha,
            run_id,
            pipeline,
            state,
            description,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Statuses due for sending: the newest unsent one of each (repo, sha, pipeline); older
    /// unsent ones of the same key are marked sent without sending (Gitea keeps the newest).
    pub async fn due_statuses(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE status_outbox SET sent_at = $1 WHERE sent_at IS NULL AND EXISTS (
                SELECT 1 FROM status_outbox n WHERE n.sent_at IS NULL AND n.repo = status_outbox.repo
                AND n.sha = status_outbox.sha AND n.pipeline = status_outbox.pipeline AND n.id > status_outbox.id)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT id, repo, sha, run_id, pipeline, state, description, attempts FROM status_outbox
             WHERE sent_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    repo: r.try_get("repo")?,
                    sha: r.try_get("sha")?,
                    run_id: r.try_get("run_id")?,
                    pipeline: r.try_get("pipeline")?,
                    state: CommitState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("commit state `{state}`")))?,
                    description: r.try_get("description")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    pub async fn status_sent(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE status_outbox SET sent_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn status_failed(&self, id: i64, retry_in_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE status_outbox SET attempts = attempts + 1, next_attempt_at = $1 WHERE id = $2",
        )
        .bind(now_ms() + retry_in_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The earliest time an unsent status is due, if any.
    pub async fn next_status_due(&self) -> Result<Option<i64>, StoreError> {
        let row =
            sqlx::query("SELECT MIN(next_attempt_at) FROM status_outbox WHERE sent_at IS NULL")
                .fetch_one(&self.read)
                .await?;
        Ok(row.try_get(0)?)
    }
}

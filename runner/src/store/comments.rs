//! The comment outbox: pull-request comments that Pipewright keeps up to date (one per
//! marker, like the tofu plan comment of a pipeline), queued in the transaction that ends
//! the run they report and sent by the reporter like statuses, so none is lost on restart.
//!
//! One row per (repository, pull request, marker): queueing a newer comment replaces the
//! body of an unsent older one (only the newest is worth sending) and bumps `version`, so
//! a send that raced with a newer comment does not mark the newer one sent.

use sqlx::Row;

use super::{RunState, Store, StoreError, now_ms, runs::finish_in};

// The table is migration 4 (`migrations/both/0004_comment_outbox.sql`).

pub(super) const QUEUE: &str = "INSERT INTO comment_outbox
     (repo, pr, marker, body, run_id, version, created_at, attempts, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, 1, $6, 0, $6)
     ON CONFLICT (repo, pr, marker) DO UPDATE SET
         body = excluded.body, run_id = excluded.run_id,
         version = comment_outbox.version + 1, created_at = excluded.created_at,
         attempts = 0, next_attempt_at = excluded.next_attempt_at, sent_at = NULL";

/// A comment to create on a pull request, or to edit when one containing `marker` exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewComment {
    /// `owner/name` of the repository the pull request is in.
    pub repo: String,
    pub pr: i64,
    pub marker: String,
    pub body: String,
}

/// A queued comment, as the reporter sends it.
#[derive(Clone, Debug)]
pub struct QueuedComment {
    pub repo: String,
    pub pr: i64,
    pub marker: String,
    pub body: String,
    /// Which queueing of this (repo, pr, marker) this is.
    pub version: i64,
    pub attempts: i64,
}

impl Store {
    /// Ends a run (if it is not ended already) and queues its final status and, when
    /// given, its pull-request comment, in one transaction.
    pub async fn finish_run_commenting(
        &self,
        id: i64,
        state: RunState,
        description: &str,
        comment: Option<&NewComment>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = finish_in(&mut tx, id, state, description).await?;
        if let Some(c) = comment {
            sqlx::query(QUEUE)
                .bind(&c.repo)
                .bind(c.pr)
                .bind(&c.marker)
                .bind(&c.body)
                .bind(id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if changed {
            self.ends.add(state);
        }
        Ok(changed)
    }

    /// Unsent comments whose time has come, oldest first.
    pub async fn due_comments(&self, limit: i64) -> Result<Vec<QueuedComment>, StoreError> {
        let rows = sqlx::query(
            "SELECT repo, pr, marker, body, version, attempts FROM comment_outbox
             WHERE sent_at IS NULL AND next_attempt_at <= $1 ORDER BY created_at LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedComment {
                    repo: r.try_get("repo")?,
                    pr: r.try_get("pr")?,
                    marker: r.try_get("marker")?,
                    body: r.try_get("body")?,
                    version: r.try_get("version")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Marks a comment sent, unless a newer one was queued for its marker meanwhile.
    pub async fn comment_sent(&self, c: &QueuedComment) -> Result<(), StoreError> {
        self.update_comment(c, "sent_at = $1", now_ms()).await
    }

    /// Counts a failed send and puts the next try `retry_in_ms` away (a newer comment
    /// queued meanwhile keeps its own, fresh, schedule).
    pub async fn comment_failed(
        &self,
        c: &QueuedComment,
        retry_in_ms: i64,
    ) -> Result<(), StoreError> {
        let set = "attempts = attempts + 1, next_attempt_at = $1";
        self.update_comment(c, set, now_ms() + retry_in_ms).await
    }

    /// `UPDATE … SET {set}` (with `$1` = `at`) of this queueing of the comment only.
    async fn update_comment(
        &self,
        c: &QueuedComment,
        set: &'static str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE comment_outbox SET {set}
             WHERE repo = $2 AND pr = $3 AND marker = $4 AND version = $5"
        )))
        .bind(at)
        .bind(&c.repo)
        .bind(c.pr)
        .bind(&c.marker)
        .bind(c.version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The earliest time an unsent comment is due, if any.
    pub async fn next_comment_due(&self) -> Result<Option<i64>, StoreError> {
        let row =
            sqlx::query("SELECT MIN(next_attempt_at) FROM comment_outbox WHERE sent_at IS NULL")
                .fetch_one(&self.read)
                .await?;
        Ok(row.try_get(0)?)
    }
}

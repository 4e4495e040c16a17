//! Retention (`[retention]`): which finished runs have logs or rows old enough to delete,
//! and their deletion in batches (one short transaction each, so that webhooks and runs
//! are never kept behind a long write lock on SQLite).
//!
//! The files (logs, plan files) are the caller's: it removes them between
//! [`Store::runs_with_old_logs`] and [`Store::mark_logs_removed`], and between
//! [`Store::removable_runs`] and [`Store::delete_runs`], so that a crash in between leaves
//! rows whose files are gone (found again next time), never files nobody will remove.
//! Whether a run may go only ever changes towards yes (its status gets sent, a newer run
//! of its ref comes), so the ids found stay removable until they are deleted.

use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

/// Runs handled in one transaction.
pub const RETENTION_BATCH: i64 = 500;

/// What a run needs to be deleted by `[retention].runs`: ended before `$1`; not the newest
/// run of its ref (catch-up runs a branch or pull-request head that has none); no status
/// or comment of its still to send; no reviewed plan of a pull request naming it.
const REMOVABLE: &str = "r.finished_at IS NOT NULL AND r.finished_at < $1
    AND r.state NOT IN ('queued', 'running')
    AND EXISTS (SELECT 1 FROM runs n WHERE n.repo = r.repo AND n.git_ref = r.git_ref AND n.id > r.id)
    AND NOT EXISTS (SELECT 1 FROM status_outbox o WHERE o.run_id = r.id AND o.sent_at IS NULL)
    AND NOT EXISTS (SELECT 1 FROM comment_outbox c WHERE c.run_id = r.id AND c.sent_at IS NULL)
    AND NOT EXISTS (SELECT 1 FROM reviewed_plans p WHERE p.run_id = r.id OR p.applied_run = r.id)";

impl Store {
    /// Up to `limit` runs (oldest first) that ended before `before_ms` and still have
    /// their logs.
    pub async fn runs_with_old_logs(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1
             AND state NOT IN ('queued', 'running') AND logs_removed_at IS NULL
             ORDER BY id LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
    }

    /// Records that the logs of these runs were deleted at `at_ms` (their steps say so).
    pub async fn mark_logs_removed(&self, ids: &[i64], at_ms: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE runs SET logs_removed_at = $1 WHERE id IN ({})",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(at_ms);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Of these runs, those whose logs are gone as far as the database knows: deleted
    /// runs, and runs marked by [`Store::mark_logs_removed`] (by any instance: with a
    /// shared database, each removes the files on its own host).
    pub async fn runs_without_logs(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id FROM runs WHERE logs_removed_at IS NULL AND id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        let present: Vec<i64> = query
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !present.contains(id))
            .collect())
    }

    /// Up to `limit` runs (oldest first) that `[retention].runs` may delete: ended before
    /// `before_ms`, and needed by nothing (see the module's notes).
    pub async fn removable_runs(&self, before_ms: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT r.id FROM runs r WHERE {REMOVABLE} ORDER BY r.id LIMIT $2"
        )))
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
    }

    /// Deletes these runs with their steps and their sent status and comment rows, in one
    /// transaction, if they are still removable as of `before_ms`; returns how many runs
    /// went.
    pub async fn delete_runs(&self, ids: &[i64], before_ms: i64) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list = placeholders(2, ids.len());
        let mut tx = self.pool.begin().await?;
        // The runs to delete, checked again inside the transaction.
        let sql = format!("SELECT r.id FROM runs r WHERE r.id IN ({list}) AND {REMOVABLE}");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(before_ms);
        for id in ids {
            query = query.bind(*id);
        }
        let ids: Vec<i64> = query
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let list = placeholders(1, ids.len());
        let mut deleted = 0;
        for (table, column) in [
            ("steps", "run_id"),
            ("status_outbox", "run_id"),
            ("comment_outbox", "run_id"),
            ("runs", "id"),
        ] {
            let sql = format!("DELETE FROM {table} WHERE {column} IN ({list})");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in &ids {
                query = query.bind(*id);
            }
            deleted = query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

impl Store {
    /// Deletes up to `limit` deliveries (oldest first) received before `before_ms` whose
    /// processing is over (their payloads are the largest rows). Their runs keep their
    /// number in `runs.delivery`, which nothing reads after the enqueue. Returns how many
    /// went.
    pub async fn delete_old_deliveries(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM deliveries WHERE id IN (
                SELECT id FROM deliveries WHERE received_at < $1 AND state <> 'received'
                ORDER BY id LIMIT $2)",
        )
        .bind(before_ms)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

/// `$first, $first+1, …`: `count` numbered parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

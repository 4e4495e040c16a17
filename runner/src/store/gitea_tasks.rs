//! Gitea Actions tasks this runner took (table `gitea_tasks`, migration 13): which run a
//! task started, or why it was refused, how far its log reached Gitea, and whether its
//! final state did, so that a restart finishes reporting what it had taken.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// A task not yet reported as finished to Gitea.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiteaTask {
    pub task_id: i64,
    /// The run it started; `None` when it was refused (then `refusal` says why).
    pub run_id: Option<i64>,
    pub refusal: Option<String>,
    /// The steps of the task's workflow job (Gitea's step list).
    pub steps: i64,
    /// Log rows Gitea has acknowledged.
    pub log_acked: i64,
}

impl Store {
    /// Records a task taken from Gitea: the run it started, or the reason it was refused.
    /// A task recorded already keeps its first record.
    pub async fn take_gitea_task(
        &self,
        task_id: i64,
        run_id: Option<i64>,
        refusal: Option<&str>,
        steps: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gitea_tasks (task_id, run_id, refusal, steps, log_acked, created_at)
             VALUES ($1, $2, $3, $5, 0, $4) ON CONFLICT (task_id) DO NOTHING",
        )
        .bind(task_id)
        .bind(run_id)
        .bind(refusal)
        .bind(now_ms())
        .bind(steps)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The tasks whose final state Gitea has not accepted yet, oldest first.
    pub async fn open_gitea_tasks(&self) -> Result<Vec<GiteaTask>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_id, run_id, refusal, steps, log_acked FROM gitea_tasks
             WHERE reported_at IS NULL ORDER BY task_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(GiteaTask {
                    task_id: row.try_get(0)?,
                    run_id: row.try_get(1)?,
                    refusal: row.try_get(2)?,
                    steps: row.try_get(3)?,
                    log_acked: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// The task whose run is `run_id`, if Gitea started it.
    pub async fn gitea_task_of_run(&self, run_id: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT task_id FROM gitea_tasks WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Gitea holds `acked` rows of the task's log.
    pub async fn gitea_task_acked(&self, task_id: i64, acked: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE gitea_tasks SET log_acked = $1 WHERE task_id = $2")
            .bind(acked)
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gitea accepted the task's final state: nothing more is sent for it.
    pub async fn gitea_task_reported(&self, task_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE gitea_tasks SET reported_at = $1 WHERE task_id = $2")
            .bind(now_ms())
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

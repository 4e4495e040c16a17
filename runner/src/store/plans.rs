//! Reviewed plans: the plan of each pull request's tofu pipeline that its plan comment
//! shows (the commit, the run whose saved plan file is kept, the resource changes), whether
//! `/pipewright apply` applied it, and the merge commits of applied pull requests.
//! The plan files themselves are kept in the data directory, never here.

use pipewright_actions::tofu::ResourceChange;
use sqlx::Row;

use super::{
    RunState, Store, StoreError,
    comments::{NewComment, QUEUE},
    now_ms,
    runs::finish_in,
};

// The tables are migration 7 (`migrations/both/0007_reviewed_plans.sql`).

/// The plan reviewers see in a pull request's plan comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedPlanRow {
    pub repo: String,
    pub pr: i64,
    pub pipeline: String,
    /// The commit it was made on.
    pub sha: String,
    /// The run that made it (its plan files are kept under its id).
    pub run_id: i64,
    pub changes: Vec<ResourceChange>,
    /// The `/pipewright apply` run that applied it.
    pub applied_run: Option<i64>,
}

/// What else ends with a run.
#[derive(Clone, Debug, Default)]
pub struct RunEnd<'a> {
    pub comment: Option<&'a NewComment>,
    /// A pull request's plan, now the one its comment shows.
    pub reviewed: Option<&'a ReviewedPlanRow>,
    /// (repository, pull request, pipeline) whose reviewed plan this run applied.
    pub applied: Option<(&'a str, i64, &'a str)>,
}

fn changes_text(changes: &[ResourceChange]) -> Result<String, StoreError> {
    let pairs: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.address.as_str(), c.action))
        .collect();
    serde_json::to_string(&pairs).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn changes_of(text: &str) -> Result<Vec<ResourceChange>, StoreError> {
    let pairs: Vec<(String, String)> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("reviewed plan changes: {e}")))?;
    pairs
        .iter()
        .map(|(address, action)| {
            ResourceChange::new(address, action)
                .ok_or_else(|| StoreError::Corrupt(format!("reviewed plan action `{action}`")))
        })
        .collect()
}

impl Store {
    /// Ends a run, queues its comment, records the pull request's new reviewed plan (the
    /// run id of the plan it replaces is returned, whose files may go) and marks a reviewed
    /// plan applied, in one transaction.
    pub async fn finish_run_reviewing(
        &self,
        id: i64,
        state: RunState,
        description: &str,
        end: &RunEnd<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ended = finish_in(&mut tx, id, state, description).await?;
        if let Some(c) = end.comment {
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
        let mut replaced = None;
        if let Some(plan) = end.reviewed {
            replaced = sqlx::query(
                "SELECT run_id FROM reviewed_plans WHERE repo = $1 AND pr = $2 AND pipeline = $3",
            )
            .bind(&plan.repo)
            .bind(plan.pr)
            .bind(&plan.pipeline)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?;
            // `applied_run` stays: a pull request once applied with `/pipewright apply`
            // keeps its merge checked against its newest reviewed plan.
            sqlx::query(
                "INSERT INTO reviewed_plans (repo, pr, pipeline, sha, run_id, changes, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (repo, pr, pipeline) DO UPDATE SET
                     sha = excluded.sha, run_id = excluded.run_id, changes = excluded.changes,
                     created_at = excluded.created_at",
            )
            .bind(&plan.repo)
            .bind(plan.pr)
            .bind(&plan.pipeline)
            .bind(&plan.sha)
            .bind(plan.run_id)
            .bind(changes_text(&plan.changes)?)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        if let Some((repo, pr, pipeline)) = end.applied {
            sqlx::query(
                "UPDATE reviewed_plans SET applied_run = $1 WHERE repo = $2 AND pr = $3 AND pipeline = $4",
            )
            .bind(id)
            .bind(repo)
            .bind(pr)
            .bind(pipeline)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if ended {
            self.ends.add(state);
        }
        Ok(replaced.filter(|old| *old != id))
    }

    /// The reviewed plan of a pull request's pipeline.
    pub async fn reviewed_plan(
        &self,
        repo: &str,
        pr: i64,
        pipeline: &str,
    ) -> Result<Option<ReviewedPlanRow>, StoreError> {
        let row = sqlx::query(
            "SELECT sha, run_id, changes, applied_run FROM reviewed_plans
             WHERE repo = $1 AND pr = $2 AND pipeline = $3",
        )
        .bind(repo)
        .bind(pr)
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let changes: String = r.try_get("changes")?;
            Ok(ReviewedPlanRow {
                repo: repo.to_string(),
                pr,
                pipeline: pipeline.to_string(),
                sha: r.try_get("sha")?,
                run_id: r.try_get("run_id")?,
                changes: changes_of(&changes)?,
                applied_run: r.try_get("applied_run")?,
            })
        })
        .transpose()
    }

    /// Whether any pull request of `repo` was applied with `/pipewright apply` (only then
    /// is a push to its default branch looked up as a merge).
    pub async fn has_applied_plans(&self, repo: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM reviewed_plans WHERE repo = $1 AND applied_run IS NOT NULL",
        )
        .bind(repo)
        .fetch_one(&self.read)
        .await?
        .try_get(0)?;
        Ok(n > 0)
    }

    /// Remembers that `sha` merged pull request `pr` of `repo`.
    pub async fn remember_merge(&self, repo: &str, sha: &str, pr: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO merged_pulls (repo, sha, pr) VALUES ($1, $2, $3)
             ON CONFLICT (repo, sha) DO NOTHING",
        )
        .bind(repo)
        .bind(sha)
        .bind(pr)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The pull request `sha` merged, when it was one applied with `/pipewright apply`.
    pub async fn merged_pull(&self, repo: &str, sha: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT pr FROM merged_pulls WHERE repo = $1 AND sha = $2")
            .bind(repo)
            .bind(sha)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The runs whose plan files reviewed plans still use.
    pub async fn reviewed_plan_runs(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT run_id FROM reviewed_plans")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Forgets reviewed plans made before `before_ms` (their files go too).
    pub async fn forget_reviewed_plans(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM reviewed_plans WHERE created_at < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

//! Known repositories: every repository an event came from, for catch-up and schedules.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// A repository Pipewright has run for.
#[derive(Clone, Debug)]
pub struct KnownRepo {
    pub repo: String,
    pub repo_id: i64,
    pub owner_id: i64,
    pub default_branch: String,
}

impl Store {
    /// Remembers a repository an event came from (for catch-up and schedules).
    pub async fn remember_repo(&self, repo: &KnownRepo) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO repos (full_name, repo_id, owner_id, clone_url, default_branch, updated_at)
             VALUES ($1, $2, $3, '', $4, $5)
             ON CONFLICT (full_name) DO UPDATE SET repo_id = $2, owner_id = $3,
               default_branch = $4, updated_at = $5",
        )
        .bind(&repo.repo)
        .bind(repo.repo_id)
        .bind(repo.owner_id)
        .bind(&repo.default_branch)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Repositories events came from.
    pub async fn known_repos(&self) -> Result<Vec<KnownRepo>, StoreError> {
        let rows = sqlx::query(
            "SELECT full_name, repo_id, owner_id, default_branch FROM repos ORDER BY full_name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KnownRepo {
                    repo: r.try_get(0)?,
                    repo_id: r.try_get(1)?,
                    owner_id: r.try_get(2)?,
                    default_branch: r.try_get(3)?,
                })
            })
            .collect()
    }
}

//! Queries for API access control: what a scoped token's repository globs are matched
//! against.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Every repository that has runs (`owner/name`, as stored).
    pub async fn run_repos(&self) -> Result<Vec<String>, StoreError> {
        // One index seek per repository (a skip scan), not a pass over every run.
        let rows = sqlx::query(
            "WITH RECURSIVE r(repo) AS (
                SELECT MIN(repo) FROM runs
                UNION ALL
                SELECT (SELECT MIN(repo) FROM runs WHERE repo > r.repo) FROM r WHERE r.repo IS NOT NULL)
             SELECT repo FROM r WHERE repo IS NOT NULL",
        )
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }
}

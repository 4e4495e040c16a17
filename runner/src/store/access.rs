//! Queries for API access control: what a scoped token's repository globs are matched
//! against.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Every repository that has runs (`owner/name`, as stored).
    pub async fn run_repos(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT repo FROM runs")
            .fetch_all(&self.read)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }
}

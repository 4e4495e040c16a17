//! Image pins: which local image a reference named when a trusted run of a repository first
//! used it, so that a later trusted run notices an image that was replaced since (table
//! `image_pins`, migration 3).

use sqlx::Row;

use super::{Store, StoreError, now_ms};

const FIRST_USE: &str = "INSERT INTO image_pins (repo, reference, image_id, run_id, pinned_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (repo, reference) DO NOTHING";

const REPIN: &str = "INSERT INTO image_pins (repo, reference, image_id, run_id, pinned_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (repo, reference)
     DO UPDATE SET image_id = excluded.image_id, run_id = excluded.run_id,
         pinned_at = excluded.pinned_at";

impl Store {
    /// The image id pinned for `reference` in `repo`; records `image_id` when there is
    /// none yet (first use), and returns what is pinned after that.
    pub async fn pin_image_first_use(
        &self,
        repo: &str,
        reference: &str,
        image_id: &str,
        run_id: i64,
    ) -> Result<String, StoreError> {
        self.write_pin(FIRST_USE, repo, reference, image_id, run_id)
            .await?;
        let row = sqlx::query("SELECT image_id FROM image_pins WHERE repo = $1 AND reference = $2")
            .bind(repo)
            .bind(reference)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Pins `reference` in `repo` to `image_id`, replacing any earlier pin (a trusted run
    /// built or pulled it).
    pub async fn repin_image(
        &self,
        repo: &str,
        reference: &str,
        image_id: &str,
        run_id: i64,
    ) -> Result<(), StoreError> {
        self.write_pin(REPIN, repo, reference, image_id, run_id)
            .await
    }

    async fn write_pin(
        &self,
        statement: &'static str,
        repo: &str,
        reference: &str,
        image_id: &str,
        run_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(statement)
            .bind(repo)
            .bind(reference)
            .bind(image_id)
            .bind(run_id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

//! Comment commands in the store: the runs a command starts and its reply comment, or a
//! refusal's reply alone, written with the delivery's end in one transaction, so that a
//! command is answered once whatever crashes.

use super::{
    Enqueued, RunSpec, Store, StoreError,
    comments::{NewComment, QUEUE},
    now_ms,
    runs::enqueue_in,
};

impl Store {
    /// Enqueues a command's runs (see [`Store::enqueue_runs`]) and queues the reply that
    /// `reply` writes once the run ids are known (none for a duplicate delivery).
    pub async fn enqueue_replying(
        &self,
        delivery: Option<i64>,
        runs: &[RunSpec],
        reply: impl FnOnce(&Enqueued) -> Option<NewComment>,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let out = enqueue_in(&mut tx, delivery, runs).await?;
        if let Some(comment) = reply(&out) {
            sqlx::query(QUEUE)
                .bind(&comment.repo)
                .bind(comment.pr)
                .bind(&comment.marker)
                .bind(&comment.body)
                .bind(out.ids.first().copied().unwrap_or(0))
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.ends.add_all(&out.ended);
        Ok(out)
    }

    /// Queues the reply of a command that starts nothing, and marks its delivery processed
    /// with `note`.
    pub async fn reply_only(
        &self,
        delivery: i64,
        reply: &NewComment,
        note: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(QUEUE)
            .bind(&reply.repo)
            .bind(reply.pr)
            .bind(&reply.marker)
            .bind(&reply.body)
            .bind(0i64)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE deliveries SET state = 'processed', note = $1 WHERE id = $2")
            .bind(note)
            .bind(delivery)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

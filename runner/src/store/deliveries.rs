//! The delivery inbox: webhook payloads stored before they are answered, until processed.

use std::collections::HashMap;

use sqlx::{Row, any::AnyRow};

use super::{Store, StoreError, now_ms};

/// A delivery to store: the raw payload, kept until it is processed.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub event_type: String,
    pub repo: String,
    pub payload: Vec<u8>,
}

/// What storing a delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Stored under this id; it will be processed.
    New(i64),
    /// A delivery with the same `X-Gitea-Delivery` id was stored before.
    Duplicate,
}

/// A stored delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: i64,
    pub delivery_id: String,
    pub event_type: String,
    pub repo: String,
    pub payload: Vec<u8>,
    pub received_at: i64,
}

/// What became of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Received,
    Processed,
    Duplicate,
    Failed,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Received => "received",
            DeliveryState::Processed => "processed",
            DeliveryState::Duplicate => "duplicate",
            DeliveryState::Failed => "failed",
        }
    }
}

impl Store {
    /// Stores deliveries in one statement: one transaction, one disk sync for the whole
    /// batch, and with SQLite one round trip to the database's thread (no `BEGIN`/`COMMIT`
    /// of their own: on the webhook's answer, each costs as much as the insert).
    pub async fn insert_deliveries(
        &self,
        batch: &[NewDelivery],
    ) -> Result<Vec<Received>, StoreError> {
        self.insert_deliveries_settled(batch, |_| None).await
    }

    /// As [`Store::insert_deliveries`], except that a delivery for which `settled` gives a
    /// note is stored already processed, with that note: one write instead of an insert
    /// followed by an update (each a disk sync on the one write connection, which the next
    /// webhook's answer waits behind).
    pub async fn insert_deliveries_settled(
        &self,
        batch: &[NewDelivery],
        settled: impl Fn(&NewDelivery) -> Option<&'static str>,
    ) -> Result<Vec<Received>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = String::from(
            "INSERT INTO deliveries (delivery_id, event_type, repo, received_at, payload, state, note) VALUES ",
        );
        for i in 0..batch.len() {
            let n = i * 6;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, $1, ${}, ${}, ${})",
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7
            ));
        }
        sql.push_str(" ON CONFLICT (delivery_id) DO NOTHING RETURNING id, delivery_id");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
        for d in batch {
            let note = settled(d);
            let state = match note {
                Some(_) => DeliveryState::Processed,
                None => DeliveryState::Received,
            };
            query = query
                .bind(&d.delivery_id)
                .bind(&d.event_type)
                .bind(&d.repo)
                .bind(&d.payload)
                .bind(state.as_str())
                .bind(note);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut stored: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            stored.insert(row.try_get(1)?, row.try_get(0)?);
        }
        // A delivery id twice in one batch: the first is stored, the second is a duplicate.
        Ok(batch
            .iter()
            .map(|d| match stored.remove(&d.delivery_id) {
                Some(id) => Received::New(id),
                None => Received::Duplicate,
            })
            .collect())
    }

    /// Deliveries stored but not yet processed, oldest first.
    pub async fn pending_deliveries(&self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, delivery_id, event_type, repo, payload, received_at FROM deliveries
             WHERE state = 'received' ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn finish_delivery(
        &self,
        id: i64,
        state: DeliveryState,
        note: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET state = $1, note = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(note)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that processing of a delivery starts, durably, before it starts; returns how
    /// many times it has been started, this time included.
    pub async fn start_delivery(&self, id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Counts deliveries by `X-Gitea-Delivery` id (for tests and the API).
    pub async fn delivery_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM deliveries")
            .fetch_one(&self.read)
            .await?
            .try_get(0)?)
    }
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.try_get("id")?,
        delivery_id: row.try_get("delivery_id")?,
        event_type: row.try_get("event_type")?,
        repo: row.try_get("repo")?,
        payload: row.try_get("payload")?,
        received_at: row.try_get("received_at")?,
    })
}

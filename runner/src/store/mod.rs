//! The database: deliveries (the durable inbox), runs and their steps (the queue), and the
//! outbox of commit statuses still to send. SQLite by default, PostgreSQL for shared agents,
//! one code path through sqlx's `Any` driver (portable types only: integers, text, blobs).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{
    AnyPool, Executor, Row,
    any::{AnyPoolOptions, AnyRow},
};

mod access;
pub mod comments;
mod images;
mod runs;

pub use runs::*;

/// Milliseconds since the epoch: the one time format of the database.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Writes (and reads that must see them in the same transaction). With SQLite this is
    /// one connection: SQLite has one writer anyway, and queueing writers here in FIFO
    /// order beats SQLite's busy handler, which sleeps (1, 2, 5… ms) when the lock is taken.
    pool: AnyPool,
    /// Plain reads: WAL readers never wait for the writer.
    read: AnyPool,
    backend: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url `{0}`: expected sqlite://PATH or postgres://…")]
    Url(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
}

const SCHEMA: &str = include_str!("schema.sql");

/// Changes after version 1, in order: (version, one portable statement).
const MIGRATIONS: &[(i64, &str)] = &[
    // How often processing a delivery was started: a delivery that keeps crashing the
    // process is given up after a few starts instead of crashing it at every restart.
    (
        2,
        "ALTER TABLE deliveries ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0",
    ),
    // Which image a reference named when a trusted run of a repository first used it.
    (3, images::TABLE),
    // Pull-request comments still to create or edit (the plan comment), like statuses.
    (4, comments::TABLE),
];

impl Store {
    /// Opens (creating when needed) the database and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        if backend == Backend::Sqlite
            && let Some(path) = url
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        }
        let pool = Self::pool(
            backend,
            &url,
            if backend == Backend::Sqlite { 1 } else { 8 },
        )
        .await?;
        let read = match backend {
            Backend::Sqlite => Self::pool(backend, &url, 4).await?,
            Backend::Postgres => pool.clone(),
        };
        let store = Store {
            pool,
            read,
            backend,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn pool(backend: Backend, url: &str, connections: u32) -> Result<AnyPool, StoreError> {
        let mut options = AnyPoolOptions::new().max_connections(connections);
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets the API read while a run writes; FULL makes a commit durable
                    // before the webhook is answered, also across a power loss.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        Ok(options.connect(url).await?)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.pool
            .execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let version: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_version")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let version = version.unwrap_or(0);
        if version < 1 {
            self.create_schema().await?;
        }
        for (number, statement) in MIGRATIONS {
            if version < *number {
                let mut tx = self.pool.begin().await?;
                tx.execute(sqlx::AssertSqlSafe(statement.to_string()))
                    .await?;
                sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                    .bind(*number)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Version 1, the schema of `schema.sql`.
    async fn create_schema(&self) -> Result<(), StoreError> {
        let (id, blob) = match self.backend {
            Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
            Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        };
        let ddl: String = SCHEMA
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace("{id}", id)
            .replace("{blob}", blob);
        let mut tx = self.pool.begin().await?;
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            tx.execute(sqlx::AssertSqlSafe(statement.to_string()))
                .await?;
        }
        sqlx::query("INSERT INTO schema_version (version) VALUES (1)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Copies the SQLite write-ahead log into the database, without blocking writers. Run
    /// from a background task so that SQLite's automatic checkpoint (which runs in whichever
    /// connection commits past the threshold) does not land on a webhook's answer.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(&self.read)
                .await?;
        }
        Ok(())
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.read.close().await;
    }
}

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
    /// Stores deliveries in one transaction (one disk sync for the whole batch).
    pub async fn insert_deliveries(
        &self,
        batch: &[NewDelivery],
    ) -> Result<Vec<Received>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        let now = now_ms();
        for d in batch {
            let row = sqlx::query(
                "INSERT INTO deliveries (delivery_id, event_type, repo, received_at, payload, state)
                 VALUES ($1, $2, $3, $4, $5, 'received')
                 ON CONFLICT (delivery_id) DO NOTHING RETURNING id",
            )
            .bind(&d.delivery_id)
            .bind(&d.event_type)
            .bind(&d.repo)
            .bind(now)
            .bind(&d.payload)
            .fetch_optional(&mut *tx)
            .await?;
            out.push(match row {
                Some(row) => Received::New(row.try_get(0)?),
                None => Received::Duplicate,
            });
        }
        tx.commit().await?;
        Ok(out)
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

/// Lease length for a claimed run; the worker renews it well before it runs out.
pub const LEASE: Duration = Duration::from_secs(30);

//! The database: deliveries (the durable inbox), runs and their steps (the queue), the
//! outbox of commit statuses still to send, known repositories and image pins. SQLite by
//! default, PostgreSQL for shared agents, one code path through sqlx's `Any` driver
//! (portable types only: integers, text, blobs). Only this module writes SQL, and values
//! cross it typed: strings in the tables are converted here and nowhere else.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{
    AnyPool, Executor, Row, SqlSafeStr,
    any::AnyPoolOptions,
    migrate::{Migration, MigrationType, Migrator},
};

mod access;
pub mod agents;
mod commands;
pub mod comments;
mod counts;
mod deliveries;
mod gitea_tasks;
mod images;
mod log_lines;
mod outbox;
mod plans;
mod repos;
mod retention;
mod runs;
mod signing_keys;

pub use counts::*;
pub use deliveries::*;
pub use gitea_tasks::*;
pub use log_lines::*;
pub use outbox::*;
pub use plans::*;
pub use repos::*;
pub use retention::*;
pub use runs::*;
pub use signing_keys::*;

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

/// Pages of SQLite's write-ahead log past which the committing connection copies it into
/// the database itself (SQLite's default is 1000, which a webhook burst passes several
/// times a second, each time in some webhook's answer: a copy and a disk sync of the
/// database before it). The background checkpoint keeps the log far below it.
const WAL_BACKSTOP_PAGES: u32 = 20_000;

/// How often the background task checkpoints SQLite's log (`Store::checkpoint`).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

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
    /// The runs this process ended, by final state (shared by every clone).
    ends: std::sync::Arc<RunEnds>,
}
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url `{0}`: expected sqlite://PATH or postgres://…")]
    Url(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
    #[error("failed to migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The schema's history, one file per change (`migrations/<dir>/NNNN_name.sql`): in
/// `both/` when the backends take the same SQL, else one in `sqlite/` and one in
/// `postgres/`. A file, once released, never changes (sqlx checks each applied migration's
/// checksum): every change is a new file, listed in both lists.
macro_rules! migrations {
    ($(($version:literal, $dir:literal, $name:literal)),* $(,)?) => {
        &[$(($version, $name, include_str!(concat!("migrations/", $dir, "/", $name, ".sql")))),*]
    };
}

/// (version, name, SQL), in order.
type Migrations = &'static [(i64, &'static str, &'static str)];

pub(crate) const SQLITE_MIGRATIONS: Migrations = migrations![
    (1, "sqlite", "0001_schema"),
    (2, "both", "0002_delivery_attempts"),
    (3, "both", "0003_image_pins"),
    (4, "both", "0004_comment_outbox"),
    (5, "sqlite", "0005_outbox_by_run"),
    (6, "both", "0006_runs_on"),
    (7, "both", "0007_reviewed_plans"),
    (8, "both", "0008_run_pages"),
    (9, "both", "0009_retention"),
    (10, "both", "0010_agents"),
    (11, "sqlite", "0011_shared_hosts"),
    (13, "both", "0013_gitea_tasks"),
];

pub(crate) const POSTGRES_MIGRATIONS: Migrations = migrations![
    (1, "postgres", "0001_schema"),
    (2, "both", "0002_delivery_attempts"),
    (3, "both", "0003_image_pins"),
    (4, "both", "0004_comment_outbox"),
    (5, "postgres", "0005_outbox_by_run"),
    (6, "both", "0006_runs_on"),
    (7, "both", "0007_reviewed_plans"),
    (8, "both", "0008_run_pages"),
    (9, "both", "0009_retention"),
    (10, "both", "0010_agents"),
    (11, "postgres", "0011_shared_hosts"),
    (13, "both", "0013_gitea_tasks"),
];

/// The highest version of the databases made before migrations were sqlx's: release
/// d082364 wrote `schema_version` 1 (and later builds 2 to 4) with the same statements
/// as the files of those numbers.
const LEGACY_VERSIONS: i64 = 4;

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
            ends: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn pool(backend: Backend, url: &str, connections: u32) -> Result<AnyPool, StoreError> {
        let mut options = AnyPoolOptions::new().max_connections(connections);
        if backend == Backend::Sqlite {
            // A connection to a local file does not go stale: the check before each
            // acquire would be one more round trip to its thread on every write.
            options = options.test_before_acquire(false);
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets the API read while a run writes; FULL makes a commit durable
                    // before the webhook is answered, also across a power loss.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    // The background checkpoint (`Store::checkpoint`) keeps the log short;
                    // this is only its backstop, so that a commit seldom copies the log
                    // into the database and syncs it before its answer.
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}"
                    )))
                    .await?;
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

    fn migrator(&self) -> Migrator {
        let list = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        Migrator::with_migrations(
            list.iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        (*name).into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }

    /// Brings the schema up to date. A database of the time before sqlx's migrations (a
    /// `schema_version` table, no `_sqlx_migrations`) is first marked as having the
    /// migrations up to its version, which made exactly its tables; the rest then run.
    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = self.migrator();
        if !self.table_exists("_sqlx_migrations").await?
            && self.table_exists("schema_version").await?
        {
            let version: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_version")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
            let version = version.unwrap_or(0);
            if !(1..=LEGACY_VERSIONS).contains(&version) {
                return Err(StoreError::Corrupt(format!(
                    "schema_version {version} is not one this version knows"
                )));
            }
            migrator.skip(&self.pool, Some(version)).await?;
            // So that an older release refuses this database instead of reading it.
            self.pool.execute("DROP TABLE schema_version").await?;
        }
        migrator.run(&self.pool).await?;
        Ok(())
    }

    async fn table_exists(&self, name: &str) -> Result<bool, StoreError> {
        let query = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let count: i64 = sqlx::query(query)
            .bind(name)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(count > 0)
    }

    /// Copies the SQLite write-ahead log into the database, without blocking writers. Run
    /// from a background task so that SQLite's automatic checkpoint (which runs in whichever
    /// connection commits past the threshold) seldom lands on a webhook's answer.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every migration file is listed, in order: one of each number for each backend,
    /// `both/` files in both lists. A new file that is not listed would never run.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
        let files = |sub: &str| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let both = files("both");
        for (backend, list) in [
            ("sqlite", SQLITE_MIGRATIONS),
            ("postgres", POSTGRES_MIGRATIONS),
        ] {
            let mut expected: Vec<String> =
                files(backend).into_iter().chain(both.clone()).collect();
            expected.sort();
            let listed: Vec<String> = list
                .iter()
                .map(|(_, name, _)| format!("{name}.sql"))
                .collect();
            assert_eq!(listed, expected, "{backend}");
            // Numbers rise; one may be missing while the change of that number is made
            // elsewhere (sqlx applies what is listed, in order).
            let mut last = 0;
            for (version, name, _) in list.iter() {
                assert!(*version > last, "{backend}: {name}");
                last = *version;
                assert!(
                    name.starts_with(&format!("{version:04}_")),
                    "{backend}: {name}"
                );
            }
        }
        let versions = |list: Migrations| list.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(
            versions(SQLITE_MIGRATIONS),
            versions(POSTGRES_MIGRATIONS),
            "each number on both backends"
        );
    }
}

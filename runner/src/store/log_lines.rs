//! Step logs in the database (`log_lines`, PostgreSQL only): one row a line, numbered from
//! 0 in each step, written in batches by whichever process runs the step and read by any
//! (the server's API and UI follow an agent's step through these rows). `logs.rs` is the
//! one caller: it keeps the files of SQLite and these rows behind the same `LogStore`.

use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};

/// Rows in one `INSERT`: two parameters each, far below PostgreSQL's 65 535.
pub const LOG_INSERT_ROWS: usize = 1000;

/// Rows one read looks at, whatever their size (the byte budget then decides).
const LOG_READ_ROWS: i64 = 2000;

impl Store {
    /// Forgets what a step's log held (a writer starts it afresh, as a file is truncated).
    pub async fn log_clear(&self, run: i64, step: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM log_lines WHERE run_id = $1 AND step = $2")
            .bind(run)
            .bind(step)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends lines numbered from `first`, [`LOG_INSERT_ROWS`] at a time, in one
    /// transaction: a batch is stored whole or not at all.
    pub async fn log_append(
        &self,
        run: i64,
        step: i64,
        first: i64,
        lines: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut n = first;
        for chunk in lines.chunks(LOG_INSERT_ROWS) {
            let values = (0..chunk.len())
                .map(|i| format!("($1, $2, ${}, ${})", 3 + 2 * i, 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO log_lines (run_id, step, n, line) VALUES {values}");
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(run).bind(step);
            for line in chunk {
                query = query.bind(n).bind(line.as_slice());
                n += 1;
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The lines of a step's log from number `from`, in order: at most about `budget`
    /// bytes of them (always the first one, however long).
    pub async fn log_lines(
        &self,
        run: i64,
        step: i64,
        from: i64,
        budget: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = sqlx::query(
            "SELECT line FROM (
                SELECT n, line, SUM(octet_length(line)) OVER (ORDER BY n) AS upto FROM (
                    SELECT n, line FROM log_lines WHERE run_id = $1 AND step = $2 AND n >= $3
                    ORDER BY n LIMIT $4
                ) f
             ) w WHERE upto - octet_length(line) < $5 ORDER BY n",
        )
        .bind(run)
        .bind(step)
        .bind(from)
        .bind(LOG_READ_ROWS)
        .bind(budget)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<Vec<u8>, _>(0)?))
            .collect()
    }

    /// How many lines a step's log holds (`None`: it has none, the step never logged).
    pub async fn log_line_count(&self, run: i64, step: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MAX(n) FROM log_lines WHERE run_id = $1 AND step = $2")
            .bind(run)
            .bind(step)
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map(|last| last + 1))
    }

    /// Deletes every line of a run's logs.
    pub async fn log_delete_run(&self, run: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM log_lines WHERE run_id = $1")
            .bind(run)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

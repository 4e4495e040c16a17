//! What `/metrics` reads from the store: the runs this process ended, counted as their
//! ends commit, and the sizes of the queues, counted at scrape time on their indexes.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row;

use super::{RunState, Store, StoreError, now_ms};

/// The final states a run can end in, in the order [`RunEnds`] keeps them.
pub const FINAL_STATES: [RunState; 5] = [
    RunState::Success,
    RunState::Failure,
    RunState::Error,
    RunState::Cancelled,
    RunState::Superseded,
];

/// How many runs ended in each final state since the store was opened. Bumped after the
/// transaction that ended them committed, by every path that ends a run (the worker, a
/// cancel, a superseding enqueue, a lost lease, a restart's settling, a run added finished).
#[derive(Debug, Default)]
pub struct RunEnds([AtomicU64; FINAL_STATES.len()]);

impl RunEnds {
    pub(super) fn add(&self, state: RunState) {
        if let Some(i) = FINAL_STATES.iter().position(|s| *s == state) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn add_all(&self, states: &[RunState]) {
        for state in states {
            self.add(*state);
        }
    }
}

/// The queues' sizes at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSizes {
    pub runs_queued: i64,
    pub runs_running: i64,
    /// Commit statuses not sent yet.
    pub statuses_pending: i64,
    /// Deliveries stored and not processed yet.
    pub deliveries_pending: i64,
    /// Other processes' agents with a fresh heartbeat that claim runs ([`Store::other_agents`]).
    pub other_agents_live: i64,
    /// Other processes' agents with a fresh heartbeat that drain.
    pub other_agents_draining: i64,
}

impl Store {
    /// The runs ended since the store was opened, by final state (every final state, zeros
    /// included).
    pub fn run_ends(&self) -> [(RunState, u64); FINAL_STATES.len()] {
        let mut out = FINAL_STATES.map(|s| (s, 0));
        for (i, (_, n)) in out.iter_mut().enumerate() {
            *n = self.ends.0[i].load(Ordering::Relaxed);
        }
        out
    }

    /// The queues' sizes, in one statement: each count is a range of an index
    /// (`runs_state`, `status_outbox_pending`, `deliveries_state`), so its cost follows the
    /// queue's length, not the history's.
    pub async fn queue_sizes(&self) -> Result<QueueSizes, StoreError> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM runs WHERE state = 'queued'),
               (SELECT COUNT(*) FROM runs WHERE state = 'running'),
               (SELECT COUNT(*) FROM status_outbox WHERE sent_at IS NULL),
               (SELECT COUNT(*) FROM deliveries WHERE state = 'received')",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(QueueSizes {
            runs_queued: row.try_get(0)?,
            runs_running: row.try_get(1)?,
            statuses_pending: row.try_get(2)?,
            deliveries_pending: row.try_get(3)?,
            ..QueueSizes::default()
        })
    }

    /// The agents of other instances than `instance` (this process, which knows its own
    /// state) with a fresh heartbeat: how many claim runs, and how many drain.
    pub async fn other_agents(&self, instance: &str) -> Result<(i64, i64), StoreError> {
        let since = now_ms() - super::agents::AGENT_FRESH.as_millis() as i64;
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM agents WHERE heartbeat_at >= $1 AND instance <> $2 AND state = 'running'),
               (SELECT COUNT(*) FROM agents WHERE heartbeat_at >= $1 AND instance <> $2 AND state = 'draining')",
        )
        .bind(since)
        .bind(instance)
        .fetch_one(&self.read)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

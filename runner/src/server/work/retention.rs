//! Retention (`[retention]`): the supervised task that, at start and every `interval`,
//! deletes the step logs of runs older than `logs` and the runs older than `runs` (with
//! their rows, logs and kept plan files), forgets old reviewed plans, and compacts the git
//! mirrors. Work goes in batches of [`RETENTION_BATCH`] runs, one short transaction
//! each, so that the webhook writer and the runs never wait long for SQLite's lock.

use super::{Work, plans};
use std::{sync::Arc, time::Duration};

use pipewright_containers::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    error_chain,
    server::App,
    store::{RETENTION_BATCH, StoreError, now_ms},
};

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Runs whose step logs were deleted (the runs stay).
    pub logs: usize,
    /// Runs deleted.
    pub runs: u64,
    /// Deliveries deleted (received before the `runs` age, processed).
    pub deliveries: u64,
    /// Log directories of runs deleted or marked as having no logs (by another instance
    /// sharing the database, or before a crash).
    pub strays: usize,
    /// Mirrors `git gc --auto` was run in.
    pub mirrors: usize,
}

/// The supervised task: a pass now, then one every `[retention].interval`.
pub(crate) async fn run(app: Arc<App>, stop: CancellationToken) {
    let work = app.work();
    loop {
        match once(&work, &stop).await {
            Ok(removed)
                if removed.logs > 0
                    || removed.runs > 0
                    || removed.strays > 0
                    || removed.deliveries > 0 =>
            {
                info!(
                    logs = removed.logs,
                    runs = removed.runs,
                    strays = removed.strays,
                    deliveries = removed.deliveries,
                    "retention: removed the logs of {} runs and {} runs",
                    removed.logs,
                    removed.runs
                )
            }
            Ok(_) => debug!("retention: nothing to remove"),
            Err(e) => warn!(error = %error_chain(&e), "retention failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(work.config.retention.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass of retention, as the task makes it (stopping between batches once `stop`
/// fires).
pub async fn once(work: &Work<'_>, stop: &CancellationToken) -> Result<Removed, StoreError> {
    let mut removed = Removed::default();
    let now = now_ms();
    let retention = &work.config.retention;
    plans::retain(work).await;
    if let Some(age) = retention.runs {
        removed.runs = remove_runs(work, now - millis(age), stop).await?;
        removed.deliveries = remove_deliveries(work, now - millis(age), stop).await?;
    }
    if let Some(age) = retention.logs {
        removed.logs = remove_logs(work, now - millis(age), now, stop).await?;
    }
    removed.strays = remove_strays(work).await?;
    removed.mirrors = compact_mirrors(work, stop).await;
    Ok(removed)
}

fn millis(age: Duration) -> i64 {
    i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
}

/// Runs that ended before `before`: files first, then the rows (see `store/retention.rs`).
async fn remove_runs(
    work: &Work<'_>,
    before: i64,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let ids = work.store.removable_runs(before, RETENTION_BATCH).await?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut gone = Vec::with_capacity(ids.len());
        for id in &ids {
            match work.logs.remove_run(*id).await {
                Ok(()) => {
                    plans::forget(work, *id);
                    gone.push(*id);
                }
                Err(e) => {
                    warn!(run_id = id, error = %e, "failed to remove the run's logs; keeping the run")
                }
            }
        }
        let deleted = work.store.delete_runs(&gone, before).await?;
        total += deleted;
        debug!(deleted, "retention: deleted a batch of runs");
        // A batch that deleted nothing would come back as it is: stop for this pass.
        if deleted == 0 || (ids.len() as i64) < RETENTION_BATCH || stop.is_cancelled() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Processed deliveries received before `before`, in batches.
async fn remove_deliveries(
    work: &Work<'_>,
    before: i64,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = work
            .store
            .delete_old_deliveries(before, RETENTION_BATCH)
            .await?;
        total += deleted;
        if (deleted as i64) < RETENTION_BATCH || stop.is_cancelled() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// The step logs of runs that ended before `before`; the runs are marked at `now`.
async fn remove_logs(
    work: &Work<'_>,
    before: i64,
    now: i64,
    stop: &CancellationToken,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let ids = work
            .store
            .runs_with_old_logs(before, RETENTION_BATCH)
            .await?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut gone = Vec::with_capacity(ids.len());
        for id in &ids {
            match work.logs.remove_run(*id).await {
                Ok(()) => gone.push(*id),
                Err(e) => warn!(run_id = id, error = %e, "failed to remove the run's logs"),
            }
        }
        work.store.mark_logs_removed(&gone, now).await?;
        total += gone.len();
        if gone.is_empty() || (ids.len() as i64) < RETENTION_BATCH || stop.is_cancelled() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// The log directories on this host that the database says are gone: runs deleted, or
/// whose logs were removed, by another instance (with a shared database) or before a
/// crash.
async fn remove_strays(work: &Work<'_>) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut here = work.logs.runs();
    here.sort_unstable();
    for batch in here.chunks(RETENTION_BATCH as usize) {
        for id in work.store.runs_without_logs(batch).await? {
            match work.logs.remove_run(id).await {
                Ok(()) => removed += 1,
                Err(e) => warn!(run_id = id, error = %e, "failed to remove the run's logs"),
            }
        }
    }
    Ok(removed)
}

/// `git gc --auto` in every mirror, each under its lock (a delivery of that repository
/// waits, the others do not).
async fn compact_mirrors(work: &Work<'_>, stop: &CancellationToken) -> usize {
    let mut compacted = 0;
    for repo in work.git.mirrored_repos() {
        if stop.is_cancelled() {
            break;
        }
        let mirror = match work.git.open_existing(&repo).await {
            Ok(Some(mirror)) => mirror,
            Ok(None) => continue,
            Err(e) => {
                warn!(repo, error = %error_chain(&e), "failed to open the mirror to compact it");
                continue;
            }
        };
        match work.git.compact(&mirror).await {
            Ok(()) => compacted += 1,
            Err(e) => warn!(repo, error = %error_chain(&e), "failed to compact the mirror"),
        }
    }
    compacted
}

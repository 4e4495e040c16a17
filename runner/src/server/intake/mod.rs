//! The intake layer: what turns deliveries, comment commands, catch-up, schedules,
//! dispatches and Gitea Actions tasks into queued runs, and the one `RunSpec` constructor
//! per source of runs.

pub(super) mod catchup;
pub(super) mod commands;
pub(super) mod dispatch;
pub(super) mod gitea_actions;
pub(super) mod ingest;
pub(super) mod schedule;
pub(super) mod spec;

use pipewright_containers::SharedExecutor;
use tokio::sync::Notify;

use crate::{
    config::Config,
    git::Git,
    gitea::Gitea,
    run::BoxFuture,
    server::Scheduler,
    store::{Enqueued, NewDelivery, Received, RunSpec, Store, StoreError},
};

/// Where intake stores a delivery of its own (catch-up's): the inbox the webhook writes to,
/// durable when the answer comes.
pub trait Inbox: Sync {
    fn store(&self, delivery: NewDelivery) -> BoxFuture<'_, Result<Received, String>>;
}

/// Queueing runs: the store's enqueue, then the stops and wake-ups it asks for.
#[derive(Clone, Copy, Debug)]
pub struct Queue<'a> {
    pub store: &'a Store,
    pub scheduler: &'a Scheduler,
    pub reporter_wake: &'a Notify,
}

impl Queue<'_> {
    /// Enqueues runs (for a delivery, when given), stops the running runs their
    /// `cancel_in_progress` groups ask to stop, and wakes the worker and the reporter.
    pub async fn enqueue(
        &self,
        delivery: Option<i64>,
        runs: &[RunSpec],
    ) -> Result<Enqueued, StoreError> {
        let enqueued = self.store.enqueue_runs(delivery, runs).await?;
        self.settle(&enqueued);
        Ok(enqueued)
    }

    /// [`Queue::enqueue`], with a comment command's reply queued in the same transaction
    /// (written by `reply` once the run ids are known).
    pub async fn enqueue_replying(
        &self,
        delivery: Option<i64>,
        runs: &[RunSpec],
        reply: impl FnOnce(&Enqueued) -> Option<crate::store::comments::NewComment>,
    ) -> Result<Enqueued, StoreError> {
        let enqueued = self.store.enqueue_replying(delivery, runs, reply).await?;
        self.settle(&enqueued);
        Ok(enqueued)
    }

    /// The stops and wake-ups that enqueueing asks for.
    fn settle(&self, enqueued: &Enqueued) {
        for id in &enqueued.cancel_running {
            self.scheduler.cancel(
                *id,
                "cancelled: a newer run of its concurrency group started",
            );
        }
        self.scheduler.wake();
        self.reporter_wake.notify_one();
    }
}

/// What ingest, catch-up and schedules use.
#[derive(Clone, Copy)]
pub struct Intake<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub git: &'a Git,
    pub gitea: &'a Gitea,
    pub deliveries: &'a dyn Inbox,
    pub queue: Queue<'a>,
    /// Catch-up removes the containers of no live run of this instance.
    pub executor: &'a SharedExecutor,
    pub instance: &'a str,
}

//! The running-run registry: which runs this process is running, how to stop them, and
//! which containers belong to none of them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use pipewright_containers::{CancellationToken, LABEL_INSTANCE, LABEL_RUN};
use tokio::sync::Notify;

/// A run under way: how to stop it, and why it was stopped (its status description).
#[derive(Debug)]
pub(super) struct Running {
    pub(super) cancel: CancellationToken,
    pub(super) reason: Arc<Mutex<Option<String>>>,
}

/// Which runs this process is running, and how to stop them.
#[derive(Debug, Default)]
pub struct Scheduler {
    pub(super) wake: Notify,
    pub(super) running: Mutex<HashMap<i64, Running>>,
    pub(super) owner: String,
}

impl Scheduler {
    /// A scheduler whose leases are held as `instance` (the stable id of `data_dir/instance`,
    /// the same across restarts, so a restart knows which running runs were its own).
    pub fn new(instance: &str) -> Scheduler {
        Scheduler {
            owner: instance.to_string(),
            ..Scheduler::default()
        }
    }

    /// Something changed: look for runs to start.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Cancels a running run; the reason becomes its status description.
    pub fn cancel(&self, id: i64, why: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(&id) {
            Some(run) => {
                *run.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
                run.cancel.cancel();
                true
            }
            None => false,
        }
    }

    pub fn is_running(&self, id: i64) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    pub(super) fn running_ids(&self) -> Vec<i64> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// What reaping keeps: containers of other instances, and of runs this process runs.
pub fn live_runs_filter<'a>(
    scheduler: &'a Scheduler,
    instance: &'a str,
) -> impl Fn(&[(String, String)]) -> bool + Sync + 'a {
    move |labels: &[(String, String)]| {
        let ours = labels
            .iter()
            .any(|(k, v)| k == LABEL_INSTANCE && *v == instance);
        let live = labels.iter().any(|(k, v)| {
            k == LABEL_RUN && v.parse::<i64>().is_ok_and(|id| scheduler.is_running(id))
        });
        !ours || live
    }
}

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
    /// Runs a previous process of this instance left running, adopted at start
    /// (`reattach.rs`) and handed to the claim loop, which goes on with them first.
    pub(super) resumes: Mutex<Vec<crate::store::Run>>,
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

    /// The run's entry, made when it has none yet (an adopted run has one from the start,
    /// so that a cancel before it goes on is kept): its cancellation and its reason.
    pub(super) fn register(&self, id: i64) -> (CancellationToken, Arc<Mutex<Option<String>>>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let entry = running.entry(id).or_insert_with(|| Running {
            cancel: CancellationToken::new(),
            reason: Arc::default(),
        });
        (entry.cancel.clone(), entry.reason.clone())
    }

    /// The adopted runs not yet handed to the claim loop.
    pub(super) fn take_resumes(&self) -> Vec<crate::store::Run> {
        std::mem::take(&mut *self.resumes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn running_ids(&self) -> Vec<i64> {
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

//! Supervision of the server's background tasks (webhook writer, ingest, reporter, catch-up,
//! schedules, checkpoints, kept images, retention, gitea actions): a task that panics or returns before shutdown is logged,
//! restarted after a backoff (1 s, doubling up to 1 min; back to 1 s once it has run for
//! 10 min), and its state is what `/readyz` reports.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pipewright_containers::CancellationToken;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{Instrument, error, info_span};

use super::App;
use crate::run::BoxFuture;

/// A background task: started again, with a fresh future, after each death.
pub type TaskFn = fn(Arc<App>, CancellationToken) -> BoxFuture<'static, ()>;

/// A task that died this recently makes `/readyz` answer 503.
const UNSTABLE_FOR: Duration = Duration::from_secs(10 * 60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before dying restarts after the first backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(10 * 60);

/// The states of the supervised tasks, by name.
#[derive(Debug, Default)]
pub struct Tasks {
    states: Mutex<BTreeMap<&'static str, TaskState>>,
    crash: Mutex<HashMap<&'static str, Arc<Notify>>>,
}

#[derive(Clone, Debug, Default)]
struct TaskState {
    running: bool,
    restarts: u32,
    last_death: Option<(Instant, String)>,
}

/// One task as `/readyz` shows it.
#[derive(Debug, Serialize)]
pub struct TaskReport {
    pub running: bool,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_secs_ago: Option<u64>,
}

impl Tasks {
    fn update(&self, name: &'static str, change: impl FnOnce(&mut TaskState)) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        change(states.entry(name).or_default());
    }

    fn crash_signal(&self, name: &'static str) -> Arc<Notify> {
        let mut crash = self.crash.lock().unwrap_or_else(|e| e.into_inner());
        crash.entry(name).or_default().clone()
    }

    /// Makes a running task panic where it stands, once, as a bug in it would. For tests
    /// of supervision: no input is meant to be able to kill a task.
    #[doc(hidden)]
    pub fn crash(&self, name: &'static str) {
        self.crash_signal(name).notify_one();
    }

    /// Every task's state, and what is wrong: tasks not running (waiting to restart) and
    /// tasks that died in the last ten minutes.
    pub fn report(&self) -> (BTreeMap<&'static str, TaskReport>, Vec<String>) {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        for (name, state) in states.iter() {
            let ago = state.last_death.as_ref().map(|(at, _)| at.elapsed());
            let why = state.last_death.as_ref().map(|(_, why)| why.clone());
            if let (Some(ago), Some(why)) = (ago, &why) {
                let times = match state.restarts {
                    1 => "1 time".to_owned(),
                    n => format!("{n} times"),
                };
                if !state.running {
                    problems.push(format!(
                        "{name} is down, restarted {times} so far, last: {why}"
                    ));
                } else if ago < UNSTABLE_FOR {
                    problems.push(format!(
                        "{name} restarted {times}, last {}s ago: {why}",
                        ago.as_secs()
                    ));
                }
            }
            out.insert(
                *name,
                TaskReport {
                    running: state.running,
                    restarts: state.restarts,
                    last_failure: why,
                    last_failure_secs_ago: ago.map(|d| d.as_secs()),
                },
            );
        }
        (out, problems)
    }
}

/// Runs `task` until `stop`, restarting it whenever it dies before.
pub async fn supervise(name: &'static str, app: Arc<App>, stop: CancellationToken, task: TaskFn) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let crash = app.tasks.crash_signal(name);
        let future = task(app.clone(), stop.clone());
        let started = Instant::now();
        app.tasks.update(name, |s| s.running = true);
        let handle = tokio::spawn(
            async move {
                tokio::select! {
                    () = future => {}
                    () = crash.notified() => panic!("{name} was made to crash"),
                }
            }
            .instrument(info_span!("task", task = name)),
        );
        let result = handle.await;
        if stop.is_cancelled() {
            app.tasks.update(name, |s| s.running = false);
            return;
        }
        let why = match result {
            Ok(()) => "returned before shutdown".to_owned(),
            Err(e) if e.is_panic() => format!("panic: {}", panic_message(e.into_panic())),
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        error!(task = name, error = %why, retry_in = ?backoff, "a background task died; restarting it");
        app.tasks.update(name, |s| {
            s.running = false;
            s.restarts += 1;
            s.last_death = Some((Instant::now(), why));
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

//! Runs a plan's steps in order on an executor: `when`, `continue_on_error`, the run's
//! timeout, cancellation, and what a step that cannot run says. Shared by `exec` and the
//! server; where the output goes is the [`RunObserver`]'s business.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use pipewright_containers::{
    CancellationToken, ExecError, Executor, LABEL_INSTANCE, LABEL_RUN, LABEL_STEP, LogSink, Mount,
    Outcome, StepSpec, Stream,
};
use pipewright_pipelines::{Plan, PlannedAction, PlannedStep};

use crate::mask::Masker;

/// Where step containers see the checkout.
pub const WORKSPACE: &str = "/workspace";

/// Limits a step gets when its pipeline names none.
#[derive(Clone, Debug)]
pub struct StepDefaults {
    pub memory_bytes: u64,
    pub pids: u64,
}

impl Default for StepDefaults {
    fn default() -> Self {
        StepDefaults {
            memory_bytes: 4 << 30,
            pids: 4096,
        }
    }
}

/// How one step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult {
    /// Its `when` excludes this event.
    Skipped,
    /// An earlier step failed, or the run was cancelled or ran out of time.
    NotRun,
    /// It ran to this outcome.
    Ran(Outcome),
    /// It could not run, for a reason that is not the step's own fault (an action this
    /// build lacks): the run ends as `error`.
    Unrunnable(String),
}

/// The run's verdict, which becomes the commit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunResult {
    Success,
    /// A step failed (status `failure`).
    Failure {
        step: String,
        why: String,
    },
    /// Pipewright or a service failed (status `error`).
    Error(String),
    Cancelled,
}

impl RunResult {
    /// A one-line summary, e.g. for a status description.
    pub fn describe(&self) -> String {
        match self {
            RunResult::Success => "succeeded".into(),
            RunResult::Failure { step, why } => format!("step {step} {why}"),
            RunResult::Error(why) => why.clone(),
            RunResult::Cancelled => "cancelled".into(),
        }
    }
}

/// Receives what happens in a run.
pub trait RunObserver: Send {
    fn step_started(&mut self, step: &PlannedStep) -> impl Future<Output = ()> + Send;
    /// One line of a step's output. An error stops the step (the log could not be kept).
    fn step_output(&mut self, step: &PlannedStep, stream: Stream, line: &[u8]) -> io::Result<()>;
    fn step_finished(
        &mut self,
        step: &PlannedStep,
        result: &StepResult,
        elapsed: Duration,
    ) -> impl Future<Output = ()> + Send;
}

/// What a step gets besides its plan: secrets and its identity token (env), the CA bundle
/// (mounts), and the masker for its output.
#[derive(Debug, Default)]
pub struct StepExtras {
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub masker: Masker,
}

/// Gives each step its extras as it starts (so each gets a fresh identity token).
pub type Extras<'a> = &'a (dyn Fn(&PlannedStep) -> StepExtras + Sync);

/// Where a run happens.
pub struct RunSetup<'a> {
    pub run_id: &'a str,
    /// The owner of the run's containers ([`LABEL_INSTANCE`]).
    pub instance: &'a str,
    /// The checkout, mounted read-write at [`WORKSPACE`].
    pub workspace: &'a Path,
    pub defaults: &'a StepDefaults,
    pub extras: Extras<'a>,
}

impl std::fmt::Debug for RunSetup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSetup")
            .field("run_id", &self.run_id)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

struct StepSink<'a, O: RunObserver> {
    observer: &'a mut O,
    step: &'a PlannedStep,
    masker: &'a Masker,
}

impl<O: RunObserver> LogSink for StepSink<'_, O> {
    fn line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        // Masked here, before anything stores, streams or prints the line.
        self.observer
            .step_output(self.step, stream, &self.masker.mask(line))
    }
}

/// Runs every step of `plan`. `Err` only when the container engine failed under us.
pub async fn run_plan<E: Executor, O: RunObserver>(
    executor: &E,
    plan: &Plan,
    setup: &RunSetup<'_>,
    observer: &mut O,
    cancel: &CancellationToken,
) -> Result<RunResult, ExecError> {
    let deadline = Instant::now() + plan.timeout;
    let mut result = RunResult::Success;
    for step in &plan.steps {
        let started = Instant::now();
        if result != RunResult::Success {
            observer
                .step_finished(step, &StepResult::NotRun, Duration::ZERO)
                .await;
            continue;
        }
        if !step.applies {
            observer
                .step_finished(step, &StepResult::Skipped, Duration::ZERO)
                .await;
            continue;
        }
        let left = deadline.saturating_duration_since(started);
        if left.is_zero() {
            result = RunResult::Failure {
                step: step.name.clone(),
                why: format!(
                    "did not start: the run's timeout of {}s ran out",
                    plan.timeout.as_secs()
                ),
            };
            observer
                .step_finished(step, &StepResult::NotRun, Duration::ZERO)
                .await;
            continue;
        }
        observer.step_started(step).await;
        let step_result = match &step.action {
            PlannedAction::Uses { .. } => match pipewright_actions::check(step) {
                Ok(()) => {
                    StepResult::Unrunnable(format!("action step {} has no executor", step.name))
                }
                Err(e) => StepResult::Unrunnable(e.to_string()),
            },
            PlannedAction::Run { image, script } => {
                let extras = (setup.extras)(step);
                let mut spec = spec_for(step, image, script, setup, left);
                spec.env.extend(extras.env);
                spec.mounts.extend(extras.mounts);
                let mut sink = StepSink {
                    observer: &mut *observer,
                    step,
                    masker: &extras.masker,
                };
                let outcome = executor.run_step(&spec, &mut sink, cancel).await?;
                // The run's own deadline cut the step short: say so rather than blame the step.
                let outcome = match outcome {
                    Outcome::TimedOut { .. } if step.timeout.is_none_or(|t| t > left) => {
                        Outcome::TimedOut {
                            after: plan.timeout,
                        }
                    }
                    other => other,
                };
                StepResult::Ran(outcome)
            }
        };
        observer
            .step_finished(step, &step_result, started.elapsed())
            .await;
        result = match step_result {
            StepResult::Ran(Outcome::Succeeded) | StepResult::Skipped | StepResult::NotRun => {
                RunResult::Success
            }
            StepResult::Ran(Outcome::Cancelled) => RunResult::Cancelled,
            StepResult::Ran(
                ref o @ (Outcome::ImageUnavailable { .. } | Outcome::StartFailed { .. }),
            ) => RunResult::Error(format!("step {}: {o}", step.name)),
            StepResult::Ran(_) if step.continue_on_error => RunResult::Success,
            StepResult::Ran(o) => RunResult::Failure {
                step: step.name.clone(),
                why: o.to_string(),
            },
            StepResult::Unrunnable(why) => RunResult::Error(format!("step {}: {why}", step.name)),
        };
    }
    Ok(result)
}

fn spec_for(
    step: &PlannedStep,
    image: &str,
    script: &str,
    setup: &RunSetup<'_>,
    left: Duration,
) -> StepSpec {
    let mut mounts = vec![Mount {
        host: setup.workspace.to_path_buf(),
        container: WORKSPACE.into(),
        read_only: false,
    }];
    mounts.extend(step.volumes.iter().map(|v| Mount {
        host: PathBuf::from(&v.host),
        container: v.container.clone(),
        read_only: v.read_only,
    }));
    StepSpec {
        image: image.to_string(),
        command: vec![
            "/bin/sh".into(),
            "-e".into(),
            "-c".into(),
            script.to_string(),
        ],
        env: step.env.clone(),
        working_dir: WORKSPACE.into(),
        mounts,
        labels: vec![
            (LABEL_INSTANCE.into(), setup.instance.into()),
            (LABEL_RUN.into(), setup.run_id.into()),
            (LABEL_STEP.into(), step.name.clone()),
        ],
        memory_bytes: Some(step.memory.unwrap_or(setup.defaults.memory_bytes) as i64),
        pids_limit: Some(step.pids.unwrap_or(setup.defaults.pids) as i64),
        timeout: Some(step.timeout.map_or(left, |t| t.min(left))),
    }
}

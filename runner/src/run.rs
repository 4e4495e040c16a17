//! Runs a plan's steps in order on an executor: `when`, `continue_on_error`, the run's
//! timeout, cancellation, and what a step that cannot run says. Shared by `exec` and the
//! server; where the output goes is the [`RunObserver`]'s business.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use pipewright_containers::{
    CancellationToken, ExecError, Executor, LABEL_INSTANCE, LABEL_RUN, LABEL_STEP, Mount, Outcome,
    StepSpec,
};
use pipewright_pipelines::{Plan, PlannedAction, PlannedStep};

use crate::mask::Masker;
use crate::step_io::StepSink;
pub use crate::step_io::{
    ActionServices, BoxFuture, DbCredentials, Extras, NoServices, RunFacts, RunObserver, RunSetup,
    StepDefaults, StepExtras, StepResult, WORKSPACE,
};

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

/// What the run's actions found out, for the status and the pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reports {
    /// The status description when the run succeeds (`plan: 1 to add, …`).
    pub summary: Option<String>,
    /// A plan comment for the pull request (`tofu`).
    pub plan_comment: Option<PlanComment>,
    /// The plan files `tofu` steps saved, by step name (kept for `/pipewright apply`).
    pub saved_plans: Vec<(String, Vec<u8>)>,
}

/// The plan summary to publish on a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanComment {
    pub plan: pipewright_actions::tofu::PlanSummary,
}

/// `result` with every text in it masked: it becomes a step's and the run's description.
fn masked_result(masker: &Masker, result: StepResult) -> StepResult {
    let text = |s: String| masker.mask_str(&s);
    match result {
        StepResult::Ran(Outcome::ImageUnavailable { image, reason }) => {
            StepResult::Ran(Outcome::ImageUnavailable {
                image: text(image),
                reason: text(reason),
            })
        }
        StepResult::Ran(Outcome::StartFailed { reason }) => StepResult::Ran(Outcome::StartFailed {
            reason: text(reason),
        }),
        StepResult::Failed(why) => StepResult::Failed(text(why)),
        StepResult::Unrunnable(why) => StepResult::Unrunnable(text(why)),
        other => other,
    }
}

/// Runs every step of `plan`. `Err` only when the container engine failed under us.
pub async fn run_plan<E: Executor, O: RunObserver>(
    executor: &E,
    plan: &Plan,
    setup: &RunSetup<'_>,
    observer: &mut O,
    cancel: &CancellationToken,
) -> Result<(RunResult, Reports), ExecError> {
    let deadline = Instant::now() + plan.timeout;
    let mut result = RunResult::Success;
    let mut reports = Reports::default();
    let ceiling = setup.defaults.max_timeout;
    if plan.timeout > ceiling {
        result = RunResult::Error(format!(
            "the pipeline's timeout {} is above [docker].max_timeout ({})",
            show_duration(plan.timeout),
            show_duration(ceiling)
        ));
    }
    // Images the run's actions leave that nothing may use once it ends.
    let mut leftovers = Vec::new();
    // Every secret value a step was given so far (a later step may print what an earlier
    // one left in the workspace), and what masks every text the run hands out.
    let mut secret_values: Vec<String> = Vec::new();
    let mut run_masker = Masker::default();
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
        let moved = setup.volumes_resolved.then(|| moved_volume(step)).flatten();
        if let Some(why) = moved.or_else(|| above_ceiling(step, setup.defaults)) {
            let refused = StepResult::Unrunnable(why.clone());
            observer.step_finished(step, &refused, Duration::ZERO).await;
            result = RunResult::Error(format!("step {}: {why}", step.name));
            continue;
        }
        let extras = (setup.extras)(step);
        for value in extras.secret_values {
            if !secret_values.contains(&value) {
                secret_values.push(value);
            }
        }
        let mut sink = StepSink::new(
            &mut *observer,
            step,
            Masker::new(secret_values.iter().map(String::as_str)),
        );
        let mut spec = spec_for(step, setup, left);
        spec.env.extend(extras.env);
        spec.mounts.extend(extras.mounts);
        let step_result = match &step.action {
            PlannedAction::Uses { action, with } => {
                let ran = crate::action_steps::run(
                    executor,
                    crate::action_steps::ActionStep {
                        step,
                        action,
                        with,
                        spec,
                        setup,
                        secret_values: &secret_values,
                    },
                    &mut sink,
                    cancel,
                )
                .await?;
                if ran.summary.is_some() {
                    reports.summary = ran.summary;
                }
                if ran.plan.is_some() {
                    reports.plan_comment = ran.plan.map(|plan| PlanComment { plan });
                }
                if let Some(saved) = ran.saved_plan {
                    reports.saved_plans.push((step.name.clone(), saved));
                }
                leftovers.extend(ran.leftovers);
                ran.result
            }
            PlannedAction::Run { image, script } => {
                spec.image = image.clone();
                spec.command = vec!["/bin/sh".into(), "-e".into(), "-c".into(), script.clone()];
                StepResult::Ran(executor.run_step(&spec, &mut sink, cancel).await?)
            }
        };
        sink.flush().map_err(ExecError::Sink)?;
        // The step's masker may know more than it was given (an action's database password).
        run_masker = run_masker.union(&sink.masker);
        let step_result = masked_result(&run_masker, step_result);
        // The run's own deadline cut the step short: say so rather than blame the step.
        let step_result = match step_result {
            StepResult::Ran(Outcome::TimedOut { .. }) if step.timeout.is_none_or(|t| t > left) => {
                StepResult::Ran(Outcome::TimedOut {
                    after: plan.timeout,
                })
            }
            other => other,
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
            StepResult::Failed(_) if step.continue_on_error => RunResult::Success,
            StepResult::Failed(why) => RunResult::Failure {
                step: step.name.clone(),
                why: format!("failed: {why}"),
            },
            StepResult::Unrunnable(why) => RunResult::Error(format!("step {}: {why}", step.name)),
        };
    }
    for image in leftovers {
        if let Err(e) = executor.remove_image(&image).await {
            tracing::warn!(image, error = %crate::error_chain(&e), "failed to remove an image of the run");
        }
    }
    Ok((result, masked_reports(&run_masker, reports)))
}

/// The status description and plan comment, masked (a plan's addresses can hold values).
fn masked_reports(masker: &Masker, reports: Reports) -> Reports {
    Reports {
        summary: reports.summary.map(|s| masker.mask_str(&s)),
        plan_comment: reports.plan_comment.map(|mut comment| {
            for change in &mut comment.plan.changes {
                change.address = masker.mask_str(&change.address);
            }
            PlanComment { plan: comment.plan }
        }),
        saved_plans: reports.saved_plans,
    }
}

/// A host volume of the step whose path no longer resolves to itself (a link put in its
/// place since the run's check), if any.
fn moved_volume(step: &PlannedStep) -> Option<String> {
    step.volumes.iter().find_map(|v| {
        let now = std::fs::canonicalize(&v.host).ok();
        (now.as_deref() != Some(Path::new(&v.host))).then(|| {
            format!(
                "the host path {} changed since the run started (it is now {}): not mounted",
                v.host,
                now.map_or_else(|| "gone".to_string(), |p| p.display().to_string())
            )
        })
    })
}

/// Why a step asks more than the operator allows (`[docker]` `max_*`), if it does.
fn above_ceiling(step: &PlannedStep, limits: &StepDefaults) -> Option<String> {
    if let Some(memory) = step.memory
        && memory > limits.max_memory
    {
        return Some(format!(
            "memory {} is above [docker].max_memory ({})",
            show_size(memory),
            show_size(limits.max_memory)
        ));
    }
    if let Some(pids) = step.pids
        && pids > limits.max_pids
    {
        return Some(format!(
            "pids {pids} is above [docker].max_pids ({})",
            limits.max_pids
        ));
    }
    if let Some(timeout) = step.timeout
        && timeout > limits.max_timeout
    {
        return Some(format!(
            "timeout {} is above [docker].max_timeout ({})",
            show_duration(timeout),
            show_duration(limits.max_timeout)
        ));
    }
    None
}

/// `16g`, `512m`, or bytes: as the configuration is written.
fn show_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}g", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}m", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// `6h`, `90m`, `45s`: as pipelines write durations.
fn show_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The container of a step, before its image and command are known.
fn spec_for(step: &PlannedStep, setup: &RunSetup<'_>, left: Duration) -> StepSpec {
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
        image: String::new(),
        command: Vec::new(),
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
        network: setup.network.map(str::to_string),
    }
}

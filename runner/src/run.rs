//! Runs a plan's steps in order on an executor: `when` (`when.status` included: the steps
//! that run after a failure), `continue_on_error`, the run's timeout, cancellation, the
//! command of a `run:` script, and what a step that cannot run says. Shared by `exec` and
//! the server; where the output goes is the [`RunObserver`]'s business.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use pipewright_containers::{
    CancellationToken, ExecError, Executor, LABEL_INSTANCE, LABEL_RUN, LABEL_STEP,
    LABEL_STEP_INDEX, Mount, Outcome, StepSpec,
};
use pipewright_pipelines::{DEFAULT_CLEANUP_TIMEOUT, Plan, PlannedAction, PlannedStep, Shell};

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

/// Where a run that a restart of Pipewright interrupted goes on (decided by the server's
/// `work/reattach.rs` from the recorded steps and the containers left on the engine).
#[derive(Debug, Default)]
pub struct Resume {
    /// The steps before this index ended before the restart; their results are recorded.
    pub from: usize,
    /// The verdict those steps made (`None`: success so far).
    pub verdict: Option<RunResult>,
    /// How long the run had been running.
    pub elapsed: Duration,
    /// What became of the step at `from`, when it had started; `None`: it had not (or
    /// every step had ended), and the run goes on as it would have.
    pub step: Option<ResumedStep>,
}

/// The step a restart found under way.
#[derive(Debug)]
pub enum ResumedStep {
    /// Its container is there (running, or exited since): followed to its end.
    Follow {
        container: String,
        /// Lines of its output the step's log already holds.
        skip_lines: u64,
        /// How long it had been running (counted against its timeout).
        elapsed: Duration,
        /// The container's environment as created: the values of its secrets and of the
        /// identity token it was given are masked in its output.
        env: Vec<(String, String)>,
    },
    /// It cannot go on: it ends `error` with this description, and the run with it.
    Lost(String),
}

/// Runs every step of `plan`. `Err` only when the container engine failed under us.
pub async fn run_plan<E: Executor, O: RunObserver>(
    executor: &E,
    plan: &Plan,
    setup: &RunSetup<'_>,
    observer: &mut O,
    cancel: &CancellationToken,
) -> Result<(RunResult, Reports), ExecError> {
    run_plan_resumed(executor, plan, setup, observer, cancel, &Resume::default()).await
}

/// [`run_plan`] for a run that a restart interrupted: the steps before `resume.from` are
/// over, the step at it is followed (or ends as lost), the rest run as they would have
/// (the cleanup steps' `when.status` rules included), within what is left of the run's
/// timeout. No step that had started is started again.
pub async fn run_plan_resumed<E: Executor, O: RunObserver>(
    executor: &E,
    plan: &Plan,
    setup: &RunSetup<'_>,
    observer: &mut O,
    cancel: &CancellationToken,
    resume: &Resume,
) -> Result<(RunResult, Reports), ExecError> {
    let deadline = Instant::now() + plan.timeout.saturating_sub(resume.elapsed);
    let mut result = resume.verdict.clone().unwrap_or(RunResult::Success);
    let mut reports = Reports::default();
    let ceiling = setup.defaults.max_timeout;
    // A run refused before its first step runs no step at all, cleanup steps included:
    // nothing was done that they would undo.
    let refused = plan.timeout > ceiling;
    if refused {
        result = RunResult::Error(format!(
            "the pipeline's timeout {} is above [docker].max_timeout ({})",
            show_duration(plan.timeout),
            show_duration(ceiling)
        ));
    }
    // What steps with `failure` in their `when.status` run under: the run's cancel does
    // not stop them (they undo what the cancelled steps left), their own timeout does.
    let never_cancelled = CancellationToken::new();
    // Images the run's actions leave that nothing may use once it ends.
    let mut leftovers = Vec::new();
    // Every secret value a step was given so far (a later step may print what an earlier
    // one left in the workspace), and what masks every text the run hands out.
    let mut secret_values: Vec<String> = Vec::new();
    let mut run_masker = Masker::default();
    // Until the first step that runs has waited for it, the workspace may be incomplete.
    let mut workspace_gate = setup.workspace_ready.clone();
    let mut unready: Option<String> = None;
    for step in plan.steps.iter().skip(resume.from) {
        let started = Instant::now();
        // A cancel between steps (or during a cleanup step, which it does not stop) ends
        // the run as cancelled all the same.
        if result == RunResult::Success && cancel.is_cancelled() {
            result = RunResult::Cancelled;
        }
        // Once a step failed (or the run was cancelled or ran out of time), only steps
        // that run after a failure run, and none of them changes the run's verdict.
        let failing = result != RunResult::Success;
        let cleanup = step.runs_after.failure;
        if step.index == resume.from
            && let Some(resumed) = &resume.step
        {
            let step_result = match resumed {
                ResumedStep::Lost(why) => StepResult::Unrunnable(why.clone()),
                ResumedStep::Follow {
                    container,
                    skip_lines,
                    elapsed,
                    env,
                } => {
                    let left = deadline.saturating_duration_since(started);
                    let limit = if cleanup {
                        step.timeout
                            .unwrap_or(DEFAULT_CLEANUP_TIMEOUT.min(ceiling))
                            .saturating_sub(*elapsed)
                    } else {
                        step.timeout
                            .map_or(left, |t| t.saturating_sub(*elapsed).min(left))
                    };
                    let step_cancel = if cleanup { &never_cancelled } else { cancel };
                    observer.step_started(step).await;
                    let extras = (setup.extras)(step);
                    // What the container was given: this process's login gave new values
                    // (a new identity token), the container has the old ones.
                    let given = |name: &str| {
                        matches!(name, "PIPEWRIGHT_ID_TOKEN" | "TERRAFORM_VAULT_AUTH_JWT")
                            || extras
                                .env
                                .iter()
                                .chain(&extras.sourced_env)
                                .any(|(n, v)| n == name && extras.secret_values.contains(v))
                    };
                    let old = env.iter().filter(|(n, _)| given(n)).map(|(_, v)| v.clone());
                    for value in extras.secret_values.iter().cloned().chain(old) {
                        if !secret_values.contains(&value) {
                            secret_values.push(value);
                        }
                    }
                    let mut sink = StepSink::new(
                        &mut *observer,
                        step,
                        Masker::new(secret_values.iter().map(String::as_str)),
                    );
                    // An action's own work between its containers cannot be resumed: its
                    // container runs to its end (a `tofu apply` is not cut short), and
                    // the step ends as interrupted.
                    let action = match &step.action {
                        PlannedAction::Uses { action, .. } => Some(action.to_string()),
                        PlannedAction::Run { .. } => None,
                    };
                    let skip = if action.is_some() {
                        u64::MAX
                    } else {
                        *skip_lines
                    };
                    let followed = executor
                        .follow_existing(container, skip, Some(limit), &mut sink, step_cancel)
                        .await;
                    let step_result = match (followed, action) {
                        (Ok(outcome), None) => StepResult::Ran(outcome),
                        (Ok(outcome), Some(action)) => StepResult::Unrunnable(format!(
                            "interrupted: Pipewright stopped during the `{action}` action, which cannot go on after a restart (its last container {outcome}); not retried automatically"
                        )),
                        (Err(ExecError::Sink(e)), _) => log_lost(&e),
                        (Err(e), _) => return Err(e),
                    };
                    let step_result = match sink.flush() {
                        Ok(()) => step_result,
                        Err(e) => log_lost(&e),
                    };
                    run_masker = run_masker.union(&sink.masker);
                    masked_result(&run_masker, step_result)
                }
            };
            let recorded = observer
                .step_finished(step, &step_result, started.elapsed())
                .await;
            if let ResumedStep::Follow { container, .. } = resumed
                && recorded
            {
                remove_left(executor, container).await;
            }
            if !failing {
                result = verdict_after(step, step_result);
            }
            continue;
        }
        if refused || unready.is_some() || failing && !cleanup {
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
        if !failing && !step.runs_after.success {
            observer
                .step_finished(step, &StepResult::NotNeeded, Duration::ZERO)
                .await;
            continue;
        }
        let left = deadline.saturating_duration_since(started);
        // A cleanup step has a limit of its own, whatever is left of the run's.
        let limit = if cleanup {
            step.timeout.unwrap_or(DEFAULT_CLEANUP_TIMEOUT.min(ceiling))
        } else {
            step.timeout.map_or(left, |t| t.min(left))
        };
        let step_cancel = if cleanup { &never_cancelled } else { cancel };
        if !cleanup && left.is_zero() {
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
            if !failing {
                result = RunResult::Error(format!("step {}: {why}", step.name));
            }
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
        let mut spec = spec_for(step, setup, limit);
        spec.env.extend(extras.env);
        spec.mounts.extend(extras.mounts);
        spec.env_file = extras.env_file;
        // An action reads the workspace from the host (contexts, plans): it waits for the
        // checkout; a `run:` step's container is created meanwhile and started after it.
        let gate = workspace_gate.take();
        let not_ready = match (&step.action, &gate) {
            (PlannedAction::Uses { .. }, Some(gate)) => gate.wait().await.err(),
            _ => None,
        };
        let step_result = match &step.action {
            _ if not_ready.is_some() => StepResult::NotRun,
            PlannedAction::Uses { action, with } => match crate::action_steps::run(
                executor,
                crate::action_steps::ActionStep {
                    step,
                    action,
                    with,
                    spec,
                    setup,
                    secret_values: &secret_values,
                    sourced_env: &extras.sourced_env,
                },
                &mut sink,
                step_cancel,
            )
            .await
            {
                Ok(ran) => {
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
                Err(ExecError::Sink(e)) => log_lost(&e),
                Err(e) => return Err(e),
            },
            PlannedAction::Run {
                image,
                script,
                shell,
            } => {
                spec.image = image.clone();
                spec.command = script_command(*shell, script);
                spec.start_gate = gate.clone();
                // Removed once the step's end is recorded (`remove_left` below).
                spec.leave_exited = true;
                match executor.run_step(&spec, &mut sink, step_cancel).await {
                    Ok(outcome) => StepResult::Ran(outcome),
                    Err(ExecError::Sink(e)) => log_lost(&e),
                    Err(e) => return Err(e),
                }
            }
        };
        // Whatever the step did, no later step starts before the checkout ended; one that
        // failed stops the run here, as if no step had started.
        if let Some(why) = match gate {
            Some(gate) => not_ready.or(gate.wait().await.err()),
            None => None,
        } {
            let _ = sink.flush();
            let left = sink.container.take();
            drop(sink);
            let recorded = observer
                .step_finished(step, &StepResult::NotRun, Duration::ZERO)
                .await;
            if let Some(container) = left.filter(|_| recorded) {
                remove_left(executor, &container).await;
            }
            result = RunResult::Error(why.clone());
            unready = Some(why);
            continue;
        }
        let step_result = match sink.flush() {
            Ok(()) => step_result,
            Err(e) => log_lost(&e),
        };
        // The step's masker may know more than it was given (an action's database password).
        run_masker = run_masker.union(&sink.masker);
        let step_result = masked_result(&run_masker, step_result);
        // The run's own deadline cut the step short: say so rather than blame the step.
        let step_result = match step_result {
            StepResult::Ran(Outcome::TimedOut { .. })
                if !cleanup && step.timeout.is_none_or(|t| t > left) =>
            {
                StepResult::Ran(Outcome::TimedOut {
                    after: plan.timeout,
                })
            }
            other => other,
        };
        let left = sink.container.take();
        let recorded = observer
            .step_finished(step, &step_result, started.elapsed())
            .await;
        if let Some(container) = left.filter(|_| recorded) {
            remove_left(executor, &container).await;
        }
        if failing {
            // The run's verdict is the first failure's; a cleanup step that fails too
            // says so in its own state.
            continue;
        }
        result = verdict_after(step, step_result);
    }
    if result == RunResult::Success && cancel.is_cancelled() {
        result = RunResult::Cancelled;
    }
    for image in leftovers {
        if let Err(e) = executor.remove_image(&image).await {
            tracing::warn!(image, error = %crate::error_chain(&e), "failed to remove an image of the run");
        }
    }
    Ok((result, masked_reports(&run_masker, reports)))
}

/// The run's verdict after a step that ran while it was still a success.
fn verdict_after(step: &PlannedStep, step_result: StepResult) -> RunResult {
    match step_result {
        StepResult::Ran(Outcome::Succeeded)
        | StepResult::Skipped
        | StepResult::NotRun
        | StepResult::NotNeeded => RunResult::Success,
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
    }
}

/// A step whose log could not be written (a full disk: the executor stopped it at the
/// sink's error). It is Pipewright's failure, not the step's, so the step and the run end
/// as `error` with the log's own message, which names the file; the server goes on.
fn log_lost(e: &std::io::Error) -> StepResult {
    StepResult::Unrunnable(e.to_string())
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

/// What `/bin/sh` runs before a `run:` script, on the script's first line so that the
/// shell's line numbers stay the script's: `pipefail` where the shell has it (bash, busybox
/// ash, newer dash). `command` keeps a shell without it from exiting on the unknown
/// option (a special builtin's error ends a POSIX shell), and `|| :` from `-e`.
pub const PIPEFAIL_PREFIX: &str = "command set -o pipefail 2>/dev/null || :; ";

/// The command of a `run:` step. The script is one argument, after a constant prefix:
/// nothing from the event is ever part of it (event values reach it as environment).
pub fn script_command(shell: Shell, script: &str) -> Vec<String> {
    match shell {
        Shell::Sh => vec![
            "/bin/sh".into(),
            "-e".into(),
            "-c".into(),
            format!("{PIPEFAIL_PREFIX}{script}"),
        ],
        Shell::Bash => vec![
            "bash".into(),
            "-eo".into(),
            "pipefail".into(),
            "-c".into(),
            script.to_string(),
        ],
    }
}

/// Removes a step's container that the executor left on the engine
/// ([`StepSpec::leave_exited`]) now that the step's end is recorded (when it could not be
/// recorded, the container stays for a restart to read, or for the reaper). One that cannot
/// be removed is left for the reaper.
async fn remove_left(executor: &impl Executor, container: &str) {
    if let Err(e) = executor.remove_container(container).await {
        tracing::warn!(container, error = %crate::error_chain(&e), "failed to remove a step's container");
    }
}

/// The container of a step, before its image and command are known; `limit` is its
/// timeout.
fn spec_for(step: &PlannedStep, setup: &RunSetup<'_>, limit: Duration) -> StepSpec {
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
            (LABEL_STEP_INDEX.into(), step.index.to_string()),
        ],
        memory_bytes: Some(step.memory.unwrap_or(setup.defaults.memory_bytes) as i64),
        pids_limit: Some(step.pids.unwrap_or(setup.defaults.pids) as i64),
        timeout: Some(limit),
        network: setup.network.map(str::to_string),
        env_file: None,
        // The server's engine wrapper adds the registry's credentials (`server/work/images.rs`).
        pull_auth: None,
        start_gate: None,
        leave_exited: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_one_argument_after_a_constant_on_their_first_line() {
        let script = "echo \"$PIPEWRIGHT_REF\"\nfalse | cat\n";
        let sh = script_command(Shell::Sh, script);
        assert_eq!(sh[..3], ["/bin/sh", "-e", "-c"]);
        assert_eq!(sh.len(), 4);
        let body = sh[3]
            .strip_prefix(PIPEFAIL_PREFIX)
            .expect("the prefix first");
        assert_eq!(body, script);
        assert!(
            !PIPEFAIL_PREFIX.contains('\n'),
            "the script's first line stays line 1"
        );
        assert_eq!(
            script_command(Shell::Bash, script),
            ["bash", "-eo", "pipefail", "-c", script]
        );
    }
}

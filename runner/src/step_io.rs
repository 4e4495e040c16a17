//! What a run's steps are given and what they give back: the run's setup and limits, each
//! step's extras and result, the observer of a run, and the sink that masks a step's output.
//! `run.rs` (the steps in order) and `action_steps.rs` (a `uses:` step) both build on it;
//! it uses neither.

use std::{io, path::Path, time::Duration};

use pipewright_containers::{LogSink, Mount, Outcome, Stream};
use pipewright_pipelines::{EventKind, GitRef, PlannedStep};

use crate::mask::Masker;

/// Where step containers see the checkout.
pub const WORKSPACE: &str = "/workspace";

/// Limits a step gets when its pipeline names none, and the operator's ceilings on what a
/// pipeline may ask for (`[docker]` `max_*`): a run or step asking more is refused.
#[derive(Clone, Debug)]
pub struct StepDefaults {
    pub memory_bytes: u64,
    pub pids: u64,
    pub max_memory: u64,
    pub max_pids: u64,
    /// Ceiling of the pipeline's `timeout` and of every step's.
    pub max_timeout: Duration,
}

impl Default for StepDefaults {
    fn default() -> Self {
        use crate::config::defaults;
        StepDefaults {
            memory_bytes: defaults::DEFAULT_MEMORY,
            pids: defaults::DEFAULT_PIDS,
            max_memory: defaults::MAX_MEMORY,
            max_pids: defaults::MAX_PIDS,
            max_timeout: defaults::MAX_TIMEOUT,
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
    /// Its `when.status` is `[failure]` and nothing failed.
    NotNeeded,
    /// It ran to this outcome.
    Ran(Outcome),
    /// An action judged its own result a failure (a plan that would destroy, a SQL error,
    /// a failed build): the run ends as `failure` with this reason.
    Failed(String),
    /// It could not run, for a reason that is not the step's own fault (Vault, a registry):
    /// the run ends as `error`.
    Unrunnable(String),
}

/// Receives what happens in a run.
pub trait RunObserver: Send {
    fn step_started(&mut self, step: &PlannedStep) -> impl Future<Output = ()> + Send;
    /// One line of a step's output. An error stops the step (the log could not be kept).
    fn step_output(&mut self, step: &PlannedStep, stream: Stream, line: &[u8]) -> io::Result<()>;
    /// Returns whether the step's end is recorded: a step's container left on the engine
    /// ([`pipewright_containers::StepSpec::leave_exited`]) is removed only then, so that a
    /// crash always finds one or the other.
    fn step_finished(
        &mut self,
        step: &PlannedStep,
        result: &StepResult,
        elapsed: Duration,
    ) -> impl Future<Output = bool> + Send;
    /// The step's container is about to start: the output from here on is the container's
    /// own (what a restart re-reads from the engine's log), and a restart that finds this
    /// recorded never starts the step again. An error stops the step before its container
    /// starts.
    fn output_begins(&mut self, step: &PlannedStep) -> io::Result<()> {
        let _ = step;
        Ok(())
    }
}

/// What a step gets besides its plan: secrets and its identity token (env), the CA bundle
/// and the run's secret files (mounts), and the values to mask in its output.
#[derive(Debug, Default)]
pub struct StepExtras {
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub secret_values: Vec<String>,
    /// The environment file the step's shell reads (`[docker].secrets_in_env = false`),
    /// mounted by one of `mounts`.
    pub env_file: Option<String>,
    /// The variables that file sets, for what the host needs of them (an `image` step's
    /// `password_secret`); they are not in `env`.
    pub sourced_env: Vec<(String, String)>,
}

/// Facts about the run that built-in actions decide on.
#[derive(Clone, Copy, Debug)]
pub struct RunFacts<'a> {
    /// `owner/name`.
    pub repo: &'a str,
    pub event: EventKind,
    /// A pull request from a fork: its image builds never push.
    pub from_fork: bool,
    pub git_ref: &'a GitRef,
    pub default_branch: &'a str,
    pub inputs: &'a [(String, String)],
    /// The plan a pull request's reviewers saw, when this run may apply only that.
    pub reviewed: Option<&'a ReviewedPlan>,
}

/// A pull request's reviewed plan that the run's `tofu` steps keep to.
#[derive(Clone, Debug)]
pub struct ReviewedPlan {
    pub reviewed: pipewright_actions::tofu::Reviewed,
    /// Saved plan files by `tofu` step name, applied as they are (no new plan); empty:
    /// plan again, and apply only when the changes are the reviewed ones.
    pub saved: Vec<(String, Vec<u8>)>,
}

/// Database credentials from Vault's database secrets engine.
#[derive(Debug)]
pub struct DbCredentials {
    pub username: String,
    pub password: String,
    pub lease_id: String,
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What built-in actions may ask of the run's Vault access (the `postgres` action's
/// credentials). Errors are descriptions naming Vault and the path.
pub trait ActionServices: Sync {
    fn read_kv<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, String>, String>>;
    /// Credentials of `role` from the database secrets engine mounted at `mount`.
    fn database_credentials<'a>(
        &'a self,
        mount: &'a str,
        role: &'a str,
    ) -> BoxFuture<'a, Result<DbCredentials, String>>;
    fn revoke_lease<'a>(&'a self, lease_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// A run without Vault.
#[derive(Debug)]
pub struct NoServices;

impl ActionServices for NoServices {
    fn read_kv<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, String>, String>> {
        Box::pin(async move {
            Err(format!(
                "reading Vault secret `{path}` needs Vault, which this run has not"
            ))
        })
    }
    fn database_credentials<'a>(
        &'a self,
        _mount: &'a str,
        role: &'a str,
    ) -> BoxFuture<'a, Result<DbCredentials, String>> {
        Box::pin(async move {
            Err(format!(
                "database role `{role}` needs Vault, which this run has not"
            ))
        })
    }
    fn revoke_lease<'a>(&'a self, _lease_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Gives each step its extras as it starts (so each gets a fresh identity token).
pub type Extras<'a> = &'a (dyn Fn(&PlannedStep) -> StepExtras + Sync);

/// Where a run happens.
pub struct RunSetup<'a> {
    pub run_id: &'a str,
    /// The owner of the run's containers ([`pipewright_containers::LABEL_INSTANCE`]).
    pub instance: &'a str,
    /// The checkout, mounted read-write at [`WORKSPACE`].
    pub workspace: &'a Path,
    pub defaults: &'a StepDefaults,
    pub extras: Extras<'a>,
    pub facts: RunFacts<'a>,
    pub services: &'a dyn ActionServices,
    /// Docker network of step containers (`None`: the engine's default bridge).
    pub network: Option<&'a str>,
    /// The plan's host volumes were resolved (symlinks included) and checked when the run
    /// started: each step re-checks that its paths still resolve to themselves, so an
    /// earlier step cannot swap a directory for a link before a later step mounts it.
    pub volumes_resolved: bool,
    /// The workspace is still being checked out: the first step's container is created
    /// meanwhile and started when this opens (an action's step waits for it first). A
    /// checkout that fails ends the run as `error` with its reason, running no step.
    /// `None`: the workspace is ready.
    pub workspace_ready: Option<pipewright_containers::StartGate>,
    /// Images that `uses: image` built and pushed are removed from the engine once the
    /// run ends, except the references listed here (`[docker].pin_images`); `None` keeps
    /// them all (`exec`: the user's own engine).
    pub remove_pushed: Option<&'a [String]>,
}

impl std::fmt::Debug for RunSetup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSetup")
            .field("run_id", &self.run_id)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

/// A step's output on its way to the observer: masked, also across the cuts of a long line.
pub(crate) struct StepSink<'a, O: RunObserver> {
    pub observer: &'a mut O,
    pub step: &'a PlannedStep,
    pub masker: Masker,
    /// The id of the step's container once it has started.
    pub container: Option<String>,
    /// Per stream, the end of a cut line that masking has not decided on yet.
    carry: [Vec<u8>; 2],
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl<'a, O: RunObserver> StepSink<'a, O> {
    pub(crate) fn new(observer: &'a mut O, step: &'a PlannedStep, masker: Masker) -> Self {
        StepSink {
            observer,
            step,
            masker,
            container: None,
            carry: Default::default(),
        }
    }

    /// Hands on what a line cut short (an engine that failed mid-line) kept back.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.carry[stream_index(stream)].is_empty() {
                self.line(stream, b"")?;
            }
        }
        Ok(())
    }

    /// A line of Pipewright's own about the step (`pipewright: …`), into the step's log.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        for line in text.lines() {
            self.line(Stream::Stdout, format!("pipewright: {line}").as_bytes())?;
        }
        Ok(())
    }
}

// Masked here, before anything stores, streams or prints the output. A long line is
// masked across its cuts: what might be the start of a secret waits in `carry` for the
// next piece.
impl<O: RunObserver> LogSink for StepSink<'_, O> {
    fn line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let carry = &mut self.carry[stream_index(stream)];
        let masked = if carry.is_empty() {
            self.masker.mask(line)
        } else {
            std::borrow::Cow::Owned(self.masker.mask_end(carry, line))
        };
        self.observer.step_output(self.step, stream, &masked)
    }

    fn starting(&mut self, container: &str) -> io::Result<()> {
        self.container = Some(container.to_string());
        self.observer.output_begins(self.step)
    }

    fn piece(&mut self, stream: Stream, piece: &[u8]) -> io::Result<()> {
        let done = self
            .masker
            .mask_piece(&mut self.carry[stream_index(stream)], piece);
        if done.is_empty() {
            return Ok(());
        }
        self.observer.step_output(self.step, stream, &done)
    }
}

//! The step executor: runs one pipeline step in a container and reports how it ended.
//!
//! Everything Pipewright does with a container engine goes through [`Executor`]; the one
//! implementation is [`DockerExecutor`] (the Docker Engine API through bollard). This crate
//! knows nothing of pipelines, events or the database: it receives a [`StepSpec`], streams
//! the step's output line by line into a [`LogSink`], and returns an [`Outcome`].

mod docker;

use std::{fmt, io, path::PathBuf, time::Duration};

pub use docker::{DockerConfig, DockerExecutor};
pub use tokio_util::sync::CancellationToken;

/// Label carried by every container Pipewright creates (value `"true"`): the handle for
/// reaping leftovers. Containers without it are never touched.
pub const LABEL_MANAGED: &str = "io.pipewright.managed";
/// Label naming the run a step container belongs to.
pub const LABEL_RUN: &str = "io.pipewright.run";
/// Label naming the Pipewright instance (its data directory) that owns a container, so
/// that one instance never reaps another's containers on a shared engine.
pub const LABEL_INSTANCE: &str = "io.pipewright.instance";
/// Label naming the step (its name in the pipeline) a container runs.
pub const LABEL_STEP: &str = "io.pipewright.step";

/// Longest line handed to a [`LogSink`]; a longer one arrives in pieces of this size, so a
/// step that prints megabytes without a newline cannot make Pipewright buffer them.
pub const MAX_LINE: usize = 64 * 1024;

/// What to run, and under which limits. Built by the runner from a pipeline's plan.
#[derive(Clone, Debug, Default)]
pub struct StepSpec {
    /// Image reference, used as given (`busybox:1.36`, `registry.lab/team/tool@sha256:…`).
    pub image: String,
    /// The command, not interpreted by any shell on the host (`["/bin/sh", "-e", "-c", script]`).
    pub command: Vec<String>,
    /// Environment of the process, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container (`/workspace`).
    pub working_dir: String,
    /// Bind mounts: the run's workspace, the CA bundle, allowlisted host volumes.
    pub mounts: Vec<Mount>,
    /// Labels added to [`LABEL_MANAGED`], normally [`LABEL_RUN`] and [`LABEL_STEP`].
    pub labels: Vec<(String, String)>,
    /// Memory limit in bytes (swap included: the container gets no swap beyond it).
    pub memory_bytes: Option<i64>,
    /// Maximum number of processes and threads.
    pub pids_limit: Option<i64>,
    /// Wall-clock limit from the moment the container starts.
    pub timeout: Option<Duration>,
}

/// A host path mounted into a step container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives a step's output as it comes, one line at a time (without the line ending; a
/// last line without a newline is delivered too). Lines of one stream arrive in order.
///
/// An error from the sink (a full disk) stops the step: the container is killed and
/// [`Executor::run_step`] returns [`ExecError::Sink`].
pub trait LogSink: Send {
    fn line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()>;
}

/// How a step ended. A failing step is an outcome, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with status 0.
    Succeeded,
    /// The command exited with a non-zero status.
    Failed { exit_code: i64 },
    /// The kernel killed the container for exceeding its memory limit.
    OomKilled,
    /// [`StepSpec::timeout`] ran out; the container was stopped (SIGTERM, grace, SIGKILL).
    TimedOut { after: Duration },
    /// The cancellation token fired; the container was stopped (SIGTERM, grace, SIGKILL).
    Cancelled,
    /// The image is neither present nor pullable.
    ImageUnavailable { image: String, reason: String },
    /// The engine refused to create or start the container (bad command, bad mount, …).
    StartFailed { reason: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded => f.write_str("succeeded"),
            Outcome::Failed { exit_code } => write!(f, "failed with exit code {exit_code}"),
            Outcome::OomKilled => f.write_str("killed: out of memory"),
            Outcome::TimedOut { after } => write!(f, "timed out after {}s", after.as_secs()),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::ImageUnavailable { image, reason } => {
                write!(f, "image {image} is not available: {reason}")
            }
            Outcome::StartFailed { reason } => write!(f, "failed to start: {reason}"),
        }
    }
}

/// Pipewright itself could not do its job; the step's fate is unknown. Retryable once the
/// engine is back.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to reach the container engine")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to store the step's output")]
    Sink(#[source] io::Error),
}

/// Runs step containers.
///
/// Contract:
/// - [`run_step`](Executor::run_step) does a whole step: make sure the image is present
///   (pull it if not), create the container (labelled, limited, unprivileged, no engine
///   socket), attach to its output before starting it so that no byte is missed, start,
///   stream lines into the sink, wait, and remove the container — on every path, failures
///   and cancellation included. Removal runs outside the cancellation.
/// - Several `run_step` calls may run at once on one executor.
/// - [`reap`](Executor::reap) removes leftovers (containers of a crashed process) and is
///   idempotent: reaping twice, or reaping a container that is being removed, is fine.
/// - `Err` means the engine could not be reached or answered nonsense; every outcome of
///   the step itself, including that its image does not exist, is an `Ok(Outcome)`.
pub trait Executor: Send + Sync + 'static {
    fn run_step(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, ExecError>> + Send;

    /// Removes every container labelled [`LABEL_MANAGED`] whose labels `keep` rejects, and
    /// returns how many were removed. Running ones are killed first.
    #[allow(clippy::type_complexity, reason = "clearest spelled out")]
    fn reap(
        &self,
        keep: &(dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> impl Future<Output = Result<usize, ExecError>> + Send;
}

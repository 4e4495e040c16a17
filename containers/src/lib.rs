//! The step executor: runs one pipeline step in a container and reports how it ended.
//!
//! Everything Pipewright does with a container engine goes through [`Executor`]; the one
//! implementation is [`DockerExecutor`] (the Docker Engine API through bollard). This crate
//! knows nothing of pipelines, events or the database: it receives a [`StepSpec`], streams
//! the step's output line by line into a [`LogSink`], and returns an [`Outcome`]. It also
//! builds images from a host directory and pushes them ([`BuildSpec`], [`RegistryAuth`]),
//! for the built-in action `image`: the host's engine builds, no step container gets an
//! engine socket.

mod build;
mod docker;
mod reference;
mod shared;

use std::{fmt, io, path::PathBuf, time::Duration};

pub use docker::{DockerConfig, DockerExecutor, KeptImage};
pub use reference::{DOCKER_HUB, normalize_host, registry_host};
pub use shared::SharedExecutor;
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
/// Label holding the step's index in its run's plan (`0`, `1`, …), by which a restarted
/// process finds the container of the step it left running.
pub const LABEL_STEP_INDEX: &str = "io.pipewright.step-index";
/// Label of a keeper: a container that is created and never started, whose only purpose is
/// to reference an image so that the engine's GC (`docker image prune -a`) keeps it. Its
/// value is the image reference kept. Keepers carry [`LABEL_MANAGED`] and
/// [`LABEL_INSTANCE`] too, but [`Executor::reap`] never removes them; only
/// [`DockerExecutor::release_images`] does.
pub const LABEL_PIN: &str = "io.pipewright.pin";

/// Time a stopped step gets between SIGTERM and SIGKILL when none is configured (the
/// default of [`DockerConfig::stop_grace`] and of the server's `[docker].stop_grace`).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

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
    /// Docker network (`None`: the default bridge; `host`, `none`, or a network's name).
    pub network: Option<String>,
    /// A file in the container (mounted by one of [`mounts`](StepSpec::mounts)) of
    /// `export NAME='value'` lines that `/bin/sh` reads before it `exec`s the command, so
    /// those variables reach the process without being in the container's configuration.
    /// The command stays as given, its arguments untouched.
    pub env_file: Option<String>,
    /// Credentials sent to the registry when the image has to be pulled (those of the
    /// registry [`registry_host`] names for `image`). `None`: an anonymous pull.
    pub pull_auth: Option<RegistryAuth>,
    /// Something the step needs that is still being prepared (its workspace's checkout):
    /// the image is pulled and the container created meanwhile, and started only once the
    /// gate opens; a gate that fails ends the step as [`Outcome::StartFailed`] with its
    /// reason. `None`: start at once.
    pub start_gate: Option<StartGate>,
    /// Leave the container on the engine once it has started and stopped (however it
    /// ended), for the caller to remove with [`Executor::remove_container`] after it has
    /// recorded the step's end: a process killed in between finds the container when it
    /// starts again and reads the exit status from it, instead of finding neither. The
    /// id comes to the sink's [`starting`](LogSink::starting) (removing it again is
    /// harmless). A container that never started, or a run that failed on the engine's
    /// side, is removed as always.
    pub leave_exited: bool,
}

/// Holds a step's container between its creation and its start until what it needs is
/// ready; [`StartGate::new`] gives the gate and the [`GateOpener`] that opens it.
#[derive(Clone, Debug)]
pub struct StartGate(tokio::sync::watch::Receiver<Option<Result<(), String>>>);

/// Opens a [`StartGate`]: `Ok` lets the container start, `Err(reason)` fails the step.
/// Dropped without opening, it fails the gate.
#[derive(Debug)]
pub struct GateOpener(tokio::sync::watch::Sender<Option<Result<(), String>>>);

impl StartGate {
    pub fn new() -> (GateOpener, StartGate) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (GateOpener(tx), StartGate(rx))
    }

    /// Waits until the gate is opened, and says how.
    pub async fn wait(&self) -> Result<(), String> {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(state) => state.clone().unwrap_or(Ok(())),
            Err(_) => Err("what the step needed was never ready".to_owned()),
        }
    }
}

impl GateOpener {
    pub fn open(self, result: Result<(), String>) {
        let _ = self.0.send(Some(result));
    }
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
/// A line longer than [`MAX_LINE`] arrives in pieces of that size: each piece but the
/// last through [`piece`](LogSink::piece), the last through [`line`](LogSink::line), so a
/// sink that looks for text across the cuts (the runner's masking) knows where a line
/// goes on. Pieces of one stream's line may be interleaved with the other stream's lines.
///
/// An error from the sink (a full disk) stops the step: the container is killed and
/// [`Executor::run_step`] returns [`ExecError::Sink`].
pub trait LogSink: Send {
    /// A whole line, or the last piece of a long one.
    fn line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()>;

    /// A piece of a long line that goes on in the next `piece` or `line` of `stream`.
    /// By default a piece is taken as a line of its own.
    fn piece(&mut self, stream: Stream, piece: &[u8]) -> io::Result<()> {
        self.line(stream, piece)
    }

    /// The step's container is about to be started (called just before the engine is
    /// asked to): every line from here on is the container's own output (what came before
    /// was Pipewright's, such as a pull's progress). A restarted process re-attaching to the
    /// container skips only the lines stored after this, and one that finds no record of
    /// this knows the container never started. An error stops the step before its
    /// container starts. `container` is the container's id.
    fn starting(&mut self, container: &str) -> io::Result<()> {
        let _ = container;
        Ok(())
    }
}

/// A step container an earlier process left on the engine, found by its labels
/// ([`Executor::left_containers`]).
#[derive(Clone)]
pub struct LeftContainer {
    pub id: String,
    /// Its labels, sorted.
    pub labels: Vec<(String, String)>,
    pub state: LeftState,
    /// Its environment as created (it may hold the secrets and the identity token the
    /// step was given, which its output must be masked for). [`Debug`](fmt::Debug) prints
    /// the names only.
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for LeftContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeftContainer")
            .field("id", &self.id)
            .field("labels", &self.labels)
            .field("state", &self.state)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

impl LeftContainer {
    /// The value of a label, if it has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a left container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftState {
    /// Created and never started.
    Created,
    /// Started and not ended (paused and restarting count as running).
    Running,
    /// Its process ended; the engine has its exit status and its whole output.
    Exited,
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
    /// The image is neither present nor pullable (its registry refused the credentials,
    /// or wants some, or does not have it).
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

/// An image build: a host directory sent to the engine as the build context.
///
/// The context is sent as the Docker CLI would send it, with a `.dockerignore` at its root
/// honoured for the common patterns (`#` comments, `*`, `?`, `**`, `[…]`, `!` exceptions,
/// a matched directory excluding everything below it; see `containers/src/build.rs`).
/// Symbolic links are sent as links; one that is absolute or leads out of the context
/// refuses the build, as does a `dockerfile` outside the context or reached through a link.
/// The context directory itself is resolved (symbolic links followed) and, when `within`
/// is given, must lie inside it once resolved: a context that is or passes through a link
/// leading out of the run's workspace refuses the build before anything is sent.
#[derive(Clone, Debug, Default)]
pub struct BuildSpec {
    /// The build context, a directory on the engine's host.
    pub context: PathBuf,
    /// The directory the context must stay in once resolved (the run's workspace); `None`
    /// trusts `context` wherever it leads.
    pub within: Option<PathBuf>,
    /// The Dockerfile, relative to `context` (`Dockerfile`, `docker/app.Dockerfile`).
    pub dockerfile: String,
    /// References the built image is tagged with (`registry.lab/team/app:abc123`); a
    /// reference without a tag gets `latest`. May be empty: the image is then untagged.
    pub tags: Vec<String>,
    /// Values of the Dockerfile's `ARG`s.
    pub build_args: Vec<(String, String)>,
    /// Labels set on the image.
    pub labels: Vec<(String, String)>,
    /// Memory limit in bytes of the build's `RUN` containers (swap included). The engine API
    /// takes a 32-bit value here: a larger limit is lowered to `i32::MAX` bytes.
    pub memory_bytes: Option<i64>,
}

/// How a build ended. A failing build is an outcome, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The image was built and carries every tag of the spec.
    Built {
        /// The engine's id of the image (`sha256:…`).
        image_id: String,
    },
    /// The build did not produce an image: the builder's error (the failing `RUN` step and
    /// its exit code, a Dockerfile syntax error), a refused context or an invalid tag.
    Failed { reason: String },
    /// The cancellation token fired; the engine abandons the build.
    Cancelled,
}

impl fmt::Display for BuildOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildOutcome::Built { image_id } => write!(f, "built image {image_id}"),
            BuildOutcome::Failed { reason } => write!(f, "build failed: {reason}"),
            BuildOutcome::Cancelled => f.write_str("build cancelled"),
        }
    }
}

/// Credentials for a registry (HTTP basic authentication, through the engine).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    /// Never shown: [`Debug`](fmt::Debug) prints a placeholder, and no log line has it.
    pub password: String,
    /// The registry's address (`registry.lab`, `127.0.0.1:5000`).
    pub server: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .finish()
    }
}

/// How a push ended. A refused push is an outcome, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The registry holds the image; `digest` (`sha256:…`) is its manifest's digest, by
    /// which it can be pulled (`name@sha256:…`).
    Pushed { digest: String },
    /// The registry or the engine refused the push (authentication refused, registry
    /// unreachable, no such local image), in their words.
    Failed { reason: String },
}

impl fmt::Display for PushOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushOutcome::Pushed { digest } => write!(f, "pushed {digest}"),
            PushOutcome::Failed { reason } => write!(f, "push failed: {reason}"),
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
///   (pull it if not, with [`StepSpec::pull_auth`], the pull's layer statuses going to the
///   sink as deduplicated lines: each layer's statuses once, byte counts in quarters),
///   create the container (labelled,
///   limited, unprivileged, no engine socket), attach to its output before starting it so
///   that no byte is missed, start, stream lines into the sink (a line longer than [`MAX_LINE`] as pieces, see
///   [`LogSink`]), wait, and remove the container — on every path, failures and
///   cancellation included. Removal runs outside the cancellation.
/// - Several `run_step` calls may run at once on one executor.
/// - [`reap`](Executor::reap) removes leftovers (containers of a crashed process) and is
///   idempotent: reaping twice, or reaping a container that is being removed, is fine.
/// - `Err` means the engine could not be reached or answered nonsense; every outcome of
///   the step itself, including that its image does not exist, is an `Ok(Outcome)`.
/// - [`build_image`](Executor::build_image) builds with the engine's legacy builder (no
///   BuildKit): the context streams from the host directory without being held in memory,
///   the builder's output goes line by line to the sink as [`Stream::Stdout`], and the
///   image gets every tag of the spec. A failing build, a refused context or tag, and any
///   error the engine reports about the build are [`BuildOutcome::Failed`] with the
///   builder's message; cancellation abandons the build (the engine kills its `RUN`
///   container) and gives [`BuildOutcome::Cancelled`].
/// - [`push_image`](Executor::push_image) pushes one reference (a missing tag means
///   `latest`; a digest is refused) through the engine, which logs in to the registry with
///   `auth` when given; it streams the engine's status lines (without progress bars) to the
///   sink, and reports the manifest digest. Whatever the
///   registry or engine says against the push (authentication refused, registry
///   unreachable, no such image) is [`PushOutcome::Failed`]; the password never reaches a
///   log or a `Debug` output.
/// - [`remove_image`](Executor::remove_image) removes a reference like `docker rmi
///   --force`, for cleanup; `Ok(false)` when there was no such image.
/// - [`local_image_id`](Executor::local_image_id) says which image a reference names on
///   the engine now (`sha256:…`), without pulling; `Ok(None)` when it names none.
/// - [`ping`](Executor::ping) says whether the engine answers (for readiness checks).
/// - For these as for steps, `Err` means only that the engine could not be reached
///   or answered nonsense.
pub trait Executor: Send + Sync + 'static {
    fn run_step(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, ExecError>> + Send;

    /// Removes every container labelled [`LABEL_MANAGED`] whose labels `keep` rejects, and
    /// returns how many were removed. Running ones are killed first. Keepers
    /// ([`LABEL_PIN`]) are never removed, whatever `keep` says.
    #[allow(clippy::type_complexity, reason = "clearest spelled out")]
    fn reap(
        &self,
        keep: &(dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> impl Future<Output = Result<usize, ExecError>> + Send;

    /// Builds an image from `spec.context` and tags it with every tag of `spec`.
    fn build_image(
        &self,
        spec: &BuildSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<BuildOutcome, ExecError>> + Send;

    /// Pushes `reference` (`registry.lab/team/app:abc123`) to its registry.
    fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> impl Future<Output = Result<PushOutcome, ExecError>> + Send;

    /// Removes the local image `reference` (a tag, or an id); `Ok(false)` when absent.
    fn remove_image(&self, reference: &str)
    -> impl Future<Output = Result<bool, ExecError>> + Send;

    /// The id of the local image `reference` names; `Ok(None)` when there is none.
    fn local_image_id(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, ExecError>> + Send;

    /// `Ok` when the engine answers.
    fn ping(&self) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// Pulls `image` whether or not it is present (the registry's current image for the
    /// reference), with `auth`. `Ok(Err(reason))`: the registry or the engine refused, in
    /// words that name the registry and never hold the password.
    fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> impl Future<Output = Result<Result<(), String>, ExecError>> + Send;

    /// Makes sure a keeper of `instance` (a container never started, labelled
    /// [`LABEL_PIN`]) references the image `reference` names now, so the engine's image GC
    /// spares it. `Ok(None)`: the engine has no image of that reference (pull it first);
    /// `Ok(Some(true))`: a keeper was created; `Ok(Some(false))`: one was there.
    fn keep_image(
        &self,
        instance: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<bool>, ExecError>> + Send;

    /// Removes the keepers of `instance` whose reference is not in `keep`; how many.
    fn release_images(
        &self,
        instance: &str,
        keep: &[String],
    ) -> impl Future<Output = Result<usize, ExecError>> + Send;

    /// The step containers (labelled [`LABEL_MANAGED`], keepers excluded) that carry every
    /// label of `labels` with its value, oldest first: what a restarted process looks for
    /// to re-attach to the steps it left running. An executor without containers has none.
    fn left_containers(
        &self,
        labels: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<LeftContainer>, ExecError>> + Send {
        let _ = labels;
        async { Ok(Vec::new()) }
    }

    /// Follows a container that an earlier process created and started (running, or
    /// exited since), as [`run_step`](Executor::run_step) would have: its output from the
    /// engine's log, the first `skip_lines` lines (and pieces of long lines, as the sink
    /// would have received them) left out because the step's log already holds them; the
    /// step stopped (SIGTERM, grace, SIGKILL) when `timeout` (what is left of the step's)
    /// runs out or `cancel` fires; its exit status read once it has stopped. As with
    /// [`StepSpec::leave_exited`], the container is left on the engine when this returns
    /// `Ok` (the caller removes it once it has recorded the step's end), removed on every
    /// other path. It is never started: a container that was created and not
    /// started is not a step to follow. An executor without containers has nothing to follow.
    fn follow_existing(
        &self,
        id: &str,
        skip_lines: u64,
        timeout: Option<Duration>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, ExecError>> + Send {
        let _ = (id, skip_lines, timeout, sink, cancel);
        async {
            Err(ExecError::Engine(
                "this executor cannot follow an existing container".into(),
            ))
        }
    }

    /// Removes (killing it if running) one container; `Ok(false)` when it was gone.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<bool, ExecError>> + Send {
        let _ = id;
        async { Ok(false) }
    }
}

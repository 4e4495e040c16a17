//! The [`Executor`] on the Docker Engine API (through bollard): one container per step.
//!
//! Engine facts this file is shaped by (Docker 20.10, API 1.41, checked on the target host):
//! - bollard reports a non-zero exit from `wait_container` as an `Err`, so the exit code and
//!   the OOM flag are read from `inspect_container` after the container has stopped.
//! - bollard's API-version negotiation does not reach the URL; the engine always answers in
//!   its own newest API version, so nothing here relies on a negotiated version.
//! - With `init` (needed so that SIGTERM reaches a shell, which as PID 1 would ignore it) the
//!   engine starts docker-init, not the step's command: a missing executable no longer fails
//!   the start, it becomes exit code 127. An absolute command path is therefore checked in
//!   the created container's file system before the start.
//! - Builds use the legacy builder (BuildKit would need bollard's `buildkit` feature and a
//!   gRPC session). Its errors, a failing `RUN` included, arrive as stream items that
//!   bollard turns into `DockerStreamError`; the image id arrives as `aux.ID`. The engine
//!   reads the whole context before it answers, and kills the `RUN` container of a build
//!   whose request is dropped. bollard's request timeout runs until the answer's headers,
//!   so a context must upload within it (512 MiB over the local socket: about 5 s).
//! - A push's errors (authentication refused, registry unreachable) also arrive as stream
//!   items. bollard's `PushImageInfo` has no `aux` field, so the digest is read from the
//!   engine's last status line, `TAG: digest: sha256:… size: N`.
//! - An attach subscribes to the container's output before it answers (the 101 upgrade), so
//!   an attach made before the start misses nothing. Attaching with `logs=true` as well
//!   makes the engine replay the log driver's file *after* subscribing, while what the
//!   subscription buffers meanwhile is sent afterwards: a line written during the replay
//!   arrives twice, and the two streams' buffers are drained by separate goroutines, so
//!   stdout and stderr come out of order. Steps therefore attach with `stream` alone.
//! - The engine reads a container's stdout and stderr from two pipes, each in its own
//!   goroutine, and forwards what each pipe holds: the lines of one stream keep their
//!   order, the order between the two streams is not kept (a tight loop of `echo a; echo b
//!   >&2` arrives in runs of one stream, through the docker CLI as well). Only a step that
//!   writes both into one pipe (`2>&1`) has them in the order written.
//! - A container a crashed process left is followed through its log (`logs` with `follow`,
//!   from the start), which the log driver (`json-file` by default) holds whole, while an
//!   attach would give only what is printed from then on. Its order between the two streams
//!   is the log copier's, which may differ from an attach's.

mod images;
mod keep;
mod lifecycle;
mod lines;
mod pull;
mod step_config;

use std::time::Duration;

use bollard::{Docker, errors::Error as BollardError};
use tokio_util::sync::CancellationToken;

pub use keep::KeptImage;

use crate::{
    BuildOutcome, BuildSpec, DEFAULT_STOP_GRACE, ExecError, Executor, LeftContainer, LogSink,
    Outcome, PushOutcome, RegistryAuth, StepSpec,
};

/// How Pipewright reaches the Docker engine.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://host:2375`); `None` uses
    /// `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Time between SIGTERM and SIGKILL when a step is timed out or cancelled. Default:
    /// [`DEFAULT_STOP_GRACE`] (10 s).
    pub stop_grace: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }
}

/// Runs steps as Docker containers. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct DockerExecutor {
    docker: Docker,
    stop_grace: Duration,
}

/// bollard's request timeout (2 min by default) bounds the wait for every answer, and the
/// answer to a stop comes only after the grace period: the timeout must exceed it.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT_OVER_GRACE: Duration = Duration::from_secs(60);

impl DockerExecutor {
    /// Connects to the engine and pings it, so that a missing engine is reported here and
    /// not by the first step.
    pub async fn connect(config: DockerConfig) -> Result<Self, ExecError> {
        let docker = match &config.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|source| engine_error("connect to the Docker engine", source))?;
        let request_timeout =
            MIN_REQUEST_TIMEOUT.max(config.stop_grace + REQUEST_TIMEOUT_OVER_GRACE);
        let executor = DockerExecutor {
            docker: docker.with_timeout(request_timeout),
            stop_grace: config.stop_grace,
        };
        executor.ping().await?;
        Ok(executor)
    }
}

impl Executor for DockerExecutor {
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> Result<Result<(), String>, ExecError> {
        self.pull_image_now(image, auth, sink).await
    }

    async fn keep_image(&self, instance: &str, reference: &str) -> Result<Option<bool>, ExecError> {
        self.keep_image_now(instance, reference).await
    }

    async fn release_images(&self, instance: &str, keep: &[String]) -> Result<usize, ExecError> {
        self.release_images_now(instance, keep).await
    }

    async fn ping(&self) -> Result<(), ExecError> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(|source| engine_error("ping the Docker engine", source))
    }

    async fn run_step(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        self.run_step_container(spec, sink, cancel).await
    }

    async fn reap(
        &self,
        keep: &(dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> Result<usize, ExecError> {
        self.reap_managed(keep).await
    }

    async fn build_image(
        &self,
        spec: &BuildSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<BuildOutcome, ExecError> {
        self.build(spec, sink, cancel).await
    }

    async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> Result<PushOutcome, ExecError> {
        self.push(reference, auth, sink).await
    }

    async fn remove_image(&self, reference: &str) -> Result<bool, ExecError> {
        self.delete_image(reference).await
    }

    async fn local_image_id(&self, reference: &str) -> Result<Option<String>, ExecError> {
        self.find_image(reference).await
    }

    async fn left_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<LeftContainer>, ExecError> {
        self.find_left(labels).await
    }

    async fn follow_existing(
        &self,
        id: &str,
        skip_lines: u64,
        timeout: Option<Duration>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        self.follow_left(id, skip_lines, timeout, sink, cancel)
            .await
    }

    async fn remove_container(&self, id: &str) -> Result<bool, ExecError> {
        self.remove_one(id).await
    }
}

fn status(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine refused the request as made (bad parameters, missing image or container).
fn is_client_error(err: &BollardError) -> bool {
    status(err).is_some_and(|code| (400..500).contains(&code))
}

/// The engine's own words, for outcomes shown to the user.
fn engine_message(err: &BollardError) -> String {
    match err {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn engine_error(action: impl Into<String>, source: BollardError) -> ExecError {
    ExecError::Engine(Box::new(EngineCall {
        action: action.into(),
        source,
    }))
}

/// What Pipewright was doing when the engine failed it.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}")]
struct EngineCall {
    action: String,
    #[source]
    source: BollardError,
}

/// The engine answered, but not with something a step can end on.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
struct EngineAnswer {
    what: String,
}

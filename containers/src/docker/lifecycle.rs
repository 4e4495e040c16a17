//! A step container's life: create, attach, start, wait, stop and remove, and the reaping
//! of leftovers.

use std::{collections::HashMap, pin::pin, time::Instant};

use bollard::{
    Docker,
    container::LogOutput,
    errors::Error as BollardError,
    models::ContainerStateStatusEnum,
    query_parameters::{
        AttachContainerOptionsBuilder, ContainerArchiveInfoOptionsBuilder,
        ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        StopContainerOptionsBuilder,
    },
};
use futures_util::{
    StreamExt,
    future::{Fuse, FusedFuture, FutureExt},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    DockerExecutor, EngineAnswer, engine_error, engine_message, is_client_error,
    lines::LineSplitter, status, step_config::create_body,
};
use crate::{
    ExecError, LABEL_MANAGED, LABEL_PIN, LeftContainer, LeftState, LogSink, Outcome, StepSpec,
    Stream,
};

/// A container's output as the engine streams it (an attach, or its log).
type Output<'a> = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, BollardError>> + Send + 'a>,
>;

/// Leaves out the first `left` lines and pieces (those the step's log already holds).
struct Skipping<'a> {
    inner: &'a mut dyn LogSink,
    left: u64,
}

impl LogSink for Skipping<'_> {
    fn line(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
        if self.left > 0 {
            self.left -= 1;
            return Ok(());
        }
        self.inner.line(stream, line)
    }

    fn piece(&mut self, stream: Stream, piece: &[u8]) -> std::io::Result<()> {
        if self.left > 0 {
            self.left -= 1;
            return Ok(());
        }
        self.inner.piece(stream, piece)
    }
}

/// Whether a managed container, given its sorted labels, is kept by
/// [`DockerExecutor::reap_managed`].
type KeepContainer<'a> = dyn Fn(&[(String, String)]) -> bool + Sync + 'a;

impl DockerExecutor {
    /// Pulls the image if needed, creates the container, runs it to its end and removes it
    /// (unless [`StepSpec::leave_exited`] keeps a container that ran).
    pub(super) async fn run_step_container(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        let auth = spec.pull_auth.as_ref();
        if let Some(outcome) = self.ensure_image(&spec.image, auth, sink, cancel).await? {
            return Ok(outcome);
        }
        let body = match create_body(spec) {
            Ok(body) => body,
            Err(reason) => return Ok(Outcome::StartFailed { reason }),
        };
        let id = match self.docker.create_container(None, body).await {
            Ok(created) => created.id,
            Err(err) if is_client_error(&err) => {
                return Ok(Outcome::StartFailed {
                    reason: engine_message(&err),
                });
            }
            Err(source) => {
                return Err(engine_error(
                    format!("create a container from {}", spec.image),
                    source,
                ));
            }
        };
        debug!(container = id, image = spec.image, "created step container");

        let guard = RemoveOnDrop {
            docker: self.docker.clone(),
            id: Some(id.clone()),
        };
        let mut started = false;
        let outcome = self
            .run_container(&id, spec, sink, cancel, &mut started)
            .await;
        match outcome {
            Ok(_) if started && spec.leave_exited => guard.leave(),
            _ => guard.remove().await,
        }
        outcome
    }

    /// Everything between create and remove; the caller removes the container. `started`
    /// says whether the engine started it.
    async fn run_container(
        &self,
        id: &str,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
        started: &mut bool,
    ) -> Result<Outcome, ExecError> {
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        // Both are independent round trips before the start; doing them together keeps
        // the executable check off the step's latency.
        let (attached, executable) = tokio::join!(
            self.docker.attach_container(id, Some(attach)),
            self.check_executable(id, spec),
        );
        let output = attached
            .map_err(|source| engine_error(format!("attach to container {id}"), source))?
            .output;
        if let Some(outcome) = executable? {
            return Ok(outcome);
        }
        if let Some(gate) = &spec.start_gate {
            tokio::select! {
                ready = gate.wait() => if let Err(reason) = ready {
                    return Ok(Outcome::StartFailed { reason });
                },
                _ = cancel.cancelled() => return Ok(Outcome::Cancelled),
            }
        }
        if cancel.is_cancelled() {
            return Ok(Outcome::Cancelled);
        }
        // Before the start, so that a process killed at any point after it leaves a record
        // that the container may have run (a restart then never starts the step again).
        sink.starting(id).map_err(ExecError::Sink)?;
        match self.docker.start_container(id, None).await {
            Ok(()) => {}
            Err(err) if is_client_error(&err) => {
                return Ok(Outcome::StartFailed {
                    reason: engine_message(&err),
                });
            }
            Err(source) => return Err(engine_error(format!("start container {id}"), source)),
        }
        debug!(container = id, "started step container");
        *started = true;
        self.follow(id, output, spec.timeout, sink, cancel).await
    }

    /// Follows a container an earlier process started (see [`crate::Executor::follow_existing`]);
    /// leaves it when that ends well, removes it otherwise.
    pub(super) async fn follow_left(
        &self,
        id: &str,
        skip_lines: u64,
        timeout: Option<std::time::Duration>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        let guard = RemoveOnDrop {
            docker: self.docker.clone(),
            id: Some(id.to_string()),
        };
        // The log driver holds the container's whole output: read from its start, and
        // followed until the container stops.
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .tail("all")
            .build();
        let docker = self.docker.clone();
        let output: Output<'_> = Box::pin(docker.logs(id, Some(options)));
        let mut skipping = Skipping {
            inner: sink,
            left: skip_lines,
        };
        let outcome = self
            .follow(id, output, timeout, &mut skipping, cancel)
            .await;
        match outcome {
            Ok(_) => guard.leave(),
            Err(_) => guard.remove().await,
        }
        outcome
    }

    /// A started container's output into the sink until it ends, its stop on `timeout`
    /// or `cancel`, and how it ended.
    async fn follow(
        &self,
        id: &str,
        mut output: Output<'_>,
        timeout: Option<std::time::Duration>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        let started = Instant::now();
        let deadline = timeout.map(|timeout| started + timeout);
        let mut timer = pin!(tokio::time::sleep_until(deadline.unwrap_or(started).into()));
        let mut cancelled = pin!(cancel.cancelled());
        let mut stop = pin!(Fuse::terminated());
        let mut stopped_for: Option<Outcome> = None;
        // Waiting from the start saves a round trip at the end, and keeps the timeout
        // watching a step that closes its output but goes on running.
        let mut exit = pin!(self.wait_exit(id).fuse());
        let mut output_ended = false;
        let mut lines = LineSplitter::default();

        // A timeout or cancellation only starts the stop; the output is still read to its
        // end, so that what the step prints while shutting down is kept.
        while !(output_ended && exit.is_terminated()) {
            tokio::select! {
                item = output.next(), if !output_ended => match item {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        lines.push(Stream::Stdout, &message, sink).map_err(ExecError::Sink)?;
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        lines.push(Stream::Stderr, &message, sink).map_err(ExecError::Sink)?;
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(source)) => {
                        return Err(engine_error(format!("read the output of container {id}"), source));
                    }
                    None => output_ended = true,
                },
                exited = &mut exit, if !exit.is_terminated() => exited?,
                () = &mut timer, if deadline.is_some() && stopped_for.is_none() => {
                    let after = timeout.unwrap_or_default();
                    debug!(container = id, ?after, "step timed out, stopping it");
                    stopped_for = Some(Outcome::TimedOut { after });
                    stop.set(self.stop(id).fuse());
                }
                () = &mut cancelled, if stopped_for.is_none() => {
                    debug!(container = id, "step cancelled, stopping it");
                    stopped_for = Some(Outcome::Cancelled);
                    stop.set(self.stop(id).fuse());
                }
                stopped = &mut stop, if !stop.is_terminated() => stopped?,
            }
        }
        lines.finish(sink).map_err(ExecError::Sink)?;
        if !stop.is_terminated() {
            stop.await?;
        }
        if let Some(outcome) = stopped_for {
            return Ok(outcome);
        }

        let inspected = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|source| engine_error(format!("inspect container {id}"), source))?;
        let state = inspected.state.unwrap_or_default();
        debug!(
            container = id,
            exit_code = state.exit_code,
            oom_killed = state.oom_killed,
            "step container exited"
        );
        if state.oom_killed == Some(true) {
            return Ok(Outcome::OomKilled);
        }
        match state.exit_code {
            Some(0) => Ok(Outcome::Succeeded),
            Some(exit_code) => Ok(Outcome::Failed { exit_code }),
            None => Err(ExecError::Engine(Box::new(EngineAnswer {
                what: format!("the engine reported no exit code for container {id}"),
            }))),
        }
    }

    /// Fails the step early when its command is an absolute path that is not an
    /// executable in the container: docker-init would only exit with 127 or 126.
    async fn check_executable(
        &self,
        id: &str,
        spec: &StepSpec,
    ) -> Result<Option<Outcome>, ExecError> {
        let Some(path) = spec.command.first().filter(|path| path.starts_with('/')) else {
            return Ok(None);
        };
        let options = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match self
            .docker
            .get_container_archive_info(id, Some(options))
            .await
        {
            Ok(stat) if is_executable(stat.file_mode) => Ok(None),
            Ok(_) => Ok(Some(Outcome::StartFailed {
                reason: format!("{path} is not an executable file in image {}", spec.image),
            })),
            Err(err) if status(&err) == Some(404) => Ok(Some(Outcome::StartFailed {
                reason: format!("{path} does not exist in image {}", spec.image),
            })),
            // Let the start itself decide; this check only sharpens the message.
            Err(err) if is_client_error(&err) => Ok(None),
            Err(source) => Err(engine_error(
                format!("look up {path} in container {id}"),
                source,
            )),
        }
    }

    /// Returns once the container has stopped. The wait's own answer is not used: bollard
    /// turns a non-zero exit into an `Err`, and the inspection afterwards has the truth.
    async fn wait_exit(&self, id: &str) -> Result<(), ExecError> {
        match self.docker.wait_container(id, None).next().await {
            None | Some(Ok(_) | Err(BollardError::DockerContainerWaitError { .. })) => Ok(()),
            Some(Err(source)) => Err(engine_error(format!("wait for container {id}"), source)),
        }
    }

    /// SIGTERM, the grace period, SIGKILL: the engine's stop does all three.
    async fn stop(&self, id: &str) -> Result<(), ExecError> {
        let grace = self.stop_grace.as_secs() + u64::from(self.stop_grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::default()
            .t(i32::try_from(grace).unwrap_or(i32::MAX))
            .build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status(&err) == Some(404) => Ok(()),
            Err(source) => Err(engine_error(format!("stop container {id}"), source)),
        }
    }

    /// The managed step containers carrying every label of `labels` (keepers excluded),
    /// oldest first, each inspected for its state and environment.
    pub(super) async fn find_left(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<LeftContainer>, ExecError> {
        let mut wanted = vec![format!("{LABEL_MANAGED}=true")];
        wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let mut containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| engine_error("list Pipewright's containers", source))?;
        containers.sort_by_key(|c| c.created.unwrap_or_default());
        let mut found = Vec::new();
        for container in containers {
            let Some(id) = container.id else { continue };
            let mut labels: Vec<(String, String)> =
                container.labels.unwrap_or_default().into_iter().collect();
            labels.sort();
            if labels.iter().any(|(name, _)| name == LABEL_PIN) {
                continue;
            }
            let inspected = match self.docker.inspect_container(&id, None).await {
                Ok(inspected) => inspected,
                // Removed meanwhile.
                Err(err) if status(&err) == Some(404) => continue,
                Err(source) => {
                    return Err(engine_error(format!("inspect container {id}"), source));
                }
            };
            let state = inspected.state.unwrap_or_default();
            let state = match state.status {
                Some(ContainerStateStatusEnum::CREATED) => LeftState::Created,
                Some(
                    ContainerStateStatusEnum::RUNNING
                    | ContainerStateStatusEnum::PAUSED
                    | ContainerStateStatusEnum::RESTARTING,
                ) => LeftState::Running,
                // Exited, dead or being removed: it ran, and has ended.
                _ => LeftState::Exited,
            };
            let env = inspected
                .config
                .and_then(|c| c.env)
                .unwrap_or_default()
                .into_iter()
                .map(|entry| match entry.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (entry, String::new()),
                })
                .collect();
            found.push(LeftContainer {
                id,
                labels,
                state,
                env,
            });
        }
        Ok(found)
    }

    /// Removes one container (killing it first); `Ok(false)` when it was gone.
    pub(super) async fn remove_one(&self, id: &str) -> Result<bool, ExecError> {
        remove_container(&self.docker, id)
            .await
            .map_err(|source| engine_error(format!("remove container {id}"), source))
    }

    /// Removes managed containers that `keep` rejects; how many were removed.
    pub(super) async fn reap_managed(&self, keep: &KeepContainer<'_>) -> Result<usize, ExecError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_MANAGED}=true")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| engine_error("list Pipewright's containers", source))?;

        let mut removed = 0;
        for container in containers {
            let Some(id) = container.id else { continue };
            let mut labels: Vec<(String, String)> =
                container.labels.unwrap_or_default().into_iter().collect();
            labels.sort();
            // Keepers hold images for the engine's GC; only `release_images` removes them.
            if labels.iter().any(|(name, _)| name == LABEL_PIN) || keep(&labels) {
                continue;
            }
            match remove_container(&self.docker, &id).await {
                Ok(true) => {
                    debug!(container = id, "reaped leftover container");
                    removed += 1;
                }
                Ok(false) => {}
                Err(source) => {
                    return Err(engine_error(format!("remove container {id}"), source));
                }
            }
        }
        Ok(removed)
    }
}

/// Mode bits as Go's `os.FileMode` encodes them in the engine's path stat.
fn is_executable(mode: u32) -> bool {
    const MODE_SYMLINK: u32 = 1 << 27;
    // Go's ModeType: dir; symlink, device, named pipe, socket; char device; irregular.
    const MODE_TYPE: u32 = (1 << 31) | (0b1111 << 24) | (1 << 21) | (1 << 19);
    if mode & MODE_SYMLINK != 0 {
        // Resolved by the kernel at exec time; a dangling link ends as exit code 127.
        return true;
    }
    mode & MODE_TYPE == 0 && mode & 0o111 != 0
}

/// Removes the step container however `run_step` ends. The removal runs in a task of its
/// own, so neither a cancelled token nor a dropped `run_step` future can interrupt it.
struct RemoveOnDrop {
    docker: Docker,
    id: Option<String>,
}

impl RemoveOnDrop {
    /// Keeps the container: the caller removes it.
    fn leave(mut self) {
        self.id = None;
    }

    async fn remove(mut self) {
        if let Some(task) = self.spawn() {
            // A panic in the task has already been reported by the runtime.
            let _ = task.await;
        }
    }

    fn spawn(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let id = self.id.take()?;
        let docker = self.docker.clone();
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(runtime.spawn(async move {
            match remove_container(&docker, &id).await {
                Ok(_) => debug!(container = id, "removed step container"),
                // Left for `reap`, which runs at the next start.
                Err(err) => warn!(container = id, error = %err, "failed to remove step container"),
            }
        }))
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.spawn();
    }
}

/// Force-removes (killing it if running) a container and its anonymous volumes. `Ok(false)`
/// when it was already gone or being removed by someone else.
pub(super) async fn remove_container(docker: &Docker, id: &str) -> Result<bool, BollardError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(true),
        // 409: a removal is already in progress.
        Err(err) if matches!(status(&err), Some(404 | 409)) => Ok(false),
        Err(err) => Err(err),
    }
}

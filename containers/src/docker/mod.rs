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

use std::{
    collections::HashMap,
    path::Path,
    pin::pin,
    time::{Duration, Instant},
};

use bollard::{
    Docker,
    auth::DockerCredentials,
    body_try_stream,
    container::LogOutput,
    errors::Error as BollardError,
    models::{ContainerCreateBody, HostConfig, ProgressDetail},
    query_parameters::{
        AttachContainerOptionsBuilder, BuildImageOptionsBuilder, BuilderVersion,
        ContainerArchiveInfoOptionsBuilder, CreateImageOptionsBuilder,
        ListContainersOptionsBuilder, PushImageOptionsBuilder, RemoveContainerOptionsBuilder,
        RemoveImageOptionsBuilder, StopContainerOptionsBuilder, TagImageOptionsBuilder,
    },
};
use futures_util::{
    StreamExt,
    future::{Fuse, FusedFuture, FutureExt},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    BuildOutcome, BuildSpec, ExecError, Executor, LABEL_MANAGED, LogSink, MAX_LINE, Outcome,
    PushOutcome, RegistryAuth, StepSpec, Stream,
    build::{Context, ContextError},
};

/// How Pipewright reaches the Docker engine.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://host:2375`); `None` uses
    /// `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Time between SIGTERM and SIGKILL when a step is timed out or cancelled. Default 10 s.
    pub stop_grace: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            stop_grace: Duration::from_secs(10),
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

/// Capabilities Docker grants by default that no build step needs: raw sockets (ARP and
/// ICMP spoofing on the bridge), device nodes, and writing to the host's audit log.
const CAP_DROP: [&str; 3] = ["NET_RAW", "MKNOD", "AUDIT_WRITE"];

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

    /// Checks that the engine answers (readiness).
    pub async fn ping(&self) -> Result<(), ExecError> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(|source| engine_error("ping the Docker engine", source))
    }

    /// Makes sure `image` is present, pulling it if not. `Some(outcome)` ends the step.
    async fn ensure_image(
        &self,
        image: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<Outcome>, ExecError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(None),
            Err(err) if status(&err) == Some(404) => {}
            Err(err) if is_client_error(&err) => {
                return Ok(Some(image_unavailable(image, &err)));
            }
            Err(source) => return Err(engine_error(format!("inspect image {image}"), source)),
        }

        debug!(image, "pulling image");
        let mut options = CreateImageOptionsBuilder::default().from_image(image);
        if !has_tag_or_digest(image) {
            // Without a tag the engine would pull every tag of the repository.
            options = options.tag("latest");
        }
        let mut progress = self.docker.create_image(Some(options.build()), None, None);
        let pulled = async {
            while let Some(item) = progress.next().await {
                match item {
                    Ok(_) => {}
                    // The engine answered: whatever it says, this image cannot be had.
                    Err(
                        err @ (BollardError::DockerStreamError { .. }
                        | BollardError::DockerResponseServerError { .. }),
                    ) => return Ok(Some(image_unavailable(image, &err))),
                    Err(source) => {
                        return Err(engine_error(format!("pull image {image}"), source));
                    }
                }
            }
            debug!(image, "pulled image");
            Ok(None)
        };
        tokio::select! {
            pulled = pulled => pulled,
            () = cancel.cancelled() => Ok(Some(Outcome::Cancelled)),
        }
    }

    /// Everything between create and remove; the caller removes the container.
    async fn run_container(
        &self,
        id: &str,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
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
        let mut output = attached
            .map_err(|source| engine_error(format!("attach to container {id}"), source))?
            .output;
        if let Some(outcome) = executable? {
            return Ok(outcome);
        }
        if cancel.is_cancelled() {
            return Ok(Outcome::Cancelled);
        }

        match self.docker.start_container(id, None).await {
            Ok(()) => {}
            Err(err) if is_client_error(&err) => {
                return Ok(Outcome::StartFailed {
                    reason: engine_message(&err),
                });
            }
            Err(source) => return Err(engine_error(format!("start container {id}"), source)),
        }
        let started = Instant::now();
        debug!(container = id, "started step container");

        let deadline = spec.timeout.map(|timeout| started + timeout);
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
                    let after = spec.timeout.unwrap_or_default();
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
}

/// How the build request ended, before the context task has been heard.
enum BuildEnd {
    /// The stream ended; the image id if the engine gave one.
    Done(Option<String>),
    /// The engine reported an error about the build.
    Refused(String),
    Cancelled,
    Engine(BollardError),
}

impl DockerExecutor {
    /// Sends the context and follows the build; returns once the request is over (its
    /// stream dropped, so the context task is no longer read).
    async fn run_build(
        &self,
        spec: &BuildSpec,
        context: Context,
        first_tag: Option<String>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<(BuildEnd, Result<(), ContextError>), ExecError> {
        let build_args: HashMap<String, String> = spec.build_args.iter().cloned().collect();
        let labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(context.dockerfile())
            .version(BuilderVersion::BuilderV1)
            .rm(true)
            .forcerm(true)
            .buildargs(&build_args)
            .labels(&labels);
        if let Some(tag) = &first_tag {
            options = options.t(tag);
        }
        if let Some(memory) = spec.memory_bytes {
            // The engine API client takes 32 bits here; a lower limit is still a limit.
            let memory = i32::try_from(memory).unwrap_or(i32::MAX);
            options = options.memory(memory).memswap(memory);
        }
        let (body, writer) = context.stream();
        let mut progress =
            self.docker
                .build_image(options.build(), None, Some(body_try_stream(body)));
        let mut lines = LineSplitter::default();
        let mut image_id = None;
        let end = loop {
            let item = tokio::select! {
                item = progress.next() => item,
                () = cancel.cancelled() => break BuildEnd::Cancelled,
            };
            match item {
                None => break BuildEnd::Done(image_id),
                Some(Ok(info)) => {
                    if let Some(text) = &info.stream {
                        lines
                            .push(Stream::Stdout, text.as_bytes(), sink)
                            .map_err(ExecError::Sink)?;
                    }
                    if let Some(status) = &info.status
                        && !is_progress(info.progress_detail.as_ref())
                    {
                        let line = match &info.id {
                            Some(id) => format!("{id}: {status}\n"),
                            None => format!("{status}\n"),
                        };
                        lines
                            .push(Stream::Stdout, line.as_bytes(), sink)
                            .map_err(ExecError::Sink)?;
                    }
                    if let Some(id) = info.aux.and_then(|aux| aux.id) {
                        image_id = Some(id);
                    }
                }
                // The engine answered: whatever it says, this build did not succeed.
                Some(Err(
                    err @ (BollardError::DockerStreamError { .. }
                    | BollardError::DockerResponseServerError { .. }),
                )) => break BuildEnd::Refused(engine_message(&err)),
                Some(Err(source)) => break BuildEnd::Engine(source),
            }
        };
        lines.finish(sink).map_err(ExecError::Sink)?;
        drop(progress);
        let written = match writer.await {
            Ok(written) => written,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only when the runtime shuts down.
                Err(_) => Err(ContextError::Closed),
            },
        };
        Ok((end, written))
    }
}

impl Executor for DockerExecutor {
    async fn run_step(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        if let Some(outcome) = self.ensure_image(&spec.image, cancel).await? {
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
        let outcome = self.run_container(&id, spec, sink, cancel).await;
        guard.remove().await;
        outcome
    }

    async fn reap(
        &self,
        keep: &(dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> Result<usize, ExecError> {
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
            if keep(&labels) {
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

    async fn build_image(
        &self,
        spec: &BuildSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<BuildOutcome, ExecError> {
        let mut tags = Vec::with_capacity(spec.tags.len());
        for tag in &spec.tags {
            match split_reference(tag) {
                Ok(parts) => tags.push(parts),
                Err(reason) => return Ok(BuildOutcome::Failed { reason }),
            }
        }
        let (dir, dockerfile) = (spec.context.clone(), spec.dockerfile.clone());
        let within = spec.within.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            Context::prepare(&dir, &dockerfile, within.as_deref())
        });
        let context = match prepared.await {
            Ok(Ok(context)) => context,
            Ok(Err(reason)) => return Ok(BuildOutcome::Failed { reason }),
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => return Ok(BuildOutcome::Cancelled),
            },
        };
        let first_tag = tags.first().map(|(name, tag)| format!("{name}:{tag}"));
        debug!(context = %spec.context.display(), tag = first_tag, "building image");

        let (end, written) = self
            .run_build(spec, context, first_tag.clone(), sink, cancel)
            .await?;
        let image_id = match (end, written) {
            (BuildEnd::Cancelled, _) => return Ok(BuildOutcome::Cancelled),
            // A refused or unreadable context is why the request failed, whatever the
            // engine made of the cut-off archive.
            (_, Err(err @ (ContextError::Refused(_) | ContextError::Read { .. }))) => {
                return Ok(BuildOutcome::Failed {
                    reason: err.to_string(),
                });
            }
            (BuildEnd::Refused(reason), _) => return Ok(BuildOutcome::Failed { reason }),
            (BuildEnd::Engine(source), _) => {
                return Err(engine_error("build an image", source));
            }
            (BuildEnd::Done(Some(id)), _) => id,
            (BuildEnd::Done(None), _) => self.image_id(first_tag.as_deref()).await?,
        };
        debug!(image = image_id, "built image");

        for (name, tag) in tags.iter().skip(1) {
            let options = TagImageOptionsBuilder::default()
                .repo(name)
                .tag(tag)
                .build();
            match self.docker.tag_image(&image_id, Some(options)).await {
                Ok(()) => {}
                Err(err @ BollardError::DockerResponseServerError { .. }) => {
                    return Ok(BuildOutcome::Failed {
                        reason: format!(
                            "failed to tag the image as {name}:{tag}: {}",
                            engine_message(&err)
                        ),
                    });
                }
                Err(source) => {
                    return Err(engine_error(format!("tag image {image_id}"), source));
                }
            }
            emit_line(
                Stream::Stdout,
                format!("Successfully tagged {name}:{tag}").as_bytes(),
                sink,
            )
            .map_err(ExecError::Sink)?;
        }
        Ok(BuildOutcome::Built { image_id })
    }

    async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> Result<PushOutcome, ExecError> {
        let (name, tag) = match split_reference(reference) {
            Ok(parts) => parts,
            Err(reason) => return Ok(PushOutcome::Failed { reason }),
        };
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server.clone()),
            ..DockerCredentials::default()
        });
        debug!(
            image = reference,
            authenticated = auth.is_some(),
            "pushing image"
        );
        let options = PushImageOptionsBuilder::default().tag(&tag).build();
        let mut progress = self.docker.push_image(&name, Some(options), credentials);
        let mut digest = None;
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    let Some(status) = info.status else { continue };
                    if is_progress(info.progress_detail.as_ref()) {
                        continue;
                    }
                    if let Some(found) = pushed_digest(&status) {
                        digest = Some(found.to_owned());
                    }
                    emit_line(Stream::Stdout, status.as_bytes(), sink).map_err(ExecError::Sink)?;
                }
                // The engine answered: whatever it says, this push did not happen.
                Err(
                    err @ (BollardError::DockerStreamError { .. }
                    | BollardError::DockerResponseServerError { .. }),
                ) => {
                    return Ok(PushOutcome::Failed {
                        reason: engine_message(&err),
                    });
                }
                Err(source) => return Err(engine_error(format!("push image {reference}"), source)),
            }
        }
        match digest {
            Some(digest) => {
                debug!(image = reference, digest, "pushed image");
                Ok(PushOutcome::Pushed { digest })
            }
            None => Err(ExecError::Engine(Box::new(EngineAnswer {
                what: format!("the engine reported no digest for the push of {reference}"),
            }))),
        }
    }

    async fn remove_image(&self, reference: &str) -> Result<bool, ExecError> {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if status(&err) == Some(404) => Ok(false),
            Err(source) => Err(engine_error(format!("remove image {reference}"), source)),
        }
    }

    async fn local_image_id(&self, reference: &str) -> Result<Option<String>, ExecError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) if is_client_error(&err) => Ok(None),
            Err(source) => Err(engine_error(format!("inspect image {reference}"), source)),
        }
    }
}

impl DockerExecutor {
    /// The id of a just-built image, for an engine that did not send it in the stream.
    async fn image_id(&self, tag: Option<&str>) -> Result<String, ExecError> {
        let missing = || {
            ExecError::Engine(Box::new(EngineAnswer {
                what: "the engine reported no id for the built image".to_owned(),
            }))
        };
        let tag = tag.ok_or_else(missing)?;
        let image = self
            .docker
            .inspect_image(tag)
            .await
            .map_err(|source| engine_error(format!("inspect image {tag}"), source))?;
        image.id.ok_or_else(missing)
    }
}

/// `(name, tag)` of an image reference; a reference without a tag means `latest`. A digest
/// reference is refused: it cannot be given to a build or pushed.
fn split_reference(reference: &str) -> Result<(String, String), String> {
    if reference.is_empty() || reference.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid image reference {reference:?}"));
    }
    if reference.contains('@') {
        return Err(format!(
            "image reference {reference} names a digest, where a tag is needed"
        ));
    }
    let last = reference.rfind('/').map_or(0, |slash| slash + 1);
    let (name, tag) = match reference[last..].rfind(':') {
        Some(colon) => reference.split_at(last + colon),
        None => (reference, ":latest"),
    };
    let tag = &tag[1..];
    if name.is_empty() || name.ends_with('/') || tag.is_empty() {
        return Err(format!("invalid image reference {reference:?}"));
    }
    Ok((name.to_owned(), tag.to_owned()))
}

/// A progress-bar update (bytes done of a layer), not worth a log line.
fn is_progress(detail: Option<&ProgressDetail>) -> bool {
    detail.is_some_and(|detail| detail.current.is_some() || detail.total.is_some())
}

/// The digest in the engine's closing push line `TAG: digest: sha256:HEX size: N`.
fn pushed_digest(status: &str) -> Option<&str> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

/// Removes the step container however `run_step` ends. The removal runs in a task of its
/// own, so neither a cancelled token nor a dropped `run_step` future can interrupt it.
struct RemoveOnDrop {
    docker: Docker,
    id: Option<String>,
}

impl RemoveOnDrop {
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
async fn remove_container(docker: &Docker, id: &str) -> Result<bool, BollardError> {
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

/// The create request for a step, or why the spec cannot be run.
fn create_body(spec: &StepSpec) -> Result<ContainerCreateBody, String> {
    let mut binds = Vec::with_capacity(spec.mounts.len());
    for mount in &spec.mounts {
        binds.push(bind(&mount.host, &mount.container, mount.read_only)?);
    }
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    // Inserted last so that no spec can unset it and hide a container from `reap`.
    labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());

    let command = (!spec.command.is_empty()).then(|| spec.command.clone());
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The step's command is the whole command line: an image's ENTRYPOINT would
        // otherwise receive it as arguments.
        entrypoint: command.as_ref().map(|_| Vec::new()),
        cmd: command,
        env: Some(env_list(&spec.env)?),
        working_dir: (!spec.working_dir.is_empty()).then(|| spec.working_dir.clone()),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            binds: Some(binds),
            memory: spec.memory_bytes,
            memory_swap: spec.memory_bytes,
            pids_limit: spec.pids_limit,
            privileged: Some(false),
            init: Some(true),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            cap_drop: Some(CAP_DROP.iter().map(|&cap| cap.to_owned()).collect()),
            network_mode: Some(spec.network.clone().unwrap_or_else(|| "bridge".to_owned())),
            auto_remove: Some(false),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

/// A `host:container[:ro]` bind. Relative host paths are refused because the engine would
/// take them for named volumes, and a `:` would be read as a field separator.
fn bind(host: &Path, container: &str, read_only: bool) -> Result<String, String> {
    let Some(host_str) = host.to_str() else {
        return Err(format!(
            "mount source {} is not valid UTF-8",
            host.display()
        ));
    };
    if !host.is_absolute() || host_str.contains(':') {
        return Err(format!(
            "mount source {host_str} must be an absolute path without ':'"
        ));
    }
    if !container.starts_with('/') || container.contains(':') {
        return Err(format!(
            "mount target {container} must be an absolute path without ':'"
        ));
    }
    let mode = if read_only { ":ro" } else { "" };
    Ok(format!("{host_str}:{container}{mode}"))
}

/// `KEY=value` entries in order, each key once with its last value: with duplicates the
/// process would see whichever its libc finds first.
fn env_list(env: &[(String, String)]) -> Result<Vec<String>, String> {
    let mut list = Vec::with_capacity(env.len());
    for (i, (key, value)) in env.iter().enumerate() {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(format!("invalid environment variable name {key:?}"));
        }
        if env[i + 1..].iter().all(|(later, _)| later != key) {
            list.push(format!("{key}={value}"));
        }
    }
    Ok(list)
}

/// Whether a reference names a tag or digest; `registry:5000/name` has neither.
fn has_tag_or_digest(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || name.contains(':')
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

fn image_unavailable(image: &str, err: &BollardError) -> Outcome {
    Outcome::ImageUnavailable {
        image: image.to_owned(),
        reason: engine_message(err),
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

/// Cuts a container's output into lines per stream. Holds at most one partial line per
/// stream, itself at most `MAX_LINE + 1` bytes (the extra byte is a `\r` that may turn out
/// to be part of a `\r\n`).
#[derive(Debug, Default)]
struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    fn push(
        &mut self,
        stream: Stream,
        mut data: &[u8],
        sink: &mut dyn LogSink,
    ) -> std::io::Result<()> {
        let partial = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(newline);
            data = &rest[1..];
            if partial.is_empty() {
                emit_line(stream, line, sink)?;
            } else {
                partial.extend_from_slice(line);
                emit_line(stream, partial, sink)?;
                partial.clear();
            }
        }
        partial.extend_from_slice(data);
        if partial.len() > MAX_LINE + 1 {
            let whole = partial.len() - partial.len() % MAX_LINE;
            // Keep at least two bytes so that a trailing `\r` is still judged with what follows.
            let cut = if partial.len() - whole < 2 {
                whole - MAX_LINE
            } else {
                whole
            };
            // The line goes on in what is kept.
            for piece in partial[..cut].chunks(MAX_LINE) {
                sink.piece(stream, piece)?;
            }
            partial.drain(..cut);
        }
        Ok(())
    }

    /// Delivers the partial lines left when the output has ended.
    fn finish(&mut self, sink: &mut dyn LogSink) -> std::io::Result<()> {
        for (stream, partial) in [
            (Stream::Stdout, &mut self.stdout),
            (Stream::Stderr, &mut self.stderr),
        ] {
            if !partial.is_empty() {
                emit_line(stream, partial, sink)?;
                partial.clear();
            }
        }
        Ok(())
    }
}

/// A complete line without its ending, in `MAX_LINE` pieces when longer (the last one
/// through [`LogSink::line`]).
fn emit_line(stream: Stream, line: &[u8], sink: &mut dyn LogSink) -> std::io::Result<()> {
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    while line.len() > MAX_LINE {
        let (piece, rest) = line.split_at(MAX_LINE);
        sink.piece(stream, piece)?;
        line = rest;
    }
    sink.line(stream, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Vec<(Stream, Vec<u8>)>);

    impl LogSink for Lines {
        fn line(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
            self.0.push((stream, line.to_vec()));
            Ok(())
        }
    }

    /// Lines, each with the pieces it came in.
    #[derive(Default)]
    struct Pieces {
        lines: Vec<Vec<Vec<u8>>>,
        open: Vec<Vec<u8>>,
    }

    impl LogSink for Pieces {
        fn line(&mut self, _: Stream, line: &[u8]) -> std::io::Result<()> {
            self.open.push(line.to_vec());
            self.lines.push(std::mem::take(&mut self.open));
            Ok(())
        }
        fn piece(&mut self, _: Stream, piece: &[u8]) -> std::io::Result<()> {
            self.open.push(piece.to_vec());
            Ok(())
        }
    }

    fn split(chunks: &[(Stream, &[u8])]) -> Vec<(Stream, Vec<u8>)> {
        let mut splitter = LineSplitter::default();
        let mut sink = Lines::default();
        for (stream, chunk) in chunks {
            splitter.push(*stream, chunk, &mut sink).unwrap();
        }
        splitter.finish(&mut sink).unwrap();
        sink.0
    }

    fn out(line: &[u8]) -> (Stream, Vec<u8>) {
        (Stream::Stdout, line.to_vec())
    }

    #[test]
    fn lines_across_chunks_and_streams() {
        let got = split(&[
            (Stream::Stdout, b"a\r\nb"),
            (Stream::Stderr, b"x"),
            (Stream::Stdout, b"c\n\nd"),
            (Stream::Stderr, b"y\n"),
        ]);
        assert_eq!(
            got,
            [
                out(b"a"),
                out(b"bc"),
                out(b""),
                (Stream::Stderr, b"xy".to_vec()),
                out(b"d"),
            ]
        );
    }

    #[test]
    fn long_lines_come_in_max_line_pieces() {
        let x = vec![b'x'; MAX_LINE];
        let mut line = [x.as_slice(), x.as_slice(), b"y"].concat();
        line.push(b'\n');
        for chunk_size in [1000, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, line.len()] {
            let chunks: Vec<_> = line
                .chunks(chunk_size)
                .map(|c| (Stream::Stdout, c))
                .collect();
            assert_eq!(
                split(&chunks),
                [out(&x), out(&x), out(b"y")],
                "{chunk_size}"
            );
        }
    }

    #[test]
    fn pieces_say_that_their_line_goes_on() {
        let x = vec![b'x'; MAX_LINE];
        let long = [x.as_slice(), x.as_slice(), b"y"].concat();
        let exact = [x.as_slice(), x.as_slice()].concat();
        let text = [&long[..], b"\nshort\n", &exact[..], b"\r\n", &long[..]].concat();
        for chunk_size in [1000, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, text.len()] {
            let mut splitter = LineSplitter::default();
            let mut sink = Pieces::default();
            for chunk in text.chunks(chunk_size) {
                splitter.push(Stream::Stdout, chunk, &mut sink).unwrap();
            }
            splitter.finish(&mut sink).unwrap();
            let whole = |l: &Vec<Vec<u8>>| l.concat();
            assert_eq!(
                sink.lines.iter().map(whole).collect::<Vec<_>>(),
                [long.clone(), b"short".to_vec(), exact.clone(), long.clone()],
                "{chunk_size}"
            );
            let sizes: Vec<Vec<usize>> = sink
                .lines
                .iter()
                .map(|l| l.iter().map(Vec::len).collect())
                .collect();
            assert_eq!(
                sizes,
                [
                    vec![MAX_LINE, MAX_LINE, 1],
                    vec![5],
                    vec![MAX_LINE, MAX_LINE],
                    vec![MAX_LINE, MAX_LINE, 1]
                ],
                "{chunk_size}"
            );
            assert!(sink.open.is_empty());
        }
    }

    #[test]
    fn crlf_at_a_max_line_boundary() {
        let x = vec![b'x'; MAX_LINE];
        let line = [x.as_slice(), b"\r\n"].concat();
        for chunk_size in [1, 7, MAX_LINE, MAX_LINE + 1] {
            let chunks: Vec<_> = line
                .chunks(chunk_size)
                .map(|c| (Stream::Stdout, c))
                .collect();
            assert_eq!(split(&chunks), [out(&x)], "{chunk_size}");
        }
    }

    #[test]
    fn references_with_and_without_tags() {
        assert!(has_tag_or_digest("busybox:1.36"));
        assert!(has_tag_or_digest("registry.lab:5000/team/tool:2"));
        assert!(has_tag_or_digest("registry.lab/tool@sha256:abc"));
        assert!(!has_tag_or_digest("busybox"));
        assert!(!has_tag_or_digest("registry.lab:5000/team/tool"));
    }

    #[test]
    fn references_split_into_name_and_tag() {
        let split = |r: &str| split_reference(r).map(|(n, t)| format!("{n} {t}"));
        assert_eq!(split("busybox").unwrap(), "busybox latest");
        assert_eq!(
            split("127.0.0.1:5000/org/app:abc123").unwrap(),
            "127.0.0.1:5000/org/app abc123"
        );
        assert_eq!(
            split("127.0.0.1:5000/org/app").unwrap(),
            "127.0.0.1:5000/org/app latest"
        );
        for bad in ["", "app:", "a b", "app@sha256:abc", "registry/:x", ":tag"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_from_the_closing_push_line() {
        let hex = "4d6f1c0a".repeat(8);
        let line = format!("abc123: digest: sha256:{hex} size: 527");
        assert_eq!(pushed_digest(&line), Some(format!("sha256:{hex}").as_str()));
        assert_eq!(pushed_digest("Pushed"), None);
        assert_eq!(pushed_digest("x: digest: sha256:abc size: 1"), None);
    }

    #[test]
    fn registry_password_is_not_debug_printed() {
        let auth = RegistryAuth {
            username: "ci".into(),
            password: "hunter2".into(),
            server: "registry.lab".into(),
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("ci"),
            "{shown}"
        );
    }

    #[test]
    fn later_environment_entries_win() {
        let env = [("A", "1"), ("B", "2"), ("A", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(env_list(&env).unwrap(), ["B=2", "A=3"]);
        assert!(env_list(&[("A=B".to_owned(), String::new())]).is_err());
    }
}

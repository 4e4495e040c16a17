//! Images: pulling a step's image when it is missing, building from a host directory,
//! tagging, pushing, removing and looking images up.

use std::collections::HashMap;

use bollard::{
    auth::DockerCredentials,
    body_try_stream,
    errors::Error as BollardError,
    models::ProgressDetail,
    query_parameters::{
        BuildImageOptionsBuilder, BuilderVersion, PushImageOptionsBuilder,
        RemoveImageOptionsBuilder, TagImageOptionsBuilder,
    },
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    DockerExecutor, EngineAnswer, engine_error, engine_message, is_client_error,
    lines::{LineSplitter, emit_line},
    pull::PullFailed,
    status,
};
use crate::{
    BuildOutcome, BuildSpec, ExecError, LogSink, Outcome, PushOutcome, RegistryAuth, Stream,
    build::{Context, ContextError},
};

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
    /// Makes sure `image` is present, pulling it with `auth` if not (the pull's progress
    /// goes to `sink`). `Some(outcome)` ends the step.
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
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
        Ok(match self.pull_with(image, auth, sink, cancel).await? {
            Ok(()) => None,
            Err(PullFailed::Cancelled) => Some(Outcome::Cancelled),
            Err(PullFailed::Refused(reason)) => Some(Outcome::ImageUnavailable {
                image: image.to_owned(),
                reason,
            }),
        })
    }

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

    /// Builds an image from a host directory and tags it ([`crate::Executor::build_image`]).
    pub(super) async fn build(
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

    /// Pushes a tagged image ([`crate::Executor::push_image`]).
    pub(super) async fn push(
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

    /// Removes an image ([`crate::Executor::remove_image`]).
    pub(super) async fn delete_image(&self, reference: &str) -> Result<bool, ExecError> {
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

    /// The id of a local image ([`crate::Executor::local_image_id`]).
    pub(super) async fn find_image(&self, reference: &str) -> Result<Option<String>, ExecError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) if is_client_error(&err) => Ok(None),
            Err(source) => Err(engine_error(format!("inspect image {reference}"), source)),
        }
    }

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

/// Whether a reference names a tag or digest; `registry:5000/name` has neither.
pub(super) fn has_tag_or_digest(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || name.contains(':')
}

fn image_unavailable(image: &str, err: &BollardError) -> Outcome {
    Outcome::ImageUnavailable {
        image: image.to_owned(),
        reason: engine_message(err),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

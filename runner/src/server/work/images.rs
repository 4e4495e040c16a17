//! Image pins on the executor: a trusted run (a push to the default branch, a dispatch, a
//! schedule) runs a step's image only if it is the one the reference named when a trusted
//! run of the repository first used it. Untrusted runs (pull requests, other branches) may
//! build and tag local images; pinning makes sure a trusted run never picks one up.
//!
//! The step's container is created from the checked image id, not the reference, so that
//! re-tagging between the check and the start changes nothing. An image that is not
//! present is pulled (by the step, as usual) and the pulled id becomes the pin; a trusted
//! build re-pins the tags it made. An operator accepts a replaced image by removing its row
//! from `image_pins`.
//!
//! The wrapper also gives a pull the credentials of the image's registry
//! (`[[registries]]`), for every run. (These pins are not `[docker].pin_images`, the
//! images kept from the engine's GC: see `keep.rs`.)

use pipewright_containers::{
    BuildOutcome, BuildSpec, CancellationToken, ExecError, Executor, LogSink, Outcome, PushOutcome,
    RegistryAuth, SharedExecutor, StepSpec,
};
use std::sync::Arc;

use tracing::warn;

use crate::{mask::Masker, registries::Registries, store::Store};

/// An image id as the Docker CLI shows it (12 hex digits), to fit a status description.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// The engine as one run sees it.
#[derive(Clone, Debug)]
pub struct Pinned {
    pub inner: SharedExecutor,
    pub store: Store,
    pub repo: String,
    pub run_id: i64,
    /// A trusted run: pins are checked and recorded. Otherwise the engine as it is.
    pub trusted: bool,
    /// The credentials a missing image is pulled with.
    pub registries: Arc<Registries>,
}

impl Pinned {
    /// `Err` is the outcome that refuses the step.
    async fn check(&self, reference: &str, now: &str) -> Result<(), Outcome> {
        let pinned = self
            .store
            .pin_image_first_use(&self.repo, reference, now, self.run_id)
            .await
            .map_err(|e| Outcome::StartFailed {
                reason: format!(
                    "the pin of image {reference} could not be read: {}",
                    crate::error_chain(&e)
                ),
            })?;
        if pinned == now {
            return Ok(());
        }
        Err(Outcome::StartFailed {
            reason: format!(
                "image {reference} changed since it was first used (id {}, now {})",
                short_id(&pinned),
                short_id(now)
            ),
        })
    }

    /// Runs a step whose image is not present: the pull sends the credentials
    /// `[[registries]]` has for the image's registry. A refusal names the registry and the
    /// image, never the password (masked in the reason all the same), and a password from
    /// Vault is read again at the next pull.
    async fn pull_and_run(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        let auth = match self.registries.auth_for(&spec.image).await {
            Ok(auth) => auth,
            Err(reason) => {
                return Ok(Outcome::ImageUnavailable {
                    image: spec.image.clone(),
                    reason,
                });
            }
        };
        let Some(auth) = auth else {
            return self.inner.run_step(spec, sink, cancel).await;
        };
        let mut with_auth = spec.clone();
        let masker = Masker::new([auth.password.as_str()]);
        with_auth.pull_auth = Some(auth);
        match self.inner.run_step(&with_auth, sink, cancel).await? {
            Outcome::ImageUnavailable { image, reason } => {
                self.registries.forget(&spec.image);
                Ok(Outcome::ImageUnavailable {
                    image,
                    reason: masker.mask_str(&reason),
                })
            }
            other => Ok(other),
        }
    }

    async fn repin(&self, reference: &str, image_id: &str) {
        if let Err(e) = self
            .store
            .repin_image(&self.repo, reference, image_id, self.run_id)
            .await
        {
            warn!(image = reference, error = %crate::error_chain(&e), "failed to pin an image");
        }
    }
}

impl Executor for Pinned {
    async fn run_step(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        let Some(id) = self.inner.local_image_id(&spec.image).await? else {
            let outcome = self.pull_and_run(spec, sink, cancel).await?;
            if self.trusted
                && let Some(pulled) = self.inner.local_image_id(&spec.image).await?
            {
                self.repin(&spec.image, &pulled).await;
            }
            return Ok(outcome);
        };
        if !self.trusted {
            return self.inner.run_step(spec, sink, cancel).await;
        }
        if let Err(refused) = self.check(&spec.image, &id).await {
            return Ok(refused);
        }
        let mut by_id = spec.clone();
        by_id.image = id;
        self.inner.run_step(&by_id, sink, cancel).await
    }

    async fn reap(
        &self,
        keep: &(dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> Result<usize, ExecError> {
        self.inner.reap(keep).await
    }

    async fn build_image(
        &self,
        spec: &BuildSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<BuildOutcome, ExecError> {
        let outcome = self.inner.build_image(spec, sink, cancel).await?;
        if self.trusted
            && let BuildOutcome::Built { image_id } = &outcome
        {
            for tag in &spec.tags {
                self.repin(tag, image_id).await;
            }
        }
        Ok(outcome)
    }

    async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> Result<PushOutcome, ExecError> {
        self.inner.push_image(reference, auth, sink).await
    }

    async fn remove_image(&self, reference: &str) -> Result<bool, ExecError> {
        self.inner.remove_image(reference).await
    }

    async fn local_image_id(&self, reference: &str) -> Result<Option<String>, ExecError> {
        self.inner.local_image_id(reference).await
    }

    async fn ping(&self) -> Result<(), ExecError> {
        self.inner.ping().await
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> Result<Result<(), String>, ExecError> {
        self.inner.pull_image(image, auth, sink).await
    }

    async fn keep_image(&self, instance: &str, reference: &str) -> Result<Option<bool>, ExecError> {
        self.inner.keep_image(instance, reference).await
    }

    async fn release_images(&self, instance: &str, keep: &[String]) -> Result<usize, ExecError> {
        self.inner.release_images(instance, keep).await
    }

    async fn left_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<pipewright_containers::LeftContainer>, ExecError> {
        self.inner.left_containers(labels).await
    }

    async fn follow_existing(
        &self,
        id: &str,
        skip_lines: u64,
        timeout: Option<std::time::Duration>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        self.inner
            .follow_existing(id, skip_lines, timeout, sink, cancel)
            .await
    }

    async fn remove_container(&self, id: &str) -> Result<bool, ExecError> {
        self.inner.remove_container(id).await
    }
}

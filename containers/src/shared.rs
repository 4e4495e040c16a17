//! The executor as a trait object: [`SharedExecutor`] holds any [`Executor`] behind an
//! `Arc<dyn …>`, so that a program (the server) can be built around an engine chosen at
//! start — Docker, or none at all — without being generic over it.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use std::time::Duration;

use crate::{
    BuildOutcome, BuildSpec, CancellationToken, ExecError, Executor, LeftContainer, LogSink,
    Outcome, PushOutcome, RegistryAuth, StepSpec,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Executor`] with boxed futures, which a trait object can have; every executor is one.
trait DynExecutor: Send + Sync + 'static {
    fn run_step<'a>(
        &'a self,
        spec: &'a StepSpec,
        sink: &'a mut dyn LogSink,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome, ExecError>>;
    #[allow(clippy::type_complexity, reason = "the signature of Executor::reap")]
    fn reap<'a>(
        &'a self,
        keep: &'a (dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> BoxFuture<'a, Result<usize, ExecError>>;
    fn build_image<'a>(
        &'a self,
        spec: &'a BuildSpec,
        sink: &'a mut dyn LogSink,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<BuildOutcome, ExecError>>;
    fn push_image<'a>(
        &'a self,
        reference: &'a str,
        auth: Option<&'a RegistryAuth>,
        sink: &'a mut dyn LogSink,
    ) -> BoxFuture<'a, Result<PushOutcome, ExecError>>;
    fn remove_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<bool, ExecError>>;
    fn local_image_id<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ExecError>>;
    fn ping(&self) -> BoxFuture<'_, Result<(), ExecError>>;
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
        sink: &'a mut dyn LogSink,
    ) -> BoxFuture<'a, Result<Result<(), String>, ExecError>>;
    fn keep_image<'a>(
        &'a self,
        instance: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, ExecError>>;
    fn release_images<'a>(
        &'a self,
        instance: &'a str,
        keep: &'a [String],
    ) -> BoxFuture<'a, Result<usize, ExecError>>;
    fn left_containers<'a>(
        &'a self,
        labels: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<LeftContainer>, ExecError>>;
    fn follow_existing<'a>(
        &'a self,
        id: &'a str,
        skip_lines: u64,
        timeout: Option<Duration>,
        sink: &'a mut dyn LogSink,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome, ExecError>>;
    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, ExecError>>;
}

impl<E: Executor> DynExecutor for E {
    fn run_step<'a>(
        &'a self,
        spec: &'a StepSpec,
        sink: &'a mut dyn LogSink,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome, ExecError>> {
        Box::pin(Executor::run_step(self, spec, sink, cancel))
    }
    fn reap<'a>(
        &'a self,
        keep: &'a (dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> BoxFuture<'a, Result<usize, ExecError>> {
        Box::pin(Executor::reap(self, keep))
    }
    fn build_image<'a>(
        &'a self,
        spec: &'a BuildSpec,
        sink: &'a mut dyn LogSink,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<BuildOutcome, ExecError>> {
        Box::pin(Executor::build_image(self, spec, sink, cancel))
    }
    fn push_image<'a>(
        &'a self,
        reference: &'a str,
        auth: Option<&'a RegistryAuth>,
        sink: &'a mut dyn LogSink,
    ) -> BoxFuture<'a, Result<PushOutcome, ExecError>> {
        Box::pin(Executor::push_image(self, reference, auth, sink))
    }
    fn remove_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<bool, ExecError>> {
        Box::pin(Executor::remove_image(self, reference))
    }
    fn local_image_id<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ExecError>> {
        Box::pin(Executor::local_image_id(self, reference))
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(Executor::ping(self))
    }
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
        sink: &'a mut dyn LogSink,
    ) -> BoxFuture<'a, Result<Result<(), String>, ExecError>> {
        Box::pin(Executor::pull_image(self, image, auth, sink))
    }
    fn keep_image<'a>(
        &'a self,
        instance: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, ExecError>> {
        Box::pin(Executor::keep_image(self, instance, reference))
    }
    fn release_images<'a>(
        &'a self,
        instance: &'a str,
        keep: &'a [String],
    ) -> BoxFuture<'a, Result<usize, ExecError>> {
        Box::pin(Executor::release_images(self, instance, keep))
    }
    fn left_containers<'a>(
        &'a self,
        labels: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<LeftContainer>, ExecError>> {
        Box::pin(Executor::left_containers(self, labels))
    }
    fn follow_existing<'a>(
        &'a self,
        id: &'a str,
        skip_lines: u64,
        timeout: Option<Duration>,
        sink: &'a mut dyn LogSink,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome, ExecError>> {
        Box::pin(Executor::follow_existing(
            self, id, skip_lines, timeout, sink, cancel,
        ))
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, ExecError>> {
        Box::pin(Executor::remove_container(self, id))
    }
}

/// Any executor, shared: cloning is cheap, and every call goes to the one inside.
#[derive(Clone)]
pub struct SharedExecutor {
    inner: Arc<dyn DynExecutor>,
    name: &'static str,
}

impl SharedExecutor {
    /// Shares `executor`; `name` says which engine it is in `Debug` output (`docker`).
    pub fn new(name: &'static str, executor: impl Executor) -> SharedExecutor {
        SharedExecutor {
            inner: Arc::new(executor),
            name,
        }
    }
}

impl fmt::Debug for SharedExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedExecutor").field(&self.name).finish()
    }
}

impl Executor for SharedExecutor {
    async fn run_step(
        &self,
        spec: &StepSpec,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        self.inner.run_step(spec, sink, cancel).await
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
        self.inner.build_image(spec, sink, cancel).await
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
    ) -> Result<Vec<LeftContainer>, ExecError> {
        self.inner.left_containers(labels).await
    }

    async fn follow_existing(
        &self,
        id: &str,
        skip_lines: u64,
        timeout: Option<Duration>,
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

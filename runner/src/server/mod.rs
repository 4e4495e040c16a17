//! `pipewright serve`: the webhook receiver, the API, and the background tasks that turn
//! stored deliveries into runs, run them, and report them to Gitea.
//!
//! `main` builds an [`App`] from the configuration and calls [`serve`]; tests build the same
//! `App` around a `127.0.0.1:0` listener.

mod http;
mod intake;
pub mod metrics;
mod present;
mod report;
mod tasks;
mod work;

use std::sync::Arc;

use anyhow::Context;
use intake::{Inbox, Intake, Queue};
use pipewright_containers::{CancellationToken, DockerConfig, DockerExecutor, SharedExecutor};
use report::Reporter;
use tasks::{TaskFn, supervise};
use tokio::{net::TcpListener, sync::Notify, task::JoinSet};
use tracing::{info, warn};

use crate::{
    config::Config,
    git::Git,
    gitea::{Gitea, http_client},
    identity::Issuer,
    logs::LogStore,
    registries::Registries,
    run::{BoxFuture, StepDefaults},
    store::{Enqueued, NewDelivery, Received, RunSpec, Store, StoreError},
    vault::Vault,
};

pub use crate::error_chain;
pub use http::webhook::DeliveryWriter;
pub use tasks::Tasks;
pub use work::registry::Scheduler;
pub use work::retention::Removed;

/// Everything the server's parts share.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    /// The container engine (Docker, unless the embedder chose another).
    pub executor: SharedExecutor,
    pub gitea: Gitea,
    pub git: Git,
    pub logs: LogStore,
    pub scheduler: Scheduler,
    pub deliveries: DeliveryWriter,
    /// Wakes the ingest loop: a delivery was stored.
    pub ingest_wake: Notify,
    /// Wakes the reporter: a status was queued.
    pub reporter_wake: Notify,
    pub defaults: StepDefaults,
    /// This instance's name on the containers it creates (kept in `data_dir/instance`).
    pub instance: String,
    /// Signs run identity tokens; publishes the JWKS.
    pub issuer: Arc<Issuer>,
    /// Where runs log in, when configured.
    pub vault: Option<Vault>,
    /// `[[registries]]`: the credentials step and kept images are pulled with.
    pub registries: Arc<Registries>,
    /// The background tasks' states, for `/readyz`.
    pub tasks: Tasks,
    /// The web UI's browser sessions, kept in memory only.
    sessions: http::session::Sessions,
    /// What `/metrics` serves.
    pub metrics: Arc<metrics::Metrics>,
}

impl App {
    /// Connects to the database, Docker and Gitea as the configuration says.
    pub async fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let executor = DockerExecutor::connect(DockerConfig {
            host: config.docker.host.clone(),
            stop_grace: config.docker.stop_grace,
        })
        .await
        .context("failed to reach the Docker engine")?;
        App::with_executor(config, SharedExecutor::new("docker", executor)).await
    }

    /// Connects to the database and Gitea as the configuration says, and runs steps with
    /// `executor` instead of the configured Docker engine.
    pub async fn with_executor(
        config: Config,
        executor: SharedExecutor,
    ) -> anyhow::Result<Arc<App>> {
        let data_dir = config.server.data_dir.clone();
        private_data_dir(&data_dir)?;
        let store = Store::open(&config.database.url)
            .await
            .with_context(|| format!("failed to open the database {}", config.database.url))?;
        let client = http_client(config.gitea.ca_file.as_deref())?;
        let gitea_url = config.gitea.url.clone().unwrap_or_default();
        let gitea = Gitea::new(&gitea_url, config.gitea.token.clone(), client.clone());
        let metrics = Arc::new(metrics::Metrics::new());
        let git = Git::new(
            data_dir.join("git"),
            &gitea_url,
            config.gitea.git_timeout,
            config.gitea.token.clone(),
            config.gitea.ca_file.clone(),
        )
        .observe_fetches(metrics.fetch_observer());
        let git_version = git.version().await.map_err(|e| {
            anyhow::anyhow!(
                "git is needed on PATH for mirrors and checkouts, and could not be run: {}",
                crate::error_chain(&e)
            )
        })?;
        tracing::debug!(git = %git_version, "git found");
        let logs = LogStore::for_store(data_dir.join("logs"), &store)
            .with_limit(config.docker.max_log_bytes);
        let defaults = StepDefaults {
            memory_bytes: config.docker.default_memory,
            pids: config.docker.default_pids,
            max_memory: config.docker.max_memory,
            max_pids: config.docker.max_pids,
            max_timeout: config.docker.max_timeout,
        };
        let deliveries = DeliveryWriter::new(store.clone());
        let instance = instance_id(&data_dir)?;
        let scheduler = Scheduler::new(&instance);
        let issuer = Issuer::load(
            &data_dir.join("keys"),
            config.identity.algorithm,
            &config.server.public_url,
            &config.identity.audience,
            config.identity.token_ttl,
        )?;
        // Hosts sharing the database serve each other's public keys (see `Issuer::publish`).
        issuer
            .publish(&store, &instance)
            .await
            .context("failed to publish the signing keys' public parts in the database")?;
        let issuer = Arc::new(issuer);
        let vault = config
            .vault
            .address
            .as_deref()
            .map(|address| Vault::new(address, client.clone()));
        let registries = Arc::new(Registries::new(&config, vault.clone(), issuer.clone()));
        Ok(Arc::new(App {
            config,
            store,
            executor,
            gitea,
            git,
            logs,
            scheduler,
            deliveries,
            ingest_wake: Notify::new(),
            reporter_wake: Notify::new(),
            defaults,
            instance,
            issuer,
            vault,
            registries,
            tasks: Tasks::default(),
            sessions: http::session::Sessions::default(),
            metrics,
        }))
    }

    /// Enqueues runs (for a delivery, when given), stops the running runs their
    /// `cancel_in_progress` groups ask to stop, and wakes the worker and the reporter.
    pub async fn enqueue(
        &self,
        delivery: Option<i64>,
        runs: &[RunSpec],
    ) -> Result<Enqueued, StoreError> {
        self.queue().enqueue(delivery, runs).await
    }

    fn queue(&self) -> Queue<'_> {
        Queue {
            store: &self.store,
            scheduler: &self.scheduler,
            reporter_wake: &self.reporter_wake,
        }
    }

    /// The parts of the intake layer.
    fn intake(&self) -> Intake<'_> {
        Intake {
            config: &self.config,
            store: &self.store,
            git: &self.git,
            gitea: &self.gitea,
            deliveries: &self.deliveries,
            queue: self.queue(),
            executor: &self.executor,
            instance: &self.instance,
        }
    }

    /// What the Gitea Actions runner uses: the intake's parts, the logs it reports.
    fn gitea_actions(&self) -> intake::gitea_actions::Parts<'_> {
        intake::gitea_actions::Parts {
            intake: self.intake(),
            logs: &self.logs,
            data_dir: &self.config.server.data_dir,
            public_url: self.public_url(),
        }
    }

    /// The parts of the work layer.
    fn work(&self) -> work::Work<'_> {
        work::Work {
            config: &self.config,
            store: &self.store,
            git: &self.git,
            logs: &self.logs,
            scheduler: &self.scheduler,
            executor: &self.executor,
            issuer: &self.issuer,
            vault: &self.vault,
            registries: &self.registries,
            defaults: &self.defaults,
            instance: &self.instance,
            reporter_wake: &self.reporter_wake,
            public_url: self.public_url(),
            metrics: &self.metrics,
        }
    }

    /// The parts of the report layer.
    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            store: &self.store,
            gitea: &self.gitea,
            public_url: self.public_url(),
            wake: &self.reporter_wake,
        }
    }

    /// `<public_url>/runs/<id>`: status links.
    pub fn public_url(&self) -> &str {
        self.config.server.public_url.trim_end_matches('/')
    }
}

impl Inbox for DeliveryWriter {
    fn store(&self, delivery: NewDelivery) -> BoxFuture<'_, Result<Received, String>> {
        Box::pin(DeliveryWriter::store(self, delivery))
    }
}

/// One catch-up pass over every known repository, as the background task makes.
pub async fn catch_up(app: &App) -> anyhow::Result<()> {
    intake::catchup::once(&app.intake()).await
}

/// Queues the scheduled runs due in the minute of `epoch_secs`; returns how many.
pub async fn schedule_tick(app: &App, epoch_secs: i64) -> Result<usize, String> {
    intake::schedule::tick(&app.intake(), epoch_secs).await
}

/// One retention pass (`[retention]`), as the background task makes at start and every
/// `interval`: old logs and runs deleted, mirrors compacted.
pub async fn retention_pass(app: &App) -> Result<work::retention::Removed, StoreError> {
    work::retention::once(&app.work(), &CancellationToken::new()).await
}

/// Keeps the SQLite log short, off the webhook path (see `Store::checkpoint`).
async fn checkpoints(app: Arc<App>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::store::CHECKPOINT_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = app.store.checkpoint().await {
            warn!(error = ?e, "checkpoint failed");
        }
    }
}

/// Makes everything Pipewright creates from now on private to its user (umask 077: dirs
/// 0700, files 0600, git's and the database's included), creates `data_dir` and makes it
/// 0700 even when an older version left it open.
fn private_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to make {} private (mode 0700)", data_dir.display()))
}

/// Removes the workspaces a crash left behind (a run's workspace is otherwise removed when
/// the run ends; no run is running before the worker starts), and their directory, which
/// is made again, private, by the next run; the workspaces of the runs in `keep` (adopted
/// to be re-attached: their containers mount them) stay.
fn remove_leftover_workspaces(data_dir: &std::path::Path, keep: &[i64]) {
    let dir = data_dir.join("workspaces");
    if !keep.is_empty() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let kept: Vec<String> = keep.iter().map(|id| format!("run-{id}")).collect();
        for entry in entries.flatten() {
            if kept.iter().any(|k| entry.file_name() == k.as_str()) {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                warn!(path = %entry.path().display(), error = %e, "failed to remove a leftover workspace");
            }
        }
        return;
    }
    let leftovers = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.count(),
        Err(_) => return,
    };
    match std::fs::remove_dir_all(&dir) {
        Ok(()) if leftovers > 0 => {
            info!(count = leftovers, "removed the workspaces left by a crash")
        }
        Ok(()) => {}
        Err(e) => warn!(path = %dir.display(), error = %e, "failed to remove leftover workspaces"),
    }
}

/// Refuses a `[server].secrets_dir` that is not in memory (tmpfs or ramfs).
fn check_secrets_dir(app: &App) -> anyhow::Result<()> {
    let dir = &app.config.server.secrets_dir;
    crate::secrets_dir::prepare(dir).map_err(|why| anyhow::anyhow!("refusing to start: {why}"))
}

/// Removes the run directories a crash of this instance left in `[server].secrets_dir`,
/// except those of the runs in `keep` (adopted to be re-attached: their containers mount
/// them).
fn prepare_secrets_dir(app: &App, keep: &[i64]) -> anyhow::Result<()> {
    let dir = &app.config.server.secrets_dir;
    let kept: Vec<String> = keep.iter().map(|id| format!("run-{id}")).collect();
    match crate::secrets_dir::remove_leftovers_except(dir, &app.instance, &kept) {
        Ok(0) => {}
        Ok(count) => info!(count, "removed the secret files left by a crash"),
        Err(e) => {
            anyhow::bail!(
                "failed to remove the secret files left in {}: {e}",
                dir.display()
            )
        }
    }
    Ok(())
}

/// The instance's stable name: generated on first start, kept across restarts.
fn instance_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let mut bytes = [0u8; 8];
    getrandom_bytes(&mut bytes);
    let id = format!("pw-{}", hex::encode(bytes));
    std::fs::write(&path, &id).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(id)
}

fn getrandom_bytes(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(buf);
    }
}

/// The supervised background tasks, by name (as `/readyz` names them).
const TASKS: [(&str, TaskFn); 9] = [
    ("webhook writer", |app, stop| {
        Box::pin(http::webhook::run_writer(app, stop))
    }),
    ("ingest", |app, stop| {
        Box::pin(intake::ingest::run(app, stop))
    }),
    ("reporter", |app, stop| {
        Box::pin(async move { report::sender::run(app.reporter(), stop).await })
    }),
    ("catch-up", |app, stop| {
        Box::pin(async move { intake::catchup::run(app.intake(), stop).await })
    }),
    ("checkpoints", |app, stop| Box::pin(checkpoints(app, stop))),
    ("schedules", |app, stop| {
        Box::pin(async move { intake::schedule::run(app.intake(), stop).await })
    }),
    ("kept images", |app, stop| {
        Box::pin(work::keep::run(app, stop))
    }),
    ("retention", |app, stop| {
        Box::pin(work::retention::run(app, stop))
    }),
    ("gitea actions", |app, stop| {
        Box::pin(async move { intake::gitea_actions::run(app.gitea_actions(), stop).await })
    }),
];

/// `pipewright agent`: claims and runs jobs from the shared database until `shutdown`
/// fires, then drains as `serve` does (no new claims; the runs under way finish). Takes no
/// webhooks and serves no API; `health`, when given, answers `/healthz` and `/readyz`.
/// Its start is `serve`'s: runs this instance left running are settled and leftover
/// containers, workspaces and secret files removed, before anything is claimed.
pub async fn agent(
    health: Option<TcpListener>,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if app.store.backend() != crate::store::Backend::Postgres {
        anyhow::bail!(
            "pipewright agent needs [database].url to be the server's PostgreSQL database (postgres://…): an agent shares the server's queue"
        );
    }
    if app.config.agent.capacity == 0 {
        anyhow::bail!("pipewright agent needs [agent].capacity of 1 or more: it only runs jobs");
    }
    private_data_dir(&app.config.server.data_dir)?;
    work::worker::settle_interrupted(&app.work()).await?;
    let adopted = app.scheduler.running_ids();
    prepare_secrets_dir(&app, &adopted)?;
    remove_leftover_workspaces(&app.config.server.data_dir, &adopted);
    let health = health.map(|listener| {
        let router = http::router::health_router(app.clone());
        let limits = app.config.server.http.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { http::conn::serve_http(listener, router, &limits, stop).await })
    });
    info!(
        agent = %app.config.agent.name(),
        labels = ?app.config.agent.labels,
        capacity = app.config.agent.capacity,
        "pipewright agent running"
    );
    work::worker::run(app.clone(), shutdown).await;
    if let Some(health) = health {
        health.abort();
    }
    app.store.close().await;
    Ok(())
}

/// Serves until `shutdown` fires: then stops taking webhooks and new runs, lets running runs
/// finish (a second signal in `main` exits at once; the next start re-attaches to such
/// runs), sends what the outbox holds (within a few seconds), and returns.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    private_data_dir(&app.config.server.data_dir)?;
    check_secrets_dir(&app)?;
    work::worker::settle_interrupted(&app.work()).await?;
    let adopted = app.scheduler.running_ids();
    prepare_secrets_dir(&app, &adopted)?;
    remove_leftover_workspaces(&app.config.server.data_dir, &adopted);
    let mut tasks = JoinSet::new();
    let stop_work = CancellationToken::new();
    for (name, task) in TASKS {
        tasks.spawn(supervise(name, app.clone(), stop_work.clone(), task));
    }
    let workers = tokio::spawn(work::worker::run(app.clone(), shutdown.clone()));

    let router = http::router::router(app.clone());
    info!(address = %listener.local_addr()?, "pipewright serving");
    http::conn::serve_http(listener, router, &app.config.server.http, shutdown.clone()).await;
    info!("no longer accepting requests; waiting for running runs to finish");
    if let Err(e) = workers.await {
        warn!(error = %e, "the worker stopped abnormally");
    }
    // The runs have ended: the reporter sends their last statuses and comments (within
    // `report::sender::DRAIN_WITHIN`) while the other tasks stop.
    stop_work.cancel();
    while tasks.join_next().await.is_some() {}
    app.store.close().await;
    Ok(())
}

//! What an agent tells the others: its heartbeat in the agents table (name, labels,
//! capacity, running or draining, whether its engine answers), and, on PostgreSQL, the
//! `LISTEN` on the runs channel that wakes its claim loop (and the server's reporter) when
//! runs are queued, claimed or ended by any process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use pipewright_containers::{CancellationToken, Executor};
use tracing::{debug, info, warn};

use crate::server::App;
use crate::store::{
    Backend, RUNS_CHANNEL,
    agents::{AgentBeat, AgentState, HEARTBEAT},
};

/// A ping that takes longer than this counts as an engine that does not answer.
const PING_WITHIN: Duration = Duration::from_secs(5);

/// Whether this process's container engine answered its last ping.
pub(super) async fn engine_answers(app: &App) -> bool {
    matches!(
        tokio::time::timeout(PING_WITHIN, app.executor.ping()).await,
        Ok(Ok(()))
    )
}

/// Pings the engine and writes the agent's row every [`HEARTBEAT`] until `stop`, keeping
/// `docker_up` current for the claim loop (woken when the engine comes back); the row says
/// `draining` once `draining` is cancelled. The row is removed when this returns.
pub(super) async fn heartbeat(
    app: Arc<App>,
    name: String,
    docker_up: Arc<AtomicBool>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let up = engine_answers(&app).await;
        let was = docker_up.swap(up, Ordering::Relaxed);
        if up && !was {
            app.scheduler.wake();
        }
        if up != was {
            match up {
                true => info!("the Docker engine answers: claiming runs"),
                false => warn!("the Docker engine does not answer: claiming no runs until it does"),
            }
        }
        let beat = AgentBeat {
            name: &name,
            instance: &app.instance,
            labels: &app.config.agent.labels,
            capacity: app.config.agent.capacity,
            state: match draining.is_cancelled() {
                true => AgentState::Draining,
                false => AgentState::Running,
            },
            docker_up: up,
        };
        if let Err(e) = app.store.agent_heartbeat(&beat).await {
            warn!(error = ?e, "failed to write the agent's heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = draining.cancelled(), if !draining.is_cancelled() => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Err(e) = app.store.agent_stopped(&name, &app.instance).await {
        warn!(error = ?e, "failed to remove the agent's row");
    }
}

/// On PostgreSQL, wakes the claim loop and the reporter on each notification of
/// [`RUNS_CHANNEL`] until `stop`; reconnects after a lost connection (the claim loop's
/// poll covers what is missed meanwhile). Returns at once on SQLite.
pub(super) async fn listen(app: Arc<App>, stop: CancellationToken) {
    if app.store.backend() != Backend::Postgres {
        return;
    }
    let mut backoff = Duration::from_secs(1);
    while !stop.is_cancelled() {
        let listener = async {
            let mut listener =
                sqlx::postgres::PgListener::connect(&app.config.database.url).await?;
            listener.listen(RUNS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "failed to listen for queued runs; polling meanwhile");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        debug!(channel = RUNS_CHANNEL, "listening for queued runs");
        backoff = Duration::from_secs(1);
        loop {
            tokio::select! {
                note = listener.recv() => match note {
                    Ok(_) => {
                        app.scheduler.wake();
                        app.reporter_wake.notify_one();
                    }
                    Err(e) => {
                        warn!(error = %e, "lost the listening connection; reconnecting");
                        break;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

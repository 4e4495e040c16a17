//! Sends queued commit statuses to Gitea from the outbox, newest per commit and context,
//! retrying with backoff. Reporting never fails or delays a run: runs only write the outbox.

use std::{sync::Arc, time::Duration};

use pipewright_containers::CancellationToken;
use tracing::{debug, warn};

use super::{App, ingest::error_chain};
use crate::store::now_ms;

/// A status Gitea keeps refusing (not a transient fault) is dropped after this many tries.
const MAX_REFUSALS: i64 = 5;

pub async fn run(app: Arc<App>, stop: CancellationToken) {
    loop {
        send_due(&app).await;
        let wait = match app.store.next_status_due().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(10, 60_000) as u64),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = app.reporter_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {
                send_due(&app).await;
                return;
            }
        }
    }
}

async fn send_due(app: &App) {
    let due = match app.store.due_statuses(50).await {
        Ok(due) => due,
        Err(e) => {
            warn!(error = ?e, "failed to read the status outbox");
            return;
        }
    };
    for status in due {
        let result = app
            .gitea
            .create_status(
                &status.repo,
                &status.sha,
                &status.state,
                &status.context,
                &status.description,
                &status.target_url,
            )
            .await;
        let recorded = match result {
            Ok(()) => {
                debug!(repo = %status.repo, sha = %status.sha, context = %status.context, state = %status.state, "status sent");
                app.store.status_sent(status.id).await
            }
            Err(e) if !e.is_transient() && status.attempts + 1 >= MAX_REFUSALS => {
                warn!(repo = %status.repo, sha = %status.sha, error = %error_chain(&e), "Gitea refuses the status: giving up on it");
                app.store.status_sent(status.id).await
            }
            Err(e) => {
                let backoff = 1000i64 << status.attempts.min(6);
                warn!(repo = %status.repo, sha = %status.sha, error = %error_chain(&e), retry_in_ms = backoff, "failed to send a status");
                app.store.status_failed(status.id, backoff).await
            }
        };
        if let Err(e) = recorded {
            warn!(error = ?e, "failed to update the status outbox");
        }
    }
}

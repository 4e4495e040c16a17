//! Sends queued commit statuses to Gitea from the outbox, newest per commit and context,
//! retrying with backoff. Reporting never fails or delays a run: runs only write the outbox.
//! How a status looks is decided here, not in the store: its context
//! (`pipewright/<pipeline>`), its link (`<public_url>/runs/<id>`) and its description,
//! clipped to what Gitea shows.

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
        let context = context(&status.pipeline);
        let result = app
            .gitea
            .create_status(
                &status.repo,
                &status.sha,
                status.state.as_str(),
                &context,
                &clip(&status.description),
                &run_url(app, status.run_id),
            )
            .await;
        let recorded = match result {
            Ok(()) => {
                debug!(repo = %status.repo, sha = %status.sha, context = %context, state = status.state.as_str(), "status sent");
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

/// The commit status context of a pipeline's runs.
pub fn context(pipeline: &str) -> String {
    format!("pipewright/{pipeline}")
}

/// A run's page: where a status links to.
pub fn run_url(app: &App, run_id: i64) -> String {
    format!("{}/runs/{run_id}", app.public_url())
}

/// Status descriptions stay under Gitea's display width and DESIGN's 140 characters (run
/// descriptions are shown clipped the same way in the API and UI). Texts are masked before
/// they are stored, so a clip never cuts a secret that masking would then miss.
pub fn clip(text: &str) -> String {
    if text.chars().count() <= 139 {
        return text.to_string();
    }
    let mut out: String = text.chars().take(138).collect();
    out.push('…');
    out
}

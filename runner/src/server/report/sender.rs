//! Sends what the outbox holds to Gitea: commit statuses (newest per commit and context)
//! and pull-request comments (newest per pull request and marker), retrying with backoff.
//! Reporting never fails or delays a run: runs only write the outbox. How a status looks is
//! decided here, not in the store: its context (`pipewright/<pipeline>`), its link
//! (`<public_url>/runs/<id>`) and its description, clipped to what Gitea shows.
//!
//! At shutdown (`stop`, after the runs under way have ended) the reporter sends what is due
//! then and returns, within [`DRAIN_WITHIN`]: a Gitea that is down cannot hold the process,
//! and what was not sent stays in the outbox for the next start.

use std::time::Duration;

use pipewright_containers::CancellationToken;
use tracing::{debug, warn};

use crate::server::{
    present::{clip, run_url},
    report::Reporter,
};
use crate::{error_chain, gitea::GiteaError, store::now_ms};

/// An entry Gitea keeps refusing (not a transient fault) is dropped after this many tries.
const MAX_REFUSALS: i64 = 5;
/// Entries read from the outbox at a time.
const BATCH: usize = 50;
/// How long shutdown waits for the last statuses and comments.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(5);

pub async fn run(reporter: Reporter<'_>, stop: CancellationToken) {
    let drain_deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(DRAIN_WITHIN).await;
    };
    tokio::select! {
        () = report(&reporter, &stop) => {}
        () = drain_deadline => {
            warn!(within = ?DRAIN_WITHIN, "stopped before Gitea was told everything; the rest is sent at the next start");
        }
    }
}

async fn report(reporter: &Reporter<'_>, stop: &CancellationToken) {
    loop {
        // Once stopping, a whole round that starts after the stop is what drains: a round
        // under way then may have read the outbox before the last runs ended.
        let stopping = stop.is_cancelled();
        let more = send_due(reporter).await;
        if stopping && !more {
            return;
        }
        if stop.is_cancelled() {
            continue;
        }
        let wait = match next_due(reporter).await {
            Some(at) => Duration::from_millis((at - now_ms()).clamp(10, 60_000) as u64),
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = reporter.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// The earliest time an unsent status or comment is due.
async fn next_due(reporter: &Reporter<'_>) -> Option<i64> {
    let statuses = reporter.store.next_status_due().await.ok().flatten();
    let comments = reporter.store.next_comment_due().await.ok().flatten();
    statuses.into_iter().chain(comments).min()
}

/// What to do with an outbox entry after a try.
enum Next {
    Sent,
    /// Gitea refused it too often: dropped (recorded as sent).
    GiveUp(GiteaError),
    Retry {
        in_ms: i64,
        error: GiteaError,
    },
}

fn next_after(result: Result<(), GiteaError>, attempts: i64) -> Next {
    match result {
        Ok(()) => Next::Sent,
        Err(e) if !e.is_transient() && attempts + 1 >= MAX_REFUSALS => Next::GiveUp(e),
        Err(error) => Next::Retry {
            in_ms: 1000i64 << attempts.min(6),
            error,
        },
    }
}

/// Sends one batch of due statuses and comments; true when a batch was full (more may be
/// due).
async fn send_due(reporter: &Reporter<'_>) -> bool {
    let statuses = send_statuses(reporter).await;
    let comments = send_comments(reporter).await;
    statuses || comments
}

async fn send_statuses(reporter: &Reporter<'_>) -> bool {
    let due = match reporter.store.due_statuses(BATCH as i64).await {
        Ok(due) => due,
        Err(e) => {
            warn!(error = ?e, "failed to read the status outbox");
            return false;
        }
    };
    let full = due.len() == BATCH;
    for status in due {
        let context = context(&status.pipeline);
        let result = reporter
            .gitea
            .create_status(
                &status.repo,
                &status.sha,
                status.state.as_str(),
                &context,
                &clip(&status.description),
                &run_url(reporter.public_url, status.run_id),
            )
            .await;
        let recorded = match next_after(result, status.attempts) {
            Next::Sent => {
                debug!(repo = %status.repo, sha = %status.sha, context = %context, state = status.state.as_str(), "status sent");
                reporter.store.status_sent(status.id).await
            }
            Next::GiveUp(e) => {
                warn!(repo = %status.repo, sha = %status.sha, error = %error_chain(&e), "Gitea refuses the status: giving up on it");
                reporter.store.status_sent(status.id).await
            }
            Next::Retry { in_ms, error: e } => {
                warn!(repo = %status.repo, sha = %status.sha, error = %error_chain(&e), retry_in_ms = in_ms, "failed to send a status");
                reporter.store.status_failed(status.id, in_ms).await
            }
        };
        if let Err(e) = recorded {
            warn!(error = ?e, "failed to update the status outbox");
        }
    }
    full
}

async fn send_comments(reporter: &Reporter<'_>) -> bool {
    let due = match reporter.store.due_comments(BATCH as i64).await {
        Ok(due) => due,
        Err(e) => {
            warn!(error = ?e, "failed to read the comment outbox");
            return false;
        }
    };
    let full = due.len() == BATCH;
    for comment in due {
        let (repo, number) = (&comment.repo, comment.pr);
        let result = reporter
            .gitea
            .upsert_comment(repo, number, &comment.marker, &comment.body)
            .await;
        let recorded = match next_after(result, comment.attempts) {
            Next::Sent => {
                debug!(repo = %repo, number, "comment sent");
                reporter.store.comment_sent(&comment).await
            }
            Next::GiveUp(e) => {
                warn!(repo = %repo, number, error = %error_chain(&e), "Gitea refuses the comment: giving up on it");
                reporter.store.comment_sent(&comment).await
            }
            Next::Retry { in_ms, error: e } => {
                warn!(repo = %repo, number, error = %error_chain(&e), retry_in_ms = in_ms, "failed to send a comment");
                reporter.store.comment_failed(&comment, in_ms).await
            }
        };
        if let Err(e) = recorded {
            warn!(error = ?e, "failed to update the comment outbox");
        }
    }
    full
}

/// The commit status context of a pipeline's runs.
pub fn context(pipeline: &str) -> String {
    format!("pipewright/{pipeline}")
}

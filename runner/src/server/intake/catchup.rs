//! Catch-up: Gitea never resends a delivery missed while Pipewright was down, so at start
//! and every `[server].catch_up_interval` Pipewright compares the branch heads and open
//! pull-request heads of the repositories it knows with the runs it has, and runs what is
//! missing (only for repositories `[[repos]]` allows). It also removes containers that
//! belong to no live run.

use std::collections::HashSet;

use pipewright_containers::{CancellationToken, Executor};
use pipewright_pipelines::GitRef;
use tracing::{info, warn};

use crate::server::{intake::Intake, work::registry::live_runs_filter};
use crate::{
    checked, error_chain,
    events::{Event, RepoInfo},
    git::is_zero,
    store::{NewDelivery, Received},
};

pub async fn run(intake: Intake<'_>, stop: CancellationToken) {
    // Commits already looked at (whether or not they selected a pipeline).
    let mut seen: HashSet<(String, String)> = HashSet::new();
    // Deliveries received before a restart come first: they know the event's actor and
    // `before`, which catch-up has to guess. (Running an event twice is impossible either
    // way: both add runs under the same dedupe key.)
    for _ in 0..100 {
        match intake.store.pending_deliveries(1).await {
            Ok(pending) if !pending.is_empty() => {}
            _ => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            _ = stop.cancelled() => return,
        }
    }
    loop {
        if let Err(e) = reconcile(&intake, &mut seen).await {
            warn!(error = %e, "catch-up failed");
        }
        match intake
            .executor
            .reap(&live_runs_filter(intake.queue.scheduler, intake.instance))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "removed containers of no live run"),
            Err(e) => warn!(error = %error_chain(&e), "failed to look for leftover containers"),
        }
        tokio::select! {
            _ = tokio::time::sleep(intake.config.server.catch_up_interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One catch-up pass over every known repository, as the background task makes.
pub async fn once(intake: &Intake<'_>) -> anyhow::Result<()> {
    reconcile(intake, &mut HashSet::new()).await
}

async fn reconcile(
    intake: &Intake<'_>,
    seen: &mut HashSet<(String, String)>,
) -> anyhow::Result<()> {
    if intake.config.gitea.url.is_none() {
        return Ok(());
    }
    for known in intake.store.known_repos().await? {
        // A repository remembered from before `[[repos]]` left it out is not run.
        if !intake.config.repo_allowed(&known.repo) {
            continue;
        }
        let repo = RepoInfo::from_known(&known);
        let mut missing: Vec<Event> = Vec::new();
        let branches = match intake.gitea.branches(&repo.full_name).await {
            Ok(b) => b,
            Err(e) => {
                warn!(repo = %repo.full_name, error = %error_chain(&e), "catch-up: failed to list branches");
                continue;
            }
        };
        for branch in branches {
            let sha = branch.commit.id;
            if !checked::is_commit_id(&sha)
                || !checked::is_ref_name(&branch.name)
                || is_zero(&sha)
                || seen.contains(&(repo.full_name.clone(), sha.clone()))
                || intake.store.has_runs_for(&repo.full_name, &sha).await?
            {
                continue;
            }
            let repo = RepoInfo {
                sha256: sha.len() == 64,
                ..repo.clone()
            };
            let before = last_run_ancestor(intake, &repo, &sha).await;
            missing.push(Event::Push {
                repo,
                git_ref: GitRef::Branch(branch.name),
                before,
                after: sha,
                actor: String::new(),
            });
        }
        match intake.gitea.open_pulls(&repo.full_name).await {
            Ok(pulls) => {
                for pr in pulls {
                    let sha = pr.head.sha.clone();
                    let base_branch = pr.base.git_ref.trim_start_matches("refs/heads/");
                    if !checked::is_commit_id(&sha)
                        || !checked::is_ref_name(base_branch)
                        || pr.number <= 0
                        || seen.contains(&(repo.full_name.clone(), sha.clone()))
                        || intake.store.has_runs_for(&repo.full_name, &sha).await?
                    {
                        continue;
                    }
                    missing.push(Event::PullRequest {
                        repo: RepoInfo {
                            sha256: sha.len() == 64,
                            ..repo.clone()
                        },
                        number: pr.number,
                        base_branch: base_branch.to_string(),
                        head_sha: sha,
                        head_repo_id: pr.head.repo_id,
                        author: pr.user.map(|u| u.login).unwrap_or_default(),
                        action: "synchronized".into(),
                        actor: String::new(),
                    });
                }
            }
            Err(e) => {
                warn!(repo = %repo.full_name, error = %error_chain(&e), "catch-up: failed to list pull requests")
            }
        }
        for event in missing {
            let key = (repo.full_name.clone(), event.sha().to_string());
            // Queued as a delivery of its own, processed like a webhook's: the same checks,
            // dedupe and crash counting (a commit whose processing keeps crashing the process
            // is given up once, not found again by every catch-up).
            let (event_type, payload) = event.to_payload();
            let delivery_id = match &event {
                Event::Push { git_ref, after, .. } => {
                    format!("catch-up:{}:{}:{after}", repo.full_name, git_ref.full())
                }
                Event::PullRequest {
                    number, head_sha, ..
                } => format!("catch-up:{}:pull/{number}:{head_sha}", repo.full_name),
            };
            let delivery = NewDelivery {
                delivery_id,
                event_type: event_type.to_string(),
                repo: repo.full_name.clone(),
                payload: payload.to_string().into_bytes(),
            };
            match intake.deliveries.store(delivery).await {
                Ok(Received::New(id)) => {
                    info!(repo = %repo.full_name, sha = %event.sha(), delivery = id, "catch-up: queued a missed event");
                    seen.insert(key);
                }
                Ok(Received::Duplicate) => {
                    seen.insert(key);
                }
                Err(e) => {
                    warn!(repo = %repo.full_name, sha = %event.sha(), error = %e, "catch-up failed for a commit")
                }
            }
        }
    }
    Ok(())
}

/// The push a missed branch head stands for starts at the newest ancestor Pipewright ran
/// for (so a missed push that changed only docs does not run every pipeline); without
/// one, at its parent; on a lone root commit, nowhere (every file counts).
async fn last_run_ancestor(intake: &Intake<'_>, repo: &RepoInfo, sha: &str) -> String {
    let zero = "0".repeat(sha.len());
    let Ok(mirror) = intake.git.fetch(&repo.full_name, repo.sha256).await else {
        return zero;
    };
    let Ok(ancestors) = intake.git.ancestors(&mirror, sha, 100).await else {
        return zero;
    };
    drop(mirror);
    for candidate in ancestors.iter().skip(1) {
        if intake
            .store
            .has_runs_for(&repo.full_name, candidate)
            .await
            .unwrap_or(false)
        {
            return candidate.clone();
        }
    }
    ancestors.get(1).cloned().unwrap_or(zero)
}

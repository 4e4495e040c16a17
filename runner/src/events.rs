//! What a Gitea delivery means: classified at once when it arrives (act on it, answer a
//! ping, ignore it), and turned into a domain [`Event`] when it is processed.

use pipewright_pipelines::GitRef;

use crate::{
    git::is_zero,
    gitea::payload::{self, Repository},
};

/// A repository as runs need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInfo {
    pub full_name: String,
    pub id: i64,
    pub owner_id: i64,
    pub clone_url: String,
    pub default_branch: String,
    pub sha256: bool,
}

impl RepoInfo {
    /// The repository as the store remembers it.
    pub fn known(&self) -> crate::store::KnownRepo {
        crate::store::KnownRepo {
            repo: self.full_name.clone(),
            repo_id: self.id,
            owner_id: self.owner_id,
            clone_url: self.clone_url.clone(),
            default_branch: self.default_branch.clone(),
        }
    }

    pub fn from_payload(r: &Repository, sha_hint: &str) -> RepoInfo {
        RepoInfo {
            full_name: r.full_name.clone(),
            id: r.id,
            owner_id: r.owner.id,
            clone_url: r.clone_url.clone(),
            default_branch: if r.default_branch.is_empty() {
                "main".into()
            } else {
                r.default_branch.clone()
            },
            sha256: r.object_format_name == "sha256" || sha_hint.len() == 64,
        }
    }
}

/// An event Pipewright acts on.
#[derive(Clone, Debug)]
pub enum Event {
    Push {
        repo: RepoInfo,
        git_ref: GitRef,
        before: String,
        after: String,
        actor: String,
    },
    PullRequest {
        /// The base repository: pipelines run for it and its commit gets the statuses.
        repo: RepoInfo,
        number: i64,
        base_branch: String,
        head_sha: String,
        /// Whether the head lives in another repository (a fork).
        from_fork: bool,
        action: String,
        actor: String,
    },
}

impl Event {
    pub fn repo(&self) -> &RepoInfo {
        match self {
            Event::Push { repo, .. } | Event::PullRequest { repo, .. } => repo,
        }
    }

    pub fn sha(&self) -> &str {
        match self {
            Event::Push { after, .. } => after,
            Event::PullRequest { head_sha, .. } => head_sha,
        }
    }

    /// (event type, repository, ref, commit, action): deliveries of one event through
    /// repository, organisation and system hooks share it.
    pub fn dedupe_key(&self) -> String {
        match self {
            Event::Push {
                repo,
                git_ref,
                after,
                ..
            } => format!("push:{}:{}:{after}", repo.full_name, git_ref.full()),
            Event::PullRequest {
                repo,
                number,
                head_sha,
                action,
                ..
            } => {
                format!(
                    "pull_request:{}:{number}:{head_sha}:{action}",
                    repo.full_name
                )
            }
        }
    }
}

/// What to do with a delivery, decided before answering it.
#[derive(Debug)]
pub enum Classified {
    /// Store it and process it: the repository's full name.
    Act { repo: String },
    /// A test delivery: answer 200, run nothing.
    Ping,
    /// A delivery of an event that runs nothing: answer 202 with the reason.
    Ignore(String),
}

#[derive(Debug, thiserror::Error)]
#[error("the {event_type} payload is not what Gitea sends: {source}")]
pub struct PayloadError {
    event_type: String,
    #[source]
    source: serde_json::Error,
}

/// Classifies a delivery by Gitea's `X-Gitea-Event-Type`.
pub fn classify(event_type: &str, body: &[u8]) -> Result<Classified, PayloadError> {
    let bad = |source| PayloadError {
        event_type: event_type.to_string(),
        source,
    };
    match event_type {
        "push" => {
            let push: payload::Push = serde_json::from_slice(body).map_err(bad)?;
            if is_zero(&push.after) && push.before == push.after {
                return Ok(Classified::Ping);
            }
            if is_zero(&push.after) {
                return Ok(Classified::Ignore(format!(
                    "{} deleted: nothing to run",
                    push.git_ref
                )));
            }
            if GitRef::from_full(&push.git_ref).is_none() {
                return Ok(Classified::Ignore(format!(
                    "{} is neither a branch nor a tag",
                    push.git_ref
                )));
            }
            Ok(Classified::Act {
                repo: push.repository.full_name,
            })
        }
        "pull_request" | "pull_request_sync" => {
            let pr: payload::PullRequestEvent = serde_json::from_slice(body).map_err(bad)?;
            let acts = match pr.action.as_str() {
                "opened" | "reopened" | "synchronized" => true,
                "edited" => pr.changes.as_ref().is_some_and(|c| c.base_ref.is_some()),
                _ => false,
            };
            if !acts {
                return Ok(Classified::Ignore(format!(
                    "pull request {}: nothing to run",
                    pr.action
                )));
            }
            if pr.pull_request.is_none() {
                return Ok(Classified::Ignore(
                    "pull request payload without `pull_request`".into(),
                ));
            }
            Ok(Classified::Act {
                repo: pr.repository.full_name,
            })
        }
        "status" => Ok(Classified::Ignore(
            "status events are Pipewright's own echo: ignored".into(),
        )),
        other => {
            // Still a JSON document, or Gitea would not have sent it.
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(bad)?;
            Ok(Classified::Ignore(format!(
                "event type `{other}` runs nothing"
            )))
        }
    }
}

/// The domain event of a stored delivery (one that [`classify`] said to act on).
pub fn parse(event_type: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    let bad = |source| PayloadError {
        event_type: event_type.to_string(),
        source,
    };
    match event_type {
        "push" => {
            let push: payload::Push = serde_json::from_slice(body).map_err(bad)?;
            let Some(git_ref) = GitRef::from_full(&push.git_ref) else {
                return Ok(None);
            };
            let actor = push
                .sender
                .or(push.pusher)
                .map(|u| u.login)
                .unwrap_or_default();
            Ok(Some(Event::Push {
                repo: RepoInfo::from_payload(&push.repository, &push.after),
                git_ref,
                before: push.before,
                after: push.after,
                actor,
            }))
        }
        "pull_request" | "pull_request_sync" => {
            let ev: payload::PullRequestEvent = serde_json::from_slice(body).map_err(bad)?;
            let Some(pr) = ev.pull_request else {
                return Ok(None);
            };
            let repo = RepoInfo::from_payload(&ev.repository, &pr.head.sha);
            // A deleted fork shows as repo_id -1: still not the base repository.
            let from_fork = pr.head.repo_id != repo.id && pr.head.repo_id != 0;
            Ok(Some(Event::PullRequest {
                repo,
                number: if ev.number != 0 { ev.number } else { pr.number },
                base_branch: pr
                    .base
                    .git_ref
                    .trim_start_matches("refs/heads/")
                    .to_string(),
                head_sha: pr.head.sha,
                from_fork,
                action: ev.action,
                actor: ev.sender.map(|u| u.login).unwrap_or_default(),
            }))
        }
        _ => Ok(None),
    }
}

//! What a Gitea delivery means: classified at once when it arrives (act on it, answer a
//! ping, ignore it), and turned into a domain [`Event`] when it is processed.

use pipewright_pipelines::GitRef;

use crate::{
    checked,
    git::is_zero,
    gitea::payload::{self, Repository},
};

/// A repository as runs need it. Its name has been checked ([`checked::is_repo_name`]):
/// the clone URL is built from it and `[gitea].url`, never taken from a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInfo {
    pub full_name: String,
    pub id: i64,
    pub owner_id: i64,
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
            default_branch: self.default_branch.clone(),
        }
    }

    /// A repository remembered from an earlier event (checked then).
    pub fn from_known(known: &crate::store::KnownRepo) -> RepoInfo {
        RepoInfo {
            full_name: known.repo.clone(),
            id: known.repo_id,
            owner_id: known.owner_id,
            default_branch: known.default_branch.clone(),
            sha256: false,
        }
    }

    /// The repository of a payload or of Gitea's API, checked. `sha_hint` is a commit id
    /// of the event (its length tells SHA-256 repositories before Gitea 1.22).
    pub fn from_payload(r: &Repository, sha_hint: &str) -> Result<RepoInfo, Invalid> {
        if !checked::is_repo_name(&r.full_name) {
            return Err(Invalid::new("repository.full_name", &r.full_name));
        }
        if r.id <= 0 {
            return Err(Invalid::new("repository.id", &r.id.to_string()));
        }
        if r.owner.id <= 0 {
            return Err(Invalid::new("repository.owner.id", &r.owner.id.to_string()));
        }
        let default_branch = if r.default_branch.is_empty() {
            "main".to_string()
        } else if checked::is_ref_name(&r.default_branch) {
            r.default_branch.clone()
        } else {
            return Err(Invalid::new("repository.default_branch", &r.default_branch));
        };
        Ok(RepoInfo {
            full_name: r.full_name.clone(),
            id: r.id,
            owner_id: r.owner.id,
            default_branch,
            sha256: r.object_format_name == "sha256" || sha_hint.len() == 64,
        })
    }
}

/// A payload field that is not what Gitea sends: its name, and the value (shortened).
#[derive(Debug, thiserror::Error)]
#[error("{field} is not valid: {value}")]
pub struct Invalid {
    pub field: &'static str,
    pub value: String,
}

impl Invalid {
    fn new(field: &'static str, value: &str) -> Invalid {
        Invalid {
            field,
            value: quoted(value),
        }
    }
}

/// A payload value fit for a message or a log line: quoted, escaped, at most 80 characters.
fn quoted(value: &str) -> String {
    let mut shown: String = value.chars().take(80).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// An event Pipewright acts on. Every field has been checked: names and refs by
/// [`checked`], commit ids are full hex ids.
#[derive(Clone, Debug)]
pub enum Event {
    Push {
        repo: RepoInfo,
        git_ref: GitRef,
        /// The commit before the push: a commit id, or zeros for a new ref.
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
        /// The head repository's id (-1 for a deleted fork, 0 when Gitea left it out).
        head_repo_id: i64,
        /// Who opened the pull request ("" when the payload does not say).
        author: String,
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
    /// repository, organisation and system hooks share it. For a push it is also what makes
    /// a replayed body run nothing: (repository, ref, after) runs once, ever.
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

impl Event {
    /// The event as the Gitea payload [`decode`] reads (only the fields it reads): how
    /// catch-up queues an event it found through Gitea's API as a delivery of its own, so
    /// that it goes through the same checks, dedupe and crash counting as a webhook.
    pub fn to_payload(&self) -> (&'static str, serde_json::Value) {
        let repository = |r: &RepoInfo| {
            serde_json::json!({
                "id": r.id,
                "full_name": r.full_name,
                "owner": { "id": r.owner_id },
                "default_branch": r.default_branch,
                "object_format_name": if r.sha256 { "sha256" } else { "sha1" },
            })
        };
        match self {
            Event::Push {
                repo,
                git_ref,
                before,
                after,
                actor,
            } => (
                "push",
                serde_json::json!({
                    "ref": git_ref.full(),
                    "before": before,
                    "after": after,
                    "repository": repository(repo),
                    "sender": { "login": actor },
                }),
            ),
            Event::PullRequest {
                repo,
                number,
                base_branch,
                head_sha,
                head_repo_id,
                author,
                action,
                actor,
            } => (
                "pull_request",
                serde_json::json!({
                    "action": action,
                    "number": number,
                    "pull_request": {
                        "number": number,
                        "user": { "login": author },
                        "base": { "ref": base_branch },
                        "head": { "sha": head_sha, "repo_id": head_repo_id },
                    },
                    "repository": repository(repo),
                    "sender": { "login": actor },
                }),
            ),
        }
    }
}

/// What a delivery means.
#[derive(Debug)]
pub enum Decoded {
    /// Store it and process it.
    Act(Event),
    /// A test delivery: answer 200, run nothing.
    Ping,
    /// A delivery of an event that runs nothing: answer 202 with the reason.
    Ignore(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the {event_type} payload is not what Gitea sends: {source}")]
    Json {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the {event_type} payload is refused: {source}")]
    Invalid {
        event_type: String,
        #[source]
        source: Invalid,
    },
    #[error("the {event_type} payload nests deeper than {MAX_DEPTH} levels")]
    TooDeep { event_type: String },
}

/// How deeply a payload may nest arrays and objects: Gitea's nest about 5 levels.
pub const MAX_DEPTH: usize = 64;

/// Whether a JSON document nests arrays and objects at most `max` levels deep, counted
/// outside strings in one pass without recursion (before any parser sees it).
fn depth_within(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Decodes and checks a delivery by Gitea's `X-Gitea-Event-Type`: the one rule for both the
/// webhook's answer and the later processing of the stored delivery.
pub fn decode(event_type: &str, body: &[u8]) -> Result<Decoded, PayloadError> {
    let json = |source| PayloadError::Json {
        event_type: event_type.to_string(),
        source,
    };
    let invalid = |source| PayloadError::Invalid {
        event_type: event_type.to_string(),
        source,
    };
    if !depth_within(body, MAX_DEPTH) {
        return Err(PayloadError::TooDeep {
            event_type: event_type.to_string(),
        });
    }
    match event_type {
        "push" => {
            let push: payload::Push = serde_json::from_slice(body).map_err(json)?;
            decode_push(push).map_err(invalid)
        }
        "pull_request" | "pull_request_sync" => {
            let pr: payload::PullRequestEvent = serde_json::from_slice(body).map_err(json)?;
            decode_pull_request(pr).map_err(invalid)
        }
        "status" => Ok(Decoded::Ignore(
            "status events are Pipewright's own echo: ignored".into(),
        )),
        other => {
            // Still a JSON document, or Gitea would not have sent it.
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(json)?;
            Ok(Decoded::Ignore(format!(
                "event type `{other}` runs nothing"
            )))
        }
    }
}

/// A commit id, or git's zero id (`allow_zero`), of the push's length.
fn commit_field(field: &'static str, sha: &str, allow_zero: bool) -> Result<(), Invalid> {
    if checked::is_commit_id(sha) && (allow_zero || !is_zero(sha)) {
        Ok(())
    } else {
        Err(Invalid::new(field, sha))
    }
}

/// A login as an actor: Gitea's logins are `[A-Za-z0-9_.-]`; anything else is dropped.
fn login(user: Option<payload::User>) -> Option<String> {
    user.map(|u| u.login).filter(|l| {
        !l.is_empty()
            && l.len() <= 100
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    })
}

fn decode_push(push: payload::Push) -> Result<Decoded, Invalid> {
    commit_field("after", &push.after, true)?;
    commit_field("before", &push.before, true)?;
    if push.before.len() != push.after.len() {
        return Err(Invalid::new("before", &push.before));
    }
    if is_zero(&push.after) && push.before == push.after {
        return Ok(Decoded::Ping);
    }
    if is_zero(&push.after) {
        return Ok(Decoded::Ignore(format!(
            "{} deleted: nothing to run",
            quoted(&push.git_ref)
        )));
    }
    let Some(git_ref) = GitRef::from_full(&push.git_ref) else {
        return Ok(Decoded::Ignore(format!(
            "{} is neither a branch nor a tag",
            quoted(&push.git_ref)
        )));
    };
    if !checked::is_full_ref(&push.git_ref) {
        return Err(Invalid::new("ref", &push.git_ref));
    }
    let repo = RepoInfo::from_payload(&push.repository, &push.after)?;
    Ok(Decoded::Act(Event::Push {
        repo,
        git_ref,
        before: push.before,
        after: push.after,
        actor: login(push.sender)
            .or_else(|| login(push.pusher))
            .unwrap_or_default(),
    }))
}

fn decode_pull_request(ev: payload::PullRequestEvent) -> Result<Decoded, Invalid> {
    let acts = match ev.action.as_str() {
        "opened" | "reopened" | "synchronized" => true,
        "edited" => ev.changes.as_ref().is_some_and(|c| c.base_ref.is_some()),
        _ => false,
    };
    if !acts {
        return Ok(Decoded::Ignore(format!(
            "pull request {}: nothing to run",
            quoted(&ev.action)
        )));
    }
    let Some(pr) = ev.pull_request else {
        return Ok(Decoded::Ignore(
            "pull request payload without `pull_request`".into(),
        ));
    };
    commit_field("pull_request.head.sha", &pr.head.sha, false)?;
    let repo = RepoInfo::from_payload(&ev.repository, &pr.head.sha)?;
    let base_branch = pr
        .base
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&pr.base.git_ref);
    if !checked::is_ref_name(base_branch) {
        return Err(Invalid::new("pull_request.base.ref", &pr.base.git_ref));
    }
    let number = if ev.number != 0 { ev.number } else { pr.number };
    if number <= 0 {
        return Err(Invalid::new("number", &number.to_string()));
    }
    Ok(Decoded::Act(Event::PullRequest {
        repo,
        number,
        base_branch: base_branch.to_string(),
        head_sha: pr.head.sha,
        head_repo_id: pr.head.repo_id,
        author: login(pr.user).unwrap_or_default(),
        action: ev.action,
        actor: login(ev.sender).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_its_payload() {
        let repo = RepoInfo {
            full_name: "org/app".into(),
            id: 4,
            owner_id: 2,
            default_branch: "main".into(),
            sha256: false,
        };
        let events = [
            Event::Push {
                repo: repo.clone(),
                git_ref: GitRef::Branch("feature/x".into()),
                before: "0".repeat(40),
                after: "a".repeat(40),
                actor: String::new(),
            },
            Event::PullRequest {
                repo: RepoInfo {
                    sha256: true,
                    ..repo
                },
                number: 7,
                base_branch: "main".into(),
                head_sha: "b".repeat(64),
                head_repo_id: 9,
                author: "mallory".into(),
                action: "synchronized".into(),
                actor: "alice".into(),
            },
        ];
        for event in events {
            let (event_type, payload) = event.to_payload();
            let Ok(Decoded::Act(back)) = decode(event_type, payload.to_string().as_bytes()) else {
                panic!("{event:?} did not decode back");
            };
            assert_eq!(format!("{back:?}"), format!("{event:?}"));
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert!(depth_within(br#"{"a":[{"b":1}]}"#, 3));
        assert!(!depth_within(br#"{"a":[{"b":1}]}"#, 2));
        assert!(depth_within(br#"{"a":"[[[[{{{{\"[[["}"#, 1));
        assert!(!depth_within("[".repeat(100_000).as_bytes(), MAX_DEPTH));
        let err = decode("push", "[".repeat(100_000).as_bytes()).unwrap_err();
        assert!(matches!(err, PayloadError::TooDeep { .. }), "{err}");
    }
}

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

/// A comment command: a line of a new comment on an issue or pull request that starts
/// with `/pipewright`. Its author is Gitea's `sender`; nothing else of the comment counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub repo: RepoInfo,
    /// The issue or pull request the comment is on.
    pub number: i64,
    /// On a pull request (else on an issue).
    pub is_pull: bool,
    pub comment_id: i64,
    /// Who wrote the comment (Gitea's verified `sender`).
    pub actor: String,
    pub verb: Verb,
}

/// What a command asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `/pipewright run <pipeline> [key=value ...]`.
    Run {
        pipeline: String,
        inputs: Vec<(String, String)>,
    },
    /// `/pipewright plan`.
    Plan,
    /// `/pipewright apply`.
    Apply,
    /// `/pipewright help`, or a command that is not one (`problem` says what is wrong).
    Help { problem: Option<String> },
}

impl Verb {
    /// The command as a reply quotes it.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Run { .. } => "/pipewright run",
            Verb::Plan => "/pipewright plan",
            Verb::Apply => "/pipewright apply",
            Verb::Help { .. } => "/pipewright help",
        }
    }
}

/// The first line of a comment that starts with `/pipewright` (leading blanks aside), as a
/// command; `None` when no line does (a mention inside a sentence is not a command).
pub fn parse_command(body: &str) -> Option<Verb> {
    const MAX_WORDS: usize = 101;
    const MAX_NAME: usize = 128;
    const MAX_VALUE: usize = 8192;
    let line = body.lines().map(str::trim_start).find(|l| {
        l.strip_prefix("/pipewright")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })?;
    let mut words = line.split_whitespace().skip(1);
    let help = |problem: String| Verb::Help {
        problem: Some(problem),
    };
    let verb = match words.next() {
        None | Some("help") => Verb::Help { problem: None },
        Some("plan") => Verb::Plan,
        Some("apply") => Verb::Apply,
        Some("run") => {
            let Some(pipeline) = words.next() else {
                return Some(help(
                    "`/pipewright run` needs the name of a pipeline".into(),
                ));
            };
            if pipeline.len() > MAX_NAME {
                return Some(help(format!("{} is not a pipeline name", quoted(pipeline))));
            }
            let mut inputs = Vec::new();
            for word in words.by_ref().take(MAX_WORDS) {
                match word.split_once('=') {
                    Some((key, _)) if key.len() > MAX_NAME => {
                        return Some(help(format!("{} is not an input name", quoted(key))));
                    }
                    Some((key, value)) if value.len() > MAX_VALUE => {
                        return Some(help(format!(
                            "the value of input {} is longer than {MAX_VALUE} bytes",
                            quoted(key)
                        )));
                    }
                    Some((key, value)) if !key.is_empty() => {
                        inputs.push((key.to_string(), value.to_string()))
                    }
                    _ => {
                        return Some(help(format!(
                            "{} is not an input: inputs are written key=value",
                            quoted(word)
                        )));
                    }
                }
            }
            if inputs.len() >= MAX_WORDS {
                return Some(help("too many inputs".into()));
            }
            Verb::Run {
                pipeline: pipeline.to_string(),
                inputs,
            }
        }
        Some(other) => help(format!("{} is not a command", quoted(other))),
    };
    let extra = words.next();
    match (&verb, extra) {
        (Verb::Plan | Verb::Apply, Some(word)) => Some(help(format!(
            "`{}` takes no arguments (found {})",
            verb.name(),
            quoted(word)
        ))),
        _ => Some(verb),
    }
}

/// What a delivery means.
#[derive(Debug)]
pub enum Decoded {
    /// Store it and process it.
    Act(Event),
    /// A comment command: store it and answer it.
    Command(Box<Command>),
    /// A test delivery: answer 200, run nothing.
    Ping,
    /// A delivery of an event that runs nothing: answer 202 with the reason.
    Ignore(String),
}

impl Decoded {
    /// The repository of a delivery to store.
    pub fn repo(&self) -> Option<&RepoInfo> {
        match self {
            Decoded::Act(event) => Some(event.repo()),
            Decoded::Command(command) => Some(&command.repo),
            Decoded::Ping | Decoded::Ignore(_) => None,
        }
    }
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
        "issue_comment" | "pull_request_comment" => {
            let ev: payload::IssueCommentEvent = serde_json::from_slice(body).map_err(json)?;
            decode_comment(ev).map_err(invalid)
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

fn decode_comment(ev: payload::IssueCommentEvent) -> Result<Decoded, Invalid> {
    if ev.action != "created" {
        return Ok(Decoded::Ignore(format!(
            "comment {}: only new comments are commands",
            quoted(&ev.action)
        )));
    }
    let (Some(issue), Some(comment)) = (ev.issue, ev.comment) else {
        return Ok(Decoded::Ignore(
            "comment payload without `issue` or `comment`".into(),
        ));
    };
    let Some(verb) = parse_command(&comment.body) else {
        return Ok(Decoded::Ignore("the comment holds no command".into()));
    };
    let repo = RepoInfo::from_payload(&ev.repository, "")?;
    if issue.number <= 0 {
        return Err(Invalid::new("issue.number", &issue.number.to_string()));
    }
    if comment.id <= 0 {
        return Err(Invalid::new("comment.id", &comment.id.to_string()));
    }
    let Some(actor) = login(ev.sender.clone()) else {
        let given = ev.sender.map(|u| u.login).unwrap_or_default();
        return Err(Invalid::new("sender.login", &given));
    };
    Ok(Decoded::Command(Box::new(Command {
        repo,
        number: issue.number,
        is_pull: ev.is_pull || issue.pull_request.is_some() || ev.pull_request.is_some(),
        comment_id: comment.id,
        actor,
        verb,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_a_line_that_starts_with_it() {
        let run = |pipeline: &str, inputs: &[(&str, &str)]| Verb::Run {
            pipeline: pipeline.into(),
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let help = |p: &str| Verb::Help {
            problem: Some(p.into()),
        };
        let cases = [
            ("/pipewright plan", Some(Verb::Plan)),
            ("  /pipewright apply\n", Some(Verb::Apply)),
            ("LGTM\n\n/pipewright apply\nthanks", Some(Verb::Apply)),
            ("/pipewright", Some(Verb::Help { problem: None })),
            ("/pipewright help", Some(Verb::Help { problem: None })),
            (
                "/pipewright run restore date=2026-11-30 confirm=yes",
                Some(run(
                    "restore",
                    &[("date", "2026-11-30"), ("confirm", "yes")],
                )),
            ),
            ("/pipewright run deploy", Some(run("deploy", &[]))),
            (
                &format!("/pipewright run {}", "p".repeat(200)),
                Some(help(&format!(
                    "\"{}…\" is not a pipeline name",
                    "p".repeat(80)
                ))),
            ),
            (
                &format!("/pipewright run p x={}", "v".repeat(9000)),
                Some(help("the value of input \"x\" is longer than 8192 bytes")),
            ),
            (
                "/pipewright run",
                Some(help("`/pipewright run` needs the name of a pipeline")),
            ),
            (
                "/pipewright run x date",
                Some(help(
                    "\"date\" is not an input: inputs are written key=value",
                )),
            ),
            (
                "/pipewright run x =v",
                Some(help("\"=v\" is not an input: inputs are written key=value")),
            ),
            (
                "/pipewright destroy",
                Some(help("\"destroy\" is not a command")),
            ),
            (
                "/pipewright plan now",
                Some(help(
                    "`/pipewright plan` takes no arguments (found \"now\")",
                )),
            ),
            ("please run /pipewright apply when ready", None),
            ("> /pipewright apply", None),
            ("`/pipewright apply`", None),
            ("/pipewrightapply", None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(parse_command(body), want, "{body:?}");
        }
    }

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
        let err2 = decode("pull_request_comment", "[".repeat(100).as_bytes()).unwrap_err();
        assert!(matches!(err2, PayloadError::TooDeep { .. }), "{err2}");
        assert!(matches!(err, PayloadError::TooDeep { .. }), "{err}");
    }
}

//! Gitea's webhook payloads, as Gitea really sends them (research: gitea-facts.md §3).
//!
//! Only the fields Pipewright reads, every one optional or defaulted where some Gitea
//! version leaves it out (a 1.21 `pull_request_sync` has no `base.repo`; `head.repo` is
//! null for a deleted fork). These are edge DTOs: `events.rs` turns them into domain events.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct User {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub login: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Repository {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub owner: User,
    #[serde(default)]
    pub clone_url: String,
    #[serde(default)]
    pub default_branch: String,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub fork: bool,
    /// `sha1` or `sha256`; absent or empty before Gitea 1.22.
    #[serde(default)]
    pub object_format_name: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Push {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    pub repository: Repository,
    #[serde(default)]
    pub pusher: Option<User>,
    #[serde(default)]
    pub sender: Option<User>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Branch {
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub repo_id: i64,
    #[serde(default)]
    pub repo: Option<Repository>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PullRequest {
    #[serde(default)]
    pub number: i64,
    /// The poster: who opened the pull request (for AGit-flow pull requests, whose head is
    /// the base repository, the only sign of who wrote it).
    #[serde(default)]
    pub user: Option<User>,
    pub base: Branch,
    pub head: Branch,
    #[serde(default)]
    pub merge_base: Option<String>,
    #[serde(default)]
    pub merged: bool,
}

/// `changes.ref`: present when the base branch was changed (its `from` is not needed).
#[derive(Clone, Debug, Deserialize)]
pub struct RefChange {}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Changes {
    #[serde(rename = "ref", default)]
    pub base_ref: Option<RefChange>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    #[serde(default)]
    pub number: i64,
    /// Null when Gitea failed to convert it (gitea-facts §9.16).
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    pub repository: Repository,
    #[serde(default)]
    pub sender: Option<User>,
    #[serde(default)]
    pub changes: Option<Changes>,
}

/// `issue.pull_request` of an issue that is a pull request (null for an issue); its
/// fields are not needed: the pull request's state is read from Gitea's API.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IssuePull {}

/// The `issue` of an `issue_comment` payload (a pull request is an issue too).
#[derive(Clone, Debug, Deserialize)]
pub struct Issue {
    #[serde(default)]
    pub number: i64,
    #[serde(default)]
    pub pull_request: Option<IssuePull>,
}

/// The `comment` of an `issue_comment` payload.
#[derive(Clone, Debug, Deserialize)]
pub struct IssueComment {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub body: String,
}

/// `IssueCommentPayload`: event type `issue_comment` on an issue, `pull_request_comment`
/// on a pull request (`is_pull`, with the `pull_request` object).
#[derive(Clone, Debug, Deserialize)]
pub struct IssueCommentEvent {
    pub action: String,
    #[serde(default)]
    pub issue: Option<Issue>,
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    #[serde(default)]
    pub comment: Option<IssueComment>,
    pub repository: Repository,
    #[serde(default)]
    pub sender: Option<User>,
    #[serde(default)]
    pub is_pull: bool,
}

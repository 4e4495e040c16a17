//! A fake Gitea for end-to-end tests: real bare repositories served over git's smart HTTP
//! protocol, the REST endpoints Pipewright calls, and webhook payloads and deliveries shaped
//! like Gitea 1.25's (source of truth: `shared/research/gitea-facts.md`).
//!
//! Everything is real: repositories are bare git repositories in a temporary directory,
//! history is written with the `git` command line, clones and fetches go through
//! `git http-backend` over real HTTP, and webhooks are real HTTP POSTs.
//!
//! # Overview
//!
//! ```ignore
//! let gitea = FakeGitea::start().await;
//! let repo = gitea.create_repo("acme", "infra");
//! let first = repo.commit("main", "first").write("README.md", "hi\n").push();
//! let second = repo.commit("main", "second").write(".pipewright/ci.yml", "...").push();
//! let delivery = repo.push_event("main", &first, &second);
//! let (status, _body) = delivery.deliver(&format!("{pipewright}/hooks/gitea"), "secret").await;
//! // ... later
//! let statuses = gitea.statuses("acme", "infra", &second);
//! assert_eq!(statuses.last().unwrap().state, "success");
//! ```
//!
//! # What it serves
//!
//! - `GET /{owner}/{repo}(.git)/info/refs?service=git-upload-pack` and
//!   `POST /{owner}/{repo}(.git)/git-upload-pack`, through `git http-backend` as a CGI.
//!   Private repositories (the default) need the token: HTTP Basic with the token as password
//!   (any user name) or as user name (empty or `x-oauth-basic` password), or
//!   `Authorization: token|bearer <token>`; otherwise 401 with
//!   `WWW-Authenticate: Basic realm="Gitea"`. Pushing over HTTP is refused (403): tests write
//!   history with [`Repo::commit`] and friends.
//! - `/api/v1`: repository, branches, commit statuses (create, list, combined), pull requests
//!   (list, get, reviews, the pull request of a merge commit), issue comments (create, edit, delete, list), collaborator permission,
//!   `/version` and `/user`. Authentication as in Gitea: `Authorization: token|bearer` (any
//!   case), Basic, or `?token=` / `?access_token=`. A wrong token is answered 401
//!   `invalid username, password or token`; no token at all is anonymous, which Gitea answers
//!   with 404 for a private repository and 401 `token is required` for a write to a public
//!   one. Unknown routes: 404 JSON.
//!
//! - Gitea's Actions runner API (`runners.rs`): `/api/actions` (`Register`, `Declare`,
//!   `FetchTask`, `UpdateTask`, `UpdateLog` over Connect with JSON), with registration
//!   tokens, "Run workflow" and cancel as a test asks for them
//!   ([`FakeGitea::dispatch_workflow`], [`FakeGitea::cancel_actions_job`]).
//! - Gitea's OAuth2 provider (`oauth.rs`): `GET /login/oauth/authorize` and
//!   `POST /login/oauth/access_token` for registered applications
//!   ([`FakeGitea::create_oauth_app`]), with PKCE, single-use codes, refresh tokens and
//!   Gitea's OAuth error answers. A token request is recorded with its secrets (client
//!   secret, code, PKCE verifier, refresh token) replaced by `REDACTED`.
//!
//! The token belongs to [`BOT_LOGIN`], an admin of every repository unless a test lowers it
//! with [`Repo::set_permission`]. Users have tokens too ([`FakeGitea::create_user_token`],
//! OAuth access tokens) and passwords ([`FakeGitea::set_password`], HTTP Basic): with them
//! the API answers as that user (`GET /user`; a repository's `permissions`, and 404 for a
//! private repository the user may not read). Writes and git with a user's token are not
//! served (403 and 401): Pipewright makes them with its own token only.
//!
//! Every request is recorded ([`FakeGitea::requests`]); the token itself is never kept.
//! [`FakeGitea::fail_api`] and [`FakeGitea::set_down`] inject faults.
//!
//! # Deliberate differences from Gitea
//!
//! - Gitea 1.25 does not validate a status's `state`; the fake answers 422 for anything but
//!   `pending`, `success`, `error`, `failure`, `warning` and `skipped`, to catch typos.
//! - Gitea runs `git upload-pack` itself; the fake runs `git http-backend`, which speaks the
//!   same protocol (v0, v1 and v2, gzip-compressed requests).
//! - `refs/pull/<n>/head` is updated when a test calls [`Repo::sync_pull`], not by a
//!   background task after each push; the REST API's `head.sha` follows the head branch at
//!   once, as Gitea's does.
//!
//! # Parts
//!
//! `oauth.rs` (applications, authorize, tokens, users' credentials), `state.rs` (users, repositories, pull requests, statuses and comments behind one lock),
//! `reviews.rs` (reviews, mergeability, the pull request of a merge commit),
//! `server.rs` ([`FakeGitea`]: start, stop, faults, what was seen), `repos.rs` ([`Repo`]:
//! history written with git), `json.rs` (objects as Gitea's JSON shows them), `payloads.rs`
//! and `deliveries.rs` (webhooks; their shapes are checked against payloads captured from
//! real Gitea servers, kept in `tests/data/gitea/`), `git_http.rs` (routing and
//! `git http-backend`), `api.rs` (the REST API), `util.rs` (time, randomness, Go's JSON, URL
//! encoding).

mod api;
mod deliveries;
mod git_http;
mod hooks;
mod json;
mod oauth;
mod payloads;
mod repos;
mod reviews;
mod runners;
mod server;
mod state;
mod util;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    fs::File,
    io::{self, Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::Response,
};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// The parts see each other's items through these; the public ones are the fake's API.
pub use hooks::{HookOwnerRec, HookRec};
pub use oauth::{OAUTH_ACCESS_TOKEN_SECS, OAuthApp};
use reviews::*;
use runners::ActionsState;
pub use runners::{ActionsLogRow, ActionsRunner, ActionsStep, ActionsTask};
use {api::*, git_http::*, json::*, oauth::*, state::*};
pub use {deliveries::*, payloads::*, repos::*, reviews::ReviewState, server::*, util::*};

/// The Gitea version the fake imitates (`GET /api/v1/version`).
pub const GITEA_VERSION: &str = "1.25.4";

/// The login of the user that owns [`FakeGitea::token`].
pub const BOT_LOGIN: &str = "pipewright-bot";

/// The commit-status states Gitea 1.25 knows.
pub const STATUS_STATES: [&str; 6] = [
    "pending", "success", "error", "failure", "warning", "skipped",
];

/// `[ui] FEED_MAX_COMMIT_NUM`: the most commits a push payload lists.
pub const FEED_MAX_COMMIT_NUM: usize = 5;

/// How many commits of history a new branch's push payload lists (`CommitsBeforeLimit(10)`).
pub const NEW_BRANCH_COMMITS: usize = 10;

const DEFAULT_PAGE_SIZE: usize = 30;
const MAX_PAGE_SIZE: usize = 50;
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const NOREPLY_DOMAIN: &str = "noreply.localhost";

/// A repository's object format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    Sha1,
    Sha256,
}

impl ObjectFormat {
    /// `sha1` or `sha256`, as in `object_format_name`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectFormat::Sha1 => "sha1",
            ObjectFormat::Sha256 => "sha256",
        }
    }

    /// Length of an object id in hex: 40 or 64.
    pub fn hex_len(self) -> usize {
        match self {
            ObjectFormat::Sha1 => 40,
            ObjectFormat::Sha256 => 64,
        }
    }

    /// The all-zero object id Gitea uses for "no commit".
    pub fn zero(self) -> String {
        "0".repeat(self.hex_len())
    }
}

/// Options for [`FakeGitea::create_repo_with`].
#[derive(Clone, Debug)]
pub struct RepoOptions {
    pub private: bool,
    pub object_format: ObjectFormat,
    pub default_branch: String,
    pub description: String,
}

impl Default for RepoOptions {
    fn default() -> Self {
        RepoOptions {
            private: true,
            object_format: ObjectFormat::Sha1,
            default_branch: "main".to_owned(),
            description: String::new(),
        }
    }
}

/// A user's access to a repository, as Gitea's `AccessMode.ToString()` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Write,
    Admin,
    Owner,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
            Permission::Owner => "owner",
        }
    }
}

/// A commit status as the fake stored it (in the order received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Gitea's per-commit index (the API's `id`).
    pub index: i64,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: String,
    pub creator: String,
    pub created_at: String,
}

/// An issue or pull-request comment as the fake stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub id: i64,
    /// The issue or pull-request number.
    pub issue: u64,
    pub user: String,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
}

/// One request the fake received, API or git. Only the scheme of the credentials is kept
/// (`token`, `bearer`, `basic`, or `query` for `?token=`/`?access_token=`), never the token;
/// token query parameters are recorded as `REDACTED`. Git requests are recorded without body.
#[derive(Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub auth: Option<String>,
    pub body: Vec<u8>,
    /// The status the fake answered with (`None` while the request is being served).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The body as (lossy) UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether this was a REST API call (under `/api/v1`).
    pub fn is_api(&self) -> bool {
        self.path == "/api/v1" || self.path.starts_with("/api/v1/")
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("auth", &self.auth)
            .field("body", &self.body_text())
            .field("status", &self.status)
            .finish()
    }
}

/// A pull-request webhook action (`X-Gitea-Event: pull_request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullAction {
    Opened,
    Reopened,
    /// New commits on the head branch: event type `pull_request_sync`. Call
    /// [`Repo::sync_pull`] first, as Gitea updates `refs/pull/<n>/head` before sending it.
    Synchronized,
    /// A plain close, or a merge if the pull request was merged ([`Repo::merge_pull`]).
    Closed,
    /// An edit; `base_from` is the old base branch when the target branch changed.
    Edited {
        base_from: Option<String>,
        title_from: Option<String>,
        body_from: Option<String>,
    },
}

impl PullAction {
    fn action(&self) -> &'static str {
        match self {
            PullAction::Opened => "opened",
            PullAction::Reopened => "reopened",
            PullAction::Synchronized => "synchronized",
            PullAction::Closed => "closed",
            PullAction::Edited { .. } => "edited",
        }
    }
}

/// Whether a `create`/`delete` event is about a branch or a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    fn name(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
        }
    }
}

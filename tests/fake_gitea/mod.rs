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
//!   (list, get), issue comments (create, edit, delete, list), collaborator permission,
//!   `/version` and `/user`. Authentication as in Gitea: `Authorization: token|bearer` (any
//!   case), Basic, or `?token=` / `?access_token=`. A wrong token is answered 401
//!   `invalid username, password or token`; no token at all is anonymous, which Gitea answers
//!   with 404 for a private repository and 401 `token is required` for a write to a public
//!   one. Unknown routes: 404 JSON.
//!
//! The token belongs to [`BOT_LOGIN`], an admin of every repository unless a test lowers it
//! with [`Repo::set_permission`].
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
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct UserRec {
    id: i64,
    login: String,
    created: i64,
    is_admin: bool,
}

#[derive(Clone, Debug)]
struct RepoRec {
    id: i64,
    owner: String,
    name: String,
    description: String,
    private: bool,
    format: ObjectFormat,
    default_branch: String,
    parent: Option<i64>,
    created: i64,
    updated: i64,
    path: PathBuf,
    next_index: u64,
}

impl RepoRec {
    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Clone, Debug)]
struct IssueRec {
    id: i64,
    index: u64,
    title: String,
    body: String,
    author: String,
    open: bool,
    created: i64,
    updated: i64,
    closed: Option<i64>,
    pull: Option<PullRec>,
}

#[derive(Clone, Debug)]
struct PullRec {
    id: i64,
    head_repo: i64,
    head_branch: String,
    base_branch: String,
    merge_base: String,
    merged: Option<MergeRec>,
}

#[derive(Clone, Debug)]
struct MergeRec {
    at: i64,
    sha: String,
    by: String,
}

#[derive(Clone, Debug)]
struct CommentRec {
    id: i64,
    repo_id: i64,
    index: u64,
    author: String,
    body: String,
    created: i64,
    updated: i64,
}

#[derive(Clone, Debug)]
struct StatusRec {
    id: i64,
    repo_id: i64,
    sha: String,
    index: i64,
    state: String,
    target_url: String,
    description: String,
    context: String,
    creator: String,
    created: i64,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, UserRec>,
    next_user_id: i64,
    repos: BTreeMap<i64, RepoRec>,
    next_repo_id: i64,
    issues: BTreeMap<(i64, u64), IssueRec>,
    next_issue_id: i64,
    next_pull_id: i64,
    comments: Vec<CommentRec>,
    next_comment_id: i64,
    statuses: Vec<StatusRec>,
    next_status_id: i64,
    permissions: HashMap<(i64, String), Permission>,
    requests: Vec<RecordedRequest>,
    fail_next: u32,
}

impl State {
    fn ensure_user(&mut self, login: &str) -> i64 {
        let key = login.to_lowercase();
        if let Some(user) = self.users.get(&key) {
            return user.id;
        }
        self.next_user_id += 1;
        let id = self.next_user_id;
        self.users.insert(
            key,
            UserRec {
                id,
                login: login.to_owned(),
                created: now_secs(),
                is_admin: false,
            },
        );
        id
    }

    fn user(&self, login: &str) -> Option<&UserRec> {
        self.users.get(&login.to_lowercase())
    }

    fn find_repo(&self, owner: &str, name: &str) -> Option<&RepoRec> {
        self.repos
            .values()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    fn repo(&self, id: i64) -> &RepoRec {
        self.repos
            .get(&id)
            .unwrap_or_else(|| panic!("repository {id} was deleted"))
    }

    fn issue(&self, repo_id: i64, index: u64) -> Option<&IssueRec> {
        self.issues.get(&(repo_id, index))
    }

    fn permission(&self, repo: &RepoRec, login: &str) -> Permission {
        if let Some(p) = self.permissions.get(&(repo.id, login.to_lowercase())) {
            return *p;
        }
        if login.eq_ignore_ascii_case(&repo.owner) {
            Permission::Owner
        } else if login.eq_ignore_ascii_case(BOT_LOGIN) {
            Permission::Admin
        } else if repo.private {
            Permission::None
        } else {
            Permission::Read
        }
    }

    fn comment_count(&self, repo_id: i64, index: u64) -> usize {
        self.comments
            .iter()
            .filter(|c| c.repo_id == repo_id && c.index == index)
            .count()
    }
}

/// What the git commands and the server share.
struct Shared {
    base_url: String,
    addr: SocketAddr,
    token: String,
    repos_dir: PathBuf,
    home: PathBuf,
    scratch: PathBuf,
    state: Mutex<State>,
    scratch_counter: AtomicU64,
    last_commit_time: AtomicI64,
    down: AtomicBool,
    up_tx: tokio::sync::watch::Sender<bool>,
    listening: Mutex<bool>,
    listening_changed: Condvar,
    /// Repositories (`owner/name`, lowercase) whose git service answers nothing: a request
    /// is held open until the repository is released ([`Repo::stall_git`]).
    stalled: Mutex<HashSet<String>>,
    stall_released: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    fn set_listening(&self, value: bool) {
        *self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = value;
        self.listening_changed.notify_all();
    }

    fn check_token(&self, token: &str) -> Caller {
        let (a, b) = (token.as_bytes(), self.token.as_bytes());
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if same { Caller::Bot } else { Caller::Invalid }
    }

    fn scratch_file(&self, what: &str) -> PathBuf {
        let n = self.scratch_counter.fetch_add(1, Ordering::Relaxed);
        self.scratch.join(format!("{what}-{n}"))
    }

    /// A strictly increasing commit time, so that history has a well-defined order.
    fn next_commit_time(&self) -> i64 {
        let now = now_secs();
        let mut last = self.last_commit_time.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_commit_time.compare_exchange(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    fn touch_repo(&self, repo_id: i64) {
        if let Some(repo) = self.lock().repos.get_mut(&repo_id) {
            repo.updated = now_secs();
        }
    }

    fn record(&self, parts: &Parts, body: Vec<u8>) -> usize {
        let request = RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(redact_query),
            auth: auth_scheme(&parts.headers, parts.uri.query()),
            body,
            status: None,
        };
        let mut state = self.lock();
        state.requests.push(request);
        state.requests.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(request) = self.lock().requests.get_mut(index) {
            request.status = Some(status);
        }
    }

    // ----- git -----

    /// `git` with a clean environment: no system or user configuration of this machine.
    fn git_command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (key, value) in self.git_env() {
            cmd.env(key, value);
        }
        cmd
    }

    fn git_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOME", self.home.display().to_string()),
            (
                "XDG_CONFIG_HOME",
                self.home.join(".config").display().to_string(),
            ),
            ("GIT_CONFIG_NOSYSTEM", "1".to_owned()),
            ("GIT_TERMINAL_PROMPT", "0".to_owned()),
            ("LC_ALL", "C".to_owned()),
            ("TZ", "UTC".to_owned()),
        ]
    }

    fn run_git(
        &self,
        dir: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, String)],
    ) -> Result<Vec<u8>, String> {
        let mut cmd = self.git_command();
        cmd.arg("-C").arg(dir).args(args);
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|err| format!("cannot run git: {err}"))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input)
                .map_err(|err| format!("cannot write to git: {err}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|err| format!("git failed: {err}"))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(format!(
                "`git {}` in {} failed ({}): {}",
                args.join(" "),
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Runs git and returns its trimmed stdout; panics with git's message when it fails.
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.git_with(dir, args, None, &[])
    }

    fn git_with(
        &self,
        dir: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, String)],
    ) -> String {
        match self.run_git(dir, args, stdin, env) {
            Ok(out) => String::from_utf8_lossy(&out).trim().to_owned(),
            Err(err) => panic!("fake gitea: {err}"),
        }
    }

    fn git_opt(&self, dir: &Path, args: &[&str]) -> Option<String> {
        self.run_git(dir, args, None, &[])
            .ok()
            .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The object a ref or revision names, without peeling.
    fn rev_parse(&self, dir: &Path, rev: &str) -> Option<String> {
        self.git_opt(
            dir,
            &["rev-parse", "--verify", "--quiet", "--end-of-options", rev],
        )
        .filter(|s| !s.is_empty())
    }

    /// The full id of the commit `rev` names (a full or short sha, or a ref), if it exists.
    fn resolve_commit(&self, dir: &Path, rev: &str) -> Option<String> {
        if rev.is_empty() || rev.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        self.rev_parse(dir, &format!("{rev}^{{commit}}"))
    }

    /// Like Gitea's `ResolveRefOrSha`: a branch, then a tag, then a commit id.
    fn resolve_ref_or_sha(&self, dir: &Path, reference: &str) -> Option<String> {
        self.resolve_commit(dir, &format!("refs/heads/{reference}"))
            .or_else(|| self.resolve_commit(dir, &format!("refs/tags/{reference}")))
            .or_else(|| self.resolve_commit(dir, reference))
    }

    fn commit_info(&self, dir: &Path, sha: &str) -> CommitInfo {
        let raw = self
            .run_git(dir, &["cat-file", "commit", sha], None, &[])
            .unwrap_or_else(|err| panic!("fake gitea: {err}"));
        parse_commit(sha, &String::from_utf8_lossy(&raw))
    }

    /// Gitea's `GetCommitFileStatus`: `git log --name-status -m --first-parent --no-renames`.
    fn file_status(&self, dir: &Path, sha: &str) -> FileStatus {
        let out = self
            .run_git(
                dir,
                &[
                    "-c",
                    "log.showsignature=false",
                    "log",
                    "--name-status",
                    "-m",
                    "--first-parent",
                    "--no-renames",
                    "-z",
                    "--pretty=format:",
                    "-1",
                    sha,
                ],
                None,
                &[],
            )
            .unwrap_or_else(|err| panic!("fake gitea: {err}"));
        let tokens: Vec<String> = out
            .split(|b| *b == 0)
            .map(|t| {
                String::from_utf8_lossy(t)
                    .trim_start_matches('\n')
                    .to_owned()
            })
            .filter(|t| !t.is_empty())
            .collect();
        let mut status = FileStatus::default();
        for pair in tokens.chunks(2) {
            let [kind, path] = pair else { continue };
            match kind.chars().next() {
                Some('A') => status.added.push(path.clone()),
                Some('D') => status.removed.push(path.clone()),
                Some('M') => status.modified.push(path.clone()),
                _ => {}
            }
        }
        status
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Bot,
    Invalid,
}

#[derive(Clone, Debug)]
struct Sig {
    name: String,
    email: String,
    time: i64,
    offset_minutes: i32,
}

#[derive(Clone, Debug)]
struct CommitInfo {
    sha: String,
    message: String,
    author: Sig,
    committer: Sig,
}

#[derive(Clone, Debug, Default)]
struct FileStatus {
    added: Vec<String>,
    removed: Vec<String>,
    modified: Vec<String>,
}

fn parse_commit(sha: &str, raw: &str) -> CommitInfo {
    let (head, message) = raw.split_once("\n\n").unwrap_or((raw, ""));
    let mut author = None;
    let mut committer = None;
    for line in head.lines() {
        if let Some(rest) = line.strip_prefix("author ") {
            author = Some(parse_sig(rest));
        } else if let Some(rest) = line.strip_prefix("committer ") {
            committer = Some(parse_sig(rest));
        }
    }
    let author = author.unwrap_or_else(|| panic!("commit {sha} has no author"));
    CommitInfo {
        sha: sha.to_owned(),
        message: message.to_owned(),
        committer: committer.unwrap_or_else(|| author.clone()),
        author,
    }
}

fn parse_sig(s: &str) -> Sig {
    let lt = s.find('<').unwrap_or(s.len());
    let gt = s.rfind('>').unwrap_or(s.len());
    let name = s[..lt].trim().to_owned();
    let email = s.get(lt + 1..gt).unwrap_or("").to_owned();
    let mut rest = s.get(gt + 1..).unwrap_or("").split_whitespace();
    let time = rest.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let offset_minutes = rest
        .next()
        .filter(|tz| tz.len() == 5)
        .map(|tz| {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let hours: i32 = tz[1..3].parse().unwrap_or(0);
            let minutes: i32 = tz[3..5].parse().unwrap_or(0);
            sign * (hours * 60 + minutes)
        })
        .unwrap_or(0);
    Sig {
        name,
        email,
        time,
        offset_minutes,
    }
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// A running fake Gitea. Stops (and deletes its repositories) when dropped.
pub struct FakeGitea {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for FakeGitea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGitea")
            .field("url", &self.shared.base_url)
            .field("repos_dir", &self.shared.repos_dir)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeGitea {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl FakeGitea {
    /// Starts the server on `127.0.0.1` (a free port), with an empty temporary directory of
    /// repositories. The server runs on its own thread and runtime, so it keeps answering
    /// while a test blocks (in `git clone`, say) on any runtime flavour.
    pub async fn start() -> FakeGitea {
        let dir = tempfile::Builder::new()
            .prefix("fake-gitea-")
            .tempdir()
            .expect("cannot create the fake Gitea's directory");
        let repos_dir = dir.path().join("repositories");
        let home = dir.path().join("home");
        let scratch = dir.path().join("scratch");
        for d in [&repos_dir, &home, &scratch] {
            std::fs::create_dir_all(d).expect("cannot create the fake Gitea's directories");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("cannot make the listener non-blocking");
        let addr = listener.local_addr().expect("listener has an address");
        let (up_tx, up_rx) = tokio::sync::watch::channel(true);
        let mut state = State {
            next_repo_id: 100,
            ..State::default()
        };
        state.ensure_user(BOT_LOGIN);
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            addr,
            token: hex::encode(random_bytes::<20>()),
            repos_dir,
            home,
            scratch,
            state: Mutex::new(state),
            scratch_counter: AtomicU64::new(0),
            last_commit_time: AtomicI64::new(0),
            down: AtomicBool::new(false),
            stalled: Mutex::new(HashSet::new()),
            stall_released: tokio::sync::Notify::new(),
            up_tx,
            listening: Mutex::new(true),
            listening_changed: Condvar::new(),
        });
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-gitea".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("cannot build the fake Gitea's runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("cannot register the listener");
                    let switch = SwitchListener {
                        shared: server_shared.clone(),
                        addr,
                        inner: Some(listener),
                        up: up_rx,
                    };
                    let app = axum::Router::new().fallback(move |request: Request| {
                        let shared = server_shared.clone();
                        async move { handle(shared, request).await }
                    });
                    tokio::select! {
                        result = axum::serve(switch, app).into_future() => {
                            if let Err(err) = result {
                                eprintln!("fake gitea: server stopped: {err}");
                            }
                        }
                        _ = shutdown_rx => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("cannot start the fake Gitea's thread");
        FakeGitea {
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The base URL, like `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }

    /// `<url>/api/v1`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.shared.base_url)
    }

    /// The one valid API token (40 hex characters, like Gitea's), owned by [`BOT_LOGIN`].
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The login of the token's user ([`BOT_LOGIN`]).
    pub fn bot_login(&self) -> &str {
        BOT_LOGIN
    }

    /// The directory holding the bare repositories (`<owner>/<name>.git`, lower case).
    pub fn repos_dir(&self) -> &Path {
        &self.shared.repos_dir
    }

    /// A `git` command with a clean environment (no system or user configuration, no
    /// prompts), for tests that clone or fetch as a user would.
    pub fn git_command(&self) -> Command {
        self.shared.git_command()
    }

    /// Creates a user (if new) and returns its id. Users are also created on first use as
    /// repository owners, commit authors, commenters and senders.
    pub fn create_user(&self, login: &str) -> i64 {
        self.shared.lock().ensure_user(login)
    }

    /// A user as Gitea's API and payloads show it (`login`, `username`, `id`, ...).
    pub fn user_json(&self, login: &str) -> Value {
        let state = self.shared.lock();
        View::new(&self.shared, &state).user(login)
    }

    /// A private SHA-1 repository with default branch `main` and no commits.
    pub fn create_repo(&self, owner: &str, name: &str) -> Repo {
        self.create_repo_with(owner, name, RepoOptions::default())
    }

    /// A private SHA-256 repository (`git init --object-format=sha256`).
    pub fn create_repo_sha256(&self, owner: &str, name: &str) -> Repo {
        self.create_repo_with(
            owner,
            name,
            RepoOptions {
                object_format: ObjectFormat::Sha256,
                ..RepoOptions::default()
            },
        )
    }

    /// A repository with the given options. Panics if it exists already.
    pub fn create_repo_with(&self, owner: &str, name: &str, options: RepoOptions) -> Repo {
        create_repo(&self.shared, owner, name, options, None)
    }

    /// Forks `parent` into `owner`'s namespace (same name), copying its branches and tags
    /// with `git clone --bare`, as Gitea does. The fork's JSON has `fork: true` and `parent`.
    pub fn fork_repo(&self, parent: &Repo, owner: &str) -> Repo {
        let options = {
            let state = self.shared.lock();
            let p = state.repo(parent.id);
            RepoOptions {
                private: p.private,
                object_format: p.format,
                default_branch: p.default_branch.clone(),
                description: p.description.clone(),
            }
        };
        create_repo(&self.shared, owner, &parent.name, options, Some(parent))
    }

    /// A handle on an existing repository. Panics if there is none.
    pub fn repo(&self, owner: &str, name: &str) -> Repo {
        let state = self.shared.lock();
        let rec = state
            .find_repo(owner, name)
            .unwrap_or_else(|| panic!("no repository {owner}/{name}"));
        Repo::from_rec(&self.shared, rec)
    }

    /// Deletes a repository and its directory. Pull requests whose head was in it keep
    /// their `refs/pull/<n>/head` and show `head.repo: null`, `head.repo_id: -1`.
    pub fn delete_repo(&self, repo: &Repo) {
        let path = {
            let mut state = self.shared.lock();
            let rec = state.repos.remove(&repo.id).expect("repository exists");
            rec.path
        };
        std::fs::remove_dir_all(&path).expect("cannot delete the repository");
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The REST API requests received so far (not git's), in order.
    pub fn api_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_api())
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The statuses set on a commit of `owner/name`, in the order received. `sha` may be a
    /// prefix of the commit id.
    pub fn statuses(&self, owner: &str, name: &str, sha: &str) -> Vec<Status> {
        let state = self.shared.lock();
        let Some(repo) = state.find_repo(owner, name) else {
            return Vec::new();
        };
        collect_statuses(&state, repo.id, sha)
    }

    /// The comments on issue or pull request `number` of `owner/name`, oldest first.
    pub fn comments(&self, owner: &str, name: &str, number: u64) -> Vec<Comment> {
        let state = self.shared.lock();
        let Some(repo) = state.find_repo(owner, name) else {
            return Vec::new();
        };
        collect_comments(&state, repo.id, number)
    }

    /// Makes the next `n` API calls (under `/api/v1`) answer 500 without doing anything.
    pub fn fail_api(&self, n: u32) {
        self.shared.lock().fail_next = n;
    }

    /// Takes the whole server down (`true`): the port is closed, so new connections are
    /// refused, and a request on a connection that was already open gets 503 and the
    /// connection closed. `false` listens on the same port again. Returns once the port is
    /// closed or open.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.shared.up_tx.send_replace(!down);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut listening = self
            .shared
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *listening == down {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "fake gitea: the listener did not follow set_down({down})"
            );
            listening = self
                .shared
                .listening_changed
                .wait_timeout(listening, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// An axum listener whose port can be closed and opened again ([`FakeGitea::set_down`]).
struct SwitchListener {
    shared: Arc<Shared>,
    addr: SocketAddr,
    inner: Option<tokio::net::TcpListener>,
    up: tokio::sync::watch::Receiver<bool>,
}

impl axum::serve::Listener for SwitchListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let up = *self.up.borrow_and_update();
            if !up {
                if self.inner.take().is_some() {
                    self.shared.set_listening(false);
                }
                if self.up.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            if self.inner.is_none() {
                match tokio::net::TcpListener::bind(self.addr).await {
                    Ok(listener) => {
                        self.inner = Some(listener);
                        self.shared.set_listening(true);
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            let Some(listener) = self.inner.as_ref() else {
                continue;
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => return pair,
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                },
                changed = self.up.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

fn create_repo(
    shared: &Arc<Shared>,
    owner: &str,
    name: &str,
    options: RepoOptions,
    fork_of: Option<&Repo>,
) -> Repo {
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    assert!(
        valid(owner) && valid(name),
        "invalid owner or repository name: {owner}/{name}"
    );
    assert!(
        !name.to_lowercase().ends_with(".git"),
        "a repository name cannot end in .git"
    );
    let mut state = shared.lock();
    assert!(
        state.find_repo(owner, name).is_none(),
        "repository {owner}/{name} exists already"
    );
    state.ensure_user(owner);
    state.next_repo_id += 1;
    let id = state.next_repo_id;
    let path = shared
        .repos_dir
        .join(owner.to_lowercase())
        .join(format!("{}.git", name.to_lowercase()));
    let path_text = path.display().to_string();
    match fork_of {
        None => {
            shared.git(
                &shared.repos_dir,
                &[
                    "init",
                    "--bare",
                    "--quiet",
                    &format!("--initial-branch={}", options.default_branch),
                    &format!("--object-format={}", options.object_format.name()),
                    &path_text,
                ],
            );
        }
        Some(parent) => {
            let parent_path = parent.path.display().to_string();
            shared.git(
                &shared.repos_dir,
                &["clone", "--bare", "--quiet", &parent_path, &path_text],
            );
            shared.git(&path, &["remote", "remove", "origin"]);
        }
    }
    // Gitea sets these in its git configuration.
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(path.join("config"))
        .expect("cannot open the repository's config");
    config
        .write_all(b"[uploadpack]\n\tallowfilter = true\n\tallowAnySHA1InWant = true\n")
        .expect("cannot write the repository's config");
    let now = now_secs();
    let rec = RepoRec {
        id,
        owner: owner.to_owned(),
        name: name.to_owned(),
        description: options.description,
        private: options.private,
        format: options.object_format,
        default_branch: options.default_branch,
        parent: fork_of.map(|p| p.id),
        created: now,
        updated: now,
        path,
        next_index: 1,
    };
    let repo = Repo::from_rec(shared, &rec);
    state.repos.insert(id, rec);
    repo
}

fn collect_statuses(state: &State, repo_id: i64, sha: &str) -> Vec<Status> {
    state
        .statuses
        .iter()
        .filter(|s| s.repo_id == repo_id && !sha.is_empty() && s.sha.starts_with(sha))
        .map(|s| Status {
            index: s.index,
            sha: s.sha.clone(),
            state: s.state.clone(),
            context: s.context.clone(),
            description: s.description.clone(),
            target_url: s.target_url.clone(),
            creator: s.creator.clone(),
            created_at: rfc3339(s.created, 0),
        })
        .collect()
}

fn collect_comments(state: &State, repo_id: i64, number: u64) -> Vec<Comment> {
    state
        .comments
        .iter()
        .filter(|c| c.repo_id == repo_id && c.index == number)
        .map(|c| Comment {
            id: c.id,
            issue: c.index,
            user: c.author.clone(),
            body: c.body.clone(),
            created_at: rfc3339(c.created, 0),
            updated_at: rfc3339(c.updated, 0),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------------

/// A handle on a repository of the fake: writes history with real git, manages pull
/// requests and issues, and builds the webhook deliveries Gitea would send about them.
///
/// Actions (commits, pull requests, comments, events) are done by the repository's owner
/// unless the handle comes from [`Repo::as_user`].
#[derive(Clone)]
pub struct Repo {
    shared: Arc<Shared>,
    id: i64,
    owner: String,
    name: String,
    path: PathBuf,
    format: ObjectFormat,
    actor: Option<String>,
}

impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo")
            .field("full_name", &self.full_name())
            .field("id", &self.id)
            .field("path", &self.path)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Repo {
    fn from_rec(shared: &Arc<Shared>, rec: &RepoRec) -> Repo {
        Repo {
            shared: shared.clone(),
            id: rec.id,
            owner: rec.owner.clone(),
            name: rec.name.clone(),
            path: rec.path.clone(),
            format: rec.format,
            actor: None,
        }
    }

    fn rec(&self) -> RepoRec {
        self.shared.lock().repo(self.id).clone()
    }

    /// The same repository, acted on by `login` (created if new): commits are authored and
    /// pushed by them, pull requests and comments are theirs, and they are the events'
    /// `sender`/`pusher`.
    pub fn as_user(&self, login: &str) -> Repo {
        self.shared.lock().ensure_user(login);
        Repo {
            actor: Some(login.to_owned()),
            ..self.clone()
        }
    }

    fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| self.owner.clone())
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The owner's user id.
    pub fn owner_id(&self) -> i64 {
        self.shared.lock().ensure_user(&self.owner)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The bare repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn object_format(&self) -> ObjectFormat {
        self.format
    }

    /// The all-zero id of this repository's object format (40 or 64 characters).
    pub fn zero_sha(&self) -> String {
        self.format.zero()
    }

    pub fn default_branch(&self) -> String {
        self.rec().default_branch
    }

    /// `<url>/<owner>/<name>.git`, as in the repository JSON's `clone_url`.
    pub fn clone_url(&self) -> String {
        format!("{}/{}.git", self.shared.base_url, self.full_name())
    }

    /// `<url>/<owner>/<name>`.
    pub fn html_url(&self) -> String {
        format!("{}/{}", self.shared.base_url, self.full_name())
    }

    /// The repository as `GET /repos/{owner}/{repo}` shows it to the token's user.
    pub fn json(&self) -> Value {
        let state = self.shared.lock();
        let view = View::new(&self.shared, &state);
        view.repo(
            state.repo(self.id),
            state.permission(state.repo(self.id), BOT_LOGIN),
            true,
        )
    }

    /// Stalls (`true`) or releases this repository's git service: while stalled, clones and
    /// fetches connect but get no answer.
    pub fn stall_git(&self, stalled: bool) {
        let key = self.full_name().to_lowercase();
        let mut set = self
            .shared
            .stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stalled {
            set.insert(key);
        } else {
            set.remove(&key);
            self.shared.stall_released.notify_waiters();
        }
    }

    /// Sets `login`'s permission on this repository (what the collaborator-permission
    /// endpoint answers). Lowering [`BOT_LOGIN`]'s below `write` makes status creation
    /// answer 403, and below `admin` makes permission checks of other users answer 403.
    pub fn set_permission(&self, login: &str, permission: Permission) {
        let mut state = self.shared.lock();
        state.ensure_user(login);
        state
            .permissions
            .insert((self.id, login.to_lowercase()), permission);
    }

    // ----- git -----

    /// Runs `git <args>` in the bare repository and returns its trimmed stdout. Panics
    /// with git's message when it fails.
    pub fn git(&self, args: &[&str]) -> String {
        self.shared.git(&self.path, args)
    }

    /// The commit a branch points at. Panics if the branch does not exist.
    pub fn head(&self, branch: &str) -> String {
        self.try_head(branch)
            .unwrap_or_else(|| panic!("{} has no branch {branch}", self.full_name()))
    }

    /// The commit a branch points at, if the branch exists.
    pub fn try_head(&self, branch: &str) -> Option<String> {
        self.shared
            .rev_parse(&self.path, &format!("refs/heads/{branch}"))
    }

    /// What a ref points at (`refs/pull/1/head`, `refs/tags/v1`, ...), if it exists.
    pub fn ref_target(&self, reference: &str) -> Option<String> {
        self.shared.rev_parse(&self.path, reference)
    }

    /// Starts a commit on `branch`; add changes, then [`CommitBuilder::push`]. A branch that
    /// does not exist yet starts from [`CommitBuilder::from`], else from the default branch,
    /// else (empty repository) as a root commit.
    pub fn commit(&self, branch: &str, message: &str) -> CommitBuilder<'_> {
        CommitBuilder {
            repo: self,
            branch: branch.to_owned(),
            message: message.to_owned(),
            changes: Vec::new(),
            author: None,
            from: None,
        }
    }

    /// Creates branch `name` at `from` (a branch, tag or commit) and returns its commit.
    pub fn create_branch(&self, name: &str, from: &str) -> String {
        let sha = self
            .shared
            .resolve_commit(&self.path, from)
            .unwrap_or_else(|| panic!("{from} names no commit in {}", self.full_name()));
        let zero = self.zero_sha();
        self.git(&["update-ref", &format!("refs/heads/{name}"), &sha, &zero]);
        self.shared.touch_repo(self.id);
        sha
    }

    /// Deletes a branch and returns the commit it pointed at.
    pub fn delete_branch(&self, name: &str) -> String {
        let old = self.head(name);
        self.git(&["update-ref", "-d", &format!("refs/heads/{name}"), &old]);
        old
    }

    /// Creates a lightweight tag at `target` and returns the commit it points at.
    pub fn create_tag(&self, name: &str, target: &str) -> String {
        let sha = self
            .shared
            .resolve_commit(&self.path, target)
            .unwrap_or_else(|| panic!("{target} names no commit in {}", self.full_name()));
        let zero = self.zero_sha();
        self.git(&["update-ref", &format!("refs/tags/{name}"), &sha, &zero]);
        sha
    }

    /// Creates an annotated tag at `target` and returns the tag object's id (what the ref,
    /// and so a push payload's `after`, points at).
    pub fn create_annotated_tag(&self, name: &str, target: &str, message: &str) -> String {
        let actor = self.actor();
        let email = noreply_email(&actor);
        let args = [
            "-c",
            &format!("user.name={actor}"),
            "-c",
            &format!("user.email={email}"),
            "tag",
            "-a",
            name,
            "-m",
            message,
            target,
        ];
        self.shared.git(&self.path, &args);
        self.ref_target(&format!("refs/tags/{name}"))
            .expect("tag exists")
    }

    /// Deletes a tag and returns what it pointed at.
    pub fn delete_tag(&self, name: &str) -> String {
        let reference = format!("refs/tags/{name}");
        let old = self
            .ref_target(&reference)
            .unwrap_or_else(|| panic!("{} has no tag {name}", self.full_name()));
        self.git(&["update-ref", "-d", &reference, &old]);
        old
    }

    /// Merges `from` (a branch, tag or commit) into branch `into` with a real merge commit
    /// (`git merge-tree --write-tree`, then `commit-tree` with two parents) and returns it.
    /// Panics on conflicts.
    pub fn merge(&self, into: &str, from: &str, message: &str) -> String {
        let ours = self.head(into);
        let theirs = self
            .shared
            .resolve_commit(&self.path, from)
            .unwrap_or_else(|| panic!("{from} names no commit in {}", self.full_name()));
        let tree = self.git(&[
            "merge-tree",
            "--write-tree",
            "--no-messages",
            &ours,
            &theirs,
        ]);
        let tree = tree.lines().next().unwrap_or_default().to_owned();
        let sha = self.commit_tree(&tree, &[&ours, &theirs], message, None);
        self.git(&["update-ref", &format!("refs/heads/{into}"), &sha, &ours]);
        self.shared.touch_repo(self.id);
        sha
    }

    fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
        author: Option<&(String, String)>,
    ) -> String {
        let actor = self.actor();
        let committer = (actor.clone(), noreply_email(&actor));
        let author = author.cloned().unwrap_or_else(|| committer.clone());
        let date = format!("@{} +0000", self.shared.next_commit_time());
        let name_config = format!("user.name={}", committer.0);
        let email_config = format!("user.email={}", committer.1);
        let mut args = vec!["-c", &name_config, "-c", &email_config, "commit-tree", tree];
        for parent in parents {
            args.push("-p");
            args.push(parent);
        }
        args.push("-m");
        args.push(message);
        let env = [
            ("GIT_AUTHOR_NAME", author.0),
            ("GIT_AUTHOR_EMAIL", author.1),
            ("GIT_AUTHOR_DATE", date.clone()),
            ("GIT_COMMITTER_NAME", committer.0),
            ("GIT_COMMITTER_EMAIL", committer.1),
            ("GIT_COMMITTER_DATE", date),
        ];
        self.shared.git_with(&self.path, &args, None, &env)
    }

    // ----- issues and pull requests -----

    /// Opens a plain issue and returns its number (issues and pull requests share numbers).
    pub fn create_issue(&self, title: &str, body: &str) -> u64 {
        let author = self.actor();
        let mut state = self.shared.lock();
        state.ensure_user(&author);
        let index = next_index(&mut state, self.id);
        state.next_issue_id += 1;
        let now = now_secs();
        let issue = IssueRec {
            id: state.next_issue_id,
            index,
            title: title.to_owned(),
            body: body.to_owned(),
            author,
            open: true,
            created: now,
            updated: now,
            closed: None,
            pull: None,
        };
        state.issues.insert((self.id, index), issue);
        index
    }

    /// Opens a pull request from branch `head` of this repository into `base` and returns
    /// its number. Like Gitea, writes `refs/pull/<n>/head` and records the merge base.
    pub fn open_pull(&self, head: &str, base: &str) -> u64 {
        self.open_pull_from(self, head, base)
    }

    /// Opens a pull request from branch `head` of `head_repo` (a fork, or this repository)
    /// into `base` of this one. `refs/pull/<n>/head` is fetched into this (the base)
    /// repository. Without [`Repo::as_user`], the author is the head repository's owner.
    pub fn open_pull_from(&self, head_repo: &Repo, head: &str, base: &str) -> u64 {
        let author = self
            .actor
            .clone()
            .unwrap_or_else(|| head_repo.owner.clone());
        assert!(
            self.try_head(base).is_some(),
            "{} has no base branch {base}",
            self.full_name()
        );
        assert!(
            head_repo.try_head(head).is_some(),
            "{} has no head branch {head}",
            head_repo.full_name()
        );
        let index = {
            let mut state = self.shared.lock();
            state.ensure_user(&author);
            next_index(&mut state, self.id)
        };
        let (_, merge_base) = self.update_pull_ref(index, head_repo, head, base);
        let mut state = self.shared.lock();
        state.next_issue_id += 1;
        state.next_pull_id += 1;
        let now = now_secs();
        let issue = IssueRec {
            id: state.next_issue_id,
            index,
            title: format!("Pull request from {head}"),
            body: String::new(),
            author,
            open: true,
            created: now,
            updated: now,
            closed: None,
            pull: Some(PullRec {
                id: state.next_pull_id,
                head_repo: head_repo.id,
                head_branch: head.to_owned(),
                base_branch: base.to_owned(),
                merge_base,
                merged: None,
            }),
        };
        state.issues.insert((self.id, index), issue);
        index
    }

    /// Points `refs/pull/<n>/head` at the head branch's tip and computes the merge base.
    fn update_pull_ref(
        &self,
        index: u64,
        head_repo: &Repo,
        head: &str,
        base: &str,
    ) -> (String, String) {
        let pull_ref = format!("refs/pull/{index}/head");
        if head_repo.id == self.id {
            let sha = self.head(head);
            self.git(&["update-ref", &pull_ref, &sha]);
        } else {
            let source = head_repo.path.display().to_string();
            self.git(&[
                "fetch",
                "--quiet",
                "--no-tags",
                &source,
                &format!("+refs/heads/{head}:{pull_ref}"),
            ]);
        }
        let sha = self.ref_target(&pull_ref).expect("pull ref exists");
        let merge_base = self
            .shared
            .git_opt(
                &self.path,
                &["merge-base", &format!("refs/heads/{base}"), &pull_ref],
            )
            .unwrap_or_default();
        (sha, merge_base)
    }

    fn pull_rec(&self, number: u64) -> (IssueRec, PullRec) {
        let state = self.shared.lock();
        let issue = state
            .issue(self.id, number)
            .unwrap_or_else(|| panic!("{} has no pull request {number}", self.full_name()))
            .clone();
        let pull = issue.pull.clone().unwrap_or_else(|| {
            panic!(
                "#{number} of {} is an issue, not a pull request",
                self.full_name()
            )
        });
        (issue, pull)
    }

    fn update_issue(&self, number: u64, f: impl FnOnce(&mut IssueRec)) {
        let mut state = self.shared.lock();
        let issue = state
            .issues
            .get_mut(&(self.id, number))
            .unwrap_or_else(|| panic!("{} has no issue {number}", self.full_name()));
        f(issue);
        issue.updated = now_secs();
    }

    /// Does what Gitea does after a push to a pull request's head branch, before it sends
    /// `pull_request_sync`: updates `refs/pull/<n>/head` (fetching from the fork if the head
    /// is in one) and the merge base. Returns the new head commit.
    pub fn sync_pull(&self, number: u64) -> String {
        let (_, pull) = self.pull_rec(number);
        let head_repo = {
            let state = self.shared.lock();
            state
                .repos
                .get(&pull.head_repo)
                .map(|rec| Repo::from_rec(&self.shared, rec))
                .unwrap_or_else(|| panic!("the head repository of #{number} was deleted"))
        };
        let (sha, merge_base) =
            self.update_pull_ref(number, &head_repo, &pull.head_branch, &pull.base_branch);
        self.update_issue(number, |issue| {
            if let Some(p) = issue.pull.as_mut() {
                p.merge_base = merge_base;
            }
        });
        sha
    }

    /// The commit `refs/pull/<n>/head` points at.
    pub fn pull_head(&self, number: u64) -> String {
        self.ref_target(&format!("refs/pull/{number}/head"))
            .unwrap_or_else(|| panic!("{} has no refs/pull/{number}/head", self.full_name()))
    }

    /// Sets a pull request's or issue's title and body.
    pub fn edit_issue(&self, number: u64, title: &str, body: &str) {
        self.update_issue(number, |issue| {
            issue.title = title.to_owned();
            issue.body = body.to_owned();
        });
    }

    /// Closes a pull request or issue without merging.
    pub fn close_issue(&self, number: u64) {
        self.update_issue(number, |issue| {
            issue.open = false;
            issue.closed = Some(now_secs());
        });
    }

    /// Reopens a pull request or issue.
    pub fn reopen_issue(&self, number: u64) {
        self.update_issue(number, |issue| {
            issue.open = true;
            issue.closed = None;
        });
    }

    /// Merges a pull request (a merge commit of `refs/pull/<n>/head` into the base branch,
    /// by the acting user), closes it and returns the merge commit.
    pub fn merge_pull(&self, number: u64) -> String {
        let (issue, pull) = self.pull_rec(number);
        let message = format!(
            "Merge pull request '{}' (#{number}) from {} into {}",
            issue.title, pull.head_branch, pull.base_branch
        );
        let sha = self.merge(
            &pull.base_branch,
            &format!("refs/pull/{number}/head"),
            &message,
        );
        let by = self.actor();
        self.update_issue(number, |issue| {
            let now = now_secs();
            issue.open = false;
            issue.closed = Some(now);
            if let Some(p) = issue.pull.as_mut() {
                p.merged = Some(MergeRec {
                    at: now,
                    sha: sha.clone(),
                    by,
                });
            }
        });
        sha
    }

    /// Changes a pull request's base branch and returns the old one (for
    /// [`PullAction::Edited`]'s `base_from`).
    pub fn change_pull_base(&self, number: u64, new_base: &str) -> String {
        let (_, pull) = self.pull_rec(number);
        assert!(self.try_head(new_base).is_some(), "no branch {new_base}");
        let merge_base = self
            .shared
            .git_opt(
                &self.path,
                &[
                    "merge-base",
                    &format!("refs/heads/{new_base}"),
                    &format!("refs/pull/{number}/head"),
                ],
            )
            .unwrap_or_default();
        self.update_issue(number, |issue| {
            if let Some(p) = issue.pull.as_mut() {
                p.base_branch = new_base.to_owned();
                p.merge_base = merge_base;
            }
        });
        pull.base_branch
    }

    /// The statuses set on a commit of this repository, in the order received.
    pub fn statuses(&self, sha: &str) -> Vec<Status> {
        collect_statuses(&self.shared.lock(), self.id, sha)
    }

    /// The comments on issue or pull request `number`, oldest first.
    pub fn comments(&self, number: u64) -> Vec<Comment> {
        collect_comments(&self.shared.lock(), self.id, number)
    }
}

fn next_index(state: &mut State, repo_id: i64) -> u64 {
    let repo = state
        .repos
        .get_mut(&repo_id)
        .unwrap_or_else(|| panic!("repository {repo_id} was deleted"));
    let index = repo.next_index;
    repo.next_index += 1;
    index
}

fn noreply_email(login: &str) -> String {
    format!("{}@{NOREPLY_DOMAIN}", login.to_lowercase())
}

/// Path and new contents with their git mode (`100644`, `100755`, `120000` for a link).
type FileChange = (String, Option<(Vec<u8>, &'static str)>);

/// A commit being prepared by [`Repo::commit`].
#[derive(Debug)]
pub struct CommitBuilder<'a> {
    repo: &'a Repo,
    branch: String,
    message: String,
    /// Path and new contents (with the executable bit), or `None` to delete.
    changes: Vec<FileChange>,
    author: Option<(String, String)>,
    from: Option<String>,
}

impl CommitBuilder<'_> {
    /// Adds or replaces a text file.
    pub fn write(self, path: &str, contents: &str) -> Self {
        self.write_bytes(path, contents.as_bytes())
    }

    /// Adds or replaces a file with any bytes.
    pub fn write_bytes(mut self, path: &str, contents: &[u8]) -> Self {
        self.changes
            .push((path.to_owned(), Some((contents.to_vec(), "100644"))));
        self
    }

    /// Adds or replaces an executable file (mode 100755).
    pub fn write_executable(mut self, path: &str, contents: &str) -> Self {
        self.changes.push((
            path.to_owned(),
            Some((contents.as_bytes().to_vec(), "100755")),
        ));
        self
    }

    /// Adds or replaces a symbolic link (mode 120000) to `target`, which may point anywhere.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.changes.push((
            path.to_owned(),
            Some((target.as_bytes().to_vec(), "120000")),
        ));
        self
    }

    /// Deletes a file.
    pub fn delete(mut self, path: &str) -> Self {
        self.changes.push((path.to_owned(), None));
        self
    }

    /// Authored by Gitea user `login` (email `<login>@noreply.localhost`, which Gitea maps
    /// back to the user: the payload's `author.username`). The committer stays the actor.
    pub fn author(mut self, login: &str) -> Self {
        self.repo.shared.lock().ensure_user(login);
        self.author = Some((login.to_owned(), noreply_email(login)));
        self
    }

    /// Authored by someone who is not a Gitea user (`author.username` is `""`).
    pub fn author_ident(mut self, name: &str, email: &str) -> Self {
        self.author = Some((name.to_owned(), email.to_owned()));
        self
    }

    /// Where a new branch starts (a branch, tag or commit).
    pub fn from(mut self, start: &str) -> Self {
        self.from = Some(start.to_owned());
        self
    }

    /// Writes the commit with git plumbing in the bare repository (a temporary index,
    /// `hash-object`, `update-index`, `write-tree`, `commit-tree`) and moves the branch to
    /// it with a compare-and-swap `update-ref`, as a push would. Returns the new commit.
    pub fn push(self) -> String {
        let repo = self.repo;
        let shared = &repo.shared;
        let branch_ref = format!("refs/heads/{}", self.branch);
        let old = shared.rev_parse(&repo.path, &branch_ref);
        let parent = match (&old, &self.from) {
            (Some(tip), _) => Some(tip.clone()),
            (None, Some(from)) => Some(
                shared
                    .resolve_commit(&repo.path, from)
                    .unwrap_or_else(|| panic!("{from} names no commit in {}", repo.full_name())),
            ),
            (None, None) => repo.try_head(&repo.default_branch()),
        };
        let index = shared.scratch_file("index");
        let env = [("GIT_INDEX_FILE", index.display().to_string())];
        match &parent {
            Some(parent) => shared.git_with(&repo.path, &["read-tree", parent], None, &env),
            None => shared.git_with(&repo.path, &["read-tree", "--empty"], None, &env),
        };
        let mut lines = String::new();
        for (path, change) in &self.changes {
            match change {
                Some((contents, mode)) => {
                    let blob = shared.git_with(
                        &repo.path,
                        &["hash-object", "-w", "--stdin"],
                        Some(contents),
                        &[],
                    );
                    lines.push_str(&format!("{mode} {blob}\t{path}\n"));
                }
                None => lines.push_str(&format!("0 {}\t{path}\n", repo.zero_sha())),
            }
        }
        if !lines.is_empty() {
            shared.git_with(
                &repo.path,
                &["update-index", "--index-info"],
                Some(lines.as_bytes()),
                &env,
            );
        }
        let tree = shared.git_with(&repo.path, &["write-tree"], None, &env);
        let _ = std::fs::remove_file(&index);
        let parents: Vec<&str> = parent.iter().map(String::as_str).collect();
        let sha = repo.commit_tree(&tree, &parents, &self.message, self.author.as_ref());
        let expected_old = old.unwrap_or_else(|| repo.zero_sha());
        repo.git(&["update-ref", &branch_ref, &sha, &expected_old]);
        shared.touch_repo(repo.id);
        sha
    }
}

// ---------------------------------------------------------------------------------------
// JSON as Gitea shows it
// ---------------------------------------------------------------------------------------

/// Builds Gitea's JSON objects from the state (held locked by the caller).
struct View<'a> {
    sh: &'a Shared,
    st: &'a State,
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl<'a> View<'a> {
    fn new(sh: &'a Shared, st: &'a State) -> Self {
        View { sh, st }
    }

    fn user(&self, login: &str) -> Value {
        match self.st.user(login) {
            Some(user) => self.user_rec(user),
            None => self.user_rec(&UserRec {
                id: -1,
                login: "Ghost".to_owned(),
                created: 0,
                is_admin: false,
            }),
        }
    }

    fn user_rec(&self, u: &UserRec) -> Value {
        let base = &self.sh.base_url;
        let lower = u.login.to_lowercase();
        let avatar = hex::encode(Sha256::digest(lower.as_bytes()));
        json!({
            "id": u.id,
            "login": u.login,
            "login_name": "",
            "source_id": 0,
            "full_name": "",
            "email": noreply_email(&u.login),
            "avatar_url": format!("{base}/avatars/{}", &avatar[..32]),
            "html_url": format!("{base}/{}", u.login),
            "language": "",
            "is_admin": u.is_admin,
            "last_login": ZERO_TIME,
            "created": rfc3339(u.created, 0),
            "restricted": false,
            "active": false,
            "prohibit_login": false,
            "location": "",
            "website": "",
            "description": "",
            "visibility": "public",
            "followers_count": 0,
            "following_count": 0,
            "starred_repos_count": 0,
            "username": u.login,
        })
    }

    fn login_for_email(&self, email: &str) -> String {
        email
            .strip_suffix(&format!("@{NOREPLY_DOMAIN}"))
            .and_then(|login| self.st.user(login))
            .map(|u| u.login.clone())
            .unwrap_or_default()
    }

    fn repo(&self, r: &RepoRec, perm: Permission, with_parent: bool) -> Value {
        let base = &self.sh.base_url;
        let full = r.full_name();
        let html = format!("{base}/{full}");
        let api = format!("{base}/api/v1/repos/{full}");
        let empty = self
            .sh
            .git_opt(
                &r.path,
                &[
                    "for-each-ref",
                    "--count=1",
                    "--format=%(refname)",
                    "refs/heads",
                ],
            )
            .is_none_or(|refs| refs.is_empty());
        let forks = self
            .st
            .repos
            .values()
            .filter(|x| x.parent == Some(r.id))
            .count();
        let (mut open_issues, mut open_pulls) = (0, 0);
        for ((repo_id, _), issue) in &self.st.issues {
            if *repo_id == r.id && issue.open {
                if issue.pull.is_some() {
                    open_pulls += 1;
                } else {
                    open_issues += 1;
                }
            }
        }
        let mut map = obj(json!({
            "id": r.id,
            "owner": self.user(&r.owner),
            "name": r.name,
            "full_name": full,
            "description": r.description,
            "empty": empty,
            "private": r.private,
            "fork": r.parent.is_some(),
            "template": false,
        }));
        if with_parent && let Some(parent) = r.parent.and_then(|id| self.st.repos.get(&id)) {
            map.insert("parent".to_owned(), self.repo(parent, perm, false));
        }
        map.extend(obj(json!({
            "mirror": false,
            "size": 0,
            "language": "",
            "languages_url": format!("{api}/languages"),
            "html_url": html,
            "url": api,
            "link": "",
            "ssh_url": format!("git@{}:{full}.git", self.sh.host()),
            "clone_url": format!("{html}.git"),
            "original_url": "",
            "website": "",
            "stars_count": 0,
            "forks_count": forks,
            "watchers_count": 0,
            "open_issues_count": open_issues,
            "open_pr_counter": open_pulls,
            "release_counter": 0,
            "default_branch": r.default_branch,
            "archived": false,
            "created_at": rfc3339(r.created, 0),
            "updated_at": rfc3339(r.updated, 0),
            "archived_at": "1970-01-01T00:00:00Z",
        })));
        map.extend(obj(json!({
            "permissions": {
                "admin": perm >= Permission::Admin,
                "push": perm >= Permission::Write,
                "pull": perm >= Permission::Read,
            },
            "has_issues": true,
            "internal_tracker": {
                "enable_time_tracker": true,
                "allow_only_contributors_to_track_time": true,
                "enable_issue_dependencies": true,
            },
            "has_wiki": true,
            "has_pull_requests": true,
            "has_projects": true,
            "projects_mode": "all",
            "has_releases": true,
            "has_packages": true,
            "has_actions": true,
            "ignore_whitespace_conflicts": false,
        })));
        map.extend(obj(json!({
            "allow_merge_commits": true,
            "allow_rebase": true,
            "allow_rebase_explicit": true,
            "allow_squash_merge": true,
            "allow_fast_forward_only_merge": true,
            "allow_rebase_update": true,
            "allow_manual_merge": false,
            "autodetect_manual_merge": false,
            "default_delete_branch_after_merge": false,
            "default_merge_style": "merge",
            "default_allow_maintainer_edit": false,
            "avatar_url": "",
            "internal": false,
            "mirror_interval": "",
            "object_format_name": r.format.name(),
            "mirror_updated": ZERO_TIME,
            "topics": [],
            "licenses": [],
        })));
        Value::Object(map)
    }

    /// A `PayloadCommit`; `files` are the per-commit file lists of push payloads.
    fn payload_commit(
        &self,
        r: &RepoRec,
        info: &CommitInfo,
        files: Option<&FileStatus>,
        verification: bool,
    ) -> Value {
        let html = format!("{}/{}", self.sh.base_url, r.full_name());
        let person = |sig: &Sig| {
            json!({
                "name": sig.name,
                "email": sig.email,
                "username": self.login_for_email(&sig.email),
            })
        };
        let list =
            |pick: fn(&FileStatus) -> &Vec<String>| files.map_or(Value::Null, |f| json!(pick(f)));
        json!({
            "id": info.sha,
            "message": info.message,
            "url": format!("{html}/commit/{}", info.sha),
            "author": person(&info.author),
            "committer": person(&info.committer),
            "verification": if verification {
                json!({
                    "verified": false,
                    "reason": "gpg.error.not_signed_commit",
                    "signature": "",
                    "signer": null,
                    "payload": "",
                })
            } else {
                Value::Null
            },
            "timestamp": rfc3339(info.author.time, info.author.offset_minutes),
            "added": list(|f| &f.added),
            "removed": list(|f| &f.removed),
            "modified": list(|f| &f.modified),
        })
    }

    fn push_commit(&self, r: &RepoRec, sha: &str) -> Value {
        let info = self.sh.commit_info(&r.path, sha);
        let files = self.sh.file_status(&r.path, sha);
        self.payload_commit(r, &info, Some(&files), false)
    }

    fn branch(&self, r: &RepoRec, name: &str, sha: &str, perm: Permission) -> Value {
        let info = self.sh.commit_info(&r.path, sha);
        json!({
            "name": name,
            "commit": self.payload_commit(r, &info, None, true),
            "protected": false,
            "required_approvals": 0,
            "enable_status_check": false,
            "status_check_contexts": null,
            "user_can_push": perm >= Permission::Write,
            "user_can_merge": perm >= Permission::Write,
            "effective_branch_protection_name": "",
        })
    }

    fn issue_html(&self, r: &RepoRec, issue: &IssueRec) -> String {
        let kind = if issue.pull.is_some() {
            "pulls"
        } else {
            "issues"
        };
        format!(
            "{}/{}/{kind}/{}",
            self.sh.base_url,
            r.full_name(),
            issue.index
        )
    }

    fn issue(&self, r: &RepoRec, issue: &IssueRec) -> Value {
        let html = self.issue_html(r, issue);
        let pull = issue.pull.as_ref().map_or(Value::Null, |p| {
            json!({
                "merged": p.merged.is_some(),
                "merged_at": p.merged.as_ref().map(|m| rfc3339(m.at, 0)),
                "draft": is_draft(&issue.title),
                "html_url": html,
            })
        });
        json!({
            "id": issue.id,
            "url": format!("{}/api/v1/repos/{}/issues/{}", self.sh.base_url, r.full_name(), issue.index),
            "html_url": html,
            "number": issue.index,
            "user": self.user(&issue.author),
            "original_author": "",
            "original_author_id": 0,
            "title": issue.title,
            "body": issue.body,
            "ref": "",
            "assets": [],
            "labels": [],
            "milestone": null,
            "assignee": null,
            "assignees": null,
            "state": if issue.open { "open" } else { "closed" },
            "is_locked": false,
            "comments": self.st.comment_count(r.id, issue.index),
            "created_at": rfc3339(issue.created, 0),
            "updated_at": rfc3339(issue.updated, 0),
            "closed_at": issue.closed.map(|t| rfc3339(t, 0)),
            "due_date": null,
            "time_estimate": 0,
            "pull_request": pull,
            "repository": {
                "id": r.id,
                "name": r.name,
                "owner": r.owner,
                "full_name": r.full_name(),
            },
            "pin_order": 0,
        })
    }

    /// `ToAPIPullRequest`, with `perm` the viewer's permission (owner in webhooks).
    fn pull(&self, r: &RepoRec, issue: &IssueRec, perm: Permission) -> Value {
        let Some(pull) = issue.pull.as_ref() else {
            return Value::Null;
        };
        let html = self.issue_html(r, issue);
        let pull_ref = format!("refs/pull/{}/head", issue.index);
        let base_sha = self
            .sh
            .rev_parse(&r.path, &format!("refs/heads/{}", pull.base_branch))
            .unwrap_or_default();
        let pull_ref_sha = self.sh.rev_parse(&r.path, &pull_ref).unwrap_or_default();
        let (head_ref, head_sha, head_repo_id, head_repo) = match self.st.repos.get(&pull.head_repo)
        {
            Some(head_repo) => {
                let tip = self
                    .sh
                    .rev_parse(&head_repo.path, &format!("refs/heads/{}", pull.head_branch));
                let json = self.repo(head_repo, perm, true);
                match tip {
                    Some(tip) => (pull.head_branch.clone(), tip, head_repo.id, json),
                    None => (pull_ref.clone(), pull_ref_sha, head_repo.id, json),
                }
            }
            None => (pull_ref.clone(), pull_ref_sha, -1, Value::Null),
        };
        let merged = pull.merged.as_ref();
        json!({
            "id": pull.id,
            "url": html,
            "number": issue.index,
            "user": self.user(&issue.author),
            "title": issue.title,
            "body": issue.body,
            "labels": [],
            "milestone": null,
            "assignee": null,
            "assignees": null,
            "requested_reviewers": null,
            "requested_reviewers_teams": null,
            "state": if issue.open { "open" } else { "closed" },
            "draft": is_draft(&issue.title),
            "is_locked": false,
            "comments": self.st.comment_count(r.id, issue.index),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "mergeable": issue.open && merged.is_none(),
            "merged": merged.is_some(),
            "merged_at": merged.map(|m| rfc3339(m.at, 0)),
            "merge_commit_sha": merged.map(|m| m.sha.clone()),
            "merged_by": merged.map(|m| self.user(&m.by)),
            "allow_maintainer_edit": false,
            "base": {
                "label": pull.base_branch,
                "ref": pull.base_branch,
                "sha": base_sha,
                "repo_id": r.id,
                "repo": self.repo(r, perm, true),
            },
            "head": {
                "label": pull.head_branch,
                "ref": head_ref,
                "sha": head_sha,
                "repo_id": head_repo_id,
                "repo": head_repo,
            },
            "merge_base": pull.merge_base,
            "due_date": null,
            "created_at": rfc3339(issue.created, 0),
            "updated_at": rfc3339(issue.updated, 0),
            "closed_at": issue.closed.map(|t| rfc3339(t, 0)),
            "pin_order": 0,
        })
    }

    fn comment(&self, r: &RepoRec, c: &CommentRec) -> Value {
        let (html, is_pull) = match self.st.issue(r.id, c.index) {
            Some(issue) => (self.issue_html(r, issue), issue.pull.is_some()),
            None => (String::new(), false),
        };
        json!({
            "id": c.id,
            "html_url": format!("{html}#issuecomment-{}", c.id),
            "pull_request_url": if is_pull { html.as_str() } else { "" },
            "issue_url": if is_pull { "" } else { html.as_str() },
            "user": self.user(&c.author),
            "original_author": "",
            "original_author_id": 0,
            "body": c.body,
            "assets": [],
            "created_at": rfc3339(c.created, 0),
            "updated_at": rfc3339(c.updated, 0),
        })
    }

    fn status(&self, r: &RepoRec, s: &StatusRec) -> Value {
        json!({
            "id": s.index,
            "status": s.state,
            "target_url": s.target_url,
            "description": s.description,
            "url": format!("{}/api/v1/repos/{}/statuses/{}", self.sh.base_url, r.full_name(), s.sha),
            "context": s.context,
            "creator": self.user(&s.creator),
            "created_at": rfc3339(s.created, 0),
            "updated_at": rfc3339(s.created, 0),
        })
    }
}

fn is_draft(title: &str) -> bool {
    let upper = title.to_uppercase();
    upper.starts_with("WIP:") || upper.starts_with("[WIP]")
}

// ---------------------------------------------------------------------------------------
// Webhook payloads
// ---------------------------------------------------------------------------------------

impl Repo {
    /// Runs `f` with a JSON view of the state and this repository's record.
    fn with_view<T>(&self, f: impl FnOnce(&View<'_>, &RepoRec) -> T) -> T {
        let state = self.shared.lock();
        let view = View::new(&self.shared, &state);
        f(&view, state.repo(self.id))
    }

    fn compare_url(&self, before: &str, after: &str) -> String {
        format!(
            "{}/{}/compare/{before}...{after}",
            self.shared.base_url,
            self.full_name()
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn push_payload(
        &self,
        reference: &str,
        before: &str,
        after: &str,
        commits: &[String],
        head: Option<&str>,
        compare_url: String,
        perm: Permission,
    ) -> Value {
        let pusher = self.actor();
        self.with_view(|view, r| {
            let listed: Vec<Value> = commits
                .iter()
                .take(FEED_MAX_COMMIT_NUM)
                .map(|sha| view.push_commit(r, sha))
                .collect();
            let head_commit = head.map_or(Value::Null, |sha| view.push_commit(r, sha));
            json!({
                "ref": reference,
                "before": before,
                "after": after,
                "compare_url": compare_url,
                "commits": listed,
                "total_commits": commits.len(),
                "head_commit": head_commit,
                "repository": view.repo(r, perm, true),
                "pusher": view.user(&pusher),
                "sender": view.user(&pusher),
            })
        })
    }

    fn rev_list(&self, args: &[&str]) -> Vec<String> {
        let mut full = vec!["rev-list"];
        full.extend_from_slice(args);
        self.git(&full).lines().map(str::to_owned).collect()
    }

    /// `push` for new commits on an existing branch: `commits` is `git rev-list
    /// before..after`, newest first, at most 5, with `total_commits` counting all of them;
    /// each commit's `added`/`removed`/`modified` come from Gitea's
    /// `git log --name-status -m --first-parent --no-renames`. A `before` of all zeros
    /// gives [`Repo::new_branch_event`]'s payload.
    pub fn push_event(&self, branch: &str, before: &str, after: &str) -> Delivery {
        let zero = self.zero_sha();
        assert!(
            after != zero,
            "Gitea sends no push event for a branch deletion, only `delete` (use delete_event)"
        );
        if before == zero {
            return self.new_branch_push(branch, after);
        }
        let commits = self.rev_list(&[&format!("{before}..{after}")]);
        let payload = self.push_payload(
            &format!("refs/heads/{branch}"),
            before,
            after,
            &commits,
            Some(after),
            self.compare_url(before, after),
            Permission::Owner,
        );
        Delivery::new("push", &payload)
    }

    /// `push` for a new branch at its current tip: `before` is all zeros and `commits` is
    /// the last up to 10 commits of its history (not "the new commits"), at most 5 listed.
    pub fn new_branch_event(&self, branch: &str) -> Delivery {
        let after = self.head(branch);
        self.new_branch_push(branch, &after)
    }

    fn new_branch_push(&self, branch: &str, after: &str) -> Delivery {
        let zero = self.zero_sha();
        let commits = self.rev_list(&[&format!("--max-count={NEW_BRANCH_COMMITS}"), after]);
        // getCompareURL: the first parent of the oldest listed commit, else the default
        // branch, else nothing.
        let mut old = commits
            .last()
            .and_then(|oldest| self.shared.rev_parse(&self.path, &format!("{oldest}^1")))
            .unwrap_or_else(|| zero.clone());
        let default_branch = self.default_branch();
        if old == zero && default_branch != branch {
            old = default_branch;
        }
        let compare = if old == zero {
            format!("{}/", self.shared.base_url)
        } else {
            self.compare_url(&old, after)
        };
        let payload = self.push_payload(
            &format!("refs/heads/{branch}"),
            &zero,
            after,
            &commits,
            Some(after),
            compare,
            Permission::Owner,
        );
        Delivery::new("push", &payload)
    }

    /// `push` for a new tag: `before` is all zeros, `commits` is `[]`, `head_commit` is the
    /// tagged commit and `after` what the tag ref points at (a tag object if annotated).
    pub fn new_tag_event(&self, tag: &str) -> Delivery {
        let zero = self.zero_sha();
        let after = self
            .ref_target(&format!("refs/tags/{tag}"))
            .unwrap_or_else(|| panic!("{} has no tag {tag}", self.full_name()));
        let commit = self
            .shared
            .resolve_commit(&self.path, &after)
            .expect("a tag points at a commit");
        let payload = self.push_payload(
            &format!("refs/tags/{tag}"),
            &zero,
            &after,
            &[],
            Some(&commit),
            self.compare_url(&zero, &after),
            Permission::Owner,
        );
        Delivery::new("push", &payload)
    }

    /// `push` for a deleted tag: `after` is all zeros, `commits` is `[]`, `head_commit` null.
    /// `old` is what the tag pointed at ([`Repo::delete_tag`] returns it).
    pub fn tag_deleted_event(&self, tag: &str, old: &str) -> Delivery {
        let zero = self.zero_sha();
        let payload = self.push_payload(
            &format!("refs/tags/{tag}"),
            old,
            &zero,
            &[],
            None,
            format!("{}/", self.shared.base_url),
            Permission::Owner,
        );
        Delivery::new("push", &payload)
    }

    /// The web UI's "Test Delivery" (1.24+): a `push` to the default branch with
    /// `before == after ==` the all-zero id and one fake commit, "This is a fake commit",
    /// by the Ghost user; `pusher`/`sender` are whoever clicked.
    pub fn test_delivery(&self) -> Delivery {
        let zero = self.zero_sha();
        let clicker = self.actor();
        let payload = self.with_view(|view, r| {
            let html = format!("{}/{}", self.shared.base_url, r.full_name());
            let ghost = json!({"name": "Ghost", "email": "", "username": ""});
            let commit = json!({
                "id": zero,
                "message": "This is a fake commit",
                "url": format!("{html}/commit/{zero}"),
                "author": ghost,
                "committer": ghost,
                "verification": null,
                "timestamp": ZERO_TIME,
                "added": null,
                "removed": null,
                "modified": null,
            });
            json!({
                "ref": format!("refs/heads/{}", r.default_branch),
                "before": zero,
                "after": zero,
                "compare_url": self.compare_url(&zero, &zero),
                "commits": [commit],
                "total_commits": 1,
                "head_commit": commit,
                "repository": view.repo(r, Permission::None, true),
                "pusher": view.user(&clicker),
                "sender": view.user(&clicker),
            })
        });
        Delivery::new("push", &payload)
    }

    /// `create` for a branch or tag (sent along with the `push`): `ref` is the short name.
    pub fn create_event(&self, kind: RefKind, name: &str) -> Delivery {
        let prefix = match kind {
            RefKind::Branch => "refs/heads/",
            RefKind::Tag => "refs/tags/",
        };
        let sha = self
            .ref_target(&format!("{prefix}{name}"))
            .unwrap_or_else(|| panic!("{} has no {} {name}", self.full_name(), kind.name()));
        let sender = self.actor();
        let payload = self.with_view(|view, r| {
            json!({
                "sha": sha,
                "ref": name,
                "ref_type": kind.name(),
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&sender),
            })
        });
        Delivery::new("create", &payload)
    }

    /// `delete` for a branch or tag: short `ref`, no sha. (A deleted branch gets no `push`.)
    pub fn delete_event(&self, kind: RefKind, name: &str) -> Delivery {
        let sender = self.actor();
        let payload = self.with_view(|view, r| {
            json!({
                "ref": name,
                "ref_type": kind.name(),
                "pusher_type": "user",
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&sender),
            })
        });
        Delivery::new("delete", &payload)
    }

    /// A `pull_request` event about pull request `number` as it is now (open, closed,
    /// merged...): make the change first ([`Repo::sync_pull`], [`Repo::close_issue`],
    /// [`Repo::merge_pull`], [`Repo::change_pull_base`]), then build the event. The sender
    /// is the acting user, by default the pull request's author.
    pub fn pull_request_event(&self, number: u64, action: PullAction) -> Delivery {
        let event_type = match action {
            PullAction::Synchronized => "pull_request_sync",
            _ => "pull_request",
        };
        let payload = self.with_view(|view, r| {
            let issue = view
                .st
                .issue(r.id, number)
                .filter(|i| i.pull.is_some())
                .unwrap_or_else(|| panic!("{} has no pull request {number}", r.full_name()));
            let sender = self.actor.clone().unwrap_or_else(|| issue.author.clone());
            let mut map = obj(json!({"action": action.action(), "number": number}));
            if let PullAction::Edited {
                base_from,
                title_from,
                body_from,
            } = &action
            {
                let mut changes = Map::new();
                for (key, from) in [
                    ("title", title_from),
                    ("body", body_from),
                    ("ref", base_from),
                ] {
                    if let Some(from) = from {
                        changes.insert(key.to_owned(), json!({"from": from}));
                    }
                }
                map.insert("changes".to_owned(), Value::Object(changes));
            }
            map.extend(obj(json!({
                "pull_request": view.pull(r, issue, Permission::Owner),
                "requested_reviewer": null,
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&sender),
                "commit_id": "",
                "review": null,
            })));
            Value::Object(map)
        });
        Delivery::new(event_type, &payload)
    }

    /// The acting user comments `body` on issue or pull request `number` (stored, as if
    /// written in the web UI) and this is Gitea's event about it: `X-Gitea-Event:
    /// issue_comment`, event type `pull_request_comment` with `is_pull: true` and the
    /// `pull_request` object on a pull request, `issue_comment` on an issue.
    pub fn comment_event(&self, number: u64, body: &str) -> Delivery {
        let author = self.actor();
        let id = {
            let mut state = self.shared.lock();
            assert!(
                state.issue(self.id, number).is_some(),
                "{} has no issue or pull request {number}",
                self.full_name()
            );
            state.ensure_user(&author);
            add_comment(&mut state, self.id, number, &author, body)
        };
        self.comment_payload(id, "created", None)
    }

    /// The acting user edits comment `id`; Gitea's `edited` event with `changes.body.from`.
    pub fn comment_edited_event(&self, id: i64, body: &str) -> Delivery {
        let old = {
            let mut state = self.shared.lock();
            let comment = state
                .comments
                .iter_mut()
                .find(|c| c.id == id && c.repo_id == self.id)
                .unwrap_or_else(|| panic!("no comment {id}"));
            let old = std::mem::replace(&mut comment.body, body.to_owned());
            comment.updated = now_secs();
            old
        };
        self.comment_payload(id, "edited", Some(old))
    }

    fn comment_payload(&self, id: i64, action: &str, old_body: Option<String>) -> Delivery {
        let mut event_type = "issue_comment";
        let payload = self.with_view(|view, r| {
            let comment = view
                .st
                .comments
                .iter()
                .find(|c| c.id == id)
                .expect("comment exists");
            let issue = view.st.issue(r.id, comment.index).expect("issue exists");
            let sender = self.actor.clone().unwrap_or_else(|| comment.author.clone());
            let mut map = obj(json!({"action": action, "issue": view.issue(r, issue)}));
            if issue.pull.is_some() {
                event_type = "pull_request_comment";
                map.insert(
                    "pull_request".to_owned(),
                    view.pull(r, issue, Permission::Owner),
                );
            }
            map.insert("comment".to_owned(), view.comment(r, comment));
            if let Some(from) = old_body {
                map.insert("changes".to_owned(), json!({"body": {"from": from}}));
            }
            map.extend(obj(json!({
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&sender),
                "is_pull": issue.pull.is_some(),
            })));
            Value::Object(map)
        });
        Delivery::new(event_type, &payload)
    }

    /// `issues` with action `opened` about issue `number` (an event Pipewright ignores).
    pub fn issue_event(&self, number: u64) -> Delivery {
        let sender = self.actor();
        let payload = self.with_view(|view, r| {
            let issue = view.st.issue(r.id, number).expect("issue exists");
            json!({
                "action": "opened",
                "number": number,
                "issue": view.issue(r, issue),
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&sender),
                "commit_id": "",
            })
        });
        Delivery::new("issues", &payload)
    }

    /// `release` with action `published` for `tag` (an event Pipewright ignores).
    pub fn release_event(&self, tag: &str) -> Delivery {
        let sender = self.actor();
        let payload = self.with_view(|view, r| {
            let html = format!("{}/{}", self.shared.base_url, r.full_name());
            let api = format!("{}/api/v1/repos/{}", self.shared.base_url, r.full_name());
            let now = rfc3339(now_secs(), 0);
            json!({
                "action": "published",
                "release": {
                    "id": 1,
                    "tag_name": tag,
                    "target_commitish": r.default_branch,
                    "name": tag,
                    "body": "",
                    "url": format!("{api}/releases/1"),
                    "html_url": format!("{html}/releases/tag/{tag}"),
                    "tarball_url": format!("{html}/archive/{tag}.tar.gz"),
                    "zipball_url": format!("{html}/archive/{tag}.zip"),
                    "upload_url": format!("{api}/releases/1/assets"),
                    "draft": false,
                    "prerelease": false,
                    "created_at": now,
                    "published_at": now,
                    "author": view.user(&sender),
                    "assets": [],
                },
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&sender),
            })
        });
        Delivery::new("release", &payload)
    }

    /// `status` (1.23+), as Gitea sends for every status set, Pipewright's own included.
    /// Built from the latest status stored on `sha` (set through the API), or from the
    /// given values by [`BOT_LOGIN`] when there is none.
    pub fn status_event(&self, sha: &str, state: &str, context: &str) -> Delivery {
        let full = self
            .shared
            .resolve_commit(&self.path, sha)
            .unwrap_or_else(|| panic!("{sha} names no commit"));
        let payload = self.with_view(|view, r| {
            let stored = view
                .st
                .statuses
                .iter()
                .rev()
                .find(|s| {
                    s.repo_id == r.id && s.sha == full && s.context == context && s.state == state
                })
                .cloned();
            let status = stored.unwrap_or_else(|| StatusRec {
                id: view.st.next_status_id + 1,
                repo_id: r.id,
                sha: full.clone(),
                index: 1,
                state: state.to_owned(),
                target_url: String::new(),
                description: String::new(),
                context: context.to_owned(),
                creator: BOT_LOGIN.to_owned(),
                created: now_secs(),
            });
            let info = self.shared.commit_info(&r.path, &full);
            json!({
                "commit": view.payload_commit(r, &info, None, false),
                "context": status.context,
                "created_at": rfc3339(status.created, 0),
                "description": status.description,
                "id": status.id,
                "repository": view.repo(r, Permission::Owner, true),
                "sender": view.user(&status.creator),
                "sha": full,
                "state": status.state,
                "target_url": status.target_url,
                "updated_at": rfc3339(status.created, 0),
            })
        });
        Delivery::new("status", &payload)
    }
}

fn add_comment(state: &mut State, repo_id: i64, number: u64, author: &str, body: &str) -> i64 {
    state.next_comment_id += 1;
    let id = state.next_comment_id;
    let now = now_secs();
    state.comments.push(CommentRec {
        id,
        repo_id,
        index: number,
        author: author.to_owned(),
        body: body.to_owned(),
        created: now,
        updated: now,
    });
    if let Some(issue) = state.issues.get_mut(&(repo_id, number)) {
        issue.updated = now;
    }
    id
}

/// The coarse `X-Gitea-Event` for a fine-grained `X-Gitea-Event-Type` (gitea-facts §2).
pub fn event_for_type(event_type: &str) -> &str {
    match event_type {
        "issue_assign" | "issue_label" | "issue_milestone" => "issues",
        "pull_request_assign"
        | "pull_request_label"
        | "pull_request_milestone"
        | "pull_request_sync"
        | "pull_request_review_request" => "pull_request",
        "pull_request_comment" => "issue_comment",
        "pull_request_review_approved" => "pull_request_approved",
        "pull_request_review_rejected" => "pull_request_rejected",
        "pull_request_review_comment" => "pull_request_comment",
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Deliveries
// ---------------------------------------------------------------------------------------

/// A webhook delivery: the exact body (Go's `MarshalIndent` with two spaces, HTML
/// characters escaped like Go's encoder) and the delivery id (a fresh UUID v4).
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `X-Gitea-Event`, e.g. `issue_comment`.
    pub event: String,
    /// `X-Gitea-Event-Type`, e.g. `pull_request_comment`.
    pub event_type: String,
    pub body: Vec<u8>,
    /// `X-Gitea-Delivery`.
    pub id: String,
}

/// How [`Delivery::deliver_with`] signs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureMode {
    /// Gitea's headers with the HMACs keyed by the secret; an empty secret gives Gitea's
    /// unsigned headers (`""`, `sha1=`, `sha256=`).
    #[default]
    Correct,
    /// HMACs keyed by another secret.
    Wrong,
    /// The headers present but empty, as Gitea sends them when the hook has no secret.
    Empty,
    /// No signature headers at all.
    Missing,
}

/// The webhook's content type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentType {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`, body `payload=<urlencoded JSON>`; the signature
    /// still covers the JSON.
    Form,
}

/// Options for [`Delivery::deliver_with`].
#[derive(Clone, Debug)]
pub struct DeliverOptions {
    pub secret: String,
    pub signature: SignatureMode,
    pub content_type: ContentType,
    /// The hook's "Authorization Header", sent verbatim.
    pub authorization: Option<String>,
    /// `X-Gitea-Hook-Installation-Target-Type`: `repository`, `organization`, `system`...
    pub target_type: String,
}

impl DeliverOptions {
    pub fn new(secret: &str) -> Self {
        DeliverOptions {
            secret: secret.to_owned(),
            ..DeliverOptions::default()
        }
    }
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            secret: String::new(),
            signature: SignatureMode::Correct,
            content_type: ContentType::Json,
            authorization: None,
            target_type: "repository".to_owned(),
        }
    }
}

impl Delivery {
    /// A delivery of `payload` rendered as Gitea renders it, with a fresh delivery id.
    pub fn new(event_type: &str, payload: &Value) -> Delivery {
        Delivery::from_body(event_type, go_json(payload, true))
    }

    /// A delivery of exactly these bytes (say, a captured payload).
    pub fn from_body(event_type: &str, body: Vec<u8>) -> Delivery {
        Delivery {
            event: event_for_type(event_type).to_owned(),
            event_type: event_type.to_owned(),
            body,
            id: uuid_v4(),
        }
    }

    /// The body parsed.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery's body is JSON")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The same delivery (same id) with its payload changed by `f` and rendered again.
    pub fn edit(&self, f: impl FnOnce(&mut Value)) -> Delivery {
        let mut value = self.json();
        f(&mut value);
        Delivery {
            body: go_json(&value, true),
            ..self.clone()
        }
    }

    /// What Gitea's "Replay" sends: the same body under a new delivery id.
    pub fn replay(&self) -> Delivery {
        Delivery {
            id: uuid_v4(),
            ..self.clone()
        }
    }

    /// The same delivery under the given id.
    pub fn with_id(&self, id: &str) -> Delivery {
        Delivery {
            id: id.to_owned(),
            ..self.clone()
        }
    }

    /// The headers Gitea sends (`services/webhook/deliver.go`, `addDefaultHeaders`).
    pub fn headers(&self, options: &DeliverOptions) -> Vec<(String, String)> {
        let (sha1, sha256) = match options.signature {
            SignatureMode::Correct if !options.secret.is_empty() => (
                sign_sha1(&options.secret, &self.body),
                sign(&options.secret, &self.body),
            ),
            SignatureMode::Wrong => {
                let wrong = format!("not-{}", options.secret);
                (sign_sha1(&wrong, &self.body), sign(&wrong, &self.body))
            }
            _ => (String::new(), String::new()),
        };
        let signed = options.signature != SignatureMode::Missing;
        let content_type = match options.content_type {
            ContentType::Json => "application/json",
            ContentType::Form => "application/x-www-form-urlencoded",
        };
        let mut headers = vec![
            ("User-Agent", "Go-http-client/1.1".to_owned()),
            ("Content-Type", content_type.to_owned()),
            ("X-Gitea-Delivery", self.id.clone()),
            ("X-Gitea-Event", self.event.clone()),
            ("X-Gitea-Event-Type", self.event_type.clone()),
        ];
        if signed {
            headers.push(("X-Gitea-Signature", sha256.clone()));
        }
        headers.push((
            "X-Gitea-Hook-Installation-Target-Type",
            options.target_type.clone(),
        ));
        headers.extend([
            ("X-Gogs-Delivery", self.id.clone()),
            ("X-Gogs-Event", self.event.clone()),
            ("X-Gogs-Event-Type", self.event_type.clone()),
        ]);
        if signed {
            headers.extend([
                ("X-Gogs-Signature", sha256.clone()),
                ("X-Hub-Signature", format!("sha1={sha1}")),
                ("X-Hub-Signature-256", format!("sha256={sha256}")),
            ]);
        }
        headers.extend([
            ("X-GitHub-Delivery", self.id.clone()),
            ("X-GitHub-Event", self.event.clone()),
            ("X-GitHub-Event-Type", self.event_type.clone()),
            (
                "X-GitHub-Hook-Installation-Target-Type",
                options.target_type.clone(),
            ),
        ]);
        if let Some(authorization) = &options.authorization {
            headers.push(("Authorization", authorization.clone()));
        }
        headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// The request body for the content type: the JSON, or `payload=<urlencoded JSON>`.
    pub fn request_body(&self, content_type: ContentType) -> Vec<u8> {
        match content_type {
            ContentType::Json => self.body.clone(),
            ContentType::Form => format!("payload={}", form_urlencode(&self.text())).into_bytes(),
        }
    }

    /// POSTs the delivery as Gitea would, signed with `secret`, and returns the answer's
    /// status and body. A transport error (refused, timed out after Gitea's 5 s) gives
    /// status 0 and the error's text.
    pub async fn deliver(&self, receiver_url: &str, secret: &str) -> (u16, String) {
        self.deliver_with(receiver_url, &DeliverOptions::new(secret))
            .await
    }

    /// [`Delivery::deliver`] with a chosen signature mode, content type, and so on.
    pub async fn deliver_with(
        &self,
        receiver_url: &str,
        options: &DeliverOptions,
    ) -> (u16, String) {
        let mut request = http_client()
            .post(receiver_url)
            .body(self.request_body(options.content_type));
        for (key, value) in self.headers(options) {
            request = request.header(key, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                (status, body)
            }
            Err(err) => (0, format!("{err:?}")),
        }
    }
}

/// An HTTP client like Gitea's webhook client: 5 s timeout for the whole exchange, Go's
/// user agent, redirects followed (a 301/302/303 turns the POST into a GET), no pooling.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .user_agent("Go-http-client/1.1")
        .pool_max_idle_per_host(0)
        .build()
        .expect("cannot build an HTTP client")
}

/// Lowercase hex HMAC-SHA256 of `body` keyed by `secret`: `X-Gitea-Signature`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Lowercase hex HMAC-SHA1 of `body` keyed by `secret`: `X-Hub-Signature` without `sha1=`.
/// (SHA-1 is implemented here, as the workspace has no SHA-1 crate.)
pub fn sign_sha1(secret: &str, body: &[u8]) -> String {
    let mut key = secret.as_bytes().to_vec();
    if key.len() > 64 {
        key = sha1(&key).to_vec();
    }
    key.resize(64, 0);
    let mut inner: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(body);
    let mut outer: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha1(&inner));
    hex::encode(sha1(&outer))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (slot, word) in w.iter_mut().zip(block.chunks_exact(4)) {
            *slot = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (slot, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------
// HTTP: routing, git smart HTTP
// ---------------------------------------------------------------------------------------

async fn handle(shared: Arc<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        return api(shared, request).await;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        [owner, repo, "info", "refs"] => Some((owner, repo, GitService::InfoRefs)),
        [owner, repo, "git-upload-pack"] => Some((owner, repo, GitService::UploadPack)),
        [owner, repo, "git-receive-pack"] => Some((owner, repo, GitService::ReceivePack)),
        _ => None,
    };
    let (parts, body) = request.into_parts();
    let index = shared.record(&parts, Vec::new());
    let response = match route {
        Some((owner, repo, service)) => {
            let (owner, repo) = (percent_decode(owner), percent_decode(repo));
            git_http(&shared, parts, body, &owner, &repo, service).await
        }
        None if shared.down.load(Ordering::SeqCst) => down_response(),
        None => text_response(StatusCode::NOT_FOUND, "Not found.\n"),
    };
    shared.set_status(index, response.status().as_u16());
    response
}

fn text_response(status: StatusCode, text: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text.to_owned()))
        .expect("valid response")
}

fn down_response() -> Response {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONNECTION, "close")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("the fake Gitea is down\n"))
        .expect("valid response")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GitService {
    InfoRefs,
    UploadPack,
    ReceivePack,
}

/// Gitea's `httpBase` then `git http-backend`.
async fn git_http(
    shared: &Arc<Shared>,
    parts: Parts,
    body: Body,
    owner: &str,
    repo: &str,
    service: GitService,
) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return down_response();
    }
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    // A stalled remote: the connection stays open and silent (what a hung Gitea or a
    // half-dead network looks like to git) until the repository is released.
    let key = format!("{owner}/{name}").to_lowercase();
    loop {
        let released = shared.stall_released.notified();
        if !shared
            .stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key)
        {
            break;
        }
        released.await;
    }
    let query = parts.uri.query().unwrap_or("").to_owned();
    let service_param = query_get(&parse_query(&query), "service");
    let is_pull = match service {
        GitService::InfoRefs => match service_param.as_deref() {
            Some("git-upload-pack") | None => true,
            Some("git-receive-pack") => false,
            Some(_) => return text_response(StatusCode::BAD_REQUEST, ""),
        },
        GitService::UploadPack => true,
        GitService::ReceivePack => false,
    };
    let caller = authenticate(shared, &parts.headers, parts.uri.query());
    let found = {
        let state = shared.lock();
        state
            .find_repo(owner, name)
            .map(|r| (r.private, r.path.clone(), state.permission(r, BOT_LOGIN)))
    };
    let public_pull = is_pull && matches!(found, Some((false, _, _)));
    if caller == Caller::Invalid || (!public_pull && caller != Caller::Bot) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, r#"Basic realm="Gitea""#)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("Unauthorized\n"))
            .expect("valid response");
    }
    let Some((_, path, permission)) = found else {
        return text_response(StatusCode::NOT_FOUND, "Repository not found");
    };
    if caller == Caller::Bot && permission < Permission::Read {
        return text_response(StatusCode::NOT_FOUND, "Repository not found");
    }
    if !is_pull {
        return text_response(
            StatusCode::FORBIDDEN,
            "the fake Gitea does not accept pushes over HTTP: write history with Repo::commit",
        );
    }
    if service == GitService::InfoRefs && service_param.is_none() {
        return text_response(
            StatusCode::FORBIDDEN,
            "the fake Gitea does not serve git's dumb HTTP protocol",
        );
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if service == GitService::UploadPack && content_type != "application/x-git-upload-pack-request"
    {
        return text_response(StatusCode::BAD_REQUEST, "");
    }
    let relative = path.strip_prefix(&shared.repos_dir).unwrap_or(&path);
    let path_info = match service {
        GitService::InfoRefs => format!("/{}/info/refs", relative.display()),
        _ => format!("/{}/git-upload-pack", relative.display()),
    };
    let user = if caller == Caller::Bot { BOT_LOGIN } else { "" };
    run_http_backend(
        shared,
        &parts,
        body,
        &path_info,
        &query,
        &content_type,
        user,
    )
    .await
}

/// Runs `git http-backend` as a CGI: the request body streamed to its stdin, its CGI
/// headers parsed, the rest of its stdout streamed back.
async fn run_http_backend(
    shared: &Shared,
    parts: &Parts,
    body: Body,
    path_info: &str,
    query: &str,
    content_type: &str,
    user: &str,
) -> Response {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend").env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (key, value) in shared.git_env() {
        cmd.env(key, value);
    }
    cmd.env("GIT_PROJECT_ROOT", &shared.repos_dir)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1");
    if !content_type.is_empty() {
        cmd.env("CONTENT_TYPE", content_type);
    }
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(length) = header_text(header::CONTENT_LENGTH) {
        cmd.env("CONTENT_LENGTH", length);
    }
    if let Some(encoding) = header_text(header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = parts
        .headers
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        && is_safe_git_protocol(protocol)
    {
        cmd.env("GIT_PROTOCOL", protocol)
            .env("HTTP_GIT_PROTOCOL", protocol);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot run git http-backend: {err}"),
            );
        }
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut data = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = data.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        text
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");

    // CGI headers, up to the first empty line.
    let mut head = Vec::new();
    let (header_end, body_start) = loop {
        if let Some(found) = find_header_end(&head) {
            break found;
        }
        let mut buf = [0u8; 8192];
        match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = child.wait().await;
                let err = stderr_task.await.unwrap_or_default();
                return text_response(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "git http-backend sent no headers: {}",
                        String::from_utf8_lossy(&err)
                    ),
                );
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let mut response = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&head[..header_end]).lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok());
            if let Some(code) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                response = response.status(code);
            }
        } else {
            response = response.header(key.trim(), value);
        }
    }
    let rest = Bytes::copy_from_slice(&head[body_start..]);
    let output = CgiOutput {
        stdout,
        child,
        stderr_task,
    };
    let stream = futures_util::stream::once(async move { Ok::<Bytes, io::Error>(rest) }).chain(
        futures_util::stream::unfold(Some(output), |output| async move {
            let mut output = output?;
            let mut buf = vec![0u8; 32 * 1024];
            match output.stdout.read(&mut buf).await {
                Ok(0) => {
                    output.finish().await;
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(output)))
                }
                Err(err) => Some((Err(err), None)),
            }
        }),
    );
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|err| {
            text_response(StatusCode::BAD_GATEWAY, &format!("bad CGI headers: {err}"))
        })
}

struct CgiOutput {
    stdout: tokio::process::ChildStdout,
    child: tokio::process::Child,
    stderr_task: tokio::task::JoinHandle<Vec<u8>>,
}

impl CgiOutput {
    async fn finish(mut self) {
        let status = self.child.wait().await;
        let stderr = (&mut self.stderr_task).await.unwrap_or_default();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "fake gitea: git http-backend failed: {}",
                String::from_utf8_lossy(&stderr).trim()
            );
        }
    }
}

fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Gitea passes `Git-Protocol` on only if it is `key=value(:key=value)*` of alphanumerics.
fn is_safe_git_protocol(value: &str) -> bool {
    !value.is_empty()
        && value.split(':').all(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && !v.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric())
                    && v.chars().all(|c| c.is_ascii_alphanumeric())
            })
        })
}

/// Who the credentials name: Gitea's OAuth2 (query token, then `Authorization: token|bearer`)
/// and Basic methods. Unknown schemes are ignored (anonymous).
fn authenticate(shared: &Shared, headers: &HeaderMap, query: Option<&str>) -> Caller {
    let params = parse_query(query.unwrap_or(""));
    for key in ["token", "access_token"] {
        if let Some(token) = query_get(&params, key).filter(|t| !t.is_empty()) {
            return shared.check_token(&token);
        }
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Caller::Anonymous;
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "token" | "bearer" => shared.check_token(rest.trim()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some(decoded) = decoded else {
                return Caller::Invalid;
            };
            let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
            let token = if password.is_empty() || password == "x-oauth-basic" {
                user
            } else {
                password
            };
            shared.check_token(token)
        }
        _ => Caller::Anonymous,
    }
}

fn auth_scheme(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let scheme = value.split_whitespace().next().unwrap_or("");
        return Some(scheme.to_ascii_lowercase());
    }
    let params = parse_query(query.unwrap_or(""));
    ["token", "access_token"]
        .iter()
        .any(|key| query_get(&params, key).is_some())
        .then(|| "query".to_owned())
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == "token" || key == "access_token" => format!("{key}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------
// HTTP: the REST API
// ---------------------------------------------------------------------------------------

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    fn header(mut self, key: &'static str, value: String) -> Reply {
        self.headers.push((key, value));
        self
    }

    fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        for (key, value) in self.headers {
            builder = builder.header(key, value);
        }
        let body = match self.body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json;charset=utf-8");
                let mut bytes = go_json(&value, false);
                bytes.push(b'\n');
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        builder.body(body).expect("valid response")
    }
}

/// One API request, parsed.
struct ApiRequest<'a> {
    method: &'a str,
    path: &'a str,
    query: Vec<(String, String)>,
    body: &'a [u8],
    caller: Caller,
}

impl ApiRequest<'_> {
    fn param(&self, key: &str) -> Option<String> {
        query_get(&self.query, key)
    }

    /// Gitea's `GetListOptions`: `page` from 1, `limit` 30 by default and at most 50.
    fn page(&self) -> (usize, usize) {
        let page = self
            .param("page")
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(1);
        let limit = self
            .param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .map_or(DEFAULT_PAGE_SIZE, |l| l.min(MAX_PAGE_SIZE));
        (page, limit)
    }
}

async fn api(shared: Arc<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let index = shared.record(&parts, body.to_vec());
    if shared.down.load(Ordering::SeqCst) {
        shared.set_status(index, 503);
        return down_response();
    }
    let worker = shared.clone();
    let reply = tokio::task::spawn_blocking(move || api_sync(&worker, &parts, &body))
        .await
        .unwrap_or_else(|_| Reply::json(500, json!({"message": "the fake Gitea panicked"})));
    shared.set_status(index, reply.status);
    reply.into_response()
}

fn api_error(shared: &Shared, status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "url": format!("{}/api/swagger", shared.base_url)}),
    )
}

fn not_found(shared: &Shared) -> Reply {
    api_error(shared, 404, "not found")
}

fn api_sync(shared: &Shared, parts: &Parts, body: &[u8]) -> Reply {
    {
        let mut state = shared.lock();
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return api_error(shared, 500, "the fake Gitea failed on purpose (fail_api)");
        }
    }
    let caller = authenticate(shared, &parts.headers, parts.uri.query());
    if caller == Caller::Invalid {
        return api_error(shared, 401, "invalid username, password or token");
    }
    let request = ApiRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parse_query(parts.uri.query().unwrap_or("")),
        body,
        caller,
    };
    let segments: Vec<String> = request
        .path
        .trim_start_matches("/api/v1")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["version"] => Reply::json(200, json!({"version": GITEA_VERSION})),
        ["user"] if caller == Caller::Bot => {
            let state = shared.lock();
            Reply::json(200, View::new(shared, &state).user(BOT_LOGIN))
        }
        ["user"] => api_error(shared, 401, "token is required"),
        ["repos", owner, name, rest @ ..] => repo_api(shared, &request, owner, name, rest),
        _ => not_found(shared),
    }
}

fn repo_api(
    shared: &Shared,
    request: &ApiRequest<'_>,
    owner: &str,
    name: &str,
    rest: &[&str],
) -> Reply {
    let (repo, permission) = {
        let state = shared.lock();
        let Some(repo) = state.find_repo(owner, name).cloned() else {
            return not_found(shared);
        };
        let permission = match request.caller {
            Caller::Bot => state.permission(&repo, BOT_LOGIN),
            _ if repo.private => Permission::None,
            _ => Permission::Read,
        };
        (repo, permission)
    };
    // repoAssignment: no access at all looks like no repository.
    if permission == Permission::None {
        return not_found(shared);
    }
    let write = matches!(request.method, "POST" | "PUT" | "PATCH" | "DELETE");
    if write && request.caller != Caller::Bot {
        return api_error(shared, 401, "token is required");
    }
    match (request.method, rest) {
        ("GET", []) => {
            let state = shared.lock();
            Reply::json(200, View::new(shared, &state).repo(&repo, permission, true))
        }
        ("GET", ["branches"]) => list_branches(shared, request, &repo, permission),
        ("GET", ["branches", branch @ ..]) if !branch.is_empty() => {
            let branch = branch.join("/");
            match shared.rev_parse(&repo.path, &format!("refs/heads/{branch}")) {
                Some(sha) => {
                    let state = shared.lock();
                    Reply::json(
                        200,
                        View::new(shared, &state).branch(&repo, &branch, &sha, permission),
                    )
                }
                None => api_error(shared, 404, "branch does not exist"),
            }
        }
        ("POST", ["statuses", sha]) => create_status(shared, request, &repo, permission, sha),
        ("GET", ["statuses", sha]) => {
            let sha = shared
                .resolve_commit(&repo.path, sha)
                .unwrap_or_else(|| (*sha).to_owned());
            list_statuses(shared, request, &repo, &sha)
        }
        ("GET", ["commits", reference @ .., "statuses"]) if !reference.is_empty() => {
            let reference = reference.join("/");
            let sha = shared
                .resolve_ref_or_sha(&repo.path, &reference)
                .unwrap_or(reference);
            list_statuses(shared, request, &repo, &sha)
        }
        ("GET", ["commits", reference @ .., "status"]) if !reference.is_empty() => {
            let reference = reference.join("/");
            let sha = shared
                .resolve_ref_or_sha(&repo.path, &reference)
                .unwrap_or(reference);
            combined_status(shared, request, &repo, permission, &sha)
        }
        ("GET", ["pulls"]) => list_pulls(shared, request, &repo, permission),
        ("GET", ["pulls", number]) => {
            let state = shared.lock();
            match number
                .parse::<u64>()
                .ok()
                .and_then(|n| state.issue(repo.id, n))
            {
                Some(issue) if issue.pull.is_some() => Reply::json(
                    200,
                    View::new(shared, &state).pull(&repo, issue, permission),
                ),
                _ => not_found(shared),
            }
        }
        ("GET" | "PATCH" | "DELETE", ["issues", "comments", id]) => {
            comment_api(shared, request, &repo, id)
        }
        ("GET", ["issues", number, "comments"]) => {
            let state = shared.lock();
            let Some(number) = number
                .parse::<u64>()
                .ok()
                .filter(|n| state.issue(repo.id, *n).is_some())
            else {
                return not_found(shared);
            };
            let view = View::new(shared, &state);
            let comments: Vec<Value> = state
                .comments
                .iter()
                .filter(|c| c.repo_id == repo.id && c.index == number)
                .map(|c| view.comment(&repo, c))
                .collect();
            let total = comments.len();
            Reply::json(200, Value::Array(comments)).header("X-Total-Count", total.to_string())
        }
        ("POST", ["issues", number, "comments"]) => {
            let Some(body) = json_field(request.body, "body").filter(|b| !b.is_empty()) else {
                return api_error(shared, 422, "[Body]: Required");
            };
            let mut state = shared.lock();
            let Some(number) = number
                .parse::<u64>()
                .ok()
                .filter(|n| state.issue(repo.id, *n).is_some())
            else {
                return not_found(shared);
            };
            let id = add_comment(&mut state, repo.id, number, BOT_LOGIN, &body);
            let comment = state
                .comments
                .iter()
                .find(|c| c.id == id)
                .expect("just added");
            Reply::json(201, View::new(shared, &state).comment(&repo, comment))
        }
        ("GET", ["collaborators", user, "permission"]) => {
            let state = shared.lock();
            let Some(user) = state.user(user) else {
                return api_error(
                    shared,
                    404,
                    &format!("user does not exist [uid: 0, name: {user}]"),
                );
            };
            if permission < Permission::Admin && !user.login.eq_ignore_ascii_case(BOT_LOGIN) {
                return api_error(
                    shared,
                    403,
                    "Only admins can query all permissions, repo admins can query all repo permissions, collaborators can query only their own",
                );
            }
            let granted = state.permission(&repo, &user.login);
            Reply::json(
                200,
                json!({
                    "permission": granted.as_str(),
                    "role_name": granted.as_str(),
                    "user": View::new(shared, &state).user_rec(user),
                }),
            )
        }
        (
            _,
            []
            | ["branches"]
            | ["statuses", _]
            | ["pulls"]
            | ["pulls", _]
            | ["issues", _, "comments"]
            | ["issues", "comments", _]
            | ["collaborators", _, "permission"],
        ) => api_error(shared, 405, "method not allowed"),
        _ => not_found(shared),
    }
}

fn json_field(body: &[u8], key: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get(key)?.as_str().map(str::to_owned)
}

/// `X-Total-Count` and a `Link` header like Gitea's `SetLinkHeader`.
fn paged(
    shared: &Shared,
    request: &ApiRequest<'_>,
    items: Vec<Value>,
    page: usize,
    limit: usize,
) -> Reply {
    let total = items.len();
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    let pages = total.div_ceil(limit).max(1);
    let link_to = |p: usize, rel: &str| {
        let mut params: Vec<String> = request
            .query
            .iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| format!("{}={}", form_urlencode(k), form_urlencode(v)))
            .collect();
        params.push(format!("page={p}"));
        format!(
            "<{}{}?{}>; rel=\"{rel}\"",
            shared.base_url,
            request.path,
            params.join("&")
        )
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(link_to(page + 1, "next"));
        links.push(link_to(pages, "last"));
    }
    if page > 1 {
        links.push(link_to(1, "first"));
        links.push(link_to(page - 1, "prev"));
    }
    let mut reply = Reply::json(200, Value::Array(shown))
        .header("X-Total-Count", total.to_string())
        .header(
            "Access-Control-Expose-Headers",
            "X-Total-Count, Link".to_owned(),
        );
    if !links.is_empty() {
        reply = reply.header("Link", links.join(","));
    }
    reply
}

fn list_branches(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    permission: Permission,
) -> Reply {
    let listing = shared.git(
        &repo.path,
        &[
            "for-each-ref",
            "--sort=-committerdate",
            "--format=%(refname:lstrip=2) %(objectname)",
            "refs/heads",
        ],
    );
    let state = shared.lock();
    let view = View::new(shared, &state);
    let branches: Vec<Value> = listing
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, sha)| view.branch(repo, name, sha, permission))
        .collect();
    let (page, limit) = request.page();
    paged(shared, request, branches, page, limit)
}

fn list_pulls(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    permission: Permission,
) -> Reply {
    let wanted = request.param("state").unwrap_or_else(|| "open".to_owned());
    let state = shared.lock();
    let view = View::new(shared, &state);
    let mut pulls: Vec<&IssueRec> = state
        .issues
        .iter()
        .filter(|((repo_id, _), issue)| *repo_id == repo.id && issue.pull.is_some())
        .map(|(_, issue)| issue)
        .filter(|issue| match wanted.as_str() {
            "closed" => !issue.open,
            "all" => true,
            _ => issue.open,
        })
        .collect();
    pulls.sort_by_key(|issue| std::cmp::Reverse(issue.index));
    let items = pulls
        .into_iter()
        .map(|issue| view.pull(repo, issue, permission))
        .collect();
    let (page, limit) = request.page();
    paged(shared, request, items, page, limit)
}

fn create_status(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    permission: Permission,
    sha: &str,
) -> Reply {
    if permission < Permission::Write {
        return api_error(
            shared,
            403,
            "user should have a permission to write to a repo",
        );
    }
    let Ok(option) = serde_json::from_slice::<Value>(request.body) else {
        return api_error(shared, 422, "invalid JSON body");
    };
    let field = |key: &str| {
        option
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let state_name = field("state");
    if !STATUS_STATES.contains(&state_name.as_str()) {
        return api_error(
            shared,
            422,
            &format!(
                "invalid state {state_name:?}: must be one of {}",
                STATUS_STATES.join(", ")
            ),
        );
    }
    let Some(full) = shared.resolve_commit(&repo.path, sha) else {
        return api_error(
            shared,
            404,
            &format!("object does not exist [id: {sha}, rel_path: ]"),
        );
    };
    let mut state = shared.lock();
    let index = state
        .statuses
        .iter()
        .filter(|s| s.repo_id == repo.id && s.sha == full)
        .count() as i64
        + 1;
    state.next_status_id += 1;
    let status = StatusRec {
        id: state.next_status_id,
        repo_id: repo.id,
        sha: full,
        index,
        state: state_name,
        target_url: field("target_url"),
        description: field("description"),
        context: field("context"),
        creator: BOT_LOGIN.to_owned(),
        created: now_secs(),
    };
    let json = View::new(shared, &state).status(repo, &status);
    state.statuses.push(status);
    Reply::json(201, json)
}

fn list_statuses(shared: &Shared, request: &ApiRequest<'_>, repo: &RepoRec, sha: &str) -> Reply {
    let state = shared.lock();
    let mut statuses: Vec<&StatusRec> = state
        .statuses
        .iter()
        .filter(|s| s.repo_id == repo.id && s.sha == sha)
        .collect();
    if let Some(wanted) = request.param("state").filter(|s| !s.is_empty()) {
        statuses.retain(|s| s.state == wanted);
    }
    match request.param("sort").as_deref() {
        Some("oldest" | "leastupdate" | "leastindex") => statuses.sort_by_key(|s| s.index),
        _ => statuses.sort_by_key(|s| std::cmp::Reverse(s.index)),
    }
    let view = View::new(shared, &state);
    let items = statuses.into_iter().map(|s| view.status(repo, s)).collect();
    let (page, limit) = request.page();
    paged(shared, request, items, page, limit)
}

/// 1.25's combined status: the latest status of each context; `failure` if any is `error`
/// or `failure`, `success` if all are `success`, `warning` or `skipped`, else `pending`;
/// with no statuses, `state: ""` and `statuses: null`.
fn combined_status(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    permission: Permission,
    sha: &str,
) -> Reply {
    let state = shared.lock();
    let mut latest: BTreeMap<&str, &StatusRec> = BTreeMap::new();
    for status in state
        .statuses
        .iter()
        .filter(|s| s.repo_id == repo.id && s.sha == sha)
    {
        latest.insert(status.context.as_str(), status);
    }
    let mut statuses: Vec<&StatusRec> = latest.into_values().collect();
    statuses.sort_by_key(|s| s.index);
    let (page, limit) = request.page();
    let total = statuses.len();
    let statuses: Vec<&StatusRec> = statuses
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    let combined = if statuses.is_empty() {
        ""
    } else if statuses
        .iter()
        .any(|s| s.state == "error" || s.state == "failure")
    {
        "failure"
    } else if statuses
        .iter()
        .all(|s| matches!(s.state.as_str(), "success" | "warning" | "skipped"))
    {
        "success"
    } else {
        "pending"
    };
    let view = View::new(shared, &state);
    let repo_json = view.repo(repo, permission, true);
    let api = format!("{}/api/v1/repos/{}", shared.base_url, repo.full_name());
    let list = if statuses.is_empty() {
        Value::Null
    } else {
        Value::Array(statuses.iter().map(|s| view.status(repo, s)).collect())
    };
    Reply::json(
        200,
        json!({
            "state": combined,
            "sha": sha,
            "total_count": total,
            "statuses": list,
            "repository": repo_json,
            "commit_url": format!("{api}/commits/{sha}"),
            "url": format!("{api}/commits/{sha}/status"),
        }),
    )
    .header("X-Total-Count", total.to_string())
}

fn comment_api(shared: &Shared, request: &ApiRequest<'_>, repo: &RepoRec, id: &str) -> Reply {
    let mut state = shared.lock();
    let Some(position) = id.parse::<i64>().ok().and_then(|id| {
        state
            .comments
            .iter()
            .position(|c| c.id == id && c.repo_id == repo.id)
    }) else {
        return not_found(shared);
    };
    match request.method {
        "DELETE" => {
            state.comments.remove(position);
            Reply::empty(204)
        }
        "PATCH" => {
            let Some(body) = json_field(request.body, "body") else {
                return api_error(shared, 422, "[Body]: Required");
            };
            let comment = &mut state.comments[position];
            comment.body = body;
            comment.updated = now_secs();
            let comment = state.comments[position].clone();
            Reply::json(200, View::new(shared, &state).comment(repo, &comment))
        }
        _ => {
            let comment = state.comments[position].clone();
            Reply::json(200, View::new(shared, &state).comment(repo, &comment))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers: time, randomness, JSON as Go writes it, URL encoding
// ---------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 3339 as Go's `time.Time` marshals it: `Z` for a zero offset, else `+hh:mm`.
pub fn rfc3339(secs: i64, offset_minutes: i32) -> String {
    let local = secs + i64::from(offset_minutes) * 60;
    let (year, month, day) = civil_from_days(local.div_euclid(86_400));
    let second_of_day = local.rem_euclid(86_400);
    let zone = if offset_minutes == 0 {
        "Z".to_owned()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let abs = offset_minutes.abs();
        format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{zone}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("cannot read /dev/urandom");
    bytes
}

/// A random (version 4) UUID in its text form, like Gitea's delivery ids.
pub fn uuid_v4() -> String {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Serialises like Go's `encoding/json`: `<`, `>`, `&`, U+2028 and U+2029 escaped as
/// `\u003c`..., `\b` and `\f` as `\u0008`/`\u000c`; `pretty` is `MarshalIndent(v, "", "  ")`.
pub fn go_json(value: &Value, pretty: bool) -> Vec<u8> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let result = if pretty {
        let formatter = GoFormatter(serde_json::ser::PrettyFormatter::with_indent(b"  "));
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, formatter,
        ))
    } else {
        let formatter = GoFormatter(serde_json::ser::CompactFormatter);
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, formatter,
        ))
    };
    result.expect("a JSON value serialises");
    out
}

struct GoFormatter<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for GoFormatter<F> {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape;
        match escape {
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            other => self.0.write_char_escape(w, other),
        }
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(key), form_decode(value))
        })
        .collect()
}

fn query_get(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes.get(i + 1..i + 3).and_then(|hex| {
                std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `url.QueryEscape`: unreserved characters kept, space as `+`, the rest `%XX`.
pub fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

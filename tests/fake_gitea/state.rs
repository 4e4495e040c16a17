//! The fake's state: users, repositories, issues and pull requests, statuses and comments,
//! behind one lock, and the git facts read from the repositories.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct UserRec {
    pub(super) id: i64,
    pub(super) login: String,
    pub(super) created: i64,
    pub(super) is_admin: bool,
}

#[derive(Clone, Debug)]
pub(super) struct RepoRec {
    pub(super) id: i64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) private: bool,
    pub(super) format: ObjectFormat,
    pub(super) default_branch: String,
    pub(super) parent: Option<i64>,
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) path: PathBuf,
    pub(super) next_index: u64,
}

impl RepoRec {
    pub(super) fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Clone, Debug)]
pub(super) struct IssueRec {
    pub(super) id: i64,
    pub(super) index: u64,
    pub(super) title: String,
    pub(super) body: String,
    pub(super) author: String,
    pub(super) open: bool,
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) closed: Option<i64>,
    pub(super) pull: Option<PullRec>,
}

#[derive(Clone, Debug)]
pub(super) struct PullRec {
    pub(super) id: i64,
    pub(super) head_repo: i64,
    pub(super) head_branch: String,
    pub(super) base_branch: String,
    pub(super) merge_base: String,
    pub(super) merged: Option<MergeRec>,
}

#[derive(Clone, Debug)]
pub(super) struct MergeRec {
    pub(super) at: i64,
    pub(super) sha: String,
    pub(super) by: String,
}

#[derive(Clone, Debug)]
pub(super) struct CommentRec {
    pub(super) id: i64,
    pub(super) repo_id: i64,
    pub(super) index: u64,
    pub(super) author: String,
    pub(super) body: String,
    pub(super) created: i64,
    pub(super) updated: i64,
}

#[derive(Clone, Debug)]
pub(super) struct StatusRec {
    pub(super) id: i64,
    pub(super) repo_id: i64,
    pub(super) sha: String,
    pub(super) index: i64,
    pub(super) state: String,
    pub(super) target_url: String,
    pub(super) description: String,
    pub(super) context: String,
    pub(super) creator: String,
    pub(super) created: i64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) users: BTreeMap<String, UserRec>,
    pub(super) next_user_id: i64,
    pub(super) repos: BTreeMap<i64, RepoRec>,
    pub(super) next_repo_id: i64,
    pub(super) issues: BTreeMap<(i64, u64), IssueRec>,
    pub(super) next_issue_id: i64,
    pub(super) next_pull_id: i64,
    pub(super) comments: Vec<CommentRec>,
    pub(super) next_comment_id: i64,
    pub(super) statuses: Vec<StatusRec>,
    pub(super) next_status_id: i64,
    pub(super) permissions: HashMap<(i64, String), Permission>,
    pub(super) hooks: Vec<HookRec>,
    pub(super) next_hook_id: i64,
    pub(super) reviews: Vec<ReviewRec>,
    pub(super) next_review_id: i64,
    /// Pull requests (repository id, number) that Gitea finds not mergeable.
    pub(super) unmergeable: HashSet<(i64, u64)>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) fail_next: u32,
    pub(super) oauth: OAuthState,
    pub(super) actions: ActionsState,
}

impl State {
    pub(super) fn ensure_user(&mut self, login: &str) -> i64 {
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

    /// The login of a user caller.
    pub(super) fn login_of(&self, caller: Caller) -> Option<String> {
        let Caller::User(id) = caller else {
            return None;
        };
        self.users
            .values()
            .find(|u| u.id == id)
            .map(|u| u.login.clone())
    }

    pub(super) fn user(&self, login: &str) -> Option<&UserRec> {
        self.users.get(&login.to_lowercase())
    }

    pub(super) fn find_repo(&self, owner: &str, name: &str) -> Option<&RepoRec> {
        self.repos
            .values()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    pub(super) fn repo(&self, id: i64) -> &RepoRec {
        self.repos
            .get(&id)
            .unwrap_or_else(|| panic!("repository {id} was deleted"))
    }

    pub(super) fn issue(&self, repo_id: i64, index: u64) -> Option<&IssueRec> {
        self.issues.get(&(repo_id, index))
    }

    pub(super) fn permission(&self, repo: &RepoRec, login: &str) -> Permission {
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

    pub(super) fn comment_count(&self, repo_id: i64, index: u64) -> usize {
        self.comments
            .iter()
            .filter(|c| c.repo_id == repo_id && c.index == index)
            .count()
    }
}

/// What the git commands and the server share.
pub(super) struct Shared {
    pub(super) base_url: String,
    pub(super) addr: SocketAddr,
    pub(super) token: String,
    pub(super) repos_dir: PathBuf,
    pub(super) home: PathBuf,
    pub(super) scratch: PathBuf,
    pub(super) state: Mutex<State>,
    pub(super) scratch_counter: AtomicU64,
    pub(super) last_commit_time: AtomicI64,
    pub(super) down: AtomicBool,
    pub(super) up_tx: tokio::sync::watch::Sender<bool>,
    pub(super) listening: Mutex<bool>,
    pub(super) listening_changed: Condvar,
    /// Repositories (`owner/name`, lowercase) whose git service answers nothing: a request
    /// is held open until the repository is released ([`Repo::stall_git`]).
    pub(super) stalled: Mutex<HashSet<String>>,
    pub(super) stall_released: tokio::sync::Notify,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub(super) fn set_listening(&self, value: bool) {
        *self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = value;
        self.listening_changed.notify_all();
    }

    pub(super) fn check_token(&self, token: &str) -> Caller {
        let (a, b) = (token.as_bytes(), self.token.as_bytes());
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if same {
            return Caller::Bot;
        }
        self.user_of_token(token)
            .map_or(Caller::Invalid, Caller::User)
    }

    pub(super) fn scratch_file(&self, what: &str) -> PathBuf {
        let n = self.scratch_counter.fetch_add(1, Ordering::Relaxed);
        self.scratch.join(format!("{what}-{n}"))
    }

    /// A strictly increasing commit time, so that history has a well-defined order.
    pub(super) fn next_commit_time(&self) -> i64 {
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

    pub(super) fn touch_repo(&self, repo_id: i64) {
        if let Some(repo) = self.lock().repos.get_mut(&repo_id) {
            repo.updated = now_secs();
        }
    }

    pub(super) fn record(&self, parts: &Parts, body: Vec<u8>) -> usize {
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

    pub(super) fn set_status(&self, index: usize, status: u16) {
        if let Some(request) = self.lock().requests.get_mut(index) {
            request.status = Some(status);
        }
    }

    // ----- git -----

    /// `git` with a clean environment: no system or user configuration of this machine.
    pub(super) fn git_command(&self) -> Command {
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

    pub(super) fn git_env(&self) -> Vec<(&'static str, String)> {
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

    pub(super) fn run_git(
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
    pub(super) fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.git_with(dir, args, None, &[])
    }

    pub(super) fn git_with(
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

    pub(super) fn git_opt(&self, dir: &Path, args: &[&str]) -> Option<String> {
        self.run_git(dir, args, None, &[])
            .ok()
            .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// The object a ref or revision names, without peeling.
    pub(super) fn rev_parse(&self, dir: &Path, rev: &str) -> Option<String> {
        self.git_opt(
            dir,
            &["rev-parse", "--verify", "--quiet", "--end-of-options", rev],
        )
        .filter(|s| !s.is_empty())
    }

    /// The full id of the commit `rev` names (a full or short sha, or a ref), if it exists.
    pub(super) fn resolve_commit(&self, dir: &Path, rev: &str) -> Option<String> {
        if rev.is_empty() || rev.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        self.rev_parse(dir, &format!("{rev}^{{commit}}"))
    }

    /// Like Gitea's `ResolveRefOrSha`: a branch, then a tag, then a commit id.
    pub(super) fn resolve_ref_or_sha(&self, dir: &Path, reference: &str) -> Option<String> {
        self.resolve_commit(dir, &format!("refs/heads/{reference}"))
            .or_else(|| self.resolve_commit(dir, &format!("refs/tags/{reference}")))
            .or_else(|| self.resolve_commit(dir, reference))
    }

    pub(super) fn commit_info(&self, dir: &Path, sha: &str) -> CommitInfo {
        let raw = self
            .run_git(dir, &["cat-file", "commit", sha], None, &[])
            .unwrap_or_else(|err| panic!("fake gitea: {err}"));
        parse_commit(sha, &String::from_utf8_lossy(&raw))
    }

    /// Gitea's `GetCommitFileStatus`: `git log --name-status -m --first-parent --no-renames`.
    pub(super) fn file_status(&self, dir: &Path, sha: &str) -> FileStatus {
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
pub(super) enum Caller {
    Anonymous,
    Bot,
    /// A user's own token or password (the user's id).
    User(i64),
    Invalid,
}

#[derive(Clone, Debug)]
pub(super) struct Sig {
    pub(super) name: String,
    pub(super) email: String,
    pub(super) time: i64,
    pub(super) offset_minutes: i32,
}

#[derive(Clone, Debug)]
pub(super) struct CommitInfo {
    pub(super) sha: String,
    pub(super) message: String,
    pub(super) author: Sig,
    pub(super) committer: Sig,
}

#[derive(Clone, Debug, Default)]
pub(super) struct FileStatus {
    pub(super) added: Vec<String>,
    pub(super) removed: Vec<String>,
    pub(super) modified: Vec<String>,
}

pub(super) fn parse_commit(sha: &str, raw: &str) -> CommitInfo {
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

pub(super) fn parse_sig(s: &str) -> Sig {
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

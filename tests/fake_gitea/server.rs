//! The server: starting and stopping the fake, its listener that can be taken down, and
//! what tests ask of it (requests seen, statuses, comments, faults).

use super::*;

/// A running fake Gitea. Stops (and deletes its repositories) when dropped.
pub struct FakeGitea {
    pub(super) shared: Arc<Shared>,
    pub(super) shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) _dir: tempfile::TempDir,
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
pub(super) struct SwitchListener {
    pub(super) shared: Arc<Shared>,
    pub(super) addr: SocketAddr,
    pub(super) inner: Option<tokio::net::TcpListener>,
    pub(super) up: tokio::sync::watch::Receiver<bool>,
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

pub(super) fn create_repo(
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

pub(super) fn collect_statuses(state: &State, repo_id: i64, sha: &str) -> Vec<Status> {
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

pub(super) fn collect_comments(state: &State, repo_id: i64, number: u64) -> Vec<Comment> {
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

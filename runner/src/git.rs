//! Git: one bare mirror per repository under `data_dir/git`, fetched incrementally with the
//! Gitea token, from which changed paths, pipeline files and run workspaces are taken.
//!
//! The token travels in `GIT_CONFIG_*` environment variables as an `http.extraHeader`, so it
//! is neither on a command line (visible in `ps`) nor in the mirror's config on disk.
//!
//! Nothing from a payload decides what git does: the remote is built from `[gitea].url` and
//! a checked repository name, commit ids and refs are checked before they get here and
//! always follow `--end-of-options`, only http(s) remotes are allowed (and the local
//! mirror for checkouts), and every git process is killed when it outlives its timeout
//! (`[gitea].git_timeout` for fetches, which also abort below 1 KB/s for 30 s).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::process::Command;

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("failed to run git")]
    Spawn(#[source] std::io::Error),
    #[error("git {what} failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("commit {sha} is not in {repo} after fetching it")]
    MissingCommit { repo: String, sha: String },
    #[error("git {what} did not finish within {}s and was stopped", after.as_secs())]
    TimedOut { what: String, after: Duration },
    #[error("`{0}` is not a repository name Pipewright accepts")]
    BadRepo(String),
}

/// How long a git command that reads only the local mirror may take.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

/// The mirrors, and what reaching Gitea's git needs.
#[derive(Debug)]
pub struct Git {
    root: PathBuf,
    /// `[gitea].url`, without a trailing `/`: remotes are `<base>/<owner>/<name>.git`.
    base_url: String,
    /// How long a fetch may take.
    fetch_timeout: Duration,
    token: Option<Secret>,
    ca_file: Option<PathBuf>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pipeline files by (mirror, commit): a commit never changes, and the worker reads
    /// the files the delivery's processing read a moment before.
    files: Mutex<HashMap<(PathBuf, String), PipelineFiles>>,
    /// Told how long each fetch from Gitea took and whether it succeeded.
    on_fetch: Option<FetchObserver>,
}

/// What [`Git::observe_fetches`] calls after each fetch: its duration, and whether it
/// succeeded.
#[derive(Clone)]
pub struct FetchObserver(pub Arc<dyn Fn(Duration, bool) + Send + Sync>);

impl std::fmt::Debug for FetchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FetchObserver")
    }
}

/// The pipeline files of a commit: path and text (or why it is not text).
pub type PipelineFiles = Vec<(String, Result<String, String>)>;

/// How many commits' pipeline files are remembered...
const FILES_CACHED: usize = 256;
/// ...when they are at most this large together (so the cache stays under 64 MiB).
const CACHED_BYTES_PER_COMMIT: usize = 256 << 10;
/// Pipeline files read from one commit at most.
const MAX_PIPELINE_FILES: usize = 64;

/// A repository's mirror, locked for the caller while it is held.
#[derive(Debug)]
pub struct Mirror {
    pub path: PathBuf,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// Whether a commit id is git's "no commit" (40 or 64 zeros).
pub fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

impl Git {
    pub fn new(
        root: PathBuf,
        base_url: &str,
        fetch_timeout: Duration,
        token: Option<Secret>,
        ca_file: Option<PathBuf>,
    ) -> Git {
        Git {
            root,
            base_url: base_url.trim_end_matches('/').to_string(),
            fetch_timeout,
            token,
            ca_file,
            locks: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            on_fetch: None,
        }
    }

    /// `git --version`'s answer: whether git can be run at all (it must be on `PATH`).
    pub async fn version(&self) -> Result<String, GitError> {
        let out = self.run(None, &["--version"]).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Calls `observer` after each fetch from Gitea.
    pub fn observe_fetches(mut self, observer: FetchObserver) -> Git {
        self.on_fetch = Some(observer);
        self
    }

    /// The remote of a repository: `<[gitea].url>/<owner>/<name>.git`.
    pub fn remote(&self, repo: &str) -> Result<String, GitError> {
        if !crate::checked::is_repo_name(repo) {
            return Err(GitError::BadRepo(repo.to_string()));
        }
        Ok(format!("{}/{repo}.git", self.base_url))
    }

    /// A git command with Pipewright's settings. `local_clone`: the one command that reads
    /// the mirror through git's file transport (a workspace's `clone --local`).
    fn command(&self, dir: Option<&Path>, local_clone: bool) -> Command {
        let mut cmd = Command::new("git");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("GIT_DIR")
            .env_remove("GIT_ALLOW_PROTOCOL")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let low_speed_time = self.fetch_timeout.as_secs().clamp(1, 30).to_string();
        let mut config: Vec<(&str, String)> = vec![
            ("protocol.allow", "never".into()),
            ("protocol.http.allow", "always".into()),
            ("protocol.https.allow", "always".into()),
            (
                "protocol.file.allow",
                if local_clone { "always" } else { "never" }.into(),
            ),
            ("http.lowSpeedLimit", "1000".into()),
            ("http.lowSpeedTime", low_speed_time),
            ("core.hooksPath", "/dev/null".into()),
        ];
        if let Some(token) = &self.token {
            config.push((
                "http.extraHeader",
                format!("Authorization: token {}", token.expose()),
            ));
        }
        if let Some(ca) = &self.ca_file {
            config.push(("http.sslCAInfo", ca.display().to_string()));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd
    }

    async fn run(&self, dir: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, GitError> {
        self.run_with(dir, args, false, LOCAL_TIMEOUT).await
    }

    /// Runs git, killing it (`kill_on_drop`) when it outlives `timeout`.
    async fn run_with(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        local_clone: bool,
        timeout: Duration,
    ) -> Result<Vec<u8>, GitError> {
        let what = args.first().copied().unwrap_or("").to_string();
        // Its own process group, so that a timeout also stops the helpers git starts
        // (`git-remote-https` holds the stalled connection, not `git`).
        let child = self
            .command(dir, local_clone)
            .args(args)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(GitError::Spawn)?;
        let group = child.id();
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out.map_err(GitError::Spawn)?,
            Err(_) => {
                if let Some(pid) = group.and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                return Err(GitError::TimedOut {
                    what,
                    after: timeout,
                });
            }
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(GitError::Failed { what, stderr });
        }
        Ok(out.stdout)
    }

    async fn text(&self, dir: &Path, args: &[&str]) -> Result<String, GitError> {
        Ok(String::from_utf8_lossy(&self.run(Some(dir), args).await?)
            .trim()
            .to_string())
    }

    /// Locks the repository's mirror, creating it if needed. `sha256` selects the object
    /// format of a new mirror.
    pub async fn open(&self, repo: &str, sha256: bool) -> Result<Mirror, GitError> {
        if !crate::checked::is_repo_name(repo) {
            return Err(GitError::BadRepo(repo.to_string()));
        }
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(repo.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        let path = self.root.join(format!("{repo}.git"));
        if !path.join("HEAD").exists() {
            std::fs::create_dir_all(&path).map_err(GitError::Spawn)?;
            let format = if sha256 {
                "--object-format=sha256"
            } else {
                "--object-format=sha1"
            };
            self.run(Some(&path), &["init", "--quiet", "--bare", format])
                .await?;
        }
        Ok(Mirror {
            path,
            _guard: guard,
        })
    }

    /// Locks the repository's mirror if one exists (never creating it): what earlier
    /// fetches brought, for when Gitea cannot be reached.
    pub async fn open_existing(&self, repo: &str) -> Result<Option<Mirror>, GitError> {
        if !crate::checked::is_repo_name(repo) {
            return Err(GitError::BadRepo(repo.to_string()));
        }
        if !self.root.join(format!("{repo}.git")).join("HEAD").exists() {
            return Ok(None);
        }
        self.open(repo, false).await.map(Some)
    }

    /// The repositories (`owner/name`) that have a mirror, sorted.
    pub fn mirrored_repos(&self) -> Vec<String> {
        let mut repos = Vec::new();
        let Ok(owners) = std::fs::read_dir(&self.root) else {
            return repos;
        };
        for owner in owners.flatten() {
            let Ok(names) = std::fs::read_dir(owner.path()) else {
                continue;
            };
            for name in names.flatten() {
                let (owner, name) = (owner.file_name(), name.file_name());
                let (Some(owner), Some(name)) = (owner.to_str(), name.to_str()) else {
                    continue;
                };
                let Some(name) = name.strip_suffix(".git") else {
                    continue;
                };
                let repo = format!("{owner}/{name}");
                if crate::checked::is_repo_name(&repo)
                    && self.root.join(format!("{repo}.git")).join("HEAD").exists()
                {
                    repos.push(repo);
                }
            }
        }
        repos.sort();
        repos
    }

    /// Compacts a mirror when git thinks it is worth it (`git gc --auto`: many loose
    /// objects or packs, which every fetch adds), in the foreground (`gc.autoDetach=false`,
    /// so the caller's timeout and lock hold for it). Unreachable objects go after git's
    /// default grace of two weeks.
    pub async fn compact(&self, mirror: &Mirror) -> Result<(), GitError> {
        let timeout = self.fetch_timeout.max(LOCAL_TIMEOUT);
        self.run_with(
            Some(&mirror.path),
            &["-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
            false,
            timeout,
        )
        .await
        .map_err(|e| match e {
            GitError::Failed { stderr, .. } => GitError::Failed {
                what: "gc".into(),
                stderr,
            },
            GitError::TimedOut { after, .. } => GitError::TimedOut {
                what: "gc".into(),
                after,
            },
            other => other,
        })?;
        Ok(())
    }

    /// Brings the mirror of `repo` up to date: branches, tags and pull-request heads.
    pub async fn update(&self, mirror: &Mirror, repo: &str) -> Result<(), GitError> {
        let remote = self.remote(repo)?;
        let started = std::time::Instant::now();
        let fetched = self
            .run_with(
                Some(&mirror.path),
                &[
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--no-tags",
                    "--force",
                    "--end-of-options",
                    &remote,
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                    "+refs/pull/*/head:refs/pull/*/head",
                ],
                false,
                self.fetch_timeout,
            )
            .await;
        if let Some(observer) = &self.on_fetch {
            (observer.0)(started.elapsed(), fetched.is_ok());
        }
        fetched?;
        Ok(())
    }

    /// The mirror, locked and fetched.
    pub async fn fetch(&self, repo: &str, sha256: bool) -> Result<Mirror, GitError> {
        let mirror = self.open(repo, sha256).await?;
        self.update(&mirror, repo).await?;
        Ok(mirror)
    }

    /// The mirror, locked, fetched only when it lacks `sha` (a run's commit is normally
    /// there already: the delivery that queued the run fetched it).
    pub async fn with_commit(&self, repo: &str, sha: &str) -> Result<Mirror, GitError> {
        let mirror = self.open(repo, sha.len() == 64).await?;
        if self.cached_files(&mirror, sha).is_none() && !self.has_commit(&mirror, sha).await {
            self.update(&mirror, repo).await?;
            self.require_commit(&mirror, repo, sha).await?;
        }
        Ok(mirror)
    }

    pub async fn has_commit(&self, mirror: &Mirror, sha: &str) -> bool {
        self.run(
            Some(&mirror.path),
            &[
                "cat-file",
                "-e",
                "--end-of-options",
                &format!("{sha}^{{commit}}"),
            ],
        )
        .await
        .is_ok()
    }

    /// Fails unless the commit is in the mirror.
    pub async fn require_commit(
        &self,
        mirror: &Mirror,
        repo: &str,
        sha: &str,
    ) -> Result<(), GitError> {
        if self.has_commit(mirror, sha).await {
            Ok(())
        } else {
            Err(GitError::MissingCommit {
                repo: repo.to_string(),
                sha: sha.to_string(),
            })
        }
    }

    /// Files that differ between two commits; a rename counts as both of its paths.
    pub async fn changed_files(
        &self,
        mirror: &Mirror,
        from: &str,
        to: &str,
    ) -> Result<Vec<String>, GitError> {
        let out = self
            .run(
                Some(&mirror.path),
                &[
                    "diff",
                    "--name-only",
                    "--no-renames",
                    "-z",
                    "--end-of-options",
                    from,
                    to,
                ],
            )
            .await?;
        Ok(split_z(&out))
    }

    /// Every file of a commit (a first push has nothing to compare with).
    pub async fn all_files(&self, mirror: &Mirror, sha: &str) -> Result<Vec<String>, GitError> {
        let out = self
            .run(
                Some(&mirror.path),
                &[
                    "ls-tree",
                    "-r",
                    "-z",
                    "--name-only",
                    "--end-of-options",
                    sha,
                ],
            )
            .await?;
        Ok(split_z(&out))
    }

    pub async fn merge_base(&self, mirror: &Mirror, a: &str, b: &str) -> Option<String> {
        self.text(&mirror.path, &["merge-base", "--end-of-options", a, b])
            .await
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// Whether `commit` is `tip` or one of its ancestors.
    pub async fn is_ancestor(&self, mirror: &Mirror, commit: &str, tip: &str) -> bool {
        self.run(
            Some(&mirror.path),
            &[
                "merge-base",
                "--is-ancestor",
                "--end-of-options",
                commit,
                tip,
            ],
        )
        .await
        .is_ok()
    }

    /// Up to `n` commits reachable from `sha`, newest first (`sha` itself first).
    pub async fn ancestors(
        &self,
        mirror: &Mirror,
        sha: &str,
        n: usize,
    ) -> Result<Vec<String>, GitError> {
        let out = self
            .text(
                &mirror.path,
                &[
                    "rev-list",
                    &format!("--max-count={n}"),
                    "--end-of-options",
                    sha,
                ],
            )
            .await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// The commit a ref points to, if it exists.
    pub async fn resolve(&self, mirror: &Mirror, git_ref: &str) -> Option<String> {
        self.text(
            &mirror.path,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{git_ref}^{{commit}}"),
            ],
        )
        .await
        .ok()
    }

    /// The pipeline files at a commit: `(path, text)` of every `.pipewright/*.yml|yaml` blob.
    async fn pipeline_files(&self, mirror: &Mirror, sha: &str) -> Result<PipelineFiles, GitError> {
        if let Some(files) = self.cached_files(mirror, sha) {
            return Ok(files);
        }
        let listing = self
            .run(
                Some(&mirror.path),
                &[
                    "ls-tree",
                    "-z",
                    "-l",
                    "--end-of-options",
                    sha,
                    "--",
                    ".pipewright/",
                ],
            )
            .await?;
        let mut files = Vec::new();
        for entry in split_z(&listing) {
            // `<mode> <type> <object> <size>\t<path>` (the size padded with spaces)
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let file_name = path.rsplit('/').next().unwrap_or(path);
            if !meta.contains(" blob ") || !pipewright_pipelines::is_pipeline_file(file_name) {
                continue;
            }
            if files.len() == MAX_PIPELINE_FILES {
                files.push((
                    path.to_string(),
                    Err(format!(
                        "more than {MAX_PIPELINE_FILES} pipeline files in .pipewright/: this one and the rest are not read"
                    )),
                ));
                break;
            }
            let size: u64 = meta
                .split_whitespace()
                .last()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            if size > pipewright_pipelines::MAX_FILE_BYTES as u64 {
                // Never read into memory: a pull request can commit a blob of any size.
                files.push((
                    path.to_string(),
                    Err(format!(
                        "the file is {size} bytes, larger than the limit of {} KiB for a pipeline file",
                        pipewright_pipelines::MAX_FILE_BYTES >> 10
                    )),
                ));
                continue;
            }
            let bytes = self
                .run(
                    Some(&mirror.path),
                    &[
                        "cat-file",
                        "blob",
                        "--end-of-options",
                        &format!("{sha}:{path}"),
                    ],
                )
                .await?;
            files.push((
                path.to_string(),
                String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string()),
            ));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let bytes: usize = files
            .iter()
            .map(|(_, text)| text.as_ref().map_or(0, String::len))
            .sum();
        if bytes > CACHED_BYTES_PER_COMMIT {
            return Ok(files);
        }
        let mut cache = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= FILES_CACHED {
            cache.clear();
        }
        cache.insert((mirror.path.clone(), sha.to_string()), files.clone());
        Ok(files)
    }

    /// The pipelines of a commit, parsed: every `.pipewright/*.yml|yaml` file, a file that
    /// cannot be read as text (not UTF-8, over the size limit) reported like any other
    /// invalid file. The one way ingest, the worker, dispatches and schedules read them.
    pub async fn pipelines_at(
        &self,
        mirror: &Mirror,
        sha: &str,
    ) -> Result<Vec<pipewright_pipelines::ParsedFile>, GitError> {
        use pipewright_pipelines::{Diagnostic, ParsedFile, Pos, parse_files};
        let mut texts = Vec::new();
        let mut unreadable = Vec::new();
        for (path, text) in self.pipeline_files(mirror, sha).await? {
            match text {
                Ok(t) => texts.push((path, t)),
                Err(why) => unreadable.push((path, why)),
            }
        }
        let mut parsed = parse_files(&texts);
        for (path, message) in unreadable {
            let name = path
                .rsplit('/')
                .next()
                .unwrap_or(&path)
                .trim_end_matches(".yaml")
                .trim_end_matches(".yml")
                .to_string();
            let diag = Diagnostic {
                file: path.clone(),
                pos: Pos { line: 1, col: 1 },
                message,
            };
            parsed.push(ParsedFile {
                file: path,
                name,
                result: Err(vec![diag]),
            });
        }
        Ok(parsed)
    }

    fn cached_files(&self, mirror: &Mirror, sha: &str) -> Option<PipelineFiles> {
        let cache = self.files.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&(mirror.path.clone(), sha.to_string())).cloned()
    }

    /// A fresh checkout of `sha` at `dest`, with its own `.git` (steps may run git) sharing
    /// no file with the mirror.
    pub async fn checkout(&self, mirror: &Mirror, sha: &str, dest: &Path) -> Result<(), GitError> {
        let mirror_path = mirror.path.display().to_string();
        let dest_text = dest.display().to_string();
        self.run_with(
            None,
            &[
                "clone",
                "--quiet",
                "--no-checkout",
                // Copies, not hard links: a step may write to its workspace as root, and a
                // hard-linked object would be the mirror's own file, which later runs read.
                "--no-hardlinks",
                "--end-of-options",
                &mirror_path,
                &dest_text,
            ],
            true,
            LOCAL_TIMEOUT,
        )
        .await?;
        self.run(
            Some(dest),
            &[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--quiet",
                "--detach",
                "--end-of-options",
                sha,
            ],
        )
        .await?;
        Ok(())
    }
}

fn split_z(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// What git says about a checkout; what it cannot say is filled in plainly.
#[derive(Clone, Debug)]
pub struct GitFacts {
    /// `owner/name` from the `origin` remote, else `local/<directory name>`.
    pub repo: String,
    pub branch: Option<String>,
    pub sha: String,
}

fn local_git(root: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The facts of the checkout at `root` (for `pipewright exec`): what its `origin`, `HEAD`
/// and branch say. The arguments are constants; nothing from outside reaches them.
pub fn git_facts(root: &Path) -> GitFacts {
    let dir_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let repo = local_git(root, &["remote", "get-url", "origin"])
        .and_then(|url| repo_from_url(&url))
        .unwrap_or_else(|| format!("local/{}", dir_name.unwrap_or_else(|| "repo".into())));
    GitFacts {
        repo,
        branch: local_git(root, &["symbolic-ref", "--quiet", "--short", "HEAD"]),
        sha: local_git(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "0".repeat(40)),
    }
}

/// `owner/name` of a clone URL (`https://host/owner/name.git`, `git@host:owner/name.git`).
fn repo_from_url(url: &str) -> Option<String> {
    let path = url.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = path.rsplit(['/', ':']);
    let name = parts.next()?;
    let owner = parts.next()?;
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::repo_from_url;

    #[test]
    fn repo_names_from_clone_urls() {
        assert_eq!(
            repo_from_url("https://gitea.lab/arcodange-org/factory.git").as_deref(),
            Some("arcodange-org/factory")
        );
        assert_eq!(
            repo_from_url("git@gitea.lab:org/app.git").as_deref(),
            Some("org/app")
        );
        assert_eq!(
            repo_from_url("ssh://git@gitea.lab:2222/org/app").as_deref(),
            Some("org/app")
        );
    }
}

//! Repositories as tests write them: bare git repositories, history written with the git
//! command line, branches, tags and pull requests.

use super::*;

/// A handle on a repository of the fake: writes history with real git, manages pull
/// requests and issues, and builds the webhook deliveries Gitea would send about them.
///
/// Actions (commits, pull requests, comments, events) are done by the repository's owner
/// unless the handle comes from [`Repo::as_user`].
#[derive(Clone)]
pub struct Repo {
    pub(super) shared: Arc<Shared>,
    pub(super) id: i64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) format: ObjectFormat,
    pub(super) actor: Option<String>,
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
    pub(super) fn from_rec(shared: &Arc<Shared>, rec: &RepoRec) -> Repo {
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

    pub(super) fn rec(&self) -> RepoRec {
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

    pub(super) fn actor(&self) -> String {
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

    pub(super) fn commit_tree(
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
    pub(super) fn update_pull_ref(
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

    pub(super) fn pull_rec(&self, number: u64) -> (IssueRec, PullRec) {
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

    pub(super) fn update_issue(&self, number: u64, f: impl FnOnce(&mut IssueRec)) {
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
        self.mark_stale_reviews(number, &sha);
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

pub(super) fn next_index(state: &mut State, repo_id: i64) -> u64 {
    let repo = state
        .repos
        .get_mut(&repo_id)
        .unwrap_or_else(|| panic!("repository {repo_id} was deleted"));
    let index = repo.next_index;
    repo.next_index += 1;
    index
}

pub(super) fn noreply_email(login: &str) -> String {
    format!("{}@{NOREPLY_DOMAIN}", login.to_lowercase())
}

/// Path and new contents with their git mode (`100644`, `100755`, `120000` for a link).
pub(super) type FileChange = (String, Option<(Vec<u8>, &'static str)>);

/// A commit being prepared by [`Repo::commit`].
#[derive(Debug)]
pub struct CommitBuilder<'a> {
    pub(super) repo: &'a Repo,
    pub(super) branch: String,
    pub(super) message: String,
    /// Path and new contents (with the executable bit), or `None` to delete.
    pub(super) changes: Vec<FileChange>,
    pub(super) author: Option<(String, String)>,
    pub(super) from: Option<String>,
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

//! Webhook payloads shaped like Gitea's: push, tag, pull request, comment and the other
//! events.

use super::*;

impl Repo {
    /// Runs `f` with a JSON view of the state and this repository's record.
    pub(super) fn with_view<T>(&self, f: impl FnOnce(&View<'_>, &RepoRec) -> T) -> T {
        let state = self.shared.lock();
        let view = View::new(&self.shared, &state);
        f(&view, state.repo(self.id))
    }

    pub(super) fn compare_url(&self, before: &str, after: &str) -> String {
        format!(
            "{}/{}/compare/{before}...{after}",
            self.shared.base_url,
            self.full_name()
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_payload(
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

    pub(super) fn rev_list(&self, args: &[&str]) -> Vec<String> {
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

    pub(super) fn new_branch_push(&self, branch: &str, after: &str) -> Delivery {
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

    pub(super) fn comment_payload(
        &self,
        id: i64,
        action: &str,
        old_body: Option<String>,
    ) -> Delivery {
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

pub(super) fn add_comment(
    state: &mut State,
    repo_id: i64,
    number: u64,
    author: &str,
    body: &str,
) -> i64 {
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

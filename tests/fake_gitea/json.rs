//! Objects as Gitea's JSON shows them (repository, user, commit, pull request, …), shared
//! by the API and the webhook payloads.

use super::*;

/// Builds Gitea's JSON objects from the state (held locked by the caller).
pub(super) struct View<'a> {
    pub(super) sh: &'a Shared,
    pub(super) st: &'a State,
}

pub(super) fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl<'a> View<'a> {
    pub(super) fn new(sh: &'a Shared, st: &'a State) -> Self {
        View { sh, st }
    }

    pub(super) fn user(&self, login: &str) -> Value {
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

    pub(super) fn user_rec(&self, u: &UserRec) -> Value {
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

    pub(super) fn login_for_email(&self, email: &str) -> String {
        email
            .strip_suffix(&format!("@{NOREPLY_DOMAIN}"))
            .and_then(|login| self.st.user(login))
            .map(|u| u.login.clone())
            .unwrap_or_default()
    }

    pub(super) fn repo(&self, r: &RepoRec, perm: Permission, with_parent: bool) -> Value {
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
    pub(super) fn payload_commit(
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

    pub(super) fn push_commit(&self, r: &RepoRec, sha: &str) -> Value {
        let info = self.sh.commit_info(&r.path, sha);
        let files = self.sh.file_status(&r.path, sha);
        self.payload_commit(r, &info, Some(&files), false)
    }

    pub(super) fn branch(&self, r: &RepoRec, name: &str, sha: &str, perm: Permission) -> Value {
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

    pub(super) fn issue_html(&self, r: &RepoRec, issue: &IssueRec) -> String {
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

    pub(super) fn issue(&self, r: &RepoRec, issue: &IssueRec) -> Value {
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
    pub(super) fn pull(&self, r: &RepoRec, issue: &IssueRec, perm: Permission) -> Value {
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
            "mergeable": issue.open
                && merged.is_none()
                && !self.st.unmergeable.contains(&(r.id, issue.index)),
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

    pub(super) fn comment(&self, r: &RepoRec, c: &CommentRec) -> Value {
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

    pub(super) fn status(&self, r: &RepoRec, s: &StatusRec) -> Value {
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

pub(super) fn is_draft(title: &str) -> bool {
    let upper = title.to_uppercase();
    upper.starts_with("WIP:") || upper.starts_with("[WIP]")
}

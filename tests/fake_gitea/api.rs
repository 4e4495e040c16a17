//! The REST API: the endpoints Pipewright calls, with Gitea's authentication, paging and
//! errors.

use super::*;

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Option<Value>,
    pub(super) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub(super) fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    pub(super) fn header(mut self, key: &'static str, value: String) -> Reply {
        self.headers.push((key, value));
        self
    }

    pub(super) fn into_response(self) -> Response {
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
pub(super) struct ApiRequest<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) query: Vec<(String, String)>,
    pub(super) body: &'a [u8],
    pub(super) caller: Caller,
}

impl ApiRequest<'_> {
    pub(super) fn param(&self, key: &str) -> Option<String> {
        query_get(&self.query, key)
    }

    /// Gitea's `GetListOptions`: `page` from 1, `limit` 30 by default and at most 50.
    pub(super) fn page(&self) -> (usize, usize) {
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

pub(super) async fn api(shared: Arc<Shared>, request: Request) -> Response {
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

pub(super) fn api_error(shared: &Shared, status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "url": format!("{}/api/swagger", shared.base_url)}),
    )
}

pub(super) fn not_found(shared: &Shared) -> Reply {
    api_error(shared, 404, "not found")
}

pub(super) fn api_sync(shared: &Shared, parts: &Parts, body: &[u8]) -> Reply {
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
        ["user"] if matches!(caller, Caller::User(_)) => {
            let state = shared.lock();
            let login = state.login_of(caller).unwrap_or_default();
            Reply::json(200, View::new(shared, &state).user(&login))
        }
        ["user"] => api_error(shared, 401, "token is required"),
        ["repos", owner, name, rest @ ..] => repo_api(shared, &request, owner, name, rest),
        ["orgs", org, "hooks", rest @ ..] => {
            let known = shared
                .lock()
                .repos
                .values()
                .any(|r| r.owner.eq_ignore_ascii_case(org));
            if !known {
                return not_found(shared);
            }
            // reqToken, then reqOrgOwnership: the bot owns the organisations of its tests.
            if caller != Caller::Bot {
                return api_error(shared, 401, "token is required");
            }
            hooks::hooks_api(
                shared,
                &request,
                HookOwnerRec::Org(org.to_lowercase()),
                rest,
            )
        }
        _ => not_found(shared),
    }
}

pub(super) fn repo_api(
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
            Caller::User(_) => match state.login_of(request.caller) {
                Some(login) => state.permission(&repo, &login),
                None => Permission::None,
            },
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
    if write && matches!(request.caller, Caller::User(_)) {
        return api_error(
            shared,
            403,
            "the fake Gitea serves writes with Pipewright's token only",
        );
    }
    if write && request.caller != Caller::Bot {
        return api_error(shared, 401, "token is required");
    }
    match (request.method, rest) {
        ("GET", []) => {
            let state = shared.lock();
            Reply::json(200, View::new(shared, &state).repo(&repo, permission, true))
        }
        (_, ["hooks", rest @ ..]) => {
            // The `/hooks` group is behind reqAdmin.
            if permission < Permission::Admin {
                return api_error(
                    shared,
                    403,
                    "user should be an owner or a collaborator with admin write of a repository",
                );
            }
            hooks::hooks_api(shared, request, HookOwnerRec::Repo(repo.id), rest)
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
        ("GET", ["pulls", number, "reviews"]) => list_reviews(shared, request, &repo, number),
        ("GET", ["commits", sha, "pull"]) => commit_pull(shared, &repo, permission, sha),
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
            let caller_login = match request.caller {
                Caller::Bot => Some(BOT_LOGIN.to_owned()),
                caller => state.login_of(caller),
            };
            let own = caller_login.is_some_and(|l| l.eq_ignore_ascii_case(&user.login));
            if permission < Permission::Admin && !own {
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
            | ["pulls", _, "reviews"]
            | ["commits", _, "pull"]
            | ["issues", _, "comments"]
            | ["issues", "comments", _]
            | ["collaborators", _, "permission"],
        ) => api_error(shared, 405, "method not allowed"),
        _ => not_found(shared),
    }
}

pub(super) fn json_field(body: &[u8], key: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get(key)?.as_str().map(str::to_owned)
}

/// `X-Total-Count` and a `Link` header like Gitea's `SetLinkHeader`.
pub(super) fn paged(
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

pub(super) fn list_branches(
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

pub(super) fn list_pulls(
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

pub(super) fn create_status(
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

pub(super) fn list_statuses(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    sha: &str,
) -> Reply {
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
pub(super) fn combined_status(
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

pub(super) fn comment_api(
    shared: &Shared,
    request: &ApiRequest<'_>,
    repo: &RepoRec,
    id: &str,
) -> Reply {
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

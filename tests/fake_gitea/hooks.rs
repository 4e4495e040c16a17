//! Webhooks in the REST API, as Gitea's `routers/api/v1/utils/hook.go` handles them: list,
//! create (`CreateHookOption`) and edit (`EditHookOption`) a repository's or an
//! organisation's hooks. The secret is stored and never shown, as in Gitea's `api.Hook`.

use super::*;

/// A stored hook.
#[derive(Clone, Debug)]
pub struct HookRec {
    pub id: i64,
    /// `Repo(id)` or `Org(lower-case name)`.
    pub owner: HookOwnerRec,
    pub kind: String,
    pub url: String,
    pub content_type: String,
    pub secret: String,
    pub events: Vec<String>,
    pub active: bool,
    pub created: i64,
    pub updated: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookOwnerRec {
    Repo(i64),
    Org(String),
}

/// Gitea's hook types (`webhook_module.HookType`s that `IsValidHookTaskType` accepts).
const HOOK_TYPES: &[&str] = &[
    "gitea",
    "gogs",
    "slack",
    "discord",
    "dingtalk",
    "telegram",
    "msteams",
    "feishu",
    "matrix",
    "wechatwork",
    "packagist",
];

/// The sub-events `pull_request` and `issues` stand for in `pullHook` / `issuesHook`.
const PULL_EVENTS: &[&str] = &[
    "pull_request_only",
    "pull_request_assign",
    "pull_request_label",
    "pull_request_milestone",
    "pull_request_comment",
    "pull_request_review",
    "pull_request_review_request",
    "pull_request_sync",
];
const ISSUE_EVENTS: &[&str] = &[
    "issues_only",
    "issue_assign",
    "issue_label",
    "issue_milestone",
    "issue_comment",
];
const PLAIN_EVENTS: &[&str] = &[
    "create",
    "delete",
    "fork",
    "push",
    "wiki",
    "repository",
    "release",
];

/// The events a hook gets for the names given, as `addHook` / `editHook` compute them
/// (an empty list means `push`), in Gitea's order.
fn chosen_events(given: &[String]) -> Vec<String> {
    let given: Vec<String> = if given.is_empty() {
        vec!["push".to_owned()]
    } else {
        given.iter().map(|e| e.to_lowercase()).collect()
    };
    let has = |e: &str| given.iter().any(|g| g == e);
    let mut events = Vec::new();
    for e in PLAIN_EVENTS {
        if has(e) {
            events.push((*e).to_owned());
        }
    }
    for e in ISSUE_EVENTS {
        if has(e) || has("issues") {
            events.push((*e).to_owned());
        }
    }
    for e in PULL_EVENTS {
        if has(e) || has("pull_request") {
            events.push((*e).to_owned());
        }
    }
    events
}

fn hook_json(hook: &HookRec) -> Value {
    json!({
        "id": hook.id,
        "type": hook.kind,
        "branch_filter": "",
        "config": {
            "content_type": hook.content_type,
            "http_method": "post",
            "url": hook.url,
        },
        "events": hook.events,
        "authorization_header": "",
        "active": hook.active,
        "updated_at": rfc3339(hook.updated, 0),
        "created_at": rfc3339(hook.created, 0),
    })
}

/// `GET|POST …/hooks`, `GET|PATCH …/hooks/{id}` of one owner; the caller was checked.
pub(super) fn hooks_api(
    shared: &Shared,
    request: &ApiRequest<'_>,
    owner: HookOwnerRec,
    rest: &[&str],
) -> Reply {
    let body = || serde_json::from_slice::<Value>(request.body).ok();
    match (request.method, rest) {
        ("GET", []) => {
            let state = shared.lock();
            let hooks: Vec<Value> = state
                .hooks
                .iter()
                .filter(|h| h.owner == owner)
                .map(hook_json)
                .collect();
            let (page, limit) = request.page();
            let total = hooks.len();
            let page: Vec<Value> = hooks
                .into_iter()
                .skip((page - 1) * limit)
                .take(limit)
                .collect();
            Reply::json(200, Value::Array(page)).header("X-Total-Count", total.to_string())
        }
        ("POST", []) => {
            let Some(option) = body() else {
                return api_error(shared, 422, "invalid JSON body");
            };
            let kind = option["type"].as_str().unwrap_or("").to_owned();
            if !HOOK_TYPES.contains(&kind.as_str()) {
                return api_error(shared, 422, &format!("Invalid hook type: {kind}"));
            }
            for name in ["url", "content_type"] {
                if option["config"].get(name).is_none() {
                    return api_error(shared, 422, &format!("Missing config option: {name}"));
                }
            }
            let content_type = option["config"]["content_type"].as_str().unwrap_or("");
            if !matches!(content_type, "json" | "form") {
                return api_error(shared, 422, "Invalid content type");
            }
            let events: Vec<String> = option["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut state = shared.lock();
            state.next_hook_id += 1;
            let now = now_secs();
            let hook = HookRec {
                id: state.next_hook_id,
                owner,
                kind,
                url: option["config"]["url"].as_str().unwrap_or("").to_owned(),
                content_type: content_type.to_owned(),
                secret: option["config"]["secret"].as_str().unwrap_or("").to_owned(),
                events: chosen_events(&events),
                // `CreateHookOption.active` is a plain bool: absent is false.
                active: option["active"].as_bool().unwrap_or(false),
                created: now,
                updated: now,
            };
            let shown = hook_json(&hook);
            state.hooks.push(hook);
            Reply::json(201, shown)
        }
        ("GET" | "PATCH", [id]) => {
            let Some(option) = (request.method == "PATCH")
                .then(body)
                .flatten()
                .or(Some(json!({})))
            else {
                return api_error(shared, 422, "invalid JSON body");
            };
            let mut state = shared.lock();
            let Some(hook) = id.parse::<i64>().ok().and_then(|id| {
                state
                    .hooks
                    .iter_mut()
                    .find(|h| h.id == id && h.owner == owner)
            }) else {
                return not_found(shared);
            };
            if request.method == "PATCH" {
                if let Some(config) = option.get("config") {
                    if let Some(url) = config["url"].as_str() {
                        hook.url = url.to_owned();
                    }
                    if let Some(ct) = config["content_type"].as_str() {
                        if !matches!(ct, "json" | "form") {
                            return api_error(shared, 422, "Invalid content type");
                        }
                        hook.content_type = ct.to_owned();
                    }
                    if let Some(secret) = config["secret"].as_str() {
                        hook.secret = secret.to_owned();
                    }
                }
                let events: Vec<String> = option["events"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                hook.events = chosen_events(&events);
                // `EditHookOption.active` is a pointer: absent leaves it as it was.
                if let Some(active) = option["active"].as_bool() {
                    hook.active = active;
                }
                hook.updated = now_secs();
            }
            Reply::json(200, hook_json(hook))
        }
        _ => not_found(shared),
    }
}

impl FakeGitea {
    /// The hooks of a repository (`owner/name`) or, without a `/`, of an organisation.
    pub fn hooks(&self, owner: &str) -> Vec<HookRec> {
        let state = self.shared.lock();
        let wanted = match owner.split_once('/') {
            Some((o, n)) => match state.find_repo(o, n) {
                Some(repo) => HookOwnerRec::Repo(repo.id),
                None => return Vec::new(),
            },
            None => HookOwnerRec::Org(owner.to_lowercase()),
        };
        state
            .hooks
            .iter()
            .filter(|h| h.owner == wanted)
            .cloned()
            .collect()
    }
}

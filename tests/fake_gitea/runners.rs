//! Gitea's Actions runner API under `/api/actions` (runner.v1 over Connect, JSON bodies), as
//! Gitea 1.25 serves it (`shared/research/gitea-runner-protocol.md`): `Register`,
//! `Declare`, `FetchTask`, `UpdateTask`, `UpdateLog` and `Ping`; and what a test does in
//! Gitea's UI: create a registration token, press "Run workflow", cancel a job.
//!
//! Faithful parts: POST only; `Content-Type: application/json` (else 415, no body); an
//! empty or non-object body is `invalid_argument` (400); keys in lowerCamelCase or
//! snake_case, int64 as string or number, enums by name or number, unknown fields
//! ignored; answers with int64 as strings, enums by name, default values left out;
//! `x-runner-uuid` and `x-runner-token` on every call but `Register` and `Ping`, else
//! HTTP 500 `unknown` "rpc error: code = Unauthenticated desc = unregistered runner";
//! Gitea's own errors as `unknown` (500) with the reason in the message; `tasks_version`
//! (a task is looked for only when the runner's differs from the counter); tasks handed
//! to a runner whose labels hold every `runs-on` label, oldest first; UpdateTask's
//! heartbeat and final state, a final task answering its result; UpdateLog's ack
//! arithmetic, `no_more` ignored on a call that adds nothing, `AlreadyExists` once archived.
//!
//! Deliberate differences: the binary protobuf codec is not served (415); the workflow a
//! test dispatches must have one job (Gitea's jobparser splits several into single-job
//! payloads; the fake hands out the file itself as that payload).

use super::*;

#[derive(Debug, Default)]
pub(super) struct ActionsState {
    registration_tokens: Vec<String>,
    runners: Vec<RunnerRec>,
    tasks_version: i64,
    jobs: Vec<JobRec>,
    tasks: BTreeMap<i64, ActionsTask>,
    next_id: i64,
    /// Runner API calls still to answer 503 (a proxy in front of a Gitea that is down).
    fail_next: u32,
}

#[derive(Clone, Debug)]
struct RunnerRec {
    id: i64,
    uuid: String,
    token_hash: String,
    name: String,
    version: String,
    labels: Vec<String>,
}

#[derive(Clone, Debug)]
struct JobRec {
    id: i64,
    runs_on: Vec<String>,
    payload: String,
    context: Value,
    secrets: Map<String, Value>,
    steps: usize,
    task: Option<i64>,
}

/// A runner registered with the fake, as Gitea's runner list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionsRunner {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
}

/// A task as Gitea stores it: its status (`running`, `success`, `failure`, `cancelled`,
/// `skipped`), steps and log rows.
#[derive(Clone, Debug)]
pub struct ActionsTask {
    pub id: i64,
    pub job: i64,
    pub runner: i64,
    pub status: String,
    pub started: i64,
    pub stopped: i64,
    pub steps: Vec<ActionsStep>,
    pub log: Vec<ActionsLogRow>,
    pub log_archived: bool,
    /// The task's token (`context.token`, `secrets.GITEA_TOKEN`).
    pub token: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionsStep {
    pub status: String,
    pub log_index: i64,
    pub log_length: i64,
    pub started: i64,
    pub stopped: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionsLogRow {
    pub time: String,
    pub content: String,
}

impl ActionsTask {
    /// The log rows' contents.
    pub fn lines(&self) -> Vec<String> {
        self.log.iter().map(|r| r.content.clone()).collect()
    }
}

const RESULTS: [&str; 5] = [
    "RESULT_UNSPECIFIED",
    "RESULT_SUCCESS",
    "RESULT_FAILURE",
    "RESULT_CANCELLED",
    "RESULT_SKIPPED",
];

/// Gitea's status names for results 1–4 (`models/actions/status.go`).
fn status_name(result: usize) -> &'static str {
    ["unknown", "success", "failure", "cancelled", "skipped"][result]
}

fn result_of_status(status: &str) -> Option<&'static str> {
    match status {
        "success" => Some(RESULTS[1]),
        "failure" => Some(RESULTS[2]),
        "cancelled" => Some(RESULTS[3]),
        "skipped" => Some(RESULTS[4]),
        _ => None,
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("valid response")
}

/// A Connect error: `{"code", "message"}` with the HTTP status connect-go maps it to.
fn connect_error(code: &str, message: &str) -> Response {
    let status = match code {
        "invalid_argument" => StatusCode::BAD_REQUEST,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "not_found" => StatusCode::NOT_FOUND,
        "already_exists" => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, &json!({ "code": code, "message": message }))
}

/// What Gitea's handlers return: a plain error, which connect-go wraps as `unknown`.
fn gitea_error(message: &str) -> Response {
    connect_error("unknown", message)
}

fn field<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel).or_else(|| obj.get(snake))
}

fn int64(v: Option<&Value>) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("invalid int64 {n}")),
        Some(Value::String(s)) => s.parse().map_err(|_| format!("invalid int64 {s:?}")),
        Some(other) => Err(format!("invalid value for int64 field: {other}")),
    }
}

fn string(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("invalid value for string field: {other}")),
    }
}

fn strings(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|i| string(Some(i))).collect(),
        Some(other) => Err(format!("invalid value for repeated string field: {other}")),
    }
}

/// An enum `Result` by name or number.
fn result(v: Option<&Value>) -> Result<usize, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => RESULTS
            .iter()
            .position(|r| r == s)
            .ok_or_else(|| format!("invalid value for enum field result: {s:?}")),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n < RESULTS.len())
            .ok_or_else(|| format!("invalid value for enum field result: {n}")),
        Some(other) => Err(format!("invalid value for enum field result: {other}")),
    }
}

/// A `google.protobuf.Timestamp` in RFC 3339 (`Z` or an offset), as epoch seconds.
fn timestamp(v: Option<&Value>) -> Result<i64, String> {
    let text = match v {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("invalid google.protobuf.Timestamp value {other}")),
    };
    let bad = || format!("invalid google.protobuf.Timestamp value {text:?}");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        text.get(from..to)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let rest = &text[19..];
    let rest = match rest.strip_prefix('.') {
        Some(frac) => frac.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if !(rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')))) {
        return Err(bad());
    }
    let days = {
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    };
    Ok(days * 86_400 + h * 3600 + mi * 60 + s)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `/api/actions/...`.
pub(super) async fn runner_api(shared: Arc<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    // The registration token and the runner token never stay in the record.
    let recorded = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut obj)) => {
            if obj.contains_key("token") {
                obj.insert("token".to_owned(), json!("REDACTED"));
            }
            serde_json::to_vec(&obj).unwrap_or_default()
        }
        _ => body.to_vec(),
    };
    let index = shared.record(&parts, recorded);
    let response = answer(&shared, &parts, &body);
    shared.set_status(index, response.status().as_u16());
    response
}

fn answer(shared: &Arc<Shared>, parts: &Parts, body: &[u8]) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return down_response();
    }
    {
        let mut state = shared.lock();
        if state.actions.fail_next > 0 {
            state.actions.fail_next -= 1;
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
        }
    }
    let path = parts.uri.path();
    let procedure = match path.strip_prefix("/api/actions/") {
        Some("ping.v1.PingService/Ping") => "Ping",
        Some(rest) => match rest.strip_prefix("runner.v1.RunnerService/") {
            Some(p @ ("Register" | "Declare" | "FetchTask" | "UpdateTask" | "UpdateLog")) => p,
            _ => return text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
        },
        None => return text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    if parts.method != axum::http::Method::POST {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Response::builder()
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .header("accept-post", "application/json, application/proto")
            .body(Body::empty())
            .expect("valid response");
    }
    let request_type = format!("*v1.{procedure}Request");
    if body.is_empty() {
        return connect_error(
            "invalid_argument",
            &format!(
                "unmarshal into {request_type}: zero-length payload is not a valid JSON object"
            ),
        );
    }
    let obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) | Err(_) => {
            return connect_error(
                "invalid_argument",
                &format!("unmarshal into {request_type}: proto: syntax error"),
            );
        }
    };
    let mut state = shared.lock();
    let actions = &mut state.actions;
    if procedure == "Ping" {
        let data = string(obj.get("data")).unwrap_or_default();
        return json_response(
            StatusCode::OK,
            &json!({ "data": format!("Hello, {data}!") }),
        );
    }
    if procedure == "Register" {
        return register(actions, &obj).unwrap_or_else(|e| connect_error("invalid_argument", &e));
    }
    let header_value = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (uuid, token) = (
        header_value("x-runner-uuid"),
        header_value("x-runner-token"),
    );
    let Some(runner) = actions
        .runners
        .iter()
        .find(|r| r.uuid == uuid && !uuid.is_empty() && r.token_hash == token_hash(&token))
        .cloned()
    else {
        return gitea_error("rpc error: code = Unauthenticated desc = unregistered runner");
    };
    let handled = match procedure {
        "Declare" => declare(actions, &runner, &obj),
        "FetchTask" => fetch_task(actions, &runner, &obj),
        "UpdateTask" => update_task(actions, &runner, &obj),
        _ => update_log(actions, &runner, &obj),
    };
    handled.unwrap_or_else(|e| connect_error("invalid_argument", &e))
}

type Handled = Result<Response, String>;

fn runner_json(r: &RunnerRec, token: Option<&str>) -> Value {
    let mut v = json!({
        "id": r.id.to_string(),
        "uuid": r.uuid,
        "name": r.name,
    });
    if let Some(token) = token {
        v["token"] = json!(token);
    }
    if !r.version.is_empty() {
        v["version"] = json!(r.version);
    }
    if !r.labels.is_empty() {
        v["labels"] = json!(r.labels);
    }
    v
}

fn register(actions: &mut ActionsState, obj: &Map<String, Value>) -> Handled {
    let token = string(obj.get("token"))?;
    let name: String = string(obj.get("name"))?.chars().take(255).collect();
    let version = string(obj.get("version"))?;
    let labels = strings(obj.get("labels"))?;
    if !actions.registration_tokens.contains(&token) {
        return Ok(gitea_error("runner registration token not found"));
    }
    actions.next_id += 1;
    let secret = hex::encode(random_bytes::<20>());
    let runner = RunnerRec {
        id: actions.next_id,
        uuid: uuid_v4(),
        token_hash: token_hash(&secret),
        name,
        version,
        labels,
    };
    let body = json!({ "runner": runner_json(&runner, Some(&secret)) });
    actions.runners.push(runner);
    Ok(json_response(StatusCode::OK, &body))
}

fn declare(actions: &mut ActionsState, runner: &RunnerRec, obj: &Map<String, Value>) -> Handled {
    let version = string(obj.get("version"))?;
    let labels = strings(obj.get("labels"))?;
    let rec = actions
        .runners
        .iter_mut()
        .find(|r| r.id == runner.id)
        .expect("the runner exists");
    rec.version = version;
    rec.labels = labels;
    let body = json!({ "runner": runner_json(rec, None) });
    Ok(json_response(StatusCode::OK, &body))
}

fn fetch_task(actions: &mut ActionsState, runner: &RunnerRec, obj: &Map<String, Value>) -> Handled {
    let theirs = int64(field(obj, "tasksVersion", "tasks_version"))?;
    if actions.tasks_version == 0 {
        actions.tasks_version = 1;
    }
    let latest = actions.tasks_version;
    let mut body = json!({ "tasksVersion": latest.to_string() });
    if theirs == latest {
        return Ok(json_response(StatusCode::OK, &body));
    }
    let job = actions
        .jobs
        .iter_mut()
        .find(|j| j.task.is_none() && j.runs_on.iter().all(|l| runner.labels.contains(l)));
    let Some(job) = job else {
        return Ok(json_response(StatusCode::OK, &body));
    };
    actions.next_id += 1;
    let id = actions.next_id;
    job.task = Some(id);
    let token = hex::encode(random_bytes::<20>());
    let mut context = job.context.clone();
    context["token"] = json!(token);
    let mut secrets = job.secrets.clone();
    secrets.insert("GITEA_TOKEN".to_owned(), json!(token));
    secrets.insert("GITHUB_TOKEN".to_owned(), json!(token));
    body["task"] = json!({
        "id": id.to_string(),
        "workflowPayload": base64::engine::general_purpose::STANDARD.encode(&job.payload),
        "context": context,
        "secrets": secrets,
    });
    let task = ActionsTask {
        id,
        job: job.id,
        runner: runner.id,
        status: "running".to_owned(),
        started: now_secs(),
        stopped: 0,
        steps: vec![
            ActionsStep {
                status: "waiting".to_owned(),
                ..ActionsStep::default()
            };
            job.steps
        ],
        log: Vec::new(),
        log_archived: false,
        token,
    };
    actions.tasks.insert(id, task);
    Ok(json_response(StatusCode::OK, &body))
}

fn task_of<'a>(
    actions: &'a mut ActionsState,
    runner: &RunnerRec,
    id: i64,
) -> Result<&'a mut ActionsTask, String> {
    match actions.tasks.get_mut(&id) {
        None => Err(format!(
            "rpc error: code = Internal desc = load task: task with id {id} does not exist"
        )),
        Some(task) if task.runner != runner.id => {
            Err("rpc error: code = Internal desc = update task: invalid runner for task".to_owned())
        }
        Some(task) => Ok(task),
    }
}

fn update_task(
    actions: &mut ActionsState,
    runner: &RunnerRec,
    obj: &Map<String, Value>,
) -> Handled {
    let state = match obj.get("state") {
        Some(Value::Object(state)) => state.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(other) => return Err(format!("invalid value for message field state: {other}")),
    };
    let id = int64(state.get("id"))?;
    let result_value = result(state.get("result"))?;
    let stopped = timestamp(field(&state, "stoppedAt", "stopped_at"))?;
    let mut steps = Vec::new();
    for step in match state.get("steps") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    } {
        let step = step.as_object().cloned().unwrap_or_default();
        steps.push((
            int64(step.get("id"))?,
            result(step.get("result"))?,
            timestamp(field(&step, "startedAt", "started_at"))?,
            timestamp(field(&step, "stoppedAt", "stopped_at"))?,
            int64(field(&step, "logIndex", "log_index"))?,
            int64(field(&step, "logLength", "log_length"))?,
        ));
    }
    let task = match task_of(actions, runner, id) {
        Ok(task) => task,
        Err(message) => return Ok(gitea_error(&message)),
    };
    if let Some(final_result) = result_of_status(&task.status) {
        // Already final: nothing changes, the final result is answered.
        let body = json!({ "state": { "id": id.to_string(), "result": final_result } });
        return Ok(json_response(StatusCode::OK, &body));
    }
    for (index, step) in task.steps.iter_mut().enumerate() {
        let Some(s) = steps.iter().find(|s| s.0 == index as i64) else {
            continue;
        };
        step.log_index = s.4;
        step.log_length = s.5;
        step.started = s.2;
        step.stopped = s.3;
        if s.1 != 0 {
            step.status = status_name(s.1).to_owned();
        } else if s.2 != 0 {
            step.status = "running".to_owned();
        }
    }
    let mut body = json!({ "state": { "id": id.to_string() } });
    if result_value != 0 {
        task.status = status_name(result_value).to_owned();
        task.stopped = stopped;
        body["state"]["result"] = json!(RESULTS[result_value]);
    }
    Ok(json_response(StatusCode::OK, &body))
}

fn update_log(actions: &mut ActionsState, runner: &RunnerRec, obj: &Map<String, Value>) -> Handled {
    let id = int64(field(obj, "taskId", "task_id"))?;
    let index = int64(obj.get("index"))?;
    let no_more = match field(obj, "noMore", "no_more") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("invalid value for bool field noMore: {other}")),
    };
    let mut rows = Vec::new();
    if let Some(Value::Array(items)) = obj.get("rows") {
        for item in items {
            let item = item.as_object().cloned().unwrap_or_default();
            let time = timestamp(item.get("time"))?;
            rows.push(ActionsLogRow {
                time: rfc3339(time, 0),
                content: string(item.get("content"))?,
            });
        }
    }
    let task = match task_of(actions, runner, id) {
        Ok(task) => task,
        Err(message) => return Ok(gitea_error(&message)),
    };
    if task.log_archived {
        return Ok(gitea_error(
            "rpc error: code = AlreadyExists desc = log file has been archived",
        ));
    }
    let ack = task.log.len() as i64;
    if rows.is_empty() || index > ack || index + rows.len() as i64 <= ack {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "ackIndex": ack.to_string() }),
        ));
    }
    let skip = usize::try_from(ack - index).unwrap_or(0);
    task.log.extend(rows.into_iter().skip(skip).map(|mut r| {
        // Gitea keeps one line per row: a newline inside is written as `\n`.
        r.content = r.content.replace('\n', "\\n");
        r
    }));
    if no_more {
        task.log_archived = true;
    }
    let ack = task.log.len() as i64;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "ackIndex": ack.to_string() }),
    ))
}

impl FakeGitea {
    /// A new runner registration token (as "Create new runner" shows one).
    pub fn actions_registration_token(&self) -> String {
        let token = hex::encode(random_bytes::<20>());
        self.shared
            .lock()
            .actions
            .registration_tokens
            .push(token.clone());
        token
    }

    /// The runners registered so far.
    pub fn actions_runners(&self) -> Vec<ActionsRunner> {
        self.shared
            .lock()
            .actions
            .runners
            .iter()
            .map(|r| ActionsRunner {
                id: r.id,
                uuid: r.uuid.clone(),
                name: r.name.clone(),
                version: r.version.clone(),
                labels: r.labels.clone(),
            })
            .collect()
    }

    /// "Run workflow": `actor` dispatches workflow `file` (its YAML, one job) of `repo` on
    /// `branch` with the form's `inputs`, as Gitea 1.25's `DispatchActionWorkflow` does:
    /// only declared inputs are kept, an empty one takes the YAML default, a boolean is
    /// `"true"` or `"false"`. Returns the job's id.
    pub fn dispatch_workflow(
        &self,
        repo: &Repo,
        file: &str,
        workflow: &str,
        branch: &str,
        inputs: &[(&str, &str)],
        actor: &str,
    ) -> i64 {
        let parsed = pipewright_pipelines::yaml_to_json(workflow).expect("a YAML workflow");
        let jobs = parsed["jobs"].as_object().expect("jobs");
        assert_eq!(jobs.len(), 1, "the fake dispatches one-job workflows");
        let (job_id, job) = jobs.iter().next().expect("one job");
        let runs_on = match &job["runs-on"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let steps = job["steps"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| !s.is_null()).count());
        let mut kept = Map::new();
        if let Some(declared) = parsed["on"]["workflow_dispatch"]["inputs"].as_object() {
            for (name, spec) in declared {
                let given = inputs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| (*v).to_owned())
                    .unwrap_or_default();
                let value = if spec["type"] == "boolean" {
                    if given.is_empty() {
                        spec["default"].as_str().unwrap_or("false").to_owned()
                    } else {
                        (given == "true" || given == "on").to_string()
                    }
                } else if given.is_empty() {
                    spec["default"].as_str().unwrap_or("").to_owned()
                } else {
                    given
                };
                kept.insert(name.clone(), json!(value));
            }
        }
        let sha = repo.head(branch);
        let git_ref = format!("refs/heads/{branch}");
        let base = self.url().to_owned();
        let full_name = repo.full_name();
        let mut state = self.shared.lock();
        let repository =
            View::new(&self.shared, &state).repo(state.repo(repo.id), Permission::Admin, false);
        let sender = View::new(&self.shared, &state).user(actor);
        let actions = &mut state.actions;
        actions.next_id += 1;
        let id = actions.next_id;
        let context = json!({
            "event": {
                "workflow": file,
                "ref": git_ref,
                "inputs": kept,
                "repository": repository,
                "sender": sender,
            },
            "event_name": "workflow_dispatch",
            "ref": git_ref,
            "ref_name": branch,
            "ref_type": "branch",
            "sha": sha,
            "workflow": file,
            "job": job_id,
            "run_id": id.to_string(),
            "run_number": id.to_string(),
            "run_attempt": "1",
            "repository": full_name,
            "repository_owner": repo.owner(),
            "repositoryUrl": format!("{base}/{full_name}"),
            "server_url": base,
            "api_url": format!("{base}/api/v1"),
            "actor": actor,
            "gitea_runtime_token": hex::encode(random_bytes::<24>()),
            "gitea_default_actions_url": "https://github.com",
            "secret_source": "Actions",
            "ref_protected": false,
        });
        actions.jobs.push(JobRec {
            id,
            runs_on,
            payload: workflow.to_owned(),
            context,
            secrets: Map::new(),
            steps,
            task: None,
        });
        actions.tasks_version += 1;
        id
    }

    /// The task that took job `job`, once a runner fetched it.
    pub fn actions_task_of_job(&self, job: i64) -> Option<ActionsTask> {
        let state = self.shared.lock();
        let task = state.actions.jobs.iter().find(|j| j.id == job)?.task?;
        state.actions.tasks.get(&task).cloned()
    }

    /// Cancel in the job's page (`StopTask` with `cancelled`): the task ends, its open
    /// steps are closed as cancelled; the log stays open.
    pub fn cancel_actions_job(&self, job: i64) {
        let mut state = self.shared.lock();
        let Some(task) = state
            .actions
            .jobs
            .iter()
            .find(|j| j.id == job)
            .and_then(|j| j.task)
        else {
            return;
        };
        let now = now_secs();
        if let Some(task) = state.actions.tasks.get_mut(&task)
            && result_of_status(&task.status).is_none()
        {
            task.status = "cancelled".to_owned();
            task.stopped = now;
            for step in &mut task.steps {
                if result_of_status(&step.status).is_none() {
                    step.status = "cancelled".to_owned();
                    step.stopped = now;
                }
            }
        }
    }

    /// Makes the next `n` runner API calls answer 503.
    pub fn fail_actions(&self, n: u32) {
        self.shared.lock().actions.fail_next = n;
    }

    /// The runner API calls received (under `/api/actions`), in order; tokens in bodies
    /// are `REDACTED`.
    pub fn actions_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/api/actions/"))
            .cloned()
            .collect()
    }
}

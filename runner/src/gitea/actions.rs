//! Gitea's Actions runner protocol (`runner.v1.RunnerService` over Connect, JSON bodies):
//! `Register`, `Declare`, `FetchTask`, `UpdateTask`, `UpdateLog` under `<gitea>/api/actions`.
//!
//! The messages are protojson's: lowerCamelCase keys, `int64` as strings (numbers read
//! too), enums by name, fields at their default left out, unknown fields ignored (a newer
//! Gitea or Forgejo may add some). Every call is a POST with `Content-Type:
//! application/json` and at least `{}`; every call but `Register` carries the runner's
//! `x-runner-uuid` and `x-runner-token`. A non-200 answer is a Connect error
//! `{"code", "message"}`: Gitea wraps nearly all of its own as `unknown` (HTTP 500) with
//! the reason in the message only, Forgejo sends real codes.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

use crate::config::Secret;

/// The runner's identity in Gitea, from `Register`: kept, and sent on every later call.
#[derive(Clone, Debug)]
pub struct RunnerCredentials {
    pub uuid: String,
    pub token: Secret,
}

/// Gitea's runner endpoints.
#[derive(Clone, Debug)]
pub struct ActionsClient {
    base: String,
    client: Client,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error("failed to reach Gitea's runner API ({procedure})")]
    Http {
        procedure: &'static str,
        source: reqwest::Error,
    },
    /// A Connect error, or a non-200 answer without one (a proxy's 502, a 404 of an
    /// unknown procedure, 415).
    #[error("Gitea answered {status} to {procedure}: {code}: {message}")]
    Connect {
        procedure: &'static str,
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("Gitea's answer to {procedure} is not the expected message: {why}")]
    Decode {
        procedure: &'static str,
        why: String,
    },
}

impl ActionsError {
    /// Whether Gitea no longer knows this runner (deleted in its settings, or another
    /// token): it must register again.
    pub fn is_unregistered(&self) -> bool {
        match self {
            ActionsError::Connect { code, message, .. } => {
                code == "unauthenticated" || message.contains("unregistered runner")
            }
            _ => false,
        }
    }

    /// Whether trying again later may succeed: Gitea unreachable, overloaded or failing
    /// (5xx, 429), and not our request's fault nor an unknown runner.
    pub fn is_transient(&self) -> bool {
        match self {
            ActionsError::Http { .. } => true,
            ActionsError::Connect { status, .. } => {
                !self.is_unregistered()
                    && (status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS)
            }
            ActionsError::Decode { .. } => false,
        }
    }
}

/// The Connect error body.
#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `Result`, the outcome of a task or step (`runner.v1.Result`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskResult {
    #[default]
    Unspecified,
    Success,
    Failure,
    Cancelled,
    Skipped,
}

impl TaskResult {
    const NAMES: [(&'static str, TaskResult); 5] = [
        ("RESULT_UNSPECIFIED", TaskResult::Unspecified),
        ("RESULT_SUCCESS", TaskResult::Success),
        ("RESULT_FAILURE", TaskResult::Failure),
        ("RESULT_CANCELLED", TaskResult::Cancelled),
        ("RESULT_SKIPPED", TaskResult::Skipped),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("RESULT_UNSPECIFIED", |(n, _)| n)
    }

    fn is_unspecified(&self) -> bool {
        *self == TaskResult::Unspecified
    }
}

impl Serialize for TaskResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TaskResult {
    /// A name or a number, as protojson reads enums; an unknown one is unspecified.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let found = match &value {
            serde_json::Value::String(name) => TaskResult::NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| *r),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| TaskResult::NAMES.get(usize::try_from(n).ok()?))
                .map(|(_, r)| *r),
            _ => None,
        };
        Ok(found.unwrap_or_default())
    }
}

/// protojson's `int64`: written as a string, read from a string or a number.
mod int64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(D::Error::custom),
            serde_json::Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| D::Error::custom(format!("{n} is not an int64"))),
            serde_json::Value::Null => Ok(0),
            other => Err(D::Error::custom(format!(
                "expected an int64, found {other}"
            ))),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegisterRequest<'a> {
    name: &'a str,
    token: &'a str,
    version: &'a str,
    labels: &'a [String],
}

#[derive(Deserialize)]
struct RegisterResponse {
    runner: Option<Runner>,
}

/// `runner.v1.Runner` as `Register` and `Declare` answer it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Runner {
    #[serde(with = "int64")]
    pub id: i64,
    pub uuid: String,
    /// Only `Register` fills it (Gitea keeps only its hash).
    pub token: String,
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeclareRequest<'a> {
    version: &'a str,
    labels: &'a [String],
}

#[derive(Deserialize)]
struct DeclareResponse {
    runner: Option<Runner>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FetchTaskRequest {
    #[serde(with = "int64")]
    tasks_version: i64,
}

/// What `FetchTask` answers: a task, or none, and Gitea's tasks version.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FetchTaskResponse {
    pub task: Option<Task>,
    #[serde(with = "int64")]
    pub tasks_version: i64,
}

/// `runner.v1.Task`: one job of a workflow run, handed to this runner.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Task {
    #[serde(with = "int64")]
    pub id: i64,
    /// The single-job workflow as YAML (base64 in JSON).
    #[serde(deserialize_with = "base64_bytes")]
    pub workflow_payload: Vec<u8>,
    /// The github-style context (`event`, `event_name`, `ref`, `sha`, `actor`, `workflow`,
    /// `repository`, `token`, …).
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Never written anywhere: Pipewright runs take their secrets from Vault.
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
}

impl Task {
    /// A text value of the context (empty when absent or not text).
    pub fn context_str(&self, key: &str) -> &str {
        self.context
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }
}

fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::Engine as _;
    use serde::de::Error;
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    // protojson writes standard base64 with padding and reads the URL-safe form too.
    let text = text.replace('-', "+").replace('_', "/");
    let text = text.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(D::Error::custom)
}

/// `runner.v1.StepState`: a step of the task's workflow by its 0-based index.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    #[serde(with = "int64")]
    pub id: i64,
    #[serde(skip_serializing_if = "TaskResult::is_unspecified")]
    pub result: TaskResult,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(with = "int64")]
    pub log_index: i64,
    #[serde(with = "int64")]
    pub log_length: i64,
}

/// `runner.v1.TaskState`: a heartbeat (result unspecified) or the task's end.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskState {
    #[serde(with = "int64")]
    pub id: i64,
    #[serde(skip_serializing_if = "TaskResult::is_unspecified")]
    pub result: TaskResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    pub steps: Vec<StepState>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateTaskRequest<'a> {
    state: &'a TaskState,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    outputs: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct UpdateTaskResponse {
    state: Option<ServerTaskState>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ServerTaskState {
    result: TaskResult,
}

/// `runner.v1.LogRow`.
#[derive(Clone, Debug, Serialize)]
pub struct LogRow {
    /// RFC 3339.
    pub time: String,
    pub content: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateLogRequest<'a> {
    #[serde(with = "int64")]
    task_id: i64,
    #[serde(with = "int64")]
    index: i64,
    rows: &'a [LogRow],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_more: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct UpdateLogResponse {
    #[serde(with = "int64")]
    ack_index: i64,
}

impl ActionsClient {
    /// The runner API of the Gitea at `url` (a sub-path is kept).
    pub fn new(url: &str, client: Client) -> ActionsClient {
        ActionsClient {
            base: format!("{}/api/actions", url.trim_end_matches('/')),
            client,
        }
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        procedure: &'static str,
        runner: Option<&RunnerCredentials>,
        body: &Req,
    ) -> Result<Resp, ActionsError> {
        let body = serde_json::to_vec(body).map_err(|e| ActionsError::Decode {
            procedure,
            why: e.to_string(),
        })?;
        let mut req = self
            .client
            .post(format!("{}/runner.v1.RunnerService/{procedure}", self.base))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .body(body);
        if let Some(runner) = runner {
            req = req
                .header("x-runner-uuid", &runner.uuid)
                .header("x-runner-token", runner.token.expose());
        }
        let http = |source| ActionsError::Http { procedure, source };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http)?;
        if status != StatusCode::OK {
            let (code, message) = match serde_json::from_slice::<WireError>(&bytes) {
                Ok(e) if !e.code.is_empty() => (e.code, e.message),
                _ => {
                    let mut text = String::from_utf8_lossy(&bytes).trim().to_owned();
                    text.truncate(300);
                    ("(no Connect error)".to_owned(), text)
                }
            };
            return Err(ActionsError::Connect {
                procedure,
                status,
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ActionsError::Decode {
            procedure,
            why: e.to_string(),
        })
    }

    /// `Register`: a new runner in Gitea with `registration_token`; its uuid and token.
    pub async fn register(
        &self,
        registration_token: &Secret,
        name: &str,
        version: &str,
        labels: &[String],
    ) -> Result<Runner, ActionsError> {
        let body = RegisterRequest {
            name,
            token: registration_token.expose(),
            version,
            labels,
        };
        let resp: RegisterResponse = self.call("Register", None, &body).await?;
        match resp.runner {
            Some(runner) if !runner.uuid.is_empty() && !runner.token.is_empty() => Ok(runner),
            _ => Err(ActionsError::Decode {
                procedure: "Register",
                why: "no runner uuid and token in the answer".to_owned(),
            }),
        }
    }

    /// `Declare`: this runner's version and labels, replacing what Gitea has.
    pub async fn declare(
        &self,
        runner: &RunnerCredentials,
        version: &str,
        labels: &[String],
    ) -> Result<Runner, ActionsError> {
        let body = DeclareRequest { version, labels };
        let resp: DeclareResponse = self.call("Declare", Some(runner), &body).await?;
        Ok(resp.runner.unwrap_or_default())
    }

    /// `FetchTask` with the tasks version last seen (0: look in any case).
    pub async fn fetch_task(
        &self,
        runner: &RunnerCredentials,
        tasks_version: i64,
    ) -> Result<FetchTaskResponse, ActionsError> {
        self.call(
            "FetchTask",
            Some(runner),
            &FetchTaskRequest { tasks_version },
        )
        .await
    }

    /// `UpdateTask`: the task's state; what Gitea holds as its result (`Cancelled` when a
    /// user cancelled it, or Gitea gave up on it).
    pub async fn update_task(
        &self,
        runner: &RunnerCredentials,
        state: &TaskState,
    ) -> Result<TaskResult, ActionsError> {
        let body = UpdateTaskRequest {
            state,
            outputs: BTreeMap::new(),
        };
        let resp: UpdateTaskResponse = self.call("UpdateTask", Some(runner), &body).await?;
        Ok(resp.state.unwrap_or_default().result)
    }

    /// `UpdateLog`: `rows` as the task's rows from `index`; how many rows Gitea holds now.
    pub async fn update_log(
        &self,
        runner: &RunnerCredentials,
        task_id: i64,
        index: i64,
        rows: &[LogRow],
        no_more: bool,
    ) -> Result<i64, ActionsError> {
        let body = UpdateLogRequest {
            task_id,
            index,
            rows,
            no_more,
        };
        let resp: UpdateLogResponse = self.call("UpdateLog", Some(runner), &body).await?;
        Ok(resp.ack_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    #[test]
    fn messages_have_protojson_casing() {
        let state = TaskState {
            id: 42,
            result: TaskResult::Success,
            started_at: None,
            stopped_at: Some(rfc3339(1_767_261_605_000)),
            steps: vec![StepState {
                id: 0,
                result: TaskResult::Success,
                started_at: Some(rfc3339(0)),
                stopped_at: None,
                log_index: 0,
                log_length: 1,
            }],
        };
        let body = serde_json::to_value(UpdateTaskRequest {
            state: &state,
            outputs: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"state": {"id": "42", "result": "RESULT_SUCCESS",
                "stoppedAt": "2026-01-01T10:00:05.000Z",
                "steps": [{"id": "0", "result": "RESULT_SUCCESS",
                    "startedAt": "1970-01-01T00:00:00.000Z", "logIndex": "0", "logLength": "1"}]}})
        );
        let log = serde_json::to_value(UpdateLogRequest {
            task_id: 7,
            index: 3,
            rows: &[],
            no_more: true,
        })
        .unwrap();
        assert_eq!(
            log,
            serde_json::json!({"taskId": "7", "index": "3", "rows": [], "noMore": true})
        );
    }

    #[test]
    fn answers_are_read_as_protojson_writes_them() {
        let fetched: FetchTaskResponse = serde_json::from_value(serde_json::json!({
            "task": {"id": "9", "workflowPayload": "b246IHB1c2g=", "context": {"actor": "ana"},
                "secrets": {"GITEA_TOKEN": "x"}, "machine": "", "newerField": {"a": 1}},
            "tasksVersion": "12"
        }))
        .unwrap();
        let task = fetched.task.unwrap();
        assert_eq!((task.id, fetched.tasks_version), (9, 12));
        assert_eq!(task.workflow_payload, b"on: push");
        assert_eq!(task.context_str("actor"), "ana");
        let none: FetchTaskResponse = serde_json::from_str(r#"{"tasksVersion":7}"#).unwrap();
        assert!(none.task.is_none() && none.tasks_version == 7);
        let state: UpdateTaskResponse =
            serde_json::from_str(r#"{"state":{"id":"9","result":"RESULT_CANCELLED"}}"#).unwrap();
        assert_eq!(state.state.unwrap().result, TaskResult::Cancelled);
        let by_number: UpdateTaskResponse =
            serde_json::from_str(r#"{"state":{"id":"9","result":3}}"#).unwrap();
        assert_eq!(by_number.state.unwrap().result, TaskResult::Cancelled);
    }
}

//! Runs and steps as the API shows them, and times as RFC 3339.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::server::{App, http::errors::ApiError, present::clip};
use crate::store::{
    InputType, Run, RunFilter, RunState, StepRow,
    agents::{AgentRow, AgentState},
    labels_cover,
};
use crate::time::rfc3339;

/// What a step whose log retention deleted says instead of it (the API's 410, a line on
/// the run's page).
pub const LOG_REMOVED: &str = "the log of this step was removed: it is older than [retention].logs";

/// A run as the API shows it.
#[derive(Serialize)]
pub struct RunDto {
    id: i64,
    repo: String,
    pipeline: String,
    pipeline_file: String,
    event: String,
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    pull_request: Option<i64>,
    actor: String,
    /// The inputs, booleans and numbers as JSON booleans and numbers when the pipeline
    /// declared them so.
    inputs: serde_json::Map<String, serde_json::Value>,
    /// The run this one re-runs.
    rerun_of: Option<i64>,
    /// The name of the agent that claimed it (its lease owner's instance id for runs
    /// claimed before agents had names).
    agent: Option<String>,
    state: &'static str,
    description: String,
    concurrency_group: String,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    url: String,
    /// Why a queued run is not claimed, when this server can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepDto>>,
}

#[derive(Serialize)]
pub struct StepDto {
    index: i64,
    name: String,
    state: String,
    description: String,
    exit_code: Option<i64>,
    started_at: Option<String>,
    finished_at: Option<String>,
    log_url: String,
    /// The log was deleted by `[retention].logs`.
    log_removed: bool,
}

pub async fn run_dto(app: &App, run: &Run, steps: Option<&[StepRow]>) -> RunDto {
    let url = format!("{}/runs/{}", app.public_url(), run.id);
    RunDto {
        id: run.id,
        repo: run.repo.clone(),
        pipeline: run.pipeline.clone(),
        pipeline_file: run.pipeline_file.clone(),
        event: run.event.as_str().to_string(),
        git_ref: run.git_ref.full(),
        sha: run.sha.clone(),
        pull_request: run.pr,
        actor: run.actor.clone(),
        inputs: typed_inputs(run),
        rerun_of: run.rerun_of,
        agent: run.agent.clone().or_else(|| run.lease_owner.clone()),
        state: run.state.as_str(),
        description: clip(&run.description),
        concurrency_group: run.concurrency_group.clone(),
        created_at: rfc3339(run.created_at),
        started_at: run.started_at.map(rfc3339),
        finished_at: run.finished_at.map(rfc3339),
        steps: steps.map(|steps| {
            steps
                .iter()
                .map(|s| StepDto {
                    index: s.idx,
                    name: s.name.clone(),
                    state: s.state.as_str().to_string(),
                    description: s.description.clone(),
                    exit_code: s.exit_code,
                    started_at: s.started_at.map(rfc3339),
                    finished_at: s.finished_at.map(rfc3339),
                    log_url: format!(
                        "{}/api/v1/runs/{}/steps/{}/log",
                        app.public_url(),
                        run.id,
                        s.idx
                    ),
                    log_removed: s.log_removed,
                })
                .collect()
        }),
        url,
        waiting_reason: waiting_reason(app, run).await,
    }
}

/// A run's inputs as JSON values: text, or a boolean or number where the pipeline declared
/// one (a stored value that does not read as its type stays text).
pub fn typed_inputs(run: &Run) -> serde_json::Map<String, serde_json::Value> {
    run.inputs
        .iter()
        .map(|(name, value)| {
            let typed = match run.input_types.iter().find(|(n, _)| n == name) {
                Some((_, InputType::Boolean)) => match value.as_str() {
                    "true" => Some(serde_json::Value::Bool(true)),
                    "false" => Some(serde_json::Value::Bool(false)),
                    _ => None,
                },
                Some((_, InputType::Number)) => serde_json::from_str::<serde_json::Number>(value)
                    .ok()
                    .map(serde_json::Value::Number),
                None => None,
            };
            (
                name.clone(),
                typed.unwrap_or_else(|| serde_json::Value::String(value.clone())),
            )
        })
        .collect()
}

/// Why a queued run waits, when this server can tell: no live agent (a fresh heartbeat in
/// the agents table, not draining, with capacity) has all of its `runs_on` labels; another
/// run of its concurrency group is running; or every agent that could take it reports its
/// Docker engine down.
pub async fn waiting_reason(app: &App, run: &Run) -> Option<String> {
    if run.state != RunState::Queued {
        return None;
    }
    let mut agents = match app.store.live_agents().await {
        Ok(agents) => agents,
        Err(e) => {
            tracing::warn!(error = ?e, "failed to read the agents");
            return None;
        }
    };
    // This process's own agent counts before its first heartbeat is written.
    if app.config.agent.capacity > 0 && !agents.iter().any(|a| a.instance == app.instance) {
        agents.push(AgentRow {
            name: app.config.agent.name(),
            instance: app.instance.clone(),
            labels: app.config.agent.labels.clone(),
            capacity: app.config.agent.capacity as i64,
            state: AgentState::Running,
            docker_up: true,
            heartbeat_at: crate::store::now_ms(),
        });
    }
    let able: Vec<_> = agents
        .iter()
        .filter(|a| a.state == AgentState::Running && a.capacity > 0)
        .filter(|a| labels_cover(&a.labels, &run.runs_on))
        .collect();
    if able.is_empty() {
        return Some(match run.runs_on.is_empty() {
            true => "no agent is running".to_owned(),
            false => format!("no agent with labels [{}]", run.runs_on.join(", ")),
        });
    }
    match app
        .store
        .running_in_group(&run.concurrency_group, run.id)
        .await
    {
        Ok(Some(other)) => return Some(format!("concurrency group busy with run {other}")),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = ?e, "failed to read a concurrency group");
            return None;
        }
    }
    able.iter()
        .all(|a| !a.docker_up)
        .then(|| "Docker is down".to_owned())
}

/// The filters of a runs list (the API's and the page's): empty values are no filter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    repo: Option<String>,
    pipeline: Option<String>,
    state: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

impl ListQuery {
    fn given(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn repo(&self) -> Option<&str> {
        Self::given(&self.repo)
    }

    pub fn pipeline(&self) -> Option<&str> {
        Self::given(&self.pipeline)
    }

    pub fn state(&self) -> Option<&str> {
        Self::given(&self.state)
    }

    pub fn before(&self) -> Option<&str> {
        Self::given(&self.before)
    }

    pub fn limit(&self) -> Option<&str> {
        Self::given(&self.limit)
    }

    /// The store's filter (without repositories), or the 422 naming the bad value.
    pub fn filter(&self, default_limit: i64) -> Result<RunFilter, ApiError> {
        let bad = |what: &str, value: &str| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{}` is not a valid {what}", value.escape_debug()),
            )
        };
        let state = match Self::given(&self.state) {
            Some(s) => Some(RunState::parse(s).ok_or_else(|| bad("state", s))?),
            None => None,
        };
        let before = match Self::given(&self.before) {
            Some(b) => Some(b.parse::<i64>().map_err(|_| bad("run id", b))?),
            None => None,
        };
        let limit = match Self::given(&self.limit) {
            Some(l) => l.parse::<i64>().map_err(|_| bad("limit", l))?,
            None => default_limit,
        };
        Ok(RunFilter {
            repos: None,
            pipeline: Self::given(&self.pipeline).map(str::to_owned),
            state,
            before,
            limit: limit.clamp(1, 500),
        })
    }
}

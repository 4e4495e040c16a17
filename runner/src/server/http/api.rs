//! The HTTP surface: routes, API authentication, and the JSON API over runs and logs.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    middleware,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use crate::server::{
    App,
    http::auth::{Caller, require},
    http::conn::{BodyBounds, body_budget, bounded_body},
    http::ui,
    http::webhook,
    report::sender::clip,
};
use crate::{
    config::Scope,
    logs::read_from,
    store::{Run, RunSpec, RunState, StepRow, StoreError, labels_cover, now_ms},
};

pub fn router(app: Arc<App>) -> Router {
    let limits = &app.config.server.http;
    let budget = body_budget(limits, webhook::MAX_BODY);
    let deliveries = BodyBounds::deliveries(limits, budget.clone(), webhook::MAX_BODY);
    let hooks = Router::new()
        .route(
            "/hooks/gitea",
            post(webhook::receive).layer(DefaultBodyLimit::max(webhook::MAX_BODY)),
        )
        .route_layer(middleware::from_fn_with_state(deliveries, bounded_body));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/readyz", get(readyz))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/steps/{n}/log", get(step_log))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/runs/{id}/rerun", post(rerun))
        .route(
            "/api/v1/repos/{owner}/{repo}/pipelines/{name}/dispatch",
            post(crate::server::http::dispatch::dispatch),
        )
        .route("/", get(ui::index))
        .route("/runs/{id}", get(ui::run_page))
        .layer(middleware::from_fn_with_state(
            BodyBounds::api(limits, budget),
            bounded_body,
        ))
        .merge(hooks)
        .with_state(app)
}

/// An error answer: a status and a message, no internals.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "message": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Debug) -> ApiError {
    tracing::warn!(error = ?e, "API request failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

async fn discovery(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.issuer.discovery())
}

async fn jwks(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.issuer.jwks())
}

/// `{"ready", "database", "docker", "tasks": {name: state}, "problems": [...]}`: 503 unless
/// the database and Docker answer and every background task runs and has not died lately.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let db = app.store.ping().await.is_ok();
    let docker = app.executor.ping().await.is_ok();
    let (tasks, mut problems) = app.tasks.report();
    if !db {
        problems.insert(0, "the database does not answer".to_owned());
    }
    if !docker {
        problems.insert(0, "the Docker engine does not answer".to_owned());
    }
    let ready = problems.is_empty();
    let body = serde_json::json!({
        "ready": ready,
        "database": db,
        "docker": docker,
        "tasks": tasks,
        "problems": problems,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

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
}

pub fn run_dto(app: &App, run: &Run, steps: Option<&[StepRow]>) -> RunDto {
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
                })
                .collect()
        }),
        url,
        waiting_reason: waiting_reason(app, run),
    }
}

/// Why a queued run waits, when it is for want of an agent's labels: `runs_on` is matched
/// against this server's `[agent].labels` (no other agents exist yet).
pub fn waiting_reason(app: &App, run: &Run) -> Option<String> {
    (run.state == RunState::Queued && !labels_cover(&app.config.agent.labels, &run.runs_on))
        .then(|| format!("no agent with labels [{}]", run.runs_on.join(", ")))
}

/// Epoch milliseconds as RFC 3339 UTC (`2026-11-22T05:35:15.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[derive(Deserialize)]
struct ListQuery {
    repo: Option<String>,
    limit: Option<i64>,
}

async fn list_runs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let caller = require(&app, &headers, Scope::Read)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let runs = visible_runs(&app, caller, q.repo.as_deref(), limit)
        .await
        .map_err(internal)?;
    Ok(Json(runs.iter().map(|r| run_dto(&app, r, None)).collect()))
}

/// Runs newest first, of one repository or all, limited to what the caller covers.
pub async fn visible_runs(
    app: &App,
    caller: Caller<'_>,
    repo: Option<&str>,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    if matches!(caller, Caller::Everything) {
        return app.store.runs(repo, limit).await;
    }
    let repos: Vec<String> = match repo {
        Some(repo) => vec![repo.to_owned()],
        None => app.store.run_repos().await?,
    };
    let mut runs = Vec::new();
    for repo in repos.iter().filter(|r| caller.covers(r)) {
        runs.extend(app.store.runs(Some(repo), limit).await?);
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    runs.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(runs)
}

/// A run the caller covers; any other is, to the caller, a run that does not exist.
pub async fn load_run(app: &App, caller: Caller<'_>, id: i64) -> Result<Run, ApiError> {
    app.store
        .run(id)
        .await
        .map_err(internal)?
        .filter(|run| caller.covers(&run.repo))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id}")))
}

async fn get_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<RunDto>, ApiError> {
    let caller = require(&app, &headers, Scope::Read)?;
    let run = load_run(&app, caller, id).await?;
    let steps = app.store.steps(id).await.map_err(internal)?;
    Ok(Json(run_dto(&app, &run, Some(&steps))))
}

#[derive(Deserialize)]
struct LogQuery {
    follow: Option<bool>,
}

async fn step_log(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, n)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let caller = require(&app, &headers, Scope::Read)?;
    load_run(&app, caller, id).await?;
    let steps = app.store.steps(id).await.map_err(internal)?;
    if !steps.iter().any(|s| s.idx == n) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("run {id} has no step {n}"),
        ));
    }
    let path = app.logs.path(id, n);
    if !q.follow.unwrap_or(false) {
        return match tokio::fs::File::open(&path).await {
            Ok(file) => Ok((
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                Body::from_stream(tokio_util::io::ReaderStream::new(file)),
            )
                .into_response()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "").into_response())
            }
            Err(e) => Err(internal(e)),
        };
    }
    // Server-sent events: what the log holds, then each new chunk, until the step ends.
    struct Follow {
        app: Arc<App>,
        path: std::path::PathBuf,
        run: i64,
        step: i64,
        offset: u64,
        ended: bool,
    }
    let start = Follow {
        app: app.clone(),
        path,
        run: id,
        step: n,
        offset: 0,
        ended: false,
    };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            let finished = step_finished(&f.app, f.run, f.step).await;
            let (bytes, next) = read_from(&f.path, f.offset).unwrap_or((Vec::new(), f.offset));
            if !bytes.is_empty() {
                f.offset = next;
                let text = String::from_utf8_lossy(&bytes);
                let event = SseEvent::default().data(text.trim_end_matches('\n'));
                return Some((Ok::<_, Infallible>(event), f));
            }
            if finished {
                f.ended = true;
                return Some((Ok(SseEvent::default().event("end").data("")), f));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Whether a step is over (or will never run), read before the log so no line is missed.
async fn step_finished(app: &App, run: i64, step: i64) -> bool {
    let run_over = app
        .store
        .run(run)
        .await
        .ok()
        .flatten()
        .is_none_or(|r| r.state.is_finished());
    let step_over = app
        .store
        .steps(run)
        .await
        .ok()
        .and_then(|steps| steps.into_iter().find(|s| s.idx == step))
        .is_none_or(|s| s.state.is_over());
    run_over || step_over
}

async fn cancel_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<RunDto>, ApiError> {
    let caller = require(&app, &headers, Scope::Control)?;
    let run = load_run(&app, caller, id).await?;
    match run.state {
        RunState::Running => {
            app.scheduler.cancel(id, "cancelled through the API");
        }
        RunState::Queued => {
            app.store
                .finish_run(id, RunState::Cancelled, "cancelled through the API")
                .await
                .map_err(internal)?;
            app.reporter_wake.notify_one();
            app.scheduler.wake();
        }
        _ => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("run {id} has already ended ({})", run.state.as_str()),
            ));
        }
    }
    let run = load_run(&app, caller, id).await?;
    Ok(Json(run_dto(&app, &run, None)))
}

async fn rerun(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<RunDto>), ApiError> {
    let caller = require(&app, &headers, Scope::Control)?;
    let old = load_run(&app, caller, id).await?;
    let new = RunSpec::rerun(&old, now_ms());
    let enqueued = app.enqueue(None, &[new]).await.map_err(internal)?;
    let run = load_run(&app, caller, enqueued.ids[0]).await?;
    Ok((StatusCode::CREATED, Json(run_dto(&app, &run, None))))
}

//! The JSON API over runs and logs, discovery and readiness.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use pipewright_containers::Executor;
use serde::Deserialize;

use crate::server::{
    App,
    http::auth::{load_run, require, visible_runs},
    http::dto::{RunDto, run_dto},
    http::errors::{ApiError, internal},
    http::session::reader,
};
use crate::{
    config::Scope,
    logs::read_from,
    store::{RunSpec, RunState, now_ms},
};

pub(super) async fn discovery(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.issuer.discovery())
}

pub(super) async fn jwks(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.issuer.jwks())
}

/// `{"ready", "database", "docker", "tasks": {name: state}, "problems": [...]}`: 503 unless
/// the database and Docker answer and every background task runs and has not died lately.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
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

#[derive(Deserialize)]
pub(super) struct ListQuery {
    repo: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn list_runs(
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

pub(super) async fn get_run(
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
pub(super) struct LogQuery {
    follow: Option<bool>,
}

pub(super) async fn step_log(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, n)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    // Pages follow logs too: the session cookie counts as well as a bearer token.
    let viewer = reader(&app, &headers).await?;
    let run = app.store.run(id).await.map_err(internal)?;
    if !matches!(&run, Some(run) if viewer.can_read(&app, &run.repo).await) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no run {id}")));
    }
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

pub(super) async fn cancel_run(
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

pub(super) async fn rerun(
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

//! The JSON API over runs and logs, discovery and readiness.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

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
    http::control,
    http::dto::{LOG_REMOVED, ListQuery, RunDto, run_dto},
    http::errors::{ApiError, internal},
    http::session::reader,
};
use crate::{ansi::Ansi, config::Scope, logs::LogCursor, store::StepState};

pub(super) async fn discovery(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.issuer.shared_discovery(&app.store).await)
}

pub(super) async fn jwks(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.issuer.shared_jwks(&app.store).await)
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

pub(super) async fn list_runs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let caller = require(&app, &headers, Scope::Read)?;
    let filter = q.filter(50)?;
    let runs = visible_runs(&app, caller, q.repo(), filter)
        .await
        .map_err(internal)?;
    let mut out = Vec::with_capacity(runs.len());
    for run in &runs {
        out.push(run_dto(&app, run, None).await);
    }
    Ok(Json(out))
}

pub(super) async fn get_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<RunDto>, ApiError> {
    let caller = require(&app, &headers, Scope::Read)?;
    let run = load_run(&app, caller, id).await?;
    let steps = app.store.steps(id).await.map_err(internal)?;
    Ok(Json(run_dto(&app, &run, Some(&steps)).await))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    follow: Option<bool>,
    /// `html`: each event's data is the line rendered as the run page shows it.
    format: Option<String>,
}

/// How much of a log a follower reads at a time (a longer line is read whole).
const FOLLOW_CHUNK: usize = 64 << 10;

/// A step's log as text, or (`?follow=true`, with a session cookie or a token) as
/// server-sent events: one event per line, `id:` its number in the log from 0, resuming
/// after `Last-Event-ID`; the last event is `end`, whose data is the step's final state.
pub(super) async fn step_log(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, n)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let follow = q.follow.unwrap_or(false);
    if follow {
        let viewer = reader(&app, &headers).await?;
        let run = app.store.run(id).await.map_err(internal)?;
        if !matches!(&run, Some(run) if viewer.can_read(&app, &run.repo).await) {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no run {id}")));
        }
    } else {
        let caller = require(&app, &headers, Scope::Read)?;
        load_run(&app, caller, id).await?;
    }
    let steps = app.store.steps(id).await.map_err(internal)?;
    let Some(step) = steps.iter().find(|s| s.idx == n) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("run {id} has no step {n}"),
        ));
    };
    if step.log_removed && !follow {
        return Err(ApiError(StatusCode::GONE, LOG_REMOVED.to_owned()));
    }
    if !follow {
        let log = app.logs.stream(id, n).await.map_err(internal)?;
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from_stream(log),
        )
            .into_response());
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |last| last.saturating_add(1));
    let html = q.format.as_deref() == Some("html");
    let start = Follow {
        app: app.clone(),
        run: id,
        step: n,
        at: LogCursor::at_line(resume),
        next: resume,
        resume,
        pending: VecDeque::new(),
        html: html.then(Ansi::default),
        rest_read: false,
        ended: false,
        watch: app.logs.watch(id, n),
    };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            if let Some((number, line)) = f.pending.pop_front() {
                let data = match &mut f.html {
                    Some(ansi) => ansi.line(&line),
                    None => String::from_utf8_lossy(&line).into_owned(),
                };
                let event = SseEvent::default().id(number.to_string()).data(data);
                return Some((Ok::<_, Infallible>(event), f));
            }
            // Lines written from here on wake the wait below.
            f.watch.seen();
            if f.read_more().await {
                continue;
            }
            // Nothing new: whether the step is over is read, then the log once more, so
            // that no line written before it ended is missed.
            let finished = step_final_state(&f.app, f.run, f.step).await;
            if finished.is_some() && f.read_more().await {
                continue;
            }
            if let Some(state) = finished {
                if !f.rest_read {
                    // The step is over: a last line without its newline is a line now.
                    f.rest_read = true;
                    let rest = f
                        .app
                        .logs
                        .read_rest(f.run, f.step, f.at)
                        .await
                        .unwrap_or_default();
                    if !rest.is_empty() {
                        f.queue(vec![rest]);
                        continue;
                    }
                }
                f.ended = true;
                return Some((Ok(SseEvent::default().event("end").data(state)), f));
            }
            // A written line wakes it at once; a step can also end without printing.
            f.watch.next(Duration::from_millis(500)).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A follower of a step's log: where it is, and at most one chunk of lines not sent yet.
struct Follow {
    app: Arc<App>,
    run: i64,
    step: i64,
    /// Where the next read of the log starts.
    at: LogCursor,
    /// The number of the next line read.
    next: u64,
    /// Lines before this number were sent before the reconnect.
    resume: u64,
    pending: VecDeque<(u64, Vec<u8>)>,
    html: Option<Ansi>,
    rest_read: bool,
    ended: bool,
    /// Wakes the follower when a line is written.
    watch: crate::logs::LogWatch,
}

impl Follow {
    /// Reads the complete lines written since the last read into `pending`; whether any.
    async fn read_more(&mut self) -> bool {
        let (lines, next) = self
            .app
            .logs
            .read_lines(self.run, self.step, self.at, FOLLOW_CHUNK)
            .await
            .unwrap_or((Vec::new(), self.at));
        if lines.is_empty() {
            return false;
        }
        self.at = next;
        self.queue(lines);
        true
    }

    fn queue(&mut self, lines: Vec<Vec<u8>>) {
        for line in lines {
            let number = self.next;
            self.next += 1;
            if number >= self.resume {
                self.pending.push_back((number, line));
            }
        }
    }
}

/// The state of a step that is over (or will never run: its run ended), else `None`.
async fn step_final_state(app: &App, run: i64, step: i64) -> Option<&'static str> {
    let run_over = app
        .store
        .run(run)
        .await
        .ok()
        .flatten()
        .is_none_or(|r| r.state.is_finished());
    let state = app
        .store
        .steps(run)
        .await
        .ok()
        .and_then(|steps| steps.into_iter().find(|s| s.idx == step))
        .map(|s| s.state);
    match state {
        Some(state) if state.is_over() || run_over => Some(state.as_str()),
        Some(_) => None,
        None => Some(StepState::NotRun.as_str()),
    }
}

pub(super) async fn cancel_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<RunDto>, ApiError> {
    let caller = require(&app, &headers, Scope::Control)?;
    let run = load_run(&app, caller, id).await?;
    control::cancel(&app, &run, "cancelled through the API").await?;
    let run = load_run(&app, caller, id).await?;
    Ok(Json(run_dto(&app, &run, None).await))
}

pub(super) async fn rerun(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<RunDto>), ApiError> {
    let caller = require(&app, &headers, Scope::Control)?;
    let old = load_run(&app, caller, id).await?;
    let run = control::rerun(&app, &old).await?;
    Ok((StatusCode::CREATED, Json(run_dto(&app, &run, None).await)))
}

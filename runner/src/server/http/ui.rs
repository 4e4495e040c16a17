//! The web UI: the runs list, a run's page with its steps and live logs, the dispatch form,
//! the cancel and re-run forms, and the HTML error pages. Pages are askama templates
//! (`runner/templates/`, escaped by default); what they fetch to stay live (the list's rows,
//! the run's JSON) accepts the session cookie like the pages.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form, Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{Html, IntoResponse, Redirect, Response},
};
use pipewright_pipelines::InputKind;
use serde::Deserialize;

use crate::ansi::Ansi;
use crate::server::{
    App,
    http::control::{self, Dispatchable},
    http::dto::{LOG_REMOVED, ListQuery, run_dto, typed_inputs, waiting_reason},
    http::errors::ApiError,
    http::session::{Readable, Viewer, check_csrf, page_viewer, reader},
};
use crate::store::{Run, RunFilter, RunState, StepRow, now_ms};
use crate::time::rfc3339;

/// What a page's answer is when it is not the page: a redirect to sign in, or an error page.
type Page = Result<Response, Response>;

/// The part of every page the layout shows.
struct Layout {
    title: String,
    viewer: String,
    csrf: String,
}

impl Layout {
    fn new(title: impl Into<String>, viewer: Option<&Viewer>) -> Layout {
        Layout {
            title: title.into(),
            viewer: viewer.map(|v| v.name().to_owned()).unwrap_or_default(),
            csrf: viewer.map(|v| v.csrf().to_owned()).unwrap_or_default(),
        }
    }
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "failed to render a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
}

/// An error as a page, with its status: 404 is "Not found".
fn error_page(viewer: Option<&Viewer>, error: ApiError) -> Response {
    let ApiError(status, message) = error;
    let heading = if status == StatusCode::NOT_FOUND {
        "Not found".to_owned()
    } else {
        status.canonical_reason().unwrap_or("Error").to_owned()
    };
    let page = ErrorPage {
        layout: Layout::new(heading.clone(), viewer),
        heading,
        message,
    };
    (status, render(&page)).into_response()
}

fn not_found_run(id: i64) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no run {id}"))
}

fn internal(e: impl std::fmt::Debug) -> ApiError {
    tracing::warn!(error = ?e, "a page failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

/// The router's fallback: an HTML 404 for pages, the API's JSON 404 under `/api/`.
pub async fn not_found(State(app): State<Arc<App>>, headers: HeaderMap, uri: Uri) -> Response {
    let error = ApiError(StatusCode::NOT_FOUND, format!("no page {}", uri.path()));
    if uri.path().starts_with("/api/") {
        return error.into_response();
    }
    let viewer = reader(&app, &headers).await.ok();
    error_page(viewer.as_ref(), error)
}

/// A run the viewer may read; any other is, to them, a run that does not exist.
async fn readable_run(app: &App, viewer: &Viewer, id: i64) -> Result<Run, ApiError> {
    match app.store.run(id).await.map_err(internal)? {
        Some(run) if viewer.can_read(app, &run.repo).await => Ok(run),
        _ => Err(not_found_run(id)),
    }
}

/// How long something took (or takes so far): `4s`, `2m 5s`, `1h 0m 3s`.
fn duration(started: Option<i64>, finished: Option<i64>) -> String {
    let Some(started) = started else {
        return String::new();
    };
    let secs = (finished.unwrap_or_else(now_ms) - started).max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

fn short_sha(sha: &str) -> String {
    sha.chars().take(10).collect()
}

// ---- the runs list ----

struct RowView {
    id: i64,
    repo: String,
    pipeline: String,
    event: &'static str,
    git_ref: String,
    short_sha: String,
    actor: String,
    state: &'static str,
    duration: String,
    started: Option<String>,
}

fn row(run: &Run) -> RowView {
    RowView {
        id: run.id,
        repo: run.repo.clone(),
        pipeline: run.pipeline.clone(),
        event: run.event.as_str(),
        git_ref: run.git_ref.full(),
        short_sha: short_sha(&run.sha),
        actor: run.actor.clone(),
        state: run.state.as_str(),
        duration: duration(run.started_at, run.finished_at),
        started: run.started_at.map(rfc3339),
    }
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    layout: Layout,
    rows: Vec<RowView>,
    repo: String,
    pipeline: String,
    state: String,
    states: Vec<(&'static str, bool)>,
    poll: String,
    older: Option<String>,
}

#[derive(Template)]
#[template(path = "run_rows.html")]
struct RunRows {
    rows: Vec<RowView>,
}

const ALL_STATES: [RunState; 7] = [
    RunState::Queued,
    RunState::Running,
    RunState::Success,
    RunState::Failure,
    RunState::Error,
    RunState::Cancelled,
    RunState::Superseded,
];

/// The runs the viewer may read through the query's filters.
async fn listed(app: &App, viewer: &Viewer, q: &ListQuery) -> Result<Vec<Run>, ApiError> {
    let mut filter: RunFilter = q.filter(50)?;
    let readable = viewer.readable(app).await?;
    filter.repos = match (readable, q.repo()) {
        (Readable::All, None) => None,
        (Readable::All, Some(repo)) => Some(vec![repo.to_owned()]),
        (Readable::Only(repos), None) => Some(repos),
        (Readable::Only(repos), Some(repo)) => {
            Some(repos.into_iter().filter(|r| r == repo).collect())
        }
    };
    app.store.list_runs(&filter).await.map_err(internal)
}

/// A query string of the list's filters (percent-encoded), with `before` when given.
fn list_query(q: &ListQuery, before: Option<i64>, limit: Option<&str>) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let before = before.map(|b| b.to_string());
    let pairs = [
        ("repo", q.repo()),
        ("pipeline", q.pipeline()),
        ("state", q.state()),
        ("before", before.as_deref()),
        ("limit", limit),
    ];
    pairs
        .iter()
        .filter_map(|(key, value)| {
            value.map(|v| format!("{key}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /`: the runs, newest first, with filters and paging by id.
pub async fn index(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Page {
    let viewer = page_viewer(&app, &headers).await?;
    let runs = listed(&app, &viewer, &q)
        .await
        .map_err(|e| error_page(Some(&viewer), e))?;
    let limit = q.filter(50).map(|f| f.limit).unwrap_or(50);
    let limit_text = q.limit();
    let older = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|r| r.id))
        .flatten()
        .map(|last| format!("/?{}", list_query(&q, Some(last), limit_text)));
    let before = q.before().and_then(|b| b.parse::<i64>().ok());
    let page = RunsPage {
        layout: Layout::new("Runs", Some(&viewer)),
        rows: runs.iter().map(row).collect(),
        repo: q.repo().unwrap_or_default().to_owned(),
        pipeline: q.pipeline().unwrap_or_default().to_owned(),
        state: q.state().unwrap_or_default().to_owned(),
        states: ALL_STATES
            .iter()
            .map(|s| (s.as_str(), q.state() == Some(s.as_str())))
            .collect(),
        poll: format!("/ui/runs?{}", list_query(&q, before, limit_text)),
        older,
    };
    Ok(render(&page))
}

/// `GET /ui/runs?…`: the rows of the list as the page shows them (its live update).
pub async fn rows(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let viewer = reader(&app, &headers).await?;
    let runs = listed(&app, &viewer, &q).await?;
    Ok(render(&RunRows {
        rows: runs.iter().map(row).collect(),
    }))
}

// ---- a run ----

struct RunView {
    id: i64,
    pipeline: String,
    repo: String,
    event: &'static str,
    git_ref: String,
    state: &'static str,
    description: String,
    actor: String,
    agent: Option<String>,
    inputs: Vec<(String, String)>,
    rerun_of: Option<i64>,
    short_sha: String,
    commit_url: Option<String>,
    waiting_reason: Option<String>,
    created: String,
    duration: String,
    started_ms: i64,
    finished_ms: i64,
    live: bool,
    can_write: bool,
    cancellable: bool,
}

struct StepView {
    idx: i64,
    name: String,
    state: &'static str,
    description: String,
    duration: String,
    started_ms: i64,
    finished_ms: i64,
    /// Rendered lines (HTML from [`Ansi`]): a step that is over; a live one streams.
    lines: Vec<String>,
    loaded: bool,
    clipped: bool,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    run: RunView,
    steps: Vec<StepView>,
}

/// The most of a log a page shows (its end; the whole log is a link away).
const PAGE_LOG_BYTES: usize = 2 << 20;

async fn step_view(app: &App, run: &Run, step: &StepRow) -> StepView {
    let over = step.state.is_over() || run.state.is_finished();
    let (mut lines, mut clipped) = (Vec::new(), false);
    if over {
        let log = app
            .logs
            .read(run.id, step.idx)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut text = &log[..];
        if text.len() > PAGE_LOG_BYTES {
            clipped = true;
            text = &text[text.len() - PAGE_LOG_BYTES..];
            let start = text.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            text = &text[start..];
        }
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let mut ansi = Ansi::default();
        if !text.is_empty() {
            lines = text.split(|b| *b == b'\n').map(|l| ansi.line(l)).collect();
        }
        if step.log_removed {
            lines.push(ansi.line(format!("pipewright: {LOG_REMOVED}").as_bytes()));
        }
    }
    StepView {
        idx: step.idx,
        name: step.name.clone(),
        state: step.state.as_str(),
        description: step.description.clone(),
        duration: duration(step.started_at, step.finished_at),
        started_ms: step.started_at.unwrap_or(0),
        finished_ms: step.finished_at.unwrap_or(0),
        lines,
        loaded: over,
        clipped,
    }
}

fn commit_url(app: &App, run: &Run) -> Option<String> {
    let base = app.config.gitea.url.as_deref()?.trim_end_matches('/');
    Some(format!("{base}/{}/commit/{}", run.repo, run.sha))
}

/// `GET /runs/{id}`: a run, its steps and their logs.
pub async fn run_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let viewer = page_viewer(&app, &headers).await?;
    let fail = |e| error_page(Some(&viewer), e);
    let id: i64 = id.parse().map_err(|_| fail(not_found_run(0)))?;
    let run = readable_run(&app, &viewer, id).await.map_err(fail)?;
    let steps = app.store.steps(id).await.map_err(|e| fail(internal(e)))?;
    let can_write = viewer.can_write(&app, &run.repo).await;
    let inputs = typed_inputs(&run)
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect();
    let view = RunView {
        id: run.id,
        pipeline: run.pipeline.clone(),
        repo: run.repo.clone(),
        event: run.event.as_str(),
        git_ref: run.git_ref.full(),
        state: run.state.as_str(),
        description: run.description.clone(),
        actor: run.actor.clone(),
        agent: run.agent.clone().or_else(|| run.lease_owner.clone()),
        inputs,
        rerun_of: run.rerun_of,
        short_sha: short_sha(&run.sha),
        commit_url: commit_url(&app, &run),
        waiting_reason: waiting_reason(&app, &run).await,
        created: rfc3339(run.created_at),
        duration: duration(run.started_at, run.finished_at),
        started_ms: run.started_at.unwrap_or(0),
        finished_ms: run.finished_at.unwrap_or(0),
        live: !run.state.is_finished(),
        can_write,
        cancellable: !run.state.is_finished(),
    };
    let mut step_views = Vec::with_capacity(steps.len());
    for step in &steps {
        step_views.push(step_view(&app, &run, step).await);
    }
    let page = RunPage {
        layout: Layout::new(format!("{} #{}", run.pipeline, run.id), Some(&viewer)),
        steps: step_views,
        run: view,
    };
    Ok(render(&page))
}

/// `GET /ui/runs/{id}`: the run's JSON with its steps, for the page's live updates.
pub async fn run_json(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let viewer = reader(&app, &headers).await?;
    let run = readable_run(&app, &viewer, id).await?;
    let steps = app.store.steps(id).await.map_err(internal)?;
    Ok(Json(run_dto(&app, &run, Some(&steps)).await).into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The run a form changes, and its viewer: the CSRF token checked, and write access.
async fn form_target(
    app: &App,
    headers: &HeaderMap,
    csrf: &str,
    id: i64,
) -> Result<(Viewer, Run), Response> {
    let viewer = page_viewer(app, headers).await?;
    let fail = |e| error_page(Some(&viewer), e);
    check_csrf(&viewer, csrf).map_err(fail)?;
    let run = readable_run(app, &viewer, id).await.map_err(fail)?;
    if !viewer.can_write(app, &run.repo).await {
        let error = ApiError(
            StatusCode::FORBIDDEN,
            format!("you may not change the runs of {}", run.repo),
        );
        return Err(fail(error));
    }
    Ok((viewer, run))
}

/// `POST /runs/{id}/cancel`: cancels, then back to the run's page.
pub async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let (viewer, run) = form_target(&app, &headers, &form.csrf, id).await?;
    let why = format!("cancelled by {}", viewer.name());
    control::cancel(&app, &run, &why)
        .await
        .map_err(|e| error_page(Some(&viewer), e))?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// `POST /runs/{id}/rerun`: queues another attempt, then to the new run's page.
pub async fn rerun(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let (viewer, old) = form_target(&app, &headers, &form.csrf, id).await?;
    let new = control::rerun(&app, &old)
        .await
        .map_err(|e| error_page(Some(&viewer), e))?;
    Ok(Redirect::to(&format!("/runs/{}", new.id)).into_response())
}

// ---- dispatch ----

enum FieldKind {
    Text,
    Choice(Vec<String>),
    Boolean,
    Number,
}

struct FieldView {
    name: String,
    kind: FieldKind,
    required: bool,
    value: String,
    description: Option<String>,
}

#[derive(Template)]
#[template(path = "dispatch.html")]
struct DispatchPage {
    layout: Layout,
    repo: String,
    pipeline: String,
    action: String,
    git_ref: String,
    fields: Vec<FieldView>,
    confirm: bool,
    errors: Vec<String>,
    show_form: bool,
}

/// The form of a pipeline's inputs, holding `values` (what was sent) or the defaults.
fn dispatch_page(
    viewer: &Viewer,
    target: &Dispatchable,
    path: (&str, &str, &str),
    git_ref: &str,
    values: Option<&[(String, String)]>,
    errors: Vec<String>,
) -> DispatchPage {
    let (owner, name, pipeline) = path;
    let declared = target
        .pipeline
        .on
        .dispatch
        .as_ref()
        .map(|d| d.inputs.as_slice())
        .unwrap_or_default();
    let fields = declared
        .iter()
        .map(|input| {
            let sent = values.map(|v| {
                v.iter()
                    .rev()
                    .find(|(k, _)| k == &input.name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            });
            FieldView {
                name: input.name.clone(),
                kind: match &input.kind {
                    InputKind::String => FieldKind::Text,
                    InputKind::Choice(options) => FieldKind::Choice(options.clone()),
                    InputKind::Boolean => FieldKind::Boolean,
                    InputKind::Number => FieldKind::Number,
                },
                required: input.required,
                value: sent.unwrap_or_else(|| input.default.clone().unwrap_or_default()),
                description: input.description.clone(),
            }
        })
        .collect();
    let mut errors = errors;
    if target.pipeline.on.dispatch.is_none() {
        errors.push(format!(
            "pipeline `{pipeline}` has no `on.dispatch`: it cannot be dispatched"
        ));
    }
    DispatchPage {
        layout: Layout::new(format!("Run {pipeline}"), Some(viewer)),
        repo: format!("{owner}/{name}"),
        pipeline: pipeline.to_owned(),
        action: format!("/repos/{owner}/{name}/pipelines/{pipeline}/dispatch"),
        git_ref: git_ref.to_owned(),
        fields,
        confirm: target
            .pipeline
            .on
            .dispatch
            .as_ref()
            .is_some_and(|d| d.confirm),
        show_form: target.pipeline.on.dispatch.is_some(),
        errors,
    }
}

#[derive(Deserialize)]
pub struct RefQuery {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// The dispatch form's viewer: one who may start runs of the repository.
async fn dispatcher(app: &App, headers: &HeaderMap, repo: &str) -> Result<Viewer, Response> {
    let viewer = page_viewer(app, headers).await?;
    if !viewer.can_write(app, repo).await {
        let error = if viewer.can_read(app, repo).await {
            ApiError(
                StatusCode::FORBIDDEN,
                format!("you may not start runs of {repo}"),
            )
        } else {
            ApiError(StatusCode::NOT_FOUND, format!("no repository {repo}"))
        };
        return Err(error_page(Some(&viewer), error));
    }
    Ok(viewer)
}

/// `GET /repos/{owner}/{repo}/pipelines/{name}/dispatch`: the form, read from the
/// pipeline at the ref's head (`?ref=`, default the default branch).
pub async fn dispatch_form(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((owner, name, pipeline)): Path<(String, String, String)>,
    Query(q): Query<RefQuery>,
) -> Page {
    let viewer = dispatcher(&app, &headers, &format!("{owner}/{name}")).await?;
    let wanted = q.git_ref.as_deref().filter(|r| !r.trim().is_empty());
    let target = control::dispatchable(&app, &owner, &name, &pipeline, wanted)
        .await
        .map_err(|e| error_page(Some(&viewer), e))?;
    let git_ref = wanted.map_or_else(|| target.git_ref.name().to_owned(), str::to_owned);
    let page = dispatch_page(
        &viewer,
        &target,
        (&owner, &name, &pipeline),
        &git_ref,
        None,
        Vec::new(),
    );
    Ok(render(&page))
}

/// `POST` of the dispatch form: `csrf`, `ref`, `input.<name>` per input, `confirm`. An
/// unchecked boolean is `false`; an empty field takes the input's default. A refusal shows
/// the form again with what was sent and the error.
pub async fn dispatch_submit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((owner, name, pipeline)): Path<(String, String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let viewer = dispatcher(&app, &headers, &format!("{owner}/{name}")).await?;
    let field = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    check_csrf(&viewer, field("csrf").unwrap_or_default())
        .map_err(|e| error_page(Some(&viewer), e))?;
    let wanted = field("ref").map(str::trim).filter(|r| !r.is_empty());
    let target = control::dispatchable(&app, &owner, &name, &pipeline, wanted)
        .await
        .map_err(|e| error_page(Some(&viewer), e))?;
    let sent: Vec<(String, String)> = fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("input.").map(|n| (n.to_owned(), v.clone())))
        .collect();
    let declared = target
        .pipeline
        .on
        .dispatch
        .as_ref()
        .map(|d| d.inputs.as_slice())
        .unwrap_or_default();
    let mut given: Vec<(String, String)> = Vec::new();
    for (k, v) in &sent {
        match declared.iter().find(|i| &i.name == k) {
            // A checkbox sends its value only when checked.
            Some(input) if input.kind == InputKind::Boolean => {}
            Some(_) if v.trim().is_empty() => {}
            _ => given.push((k.clone(), v.clone())),
        }
    }
    for input in declared.iter().filter(|i| i.kind == InputKind::Boolean) {
        let checked = sent.iter().any(|(k, v)| k == &input.name && v == "true");
        given.push((input.name.clone(), checked.to_string()));
    }
    if let Some(confirm) = field("confirm") {
        given.push(("confirm".to_owned(), confirm.to_owned()));
    }
    match control::dispatch(&app, &target, &given, viewer.name()).await {
        Ok(run) => Ok(Redirect::to(&format!("/runs/{}", run.id)).into_response()),
        Err(ApiError(status, message)) => {
            let mut values = sent.clone();
            for input in declared.iter().filter(|i| i.kind == InputKind::Boolean) {
                if !sent.iter().any(|(k, _)| k == &input.name) {
                    values.push((input.name.clone(), "false".to_owned()));
                }
            }
            let git_ref = wanted.map_or_else(|| target.git_ref.name().to_owned(), str::to_owned);
            let page = dispatch_page(
                &viewer,
                &target,
                (&owner, &name, &pipeline),
                &git_ref,
                Some(&values),
                vec![message],
            );
            Ok((status, render(&page)).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_hours_minutes_and_seconds() {
        assert_eq!(duration(None, None), "");
        assert_eq!(duration(Some(1_000), Some(5_999)), "4s");
        assert_eq!(duration(Some(0), Some(125_000)), "2m 5s");
        assert_eq!(duration(Some(0), Some(3_603_000)), "1h 0m 3s");
        assert_eq!(duration(Some(10_000), Some(0)), "0s");
    }

    #[test]
    fn the_list_query_keeps_its_filters_encoded() {
        let q: ListQuery = serde_json::from_value(serde_json::json!({
            "repo": "org/a",
            "pipeline": "\"><script>x</script>&state=1",
            "state": " ",
        }))
        .unwrap();
        assert_eq!(
            list_query(&q, Some(42), Some("5")),
            "repo=org%2Fa&pipeline=%22%3E%3Cscript%3Ex%3C%2Fscript%3E%26state%3D1&before=42&limit=5"
        );
    }
}

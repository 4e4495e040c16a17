//! The web UI: a list of runs and a run's page with its steps and live logs. Server-side
//! HTML with every value escaped; the live log follows the log API's server-sent events.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};

use crate::server::{
    App,
    http::dto::rfc3339,
    http::errors::{ApiError, internal},
    http::session::{Readable, Viewer, page_viewer},
    present::clip,
};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{} · Pipewright</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}\
         td,th{{padding:.25em .75em;text-align:left;border-bottom:1px solid #ddd}}\
         pre{{background:#111;color:#ddd;padding:1em;overflow:auto;max-height:40em}}\
         .success{{color:#1a7f37}}.failure,.error{{color:#cf222e}}.running,.queued,.pending{{color:#9a6700}}\
         </style></head><body><p><a href=\"/\">Pipewright</a></p>{}</body></html>",
        escape(title),
        body
    ))
}

/// Who is looking, and the form that signs them out.
fn viewer_header(viewer: &Viewer) -> String {
    format!(
        "<header><span id=\"viewer\">{}</span> <form id=\"logout\" method=\"post\" action=\"/logout\" style=\"display:inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></header>",
        escape(viewer.name()),
        escape(viewer.csrf()),
    )
}

pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let viewer = match page_viewer(&app, &headers).await {
        Ok(viewer) => viewer,
        Err(login) => return Ok(login),
    };
    let runs = match viewer.readable(&app).await? {
        Readable::All => app.store.runs(None, 100).await.map_err(internal)?,
        Readable::Only(repos) => {
            let mut runs = Vec::new();
            for repo in &repos {
                runs.extend(app.store.runs(Some(repo), 100).await.map_err(internal)?);
            }
            runs.sort_by_key(|r| std::cmp::Reverse(r.id));
            runs.truncate(100);
            runs
        }
    };
    let mut rows = String::new();
    for r in &runs {
        rows.push_str(&format!(
            "<tr><td><a href=\"/runs/{id}\">#{id}</a></td><td>{repo}</td><td>{pipeline}</td><td>{event} {git_ref}</td><td>{sha}</td><td class=\"{state}\">{state}</td><td>{desc}</td><td>{at}</td></tr>",
            id = r.id,
            repo = escape(&r.repo),
            pipeline = escape(&r.pipeline),
            event = escape(r.event.as_str()),
            git_ref = escape(&r.git_ref.full()),
            sha = escape(&r.sha.chars().take(8).collect::<String>()),
            state = r.state.as_str(),
            desc = escape(&clip(&r.description)),
            at = rfc3339(r.created_at),
        ));
    }
    let body = format!(
        "{header}<h1>Runs</h1><table><tr><th>run</th><th>repository</th><th>pipeline</th><th>event</th><th>commit</th><th>state</th><th>description</th><th>created</th></tr>{rows}</table>",
        header = viewer_header(&viewer)
    );
    Ok(page("Runs", &body).into_response())
}

pub async fn run_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let viewer = match page_viewer(&app, &headers).await {
        Ok(viewer) => viewer,
        Err(login) => return Ok(login),
    };
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no run {id}"));
    let run = app
        .store
        .run(id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    if !viewer.can_read(&app, &run.repo).await {
        return Err(not_found());
    }
    let steps = app.store.steps(id).await.map_err(internal)?;
    let mut body = format!(
        "{header}<h1>{pipeline} #{id}</h1><p>{repo} · {event} {git_ref} · {sha}</p><p class=\"{state}\">{state}: {desc}</p>",
        pipeline = escape(&run.pipeline),
        repo = escape(&run.repo),
        event = escape(run.event.as_str()),
        git_ref = escape(&run.git_ref.full()),
        sha = escape(&run.sha),
        state = run.state.as_str(),
        desc = escape(&clip(&run.description)),
        header = viewer_header(&viewer),
    );
    for step in &steps {
        let log = app
            .logs
            .read(id, step.idx)
            .ok()
            .flatten()
            .unwrap_or_default();
        let tail = &log[log.len().saturating_sub(256 << 10)..];
        body.push_str(&format!(
            "<h2 class=\"{state}\">{name} — {state}</h2><p>{desc}</p><pre id=\"log-{idx}\" data-live=\"{live}\">{log}</pre>",
            name = escape(&step.name),
            state = escape(step.state.as_str()),
            desc = escape(&step.description),
            idx = step.idx,
            live = !step.state.is_over(),
            log = escape(&String::from_utf8_lossy(tail)),
        ));
    }
    body.push_str(&format!(
        "<script>for (const pre of document.querySelectorAll('pre[data-live=true]')) {{\
         const n = pre.id.slice(4); pre.textContent = '';\
         const es = new EventSource('/api/v1/runs/{id}/steps/' + n + '/log?follow=true');\
         es.onmessage = e => {{ pre.textContent += e.data + '\\n'; pre.scrollTop = pre.scrollHeight; }};\
         es.addEventListener('end', () => es.close()); }}</script>"
    ));
    Ok(page(&format!("{} #{id}", run.pipeline), &body).into_response())
}

//! The web UI's pages over HTTP: the runs list (filters, paging, what a scoped token
//! sees), a run's page (ANSI colours, escaping, re-run of, waiting reasons), the log
//! stream (line ids, resuming without repeats, the end event), the cancel, re-run and
//! dispatch forms (CSRF, write access, typed inputs) and the HTML 404.

use std::time::Duration;

use pipewright::store::{RunSpec, RunState};
use pipewright_tests::fake_gitea::FakeGitea;
use serde_json::{Value, json};

use crate::serve::{API_TOKEN, Server, client, eventually, step};

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn page(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = no_redirects().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn post_form(url: &str, token: Option<&str>, form: &[(&str, &str)]) -> (u16, String, String) {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect();
    let mut req = no_redirects()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, resp.text().await.unwrap())
}

/// `application/x-www-form-urlencoded` escaping, as a browser sends a form.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

async fn api(url: &str, token: &str) -> (u16, Value) {
    let resp = client().get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// The run ids of a list page's rows, in order.
fn row_ids(html: &str) -> Vec<i64> {
    html.split("<tr data-run-id=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The `href` of the element with this id.
fn href_of(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let href = tag.split("href=\"").nth(1)?;
    Some(
        href[..href.find('"')?]
            .replace("&amp;", "&")
            .replace("&#38;", "&"),
    )
}

fn ids(runs: &Value) -> Vec<i64> {
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// A run that this server never claims (it waits for an agent labelled `elsewhere`).
fn spec(repo: &str, pipeline: &str, n: usize) -> RunSpec {
    RunSpec {
        pipeline_file: ".pipewright/ci.yml".into(),
        runs_on: vec!["elsewhere".into()],
        dedupe_key: format!("ui-test:{repo}:{pipeline}:{n}"),
        concurrency_group: format!("{repo}/{pipeline}/{n}"),
        ..pipewright_tests::push_run(repo, pipeline, &format!("{n:040x}"))
    }
}

/// A run of the list test: id, repository, pipeline, whether it failed.
type Listed<'a> = (i64, &'a str, &'a str, bool);

async fn add(server: &Server, spec: RunSpec) -> i64 {
    server.app.enqueue(None, &[spec]).await.unwrap().ids[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_filters_pages_and_shows_only_readable_repositories() {
    let gitea = FakeGitea::start().await;
    let toml = r#"
[[api.token]]
token = "reader-b"
repos = ["org/b"]
scopes = ["read"]
"#;
    let server = Server::start_without_engine(&gitea, &[], toml).await;
    let mut all = Vec::new();
    for n in 0..24 {
        let (repo, pipeline) = match n % 3 {
            0 => ("org/a", "build"),
            1 => ("org/a", "deploy"),
            _ => ("org/b", "build"),
        };
        let id = add(&server, spec(repo, pipeline, n)).await;
        if n % 4 == 0 {
            server
                .app
                .store
                .finish_run(id, RunState::Failure, "failed")
                .await
                .unwrap();
        }
        all.push((id, repo, pipeline, n % 4 == 0));
    }
    all.reverse();
    let expect = |f: &dyn Fn(&Listed) -> bool| -> Vec<i64> {
        all.iter().filter(|r| f(r)).map(|r| r.0).collect()
    };
    let url = |path: &str| format!("{}{path}", server.url);

    let (code, html) = page(&url("/"), Some(API_TOKEN)).await;
    assert_eq!(code, 200, "{html}");
    assert_eq!(row_ids(&html), expect(&|_| true));
    for part in [
        "<span id=\"viewer\">",
        "<form id=\"logout\"",
        "<table id=\"runs\"",
        "<form id=\"filters\"",
        "<select id=\"f-state\" name=\"state\">",
        "name=\"repo\"",
        "name=\"pipeline\"",
        "<td class=\"state state-failure\">failure</td>",
        "<td class=\"state state-queued\">queued</td>",
        "<td class=\"actor\">alice</td>",
        "<td class=\"event\">push</td>",
        "<td class=\"ref\">refs/heads/main</td>",
        "<meta name=\"viewport\"",
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    assert!(href_of(&html, "older").is_none(), "one page: {html}");

    let (_, html) = page(&url("/?repo=org/a&pipeline=deploy"), Some(API_TOKEN)).await;
    assert_eq!(
        row_ids(&html),
        expect(&|r| r.1 == "org/a" && r.2 == "deploy")
    );
    let (_, html) = page(&url("/?state=failure&pipeline=build"), Some(API_TOKEN)).await;
    assert_eq!(row_ids(&html), expect(&|r| r.3 && r.2 == "build"));
    let (_, html) = page(&url("/?state=queued&repo=org/b"), Some(API_TOKEN)).await;
    assert_eq!(row_ids(&html), expect(&|r| !r.3 && r.1 == "org/b"));

    // Pages of 5, newest first, following `a#older` to the end: every run once.
    let mut seen = Vec::new();
    let mut next = Some("/?limit=5&repo=org/a".to_owned());
    while let Some(path) = next {
        let (code, html) = page(&url(&path), Some(API_TOKEN)).await;
        assert_eq!(code, 200);
        let rows = row_ids(&html);
        assert!(rows.len() <= 5);
        seen.extend(rows);
        next = href_of(&html, "older");
    }
    assert_eq!(seen, expect(&|r| r.1 == "org/a"));

    // The live update's rows follow the same filters.
    let (code, rows) = page(&url("/ui/runs?repo=org/a&state=failure"), Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(row_ids(&rows), expect(&|r| r.1 == "org/a" && r.3));
    assert!(!rows.contains("<html"), "{rows}");

    // The API has the same filters and paging.
    let (code, list) = api(&url("/api/v1/runs?pipeline=build&state=queued"), API_TOKEN).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(ids(&list), expect(&|r| r.2 == "build" && !r.3));
    let first = expect(&|_| true);
    let (_, list) = api(
        &url(&format!("/api/v1/runs?before={}&limit=3", first[2])),
        API_TOKEN,
    )
    .await;
    assert_eq!(ids(&list), first[3..6]);
    let (code, _) = api(&url("/api/v1/runs?state=bogus"), API_TOKEN).await;
    assert_eq!(code, 422);

    // A token of org/b sees org/b only, even when it asks for org/a.
    let (_, html) = page(&url("/"), Some("reader-b")).await;
    assert_eq!(row_ids(&html), expect(&|r| r.1 == "org/b"));
    let (_, html) = page(&url("/?repo=org/a"), Some("reader-b")).await;
    assert_eq!(row_ids(&html), Vec::<i64>::new());
    let (_, rows) = page(&url("/ui/runs?repo=org/a"), Some("reader-b")).await;
    assert_eq!(row_ids(&rows), Vec::<i64>::new());
    let a_run = expect(&|r| r.1 == "org/a")[0];
    let (code, html) = page(&url(&format!("/runs/{a_run}")), Some("reader-b")).await;
    assert_eq!(code, 404);
    assert!(html.contains("<h1>Not found</h1>"), "{html}");
    let (code, _) = page(&url(&format!("/ui/runs/{a_run}")), Some("reader-b")).await;
    assert_eq!(code, 404);

    // Without a token or session, a page sends to the sign-in page.
    let (code, _) = page(&url("/"), None).await;
    assert!((300..400).contains(&code), "{code}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_values_are_escaped_and_unknown_pages_are_html_404s() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_without_engine(&gitea, &[], "").await;
    let evil = "<script>alert(1)</script>";
    let mut run = spec("org/a", evil, 1);
    run.actor = format!("\"><img src=x onerror=alert(2)>{evil}");
    run.inputs = vec![(evil.into(), evil.into())];
    run.description = evil.into();
    let id = add(&server, run).await;
    let url = |path: &str| format!("{}{path}", server.url);
    for path in ["/".to_owned(), format!("/runs/{id}"), "/ui/runs".to_owned()] {
        let (code, html) = page(&url(&path), Some(API_TOKEN)).await;
        assert_eq!(code, 200, "{path}: {html}");
        assert!(!html.contains(evil), "{path}: {html}");
        assert!(!html.contains("<img"), "{path}: {html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path}: {html}"
        );
    }
    let (_, html) = page(&url(&format!("/runs/{id}")), Some(API_TOKEN)).await;
    assert!(html.contains("<dl id=\"run-inputs\">"), "{html}");
    // The filter form echoes what it was given, escaped.
    let (_, html) = page(
        &url("/?pipeline=%22%3E%3Cscript%3Ealert(3)%3C/script%3E"),
        Some(API_TOKEN),
    )
    .await;
    assert!(!html.contains("<script>alert(3)"), "{html}");

    for path in ["/nope", "/runs/999999", "/runs/abc", "/repos"] {
        let resp = client()
            .get(url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("<h1>Not found</h1>"), "{path}: {html}");
        assert!(html.contains("<span id=\"viewer\">token</span>"), "{html}");
    }
    let resp = client()
        .get(url("/api/v1/runs/999999"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "no run 999999");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_cancel_and_rerun_with_write_access_only_and_the_run_shows_why_it_waits() {
    let gitea = FakeGitea::start().await;
    let toml = r#"
[[api.token]]
token = "reader"
repos = ["org/*"]
scopes = ["read"]
"#;
    let server = Server::start_without_engine(&gitea, &[], toml).await;
    let url = |path: &str| format!("{}{path}", server.url);

    // A run another agent holds, and one of its group queued behind it.
    let mut held = spec("org/a", "deploy", 1);
    held.concurrency_group = "org/a/deploy".into();
    let held = add(&server, held).await;
    let claimed = server
        .app
        .store
        .claim_next("agent-b", &["elsewhere".to_owned()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, held);
    let mut behind = spec("org/a", "deploy", 2);
    behind.concurrency_group = "org/a/deploy".into();
    behind.runs_on = Vec::new();
    let behind = add(&server, behind).await;
    assert!(server.app.store.renew_lease(held, "agent-b").await.unwrap());
    let (_, run) = api(&url(&format!("/api/v1/runs/{behind}")), API_TOKEN).await;
    assert_eq!(
        run["waiting_reason"],
        format!("concurrency group busy with run {held}")
    );
    let (_, run) = api(&url(&format!("/api/v1/runs/{held}")), API_TOKEN).await;
    assert_eq!(run["agent"], "agent-b");
    let (_, html) = page(&url(&format!("/runs/{behind}")), Some(API_TOKEN)).await;
    assert!(
        html.contains(&format!(
            "<dd id=\"waiting-reason\">concurrency group busy with run {held}</dd>"
        )),
        "{html}"
    );
    assert!(html.contains("<form id=\"cancel\""), "{html}");
    assert!(html.contains("<form id=\"rerun\""), "{html}");

    let other = add(&server, spec("org/a", "build", 3)).await;
    let (_, run) = api(&url(&format!("/api/v1/runs/{other}")), API_TOKEN).await;
    assert_eq!(run["waiting_reason"], "no agent with labels [elsewhere]");

    // A reader sees no buttons, and a forged POST is refused.
    let (_, html) = page(&url(&format!("/runs/{other}")), Some("reader")).await;
    assert!(!html.contains("<form id=\"cancel\""), "{html}");
    assert!(!html.contains("<form id=\"rerun\""), "{html}");
    let cancel = url(&format!("/runs/{other}/cancel"));
    let rerun = url(&format!("/runs/{other}/rerun"));
    for target in [&cancel, &rerun] {
        let (code, _, _) = post_form(target, Some("reader"), &[("csrf", "")]).await;
        assert_eq!(code, 403, "{target}");
        let (code, _, _) = post_form(target, Some(API_TOKEN), &[("csrf", "forged")]).await;
        assert_eq!(code, 403, "{target}");
    }
    let (_, run) = api(&url(&format!("/api/v1/runs/{other}")), API_TOKEN).await;
    assert_eq!(run["state"], "queued");
    let (code, _, html) = post_form(
        &url("/runs/999999/cancel"),
        Some(API_TOKEN),
        &[("csrf", "")],
    )
    .await;
    assert_eq!(code, 404);
    assert!(html.contains("<h1>Not found</h1>"), "{html}");

    // Cancel: back to the run, which is cancelled and has no cancel button any more.
    let (code, location, _) = post_form(&cancel, Some(API_TOKEN), &[("csrf", "")]).await;
    assert_eq!(
        (code, location.as_str()),
        (303, format!("/runs/{other}").as_str())
    );
    let (_, run) = api(&url(&format!("/api/v1/runs/{other}")), API_TOKEN).await;
    assert_eq!(run["state"], "cancelled");
    let (_, html) = page(&url(&format!("/runs/{other}")), Some(API_TOKEN)).await;
    assert!(!html.contains("<form id=\"cancel\""), "{html}");
    assert!(html.contains("<span id=\"run-state\" class=\"state-cancelled\">cancelled</span>"));
    let (code, _, _) = post_form(&cancel, Some(API_TOKEN), &[("csrf", "")]).await;
    assert_eq!(code, 409);
    // Re-run: a new run, "re-run of #N" on its page and in its JSON.
    let (code, location, _) = post_form(&rerun, Some(API_TOKEN), &[("csrf", "")]).await;
    assert_eq!(code, 303);
    let new: i64 = location.strip_prefix("/runs/").unwrap().parse().unwrap();
    assert!(new > other);
    let (_, run) = api(&url(&format!("/api/v1/runs/{new}")), API_TOKEN).await;
    assert_eq!(run["rerun_of"], other);
    let (_, run) = api(&url(&format!("/api/v1/runs/{other}")), API_TOKEN).await;
    assert_eq!(run["rerun_of"], Value::Null);
    let (_, html) = page(&url(&format!("/runs/{new}")), Some(API_TOKEN)).await;
    assert_eq!(href_of(&html, "rerun-of"), Some(format!("/runs/{other}")));
    assert!(html.contains(&format!("re-run of #{other}")), "{html}");

    server.stop().await;
}

/// One server-sent event: its id, name and data.
#[derive(Debug, PartialEq)]
pub(crate) struct Sse {
    pub(crate) id: Option<u64>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// The events of a log stream (`?follow=true`) until it ends, resumed after `last`.
pub(crate) async fn follow(url: &str, last: Option<u64>) -> Vec<Sse> {
    let mut req = client().get(url).bearer_auth(API_TOKEN);
    if let Some(last) = last {
        req = req.header("Last-Event-ID", last.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    parse_events(&text)
}

/// The complete events in a stream's text.
pub(crate) fn parse_events(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, None, Vec::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v.to_owned());
                } else if line == "data:" {
                    data.push(String::new());
                }
            }
            (id.is_some() || event.is_some()).then(|| Sse {
                id,
                event,
                data: data.join("\n"),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_steps_log_renders_colours_and_streams_each_line_once() {
    let (_, logged_in_a_file) = a_real_steps_log(&[]).await;
    assert!(logged_in_a_file, "with SQLite, logs are files");
}

/// A real step's log, read whole, followed and resumed through the API and shown on the
/// run's page, on a server with these settings; the run's id, and whether its log was a
/// file of the server's `data_dir`.
pub(crate) async fn a_real_steps_log(extra: &[(&str, &str)]) -> (i64, bool) {
    let gitea = FakeGitea::start().await;
    let server = Server::start_with(&gitea, extra).await;
    let repo = gitea.create_repo("org", "colours");
    let pipeline = format!(
        "on: dispatch\nsteps:\n{}",
        step(
            "paint",
            "printf '\\033[32mgreen\\033[0m\\n'\necho '<script>alert(1)</script>'\nfor i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.2; done\nprintf 'no newline at the end'"
        )
    );
    repo.commit("main", "colours")
        .write(".pipewright/paint.yml", &pipeline)
        .push();
    let resp = client()
        .post(format!(
            "{}/api/v1/repos/org/colours/pipelines/paint/dispatch",
            server.url
        ))
        .bearer_auth(API_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // The step exists once the run starts; follow it from there, live.
    eventually(Duration::from_secs(120), "the run's steps", || async {
        let run = server.api(&format!("/api/v1/runs/{id}")).await;
        (!run["steps"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    let stream = format!("{}/api/v1/runs/{id}/steps/0/log?follow=true", server.url);
    let events = follow(&stream, None).await;
    let expected_lines = [
        "\u{1b}[32mgreen\u{1b}[0m".to_owned(),
        "<script>alert(1)</script>".to_owned(),
        "line 1".to_owned(),
        "line 2".to_owned(),
        "line 3".to_owned(),
        "line 4".to_owned(),
        "line 5".to_owned(),
        "no newline at the end".to_owned(),
    ];
    let (end, lines) = events.split_last().unwrap();
    assert_eq!(
        end,
        &Sse {
            id: None,
            event: Some("end".into()),
            data: "success".into()
        }
    );
    let numbered: Vec<(u64, &str)> = lines
        .iter()
        .map(|e| (e.id.unwrap(), e.data.as_str()))
        .collect();
    let wanted: Vec<(u64, &str)> = expected_lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64, l.as_str()))
        .collect();
    assert_eq!(numbered, wanted);

    // Resuming after line 2 sends lines 3.. once, then the end again.
    let resumed = follow(&stream, Some(2)).await;
    let ids: Vec<Option<u64>> = resumed.iter().map(|e| e.id).collect();
    assert_eq!(ids, [Some(3), Some(4), Some(5), Some(6), Some(7), None]);
    assert_eq!(resumed[0].data, "line 2");
    assert_eq!(resumed.last().unwrap().data, "success");
    // Past the last line: only the end.
    assert_eq!(follow(&stream, Some(7)).await.len(), 1);
    // As the page asks for it: each line rendered.
    let html = follow(&format!("{stream}&format=html"), None).await;
    assert_eq!(html[0].data, "<span class=\"ansi-fg-green\">green</span>");
    assert_eq!(html[1].data, "&lt;script&gt;alert(1)&lt;/script&gt;");

    // The run's page: the log's lines as `div.line`, colours as spans, no escape byte.
    let (code, page_html) = page(&format!("{}/runs/{id}", server.url), Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    assert!(
        page_html.contains("<div class=\"line\"><span class=\"ansi-fg-green\">green</span></div>"),
        "{page_html}"
    );
    assert!(!page_html.contains('\u{1b}'), "{page_html}");
    assert!(!page_html.contains("<script>alert(1)"), "{page_html}");
    assert!(page_html.contains("<section class=\"step\" data-step=\"0\""));
    assert!(page_html.contains("<span class=\"step-state state-success\">success</span>"));
    assert!(page_html.contains("<span id=\"run-state\" class=\"state-success\">success</span>"));
    let sha = repo.head("main");
    assert_eq!(
        href_of(&page_html, "commit"),
        Some(format!("{}/org/colours/commit/{sha}", gitea.url()))
    );
    // The live page's JSON, through the same access as the page.
    let (code, run) = api(&format!("{}/ui/runs/{id}", server.url), API_TOKEN).await;
    assert_eq!(code, 200);
    assert_eq!(run["steps"][0]["state"], "success");
    // The agent that ran it stays named after the run ended: the server's own.
    assert_eq!(run["agent"], server.app.config.agent.name().as_str());
    // The whole log, as text.
    let mut whole = expected_lines.join("\n");
    whole.push('\n');
    assert_eq!(server.log(id, 0).await, whole);
    let file = server.app.logs.path(id, 0).is_file();
    server.stop().await;
    (id, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_form_is_generated_from_the_inputs_and_starts_a_run_with_typed_inputs() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_without_engine(&gitea, &[], "").await;
    let repo = gitea.create_repo("org", "ops");
    let pipeline = format!(
        "on:\n  dispatch:\n    confirm: true\n    inputs:\n      env: {{ type: choice, options: [staging, prod], default: staging, description: \"where <to> deploy\" }}\n      dry: {{ type: boolean, default: \"true\" }}\n      count: {{ type: number, default: \"3\" }}\n      target: {{ type: string, required: true }}\nsteps:\n{}",
        step("deploy", "echo deploying")
    );
    repo.commit("main", "ops")
        .write(".pipewright/deploy.yml", &pipeline)
        .push();
    let form_url = format!("{}/repos/org/ops/pipelines/deploy/dispatch", server.url);
    let (code, html) = page(&form_url, Some(API_TOKEN)).await;
    assert_eq!(code, 200, "{html}");
    for part in [
        "<form id=\"dispatch\" method=\"post\"",
        "name=\"ref\" value=\"main\"",
        "<select id=\"input-env\" name=\"input.env\">",
        "<option value=\"staging\" selected>staging</option>",
        "<input type=\"checkbox\" name=\"input.dry\" value=\"true\" checked>",
        "type=\"number\" step=\"any\" name=\"input.count\" value=\"3\">",
        "type=\"text\" name=\"input.target\" value=\"\" required>",
        "target <span class=\"required\">*</span>",
        "<span class=\"description\">where &#60;to&#62; deploy</span>",
        "name=\"confirm\"",
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    // A pipeline the ref does not have: an HTML 404.
    let missing = format!("{}/repos/org/ops/pipelines/nope/dispatch", server.url);
    assert_eq!(page(&missing, Some(API_TOKEN)).await.0, 404);

    // A bad number: the form again, with the error and what was sent.
    let (code, _, html) = post_form(
        &form_url,
        Some(API_TOKEN),
        &[
            ("csrf", ""),
            ("ref", "main"),
            ("input.env", "prod"),
            ("input.count", "many"),
            ("input.target", "<script>alert(1)</script>"),
            ("confirm", "deploy"),
        ],
    )
    .await;
    assert_eq!(code, 422, "{html}");
    assert!(html.contains("class=\"error\""), "{html}");
    assert!(html.contains("input `count`"), "{html}");
    assert!(
        html.contains("<option value=\"prod\" selected>prod</option>"),
        "{html}"
    );
    assert!(
        html.contains("<input type=\"checkbox\" name=\"input.dry\" value=\"true\">"),
        "unchecked stays unchecked: {html}"
    );
    assert!(!html.contains("<script>alert(1)"), "{html}");
    // Without the confirmation: refused too.
    let (code, _, html) = post_form(
        &form_url,
        Some(API_TOKEN),
        &[
            ("csrf", ""),
            ("ref", "main"),
            ("input.target", "x"),
            ("confirm", ""),
        ],
    )
    .await;
    assert_eq!(code, 422);
    assert!(html.contains("confirm"), "{html}");
    // A forged token.
    let (code, _, _) = post_form(
        &form_url,
        Some(API_TOKEN),
        &[
            ("csrf", "forged"),
            ("input.target", "x"),
            ("confirm", "deploy"),
        ],
    )
    .await;
    assert_eq!(code, 403);

    // Unchecked boolean is false, an empty number takes its default.
    let (code, location, html) = post_form(
        &form_url,
        Some(API_TOKEN),
        &[
            ("csrf", ""),
            ("ref", "main"),
            ("input.env", "prod"),
            ("input.count", ""),
            ("input.target", "db-1"),
            ("confirm", "deploy"),
        ],
    )
    .await;
    assert_eq!(code, 303, "{html}");
    let id: i64 = location.strip_prefix("/runs/").unwrap().parse().unwrap();
    let (_, run) = api(&format!("{}/api/v1/runs/{id}", server.url), API_TOKEN).await;
    assert_eq!(run["event"], "dispatch");
    assert_eq!(run["actor"], "token");
    assert_eq!(run["inputs"]["env"], "prod");
    assert_eq!(run["inputs"]["dry"], false);
    assert_eq!(run["inputs"]["count"], 3);
    assert_eq!(run["inputs"]["target"], "db-1");
    // Through the API too, booleans and numbers are typed.
    let resp = client()
        .post(format!(
            "{}/api/v1/repos/org/ops/pipelines/deploy/dispatch",
            server.url
        ))
        .bearer_auth(API_TOKEN)
        .json(
            &json!({ "inputs": { "dry": true, "count": 2.5, "target": "t", "confirm": "deploy" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["inputs"]["dry"], true);
    assert_eq!(run["inputs"]["count"], 2.5);
    assert_eq!(run["inputs"]["env"], "staging");
    assert_eq!(run["rerun_of"], Value::Null);
    server.stop().await;
}

/// The store's side of the list on both databases: filters, repositories, keyset pages,
/// and the re-run and input types a run keeps.
async fn runs_are_listed_by_filters_and_pages(url: &str) {
    use pipewright::store::{InputType, RunFilter, Store};
    let store = Store::open(url).await.unwrap();
    let mut made = Vec::new();
    for n in 0..12 {
        let repo = ["org/a", "org/b", "org/c"][n % 3];
        let mut run = spec(repo, if n % 2 == 0 { "build" } else { "test" }, n);
        run.inputs = vec![("dry".into(), "true".into()), ("n".into(), "7".into())];
        run.input_types = vec![
            ("dry".into(), InputType::Boolean),
            ("n".into(), InputType::Number),
        ];
        let id = store.enqueue_runs(None, &[run]).await.unwrap().ids[0];
        made.push((id, repo, n % 2 == 0));
    }
    made.reverse();
    let list = |filter: RunFilter| {
        let store = store.clone();
        async move {
            store
                .list_runs(&filter)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let all: Vec<i64> = made.iter().map(|m| m.0).collect();
    assert_eq!(
        list(RunFilter {
            limit: 50,
            ..RunFilter::default()
        })
        .await,
        all
    );
    let a_c = list(RunFilter {
        repos: Some(vec!["org/a".into(), "org/c".into()]),
        pipeline: Some("build".into()),
        state: Some(RunState::Queued),
        limit: 50,
        ..RunFilter::default()
    })
    .await;
    let want: Vec<i64> = made
        .iter()
        .filter(|m| m.1 != "org/b" && m.2)
        .map(|m| m.0)
        .collect();
    assert_eq!(a_c, want);
    assert_eq!(
        list(RunFilter {
            repos: Some(Vec::new()),
            limit: 50,
            ..RunFilter::default()
        })
        .await,
        Vec::<i64>::new()
    );
    let page = list(RunFilter {
        before: Some(all[3]),
        limit: 4,
        ..RunFilter::default()
    })
    .await;
    assert_eq!(page, all[4..8]);
    assert_eq!(
        list(RunFilter {
            state: Some(RunState::Success),
            limit: 50,
            ..RunFilter::default()
        })
        .await,
        Vec::<i64>::new()
    );
    let mut repos = store.run_repos().await.unwrap();
    repos.sort();
    assert_eq!(repos, ["org/a", "org/b", "org/c"]);
    let old = store.run(all[0]).await.unwrap().unwrap();
    let mut rerun = spec(&old.repo, &old.pipeline, 99);
    rerun.rerun_of = Some(old.id);
    rerun.input_types = old.input_types.clone();
    let again = store.enqueue_runs(None, &[rerun]).await.unwrap().ids[0];
    let again = store.run(again).await.unwrap().unwrap();
    assert_eq!(again.rerun_of, Some(old.id));
    assert_eq!(again.input_types, old.input_types);
    assert_eq!(old.input_types.len(), 2);
}

#[tokio::test]
async fn the_store_lists_runs_by_filters_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    runs_are_listed_by_filters_and_pages(&format!("sqlite://{}/pw.db", dir.path().display())).await;
}

#[tokio::test]
async fn the_store_lists_runs_by_filters_on_postgres() {
    let pg = pipewright_tests::services::Postgres::start();
    runs_are_listed_by_filters_and_pages(&pg.url()).await;
}

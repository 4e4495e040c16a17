//! The web UI in a real browser (headless Chromium over WebDriver): what a person signed in
//! sees and does, with screenshots saved under the target directory's `ui-screenshots/`
//! (the README's two, in `docs/` too, when `PIPEWRIGHT_UI_SCREENSHOTS=docs`).

use std::time::Duration;

use pipewright::store::{RunSpec, RunState};
use pipewright_pipelines::{EventKind, GitRef};
use pipewright_tests::browser::{Browser, Viewport};
use pipewright_tests::fake_gitea::{FakeGitea, Permission, Repo};
use serde_json::{Value, json};

use crate::serve::{API_TOKEN, Server, eventually, step};

/// Signs in through the API-token form of `/login`; waits for the runs list.
async fn sign_in_with_token(browser: &Browser, server: &Server, token: &str) {
    browser.goto(&format!("{}/login", server.url)).await;
    browser
        .fill("form#token-login input[name=token]", token)
        .await;
    browser.click("form#token-login button[type=submit]").await;
    browser.find("header span#viewer").await;
}

/// Commits `files` to `main` after a first commit and delivers the push; the pushed commit.
async fn push(server: &Server, repo: &Repo, files: &[(&str, &str)]) -> String {
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let mut commit = repo.commit("main", "pipelines");
    for (path, text) in files {
        commit = commit.write(path, text);
    }
    let c1 = commit.push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    c1
}

/// The ids of the rows of `table#runs`, top to bottom.
async fn row_ids(browser: &Browser) -> Vec<i64> {
    browser
        .js(
            "return [...document.querySelectorAll('table#runs tr[data-run-id]')].map(r => Number(r.dataset.runId));",
            vec![],
        )
        .await
}

/// Marks the page so that a later check can tell it was not reloaded since.
async fn mark_page(browser: &Browser) {
    let _: Value = browser
        .js("window.__notReloaded = true; return null;", vec![])
        .await;
}

async fn assert_not_reloaded(browser: &Browser) {
    let marked: bool = browser
        .js("return window.__notReloaded === true;", vec![])
        .await;
    assert!(marked, "the page was reloaded");
}

/// The texts of the log lines of step `n` on a run page.
async fn log_lines(browser: &Browser, n: i64) -> Vec<String> {
    browser
        .js(
            "return [...document.querySelectorAll(`section.step[data-step=\"${arguments[0]}\"] pre.log div.line`)].map(l => l.textContent);",
            vec![json!(n)],
        )
        .await
}

/// A run's JSON from the API.
async fn run_json(server: &Server, id: i64) -> Value {
    server.api(&format!("/api/v1/runs/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_page_opens_in_a_browser_when_runs_are_public() {
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_without_engine(&gitea, &[("PIPEWRIGHT_API__READ_PUBLIC", "true")], "").await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.url)).await;
    let title: String = browser.js("return document.title;", vec![]).await;
    assert!(title.contains("Pipewright"), "title: {title:?}");
    browser.find("table#runs").await;
    let (width, height): (u32, u32) = browser
        .js("return [window.innerWidth, window.innerHeight];", vec![])
        .await;
    assert_eq!((width, height), (1280, 900));
    let shot = browser.screenshot("runs-public-empty").await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "{}",
        shot.display()
    );
    browser.close().await;
    server.stop().await;
}

/// The runs list updates as runs come and go; a run page shows a step's ANSI colours as
/// styled spans and follows a live step from before it starts until it ends, each line
/// exactly once, and shows the final states without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_and_a_run_page_follow_a_live_run_to_its_end() {
    const LINES: usize = 80;
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "web");
    let browser = Browser::start().await;
    sign_in_with_token(&browser, &server, API_TOKEN).await;
    assert!(row_ids(&browser).await.is_empty());
    mark_page(&browser).await;

    let colours = format!(
        "on:\n  push:\n    branches: [main]\nsteps:\n{}",
        step(
            "colours",
            "printf '\\033[31mred\\033[0m plain \\033[1;32mbold green\\033[0m \\033[44mon blue\\033[0m\\n'\nprintf '<b>not bold</b> & \\033]0;title\\007done\\n'\nhead -c 600 /dev/zero | tr '\\0' w; echo"
        )
    );
    let count = format!(
        "on:\n  push:\n    branches: [main]\nsteps:\n{}{}",
        step("warm-up", "echo warming up"),
        step(
            "count",
            &format!("for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.1; done")
        )
    );
    let sha = push(
        &server,
        &repo,
        &[
            (".pipewright/colours.yml", &colours),
            (".pipewright/count.yml", &count),
        ],
    )
    .await;

    // The two runs appear in the list without a reload.
    let ids = browser
        .until("two rows in the runs list", || async {
            let ids = row_ids(&browser).await;
            (ids.len() == 2).then_some(ids)
        })
        .await;
    assert_not_reloaded(&browser).await;
    assert!(ids[0] > ids[1], "newest first: {ids:?}");
    let runs = server.runs().await;
    let count_id = runs
        .iter()
        .find(|r| r["pipeline"] == "count")
        .and_then(|r| r["id"].as_i64())
        .unwrap();
    let colours_id = runs
        .iter()
        .find(|r| r["pipeline"] == "colours")
        .and_then(|r| r["id"].as_i64())
        .unwrap();
    let row = format!("table#runs tr[data-run-id=\"{count_id}\"]");
    assert_eq!(
        browser.text(&format!("{row} td.repo")).await.as_deref(),
        Some("org/web")
    );
    assert_eq!(
        browser.text(&format!("{row} td.pipeline")).await.as_deref(),
        Some("count")
    );
    assert_eq!(
        browser.text(&format!("{row} td.event")).await.as_deref(),
        Some("push")
    );
    let git_ref = browser.text(&format!("{row} td.ref")).await.unwrap();
    assert!(git_ref.contains("main"), "{git_ref}");
    let commit = browser.text(&format!("{row} td.commit")).await.unwrap();
    assert!(
        !commit.is_empty() && sha.starts_with(&commit),
        "{commit} of {sha}"
    );
    // The live run's page, opened while it is queued or just started.
    browser
        .click(&format!("{row} a[href=\"/runs/{count_id}\"]"))
        .await;
    browser.find("section.step[data-step=\"1\"]").await;
    mark_page(&browser).await;
    let early = browser
        .text("section.step[data-step=\"1\"] .step-state")
        .await;
    assert!(
        matches!(early.as_deref(), Some("pending" | "running")),
        "the page was opened too late to follow the step: {early:?}"
    );
    browser
        .until("the count step's first lines", || async {
            (!log_lines(&browser, 1).await.is_empty()).then_some(())
        })
        .await;
    browser.screenshot("run-live").await;
    let commit_link = browser.attr("a#commit", "href").await;
    assert_eq!(
        commit_link,
        Some(format!("{}/org/web/commit/{sha}", gitea.url())),
        "the commit links to Gitea"
    );
    let short = browser.text("a#commit").await.unwrap_or_default();
    assert!(
        short.len() >= 7 && sha.starts_with(&short),
        "{short} of {sha}"
    );
    assert_eq!(browser.text("#run-actor").await.as_deref(), Some("org"));
    let title = browser.text("h1").await.unwrap_or_default();
    assert!(
        title.contains("count") && title.contains(&format!("#{count_id}")),
        "{title}"
    );
    browser
        .wait_text("#run-state", "the run's final state", |t| t == "success")
        .await;
    browser
        .wait_text(
            "section.step[data-step=\"1\"] .step-state",
            "the step's final state",
            |t| t == "success",
        )
        .await;
    // Open a while longer: nothing arrives twice, nothing is lost.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_not_reloaded(&browser).await;
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(log_lines(&browser, 1).await, expected);
    assert_eq!(log_lines(&browser, 0).await, ["warming up"]);
    let duration = browser
        .text("section.step[data-step=\"1\"] .step-duration")
        .await
        .unwrap_or_default();
    assert!(!duration.is_empty(), "the step shows its duration");
    browser.doc_screenshot("ui-run").await;

    // The colours step: styled spans, no escape codes as text, markup shown as text.
    browser
        .goto(&format!("{}/runs/{colours_id}", server.url))
        .await;
    browser
        .wait_text("#run-state", "the colours run's end", |t| t == "success")
        .await;
    let red = browser
        .text("section.step[data-step=\"0\"] pre.log span.ansi-fg-red")
        .await;
    assert_eq!(red.as_deref(), Some("red"));
    let bold_green: Vec<String> = browser
        .js(
            "return [...document.querySelectorAll('section.step[data-step=\"0\"] pre.log span')].filter(s => s.classList.contains('ansi-bold') && s.classList.contains('ansi-fg-green')).map(s => s.textContent);",
            vec![],
        )
        .await;
    assert_eq!(bold_green, ["bold green"]);
    assert_eq!(
        browser
            .text("section.step[data-step=\"0\"] pre.log span.ansi-bg-blue")
            .await
            .as_deref(),
        Some("on blue")
    );
    let lines = log_lines(&browser, 0).await;
    assert_eq!(
        lines,
        [
            "red plain bold green on blue".to_owned(),
            "<b>not bold</b> & done".to_owned(),
            "w".repeat(600),
        ]
    );
    // A long line wraps inside the log instead of widening it.
    let (scroll, width, long, short): (f64, f64, f64, f64) = browser
        .js(
            "const pre = document.querySelector('section.step[data-step=\"0\"] pre.log');\
             const lines = pre.querySelectorAll('div.line');\
             return [pre.scrollWidth, pre.clientWidth, lines[2].getBoundingClientRect().height, lines[0].getBoundingClientRect().height];",
            vec![],
        )
        .await;
    assert!(
        scroll <= width + 1.0,
        "the log scrolls sideways: {scroll} > {width}"
    );
    assert!(
        long > 2.0 * short,
        "the long line is not wrapped: {long} px high, a short one {short} px"
    );
    let html: String = browser
        .js(
            "return document.querySelector('section.step[data-step=\"0\"] pre.log').innerHTML;",
            vec![],
        )
        .await;
    assert!(
        !html.contains('\u{1b}') && !html.contains("[31m") && !html.contains("<b>"),
        "{html}"
    );
    assert_eq!(
        browser
            .count("section.step[data-step=\"0\"] pre.log b")
            .await,
        0
    );
    browser.screenshot("run-colours").await;

    // Back to the list: final states, the filters and paging.
    browser.goto(&format!("{}/", server.url)).await;
    browser
        .wait_text(&format!("{row} td.state"), "the list's final state", |t| {
            t == "success"
        })
        .await;
    let class = browser
        .attr(&format!("{row} td.state"), "class")
        .await
        .unwrap_or_default();
    assert!(
        class.split_whitespace().any(|c| c == "state-success"),
        "{class}"
    );
    let datetime = browser
        .attr(&format!("{row} td.started time"), "datetime")
        .await
        .unwrap_or_default();
    assert!(
        datetime.len() >= 20 && datetime.contains('T'),
        "an RFC 3339 start time: {datetime:?}"
    );
    let shown: String = browser
        .text(&format!("{row} td.started time"))
        .await
        .unwrap_or_default();
    assert!(!shown.is_empty(), "the start time is shown");
    browser.doc_screenshot("ui-runs").await;

    browser
        .fill("form#filters input[name=pipeline]", "colours")
        .await;
    let _: Value = browser
        .js(
            "document.querySelector('form#filters').submit(); return null;",
            vec![],
        )
        .await;
    browser
        .until("the list filtered by pipeline", || async {
            (row_ids(&browser).await == [colours_id]).then_some(())
        })
        .await;
    browser
        .goto(&format!("{}/?state=failure", server.url))
        .await;
    browser.find("table#runs").await;
    assert!(row_ids(&browser).await.is_empty());
    browser.goto(&format!("{}/?limit=1", server.url)).await;
    browser
        .until("one row per page", || async {
            (row_ids(&browser).await == [ids[0]]).then_some(())
        })
        .await;
    browser.click("a#older").await;
    browser
        .until("the older page", || async {
            (row_ids(&browser).await == [ids[1]]).then_some(())
        })
        .await;

    // A phone's width: the run page still shows the log.
    let phone = Browser::start_sized(Viewport::Mobile).await;
    sign_in_with_token(&phone, &server, API_TOKEN).await;
    phone.goto(&format!("{}/runs/{count_id}", server.url)).await;
    phone
        .until("the log on a phone", || async {
            (log_lines(&phone, 1).await.len() == LINES).then_some(())
        })
        .await;
    let overflow: bool = phone
        .js(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            vec![],
        )
        .await;
    phone.screenshot("run-mobile").await;
    assert!(!overflow, "the run page is wider than a phone's screen");
    phone.close().await;
    browser.close().await;
    server.stop().await;
}

/// Cancel and Re-run from a run's page, as someone who may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_rerun_buttons_act_on_the_run() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "slow");
    let slow = format!(
        "on:\n  push:\n    branches: [main]\nsteps:\n{}",
        step("wait", "echo started\nsleep 120\necho never")
    );
    push(&server, &repo, &[(".pipewright/slow.yml", &slow)]).await;
    let id = eventually(Duration::from_secs(60), "the run", || async {
        server.runs().await.first().and_then(|r| r["id"].as_i64())
    })
    .await;
    let browser = Browser::start().await;
    sign_in_with_token(&browser, &server, API_TOKEN).await;
    browser.goto(&format!("{}/runs/{id}", server.url)).await;
    browser
        .until("the step's first line", || async {
            (log_lines(&browser, 0).await == ["started"]).then_some(())
        })
        .await;
    assert_eq!(browser.text("#run-state").await.as_deref(), Some("running"));
    browser.find("form#rerun button").await;
    browser.screenshot("run-buttons").await;
    browser.click("form#cancel button").await;
    browser
        .wait_text("#run-state", "the cancelled state", |t| t == "cancelled")
        .await;
    assert!(browser.url().await.ends_with(&format!("/runs/{id}")));
    assert_eq!(run_json(&server, id).await["state"], "cancelled");
    browser
        .until("the cancel button to go", || async {
            (browser.count("form#cancel").await == 0).then_some(())
        })
        .await;

    browser.click("form#rerun button").await;
    let again = browser
        .until("the new run's page", || async {
            let url = browser.url().await;
            let n = url.rsplit("/runs/").next()?.parse::<i64>().ok()?;
            (n != id).then_some(n)
        })
        .await;
    let link = browser.find("a#rerun-of").await;
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some(format!("/runs/{id}").as_str())
    );
    let text = browser.text("a#rerun-of").await.unwrap();
    assert!(text.contains(&format!("#{id}")), "{text}");
    assert_eq!(run_json(&server, again).await["rerun_of"], id);
    browser
        .until("the re-run to start its step", || async {
            (log_lines(&browser, 0).await == ["started"]).then_some(())
        })
        .await;
    browser.click("form#cancel button").await;
    browser
        .wait_text("#run-state", "the re-run cancelled", |t| t == "cancelled")
        .await;
    browser.close().await;
    server.stop().await;
}

/// The dispatch form of a pipeline with every input type starts a run with those inputs;
/// a value the browser would never send is refused with the form shown again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_form_starts_a_run_with_its_typed_inputs() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "ops");
    let restore = format!(
        "on:\n  dispatch:\n    confirm: true\n    inputs:\n      target: {{ type: choice, options: [staging, production], default: staging, description: where to restore }}\n      dry: {{ type: boolean, default: \"true\" }}\n      copies: {{ type: number, default: \"1\" }}\n      reason: {{ type: string, required: true, description: why it is needed }}\nsteps:\n{}",
        step(
            "restore",
            "echo \"target=$PIPEWRIGHT_INPUT_TARGET dry=$PIPEWRIGHT_INPUT_DRY copies=$PIPEWRIGHT_INPUT_COPIES reason=$PIPEWRIGHT_INPUT_REASON\""
        )
    );
    repo.commit("main", "restore")
        .write(".pipewright/restore.yml", &restore)
        .push();
    let browser = Browser::start().await;
    sign_in_with_token(&browser, &server, API_TOKEN).await;
    let form_url = format!("{}/repos/org/ops/pipelines/restore/dispatch", server.url);
    browser.goto(&form_url).await;
    browser.find("form#dispatch").await;
    assert_eq!(browser.count("form#dispatch input[name=ref]").await, 1);
    let options: Vec<String> = browser
        .js(
            "return [...document.querySelectorAll('form#dispatch select[name=\"input.target\"] option')].map(o => o.value).filter(v => v !== '');",
            vec![],
        )
        .await;
    assert_eq!(options, ["staging", "production"]);
    assert_eq!(
        browser
            .count("form#dispatch input[type=checkbox][name=\"input.dry\"]")
            .await,
        1
    );
    assert_eq!(
        browser
            .count("form#dispatch input[type=number][name=\"input.copies\"]")
            .await,
        1
    );
    assert_eq!(
        browser
            .count("form#dispatch input[type=text][name=\"input.reason\"][required]")
            .await,
        1
    );
    assert!(browser.count("form#dispatch .required").await >= 1);
    let descriptions = browser.texts("form#dispatch .description").await;
    assert!(
        descriptions.iter().any(|d| d.contains("where to restore"))
            && descriptions.iter().any(|d| d.contains("why it is needed")),
        "{descriptions:?}"
    );
    assert_eq!(browser.count("form#dispatch input[name=confirm]").await, 1);
    browser.screenshot("dispatch-form").await;

    // A value no form control would send: the server refuses it and shows the form again.
    let _: Value = browser
        .js(
            "const f = document.querySelector('form#dispatch');\
             const n = f.querySelector('[name=\"input.copies\"]'); n.type = 'text'; n.value = 'many';\
             f.querySelector('[name=\"input.reason\"]').value = 'test';\
             f.querySelector('[name=confirm]').value = 'restore';\
             f.submit(); return null;",
            vec![],
        )
        .await;
    let error = browser
        .wait_text(".error", "the form's error", |t| t.contains("copies"))
        .await;
    assert!(!error.is_empty());
    assert!(
        server.runs().await.is_empty(),
        "a refused dispatch runs nothing"
    );

    // Now as a person fills it in; the reason carries markup that must stay text.
    let reason = "<img src=x onerror=\"window.__pwned=1\"> restore after incident";
    browser.goto(&form_url).await;
    let target = browser.find("select[name=\"input.target\"]").await;
    target
        .select_by_value("production")
        .await
        .expect("choosing production");
    browser
        .click("input[type=checkbox][name=\"input.dry\"]")
        .await;
    browser.fill("input[name=\"input.copies\"]", "3").await;
    browser.fill("input[name=\"input.reason\"]", reason).await;
    browser.fill("input[name=confirm]", "restore").await;
    browser.click("form#dispatch button[type=submit]").await;
    let id = browser
        .until("the dispatched run's page", || async {
            browser
                .url()
                .await
                .rsplit("/runs/")
                .next()?
                .parse::<i64>()
                .ok()
        })
        .await;
    browser
        .wait_text("#run-state", "the dispatched run's end", |t| t == "success")
        .await;
    let inputs: Vec<(String, String)> = browser
        .js(
            "return [...document.querySelectorAll('#run-inputs dt')].map(dt => [dt.textContent.trim(), dt.nextElementSibling.textContent.trim()]);",
            vec![],
        )
        .await;
    for (name, value) in [
        ("target", "production"),
        ("dry", "false"),
        ("copies", "3"),
        ("reason", reason),
    ] {
        assert!(
            inputs.iter().any(|(n, v)| n == name && v == value),
            "{name}={value} in {inputs:?}"
        );
    }
    let pwned: bool = browser.js("return window.__pwned === 1;", vec![]).await;
    assert!(!pwned, "markup in an input ran as HTML");
    let run = run_json(&server, id).await;
    assert_eq!(run["event"], "dispatch");
    assert_eq!(run["inputs"]["target"], "production");
    assert_eq!(run["inputs"]["dry"], false);
    assert_eq!(run["inputs"]["copies"], 3);
    assert_eq!(run["inputs"]["reason"], reason);
    assert_eq!(
        log_lines(&browser, 0).await,
        [format!(
            "target=production dry=false copies=3 reason={reason}"
        )]
    );
    browser.screenshot("dispatched-run").await;
    browser.close().await;
    server.stop().await;
}

/// A queued run that no agent claims (it needs a label none has).
fn waiting_run(repo: &str, sha: &str) -> RunSpec {
    RunSpec {
        repo: repo.into(),
        repo_id: 1,
        owner_id: 2,
        default_branch: "main".into(),
        status_repo: repo.into(),
        pipeline: "ci".into(),
        pipeline_file: ".pipewright/ci.yml".into(),
        event: EventKind::Push,
        git_ref: GitRef::Branch("main".into()),
        sha: sha.into(),
        pr: None,
        actor: "someone".into(),
        from_fork: false,
        attempt: 1,
        inputs: Vec::new(),
        input_types: Vec::new(),
        rerun_of: None,
        runs_on: vec!["no-such-label".into()],
        dedupe_key: format!("push:{repo}:{sha}"),
        concurrency_group: format!("{repo}/ci"),
        cancel_in_progress: false,
        state: RunState::Queued,
        description: "queued".into(),
    }
}

/// A form POST from the page itself (its cookie goes along); the answer's status.
async fn post_from_page(browser: &Browser, path: &str, csrf: &str) -> u16 {
    browser
        .js(
            "return fetch(arguments[0], { method: 'POST', body: new URLSearchParams({ csrf: arguments[1] }), redirect: 'manual' }).then(r => r.status);",
            vec![json!(path), json!(csrf)],
        )
        .await
}

/// Signing in with Gitea (OAuth through the fake Gitea's authorize endpoint) as a user who
/// may only read, and with an API token; what each may do on a run's page; a missing run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_both_ways_and_what_a_reader_may_not_do() {
    let gitea = FakeGitea::start().await;
    let oauth = gitea.create_oauth_app(&[]);
    let server = Server::start_without_engine(
        &gitea,
        &[
            ("PIPEWRIGHT_UI__OAUTH_CLIENT_ID", &oauth.client_id),
            ("PIPEWRIGHT_UI__OAUTH_CLIENT_SECRET", &oauth.client_secret),
        ],
        "",
    )
    .await;
    gitea.set_redirect_uris(&oauth, &[&format!("{}/login/oauth/callback", server.url)]);
    gitea
        .create_repo("acme", "app")
        .set_permission("alice", Permission::Read);
    let id = server
        .app
        .enqueue(None, &[waiting_run("acme/app", "aaaaaaa1")])
        .await
        .unwrap()
        .ids[0];
    gitea.set_browser_user(Some("alice"));

    let browser = Browser::start().await;
    browser.goto(&format!("{}/runs/{id}", server.url)).await;
    browser
        .until("the redirect to /login", || async {
            browser.url().await.contains("/login").then_some(())
        })
        .await;
    browser.find("form#token-login").await;
    browser.screenshot("login").await;
    browser.click("a#signin-gitea").await;
    browser
        .wait_text("header span#viewer", "the Gitea user's name", |t| {
            t == "alice"
        })
        .await;
    browser
        .find(&format!("table#runs tr[data-run-id=\"{id}\"]"))
        .await;

    // A reader: the run's page without buttons; forged form posts are refused.
    browser.goto(&format!("{}/runs/{id}", server.url)).await;
    browser
        .wait_text("#run-state", "the run's state", |t| t == "queued")
        .await;
    assert_eq!(browser.count("form#cancel").await, 0);
    assert_eq!(browser.count("form#rerun").await, 0);
    let why = browser.text("#waiting-reason").await.unwrap_or_default();
    assert!(why.contains("no-such-label"), "why it waits: {why:?}");
    assert_eq!(
        browser.text("#run-description").await.as_deref(),
        Some("queued")
    );
    browser.screenshot("run-reader").await;
    let csrf = browser
        .attr("form#logout input[name=csrf]", "value")
        .await
        .expect("the logout form's CSRF token");
    assert!(!csrf.is_empty());
    for action in ["cancel", "rerun"] {
        assert_eq!(
            post_from_page(&browser, &format!("/runs/{id}/{action}"), &csrf).await,
            403,
            "a reader's {action}"
        );
    }
    assert_eq!(run_json(&server, id).await["state"], "queued");
    assert_eq!(server.runs().await.len(), 1, "no re-run was made");

    // A missing run, and an unknown page: HTML 404s.
    for path in ["/runs/999999", "/no/such/page"] {
        let (status, kind): (u16, String) = browser
            .js(
                "return fetch(arguments[0]).then(r => [r.status, r.headers.get('content-type') || '']);",
                vec![json!(path)],
            )
            .await;
        assert_eq!(status, 404, "{path}");
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
    }
    browser.goto(&format!("{}/runs/999999", server.url)).await;
    browser
        .wait_text("h1", "the 404 page's heading", |t| t == "Not found")
        .await;
    browser.screenshot("not-found").await;

    // Signing out, then in with a token: its page has both buttons, and they need the
    // page's CSRF token.
    browser.click("form#logout button").await;
    browser
        .until("the sign-in page after signing out", || async {
            browser.url().await.contains("/login").then_some(())
        })
        .await;
    browser.goto(&format!("{}/runs/{id}", server.url)).await;
    browser
        .until("the redirect to /login", || async {
            browser.url().await.contains("/login").then_some(())
        })
        .await;
    sign_in_with_token(&browser, &server, API_TOKEN).await;
    let source = browser.client().source().await.unwrap();
    assert!(!source.contains(API_TOKEN), "the page shows the token");
    browser.goto(&format!("{}/runs/{id}", server.url)).await;
    browser.find("form#cancel button").await;
    browser.find("form#rerun button").await;
    assert_eq!(
        post_from_page(&browser, &format!("/runs/{id}/cancel"), "forged").await,
        403
    );
    assert_eq!(run_json(&server, id).await["state"], "queued");
    browser.click("form#cancel button").await;
    browser
        .wait_text("#run-state", "the cancelled state", |t| t == "cancelled")
        .await;
    browser.close().await;
    server.stop().await;
}

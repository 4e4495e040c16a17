//! Benchmarks of the web UI (run: `cargo bench -p pipewright-tests --bench ui`):
//!
//! 1. with 100 000 runs in the database (written straight into SQLite in one transaction,
//!    two steps each), the time to answer the runs list page `GET /` and `GET /api/v1/runs`
//!    with each filter (repository, state, pipeline, all three) and a page far down
//!    (`before`): sequential requests from a client runtime of its own, full bodies read;
//!    target: p99 under 50 ms;
//! 2. from a line printed by a step (its `$EPOCHREALTIME`, every 200 ms) to the same line in
//!    the run page of a following headless Chromium (a `MutationObserver` notes the time it
//!    appears): p50, target under 100 ms; the page followed by 20 tabs at once (several
//!    browsers, so that no browser's six-connections-per-host limit holds a stream back),
//!    and the server's resident memory before they open and while they follow; target:
//!    under 20 MB added.
//!
//! The server runs in this process (its RSS is this process's, the WebDriver clients'
//! share is small); the browsers are processes of their own.
//! PIPEWRIGHT_BENCH_ONLY=queries|logs runs one half; PIPEWRIGHT_BENCH_RUNS changes the
//! number of runs (default 100 000).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pipewright::server::{App, serve};
use pipewright_containers::CancellationToken;
use pipewright_tests::bench::{client_runtime, ms, percentile};
use pipewright_tests::browser::{Browser, poll};
use pipewright_tests::fake_gitea::FakeGitea;
use serde_json::Value;
use sqlx::Connection;
use tokio::net::TcpListener;

const SECRET: &str = "bench-secret";
const TOKEN: &str = "bench-api-token";
const REPOS: usize = 50;
const PIPELINES: [&str; 5] = ["build", "test", "deploy", "lint", "nightly"];
/// Browsers × tabs each: 20 followers.
const BROWSERS: usize = 5;
const TABS: usize = 4;
const TICKS: usize = 150;

struct Bench {
    url: String,
    _app: Arc<App>,
    shutdown: CancellationToken,
    data: tempfile::TempDir,
}

async fn start(gitea: &FakeGitea) -> Bench {
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config_file = data.path().join("pipewright.toml");
    std::fs::write(&config_file, "").unwrap();
    let env = [
        ("PIPEWRIGHT_SERVER__LISTEN", addr.clone()),
        ("PIPEWRIGHT_SERVER__PUBLIC_URL", format!("http://{addr}")),
        (
            "PIPEWRIGHT_SERVER__DATA_DIR",
            data.path().display().to_string(),
        ),
        ("PIPEWRIGHT_GITEA__URL", gitea.url().to_string()),
        ("PIPEWRIGHT_GITEA__TOKEN", gitea.token().to_string()),
        ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET", SECRET.to_string()),
        ("PIPEWRIGHT_API__TOKENS", TOKEN.to_string()),
        // The browsers read without signing in.
        ("PIPEWRIGHT_API__READ_PUBLIC", "true".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let config = pipewright::config::load(Some(&config_file), env).expect("bench configuration");
    let app = App::new(config)
        .await
        .expect("server parts (Docker engine running?)");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, app.clone(), shutdown.clone()));
    Bench {
        url: format!("http://{addr}"),
        _app: app,
        shutdown,
        data,
    }
}

/// Writes `n` finished runs (two steps each) into the server's SQLite database in one
/// transaction: 50 repositories, 5 pipelines, mostly successes, over the last 30 days.
async fn seed_runs(bench: &Bench, n: usize) -> Duration {
    let started = Instant::now();
    let url = format!(
        "sqlite://{}",
        bench.data.path().join("pipewright.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("opening the server's database");
    let mut tx = conn.begin().await.unwrap();
    let now = pipewright::store::now_ms();
    let month = 30 * 24 * 3600 * 1000_i64;
    for i in 0..n {
        let repo = format!("org/repo-{:02}", (i * 7) % REPOS);
        let pipeline = PIPELINES[(i * 3 + i / 11) % PIPELINES.len()];
        let state = match i % 100 {
            0..=79 => "success",
            80..=94 => "failure",
            95..=97 => "cancelled",
            98 => "error",
            _ => "superseded",
        };
        let (event, git_ref, pr) = match i % 10 {
            0..=6 => ("push", "refs/heads/main".to_owned(), None),
            7 | 8 => (
                "pull_request",
                format!("refs/heads/feature-{}", i % 500),
                Some((i % 500) as i64),
            ),
            _ => ("dispatch", "refs/heads/main".to_owned(), None),
        };
        let created = now - month + (i as i64 * month / n as i64);
        let sha = format!("{:040x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (repo, repo_id, owner_id, clone_url, default_branch, status_repo, pipeline,
               pipeline_file, event, git_ref, sha, pr, actor, from_fork, attempt, inputs, dedupe_key,
               concurrency_group, cancel_in_progress, state, description, created_at, started_at, finished_at)
             VALUES (?1, 1, 1, '', 'main', ?1, ?2, ?3, ?4, ?5, ?6, ?7, 'alice', 0, 1, '[]', ?8, ?9, 0, ?10, ?11, ?12, ?13, ?14)
             RETURNING id",
        )
        .bind(&repo)
        .bind(pipeline)
        .bind(format!(".pipewright/{pipeline}.yml"))
        .bind(event)
        .bind(&git_ref)
        .bind(&sha)
        .bind(pr)
        .bind(format!("bench-{i}"))
        .bind(format!("{repo}/{pipeline}"))
        .bind(state)
        .bind(format!("{state} in 42s"))
        .bind(created)
        .bind(created + 1_000)
        .bind(created + 43_000)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        for (idx, name) in [(0_i64, "prepare"), (1, "main")] {
            sqlx::query(
                "INSERT INTO steps (run_id, idx, name, state, description, exit_code, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, '', 0, ?5, ?6)",
            )
            .bind(id)
            .bind(idx)
            .bind(name)
            .bind(if state == "failure" && idx == 1 { "failure" } else { "success" })
            .bind(created + 1_000 + idx * 20_000)
            .bind(created + 21_000 + idx * 20_000)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    conn.close().await.unwrap();
    started.elapsed()
}

/// `count` sequential GETs of `url` (after 10 unmeasured ones); sorted latencies, the
/// rows or items of the last answer, and its status.
async fn measure(url: String, count: usize, json: bool) -> (Vec<Duration>, usize, u16) {
    client_runtime()
        .spawn(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut latencies = Vec::with_capacity(count);
            let mut items = 0;
            let mut status = 0;
            for i in 0..count + 10 {
                let t = Instant::now();
                let resp = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
                status = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                let took = t.elapsed();
                if i >= 10 {
                    latencies.push(took);
                }
                if i == count + 9 {
                    items = if json {
                        serde_json::from_str::<Value>(&body)
                            .ok()
                            .and_then(|v| v.as_array().map(Vec::len))
                            .unwrap_or(0)
                    } else {
                        body.matches("data-run-id=").count()
                    };
                }
            }
            latencies.sort();
            (latencies, items, status)
        })
        .await
        .unwrap()
}

async fn queries(bench: &Bench, runs: usize) {
    let seeded = seed_runs(bench, runs).await;
    println!(
        "\n{runs} runs ({REPOS} repositories, {} pipelines, two steps each) written in {:.1} s\n",
        PIPELINES.len(),
        seeded.as_secs_f64()
    );
    let middle = runs / 2;
    let filters = [
        ("newest", String::new()),
        ("repo", "repo=org/repo-07".to_owned()),
        ("state (failure)", "state=failure".to_owned()),
        ("state (cancelled, 3%)", "state=cancelled".to_owned()),
        ("pipeline", "pipeline=deploy".to_owned()),
        (
            "repo + pipeline + state",
            "repo=org/repo-07&pipeline=deploy&state=success".to_owned(),
        ),
        (
            "the three, matching none",
            "repo=org/repo-07&pipeline=deploy&state=failure".to_owned(),
        ),
        ("page far down (before)", format!("before={middle}")),
        (
            "repo, page far down",
            format!("repo=org/repo-07&before={middle}"),
        ),
    ];
    println!(
        "{:<12} {:<26} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "endpoint", "filter", "status", "rows", "p50 ms", "p99 ms", "max ms"
    );
    let count = 300;
    let mut worst = Duration::ZERO;
    for (path, json) in [("/", false), ("/api/v1/runs", true)] {
        for (name, query) in &filters {
            let url = if query.is_empty() {
                format!("{}{path}", bench.url)
            } else {
                format!("{}{path}?{query}", bench.url)
            };
            let (lat, items, status) = measure(url, count, json).await;
            worst = worst.max(percentile(&lat, 0.99));
            println!(
                "{:<12} {:<26} {:>6} {:>6} {:>9} {:>9} {:>9}",
                if json { "API" } else { "page /" },
                name,
                status,
                items,
                ms(percentile(&lat, 0.50)),
                ms(percentile(&lat, 0.99)),
                ms(*lat.last().unwrap_or(&Duration::ZERO)),
            );
        }
    }
    println!(
        "worst p99 {} ms over {count} requests each (target: under 50 ms)",
        ms(worst)
    );
}

/// A JSON answer of the API.
async fn api(bench: &Bench, path: &str) -> Value {
    let url = format!("{}{path}", bench.url);
    client_runtime()
        .spawn(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::new()
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
        .await
        .unwrap()
}

/// The server's resident memory now (`VmRSS`), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap()
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// Installed in each following tab: notes, for every `tick` line that appears, the time
/// from its `$EPOCHREALTIME` to now; lines printed before the observer started are left out.
const OBSERVE: &str = r#"
window.__latencies = [];
window.__seen = new Set();
const t0 = Date.now();
const note = () => {
  const now = Date.now();
  for (const line of document.querySelectorAll('section.step pre.log div.line')) {
    const m = /^tick (\d+) (\d+)\.(\d+)$/.exec(line.textContent.trim());
    if (!m || window.__seen.has(m[1])) continue;
    window.__seen.add(m[1]);
    const printed = Number(m[2]) * 1000 + Number(m[3].padEnd(6, '0')) / 1000;
    if (printed >= t0) window.__latencies.push(now - printed);
  }
};
new MutationObserver(note).observe(document.body, { childList: true, subtree: true, characterData: true });
note();
return t0;
"#;

async fn logs(gitea: &FakeGitea, bench: &Bench) {
    let repo = gitea.create_repo("bench", "ticker");
    let ticker = format!(
        "on:\n  push:\n    branches: [main]\nsteps:\n  - name: ticks\n    image: pipewright-test/busybox:1\n    run: |\n      sleep 15\n      for i in $(seq 1 {TICKS}); do echo \"tick $i $EPOCHREALTIME\"; sleep 0.2; done\n"
    );
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    // Browsers first (their start is slow on two busy cores), on the runs list.
    let mut browsers = Vec::new();
    for _ in 0..BROWSERS {
        let browser = Browser::start().await;
        browser.goto(&format!("{}/", bench.url)).await;
        for _ in 1..TABS {
            browser.new_tab().await;
            browser.goto(&format!("{}/", bench.url)).await;
        }
        browsers.push(browser);
    }
    let before = rss_bytes();
    let c1 = repo
        .commit("main", "ticker")
        .write(".pipewright/ticker.yml", &ticker)
        .push();
    let delivery = repo.push_event("main", &c0, &c1);
    let status = delivery
        .deliver(&format!("{}/hooks/gitea", bench.url), SECRET)
        .await
        .0;
    assert_eq!(status, 202);
    // The newest run: the seeded ones are older.
    let id = poll(Duration::from_secs(60), || async {
        let runs = api(bench, "/api/v1/runs?limit=1").await;
        let run = runs.as_array()?.first()?.clone();
        (run["pipeline"] == "ticker")
            .then(|| run["id"].as_i64())
            .flatten()
    })
    .await
    .expect("the ticker's run");
    let opened = Instant::now();
    for browser in &browsers {
        for handle in browser.client().windows().await.unwrap() {
            browser.client().switch_to_window(handle).await.unwrap();
            browser.goto(&format!("{}/runs/{id}", bench.url)).await;
            let _: i64 = browser.js(OBSERVE, vec![]).await;
        }
    }
    let opened = opened.elapsed();
    // While they follow: the server's memory once every tab has seen ticks.
    let during = AtomicU64::new(0);
    let finished = poll(Duration::from_secs(180), || async {
        during.fetch_max(rss_bytes(), Ordering::Relaxed);
        let run = api(bench, &format!("/api/v1/runs/{id}")).await;
        let state = run["state"].as_str()?.to_owned();
        (!matches!(state.as_str(), "queued" | "running")).then_some(state)
    })
    .await
    .expect("the ticker's run to finish");
    let mut latencies = Vec::new();
    let mut per_tab = Vec::new();
    for browser in &browsers {
        for handle in browser.client().windows().await.unwrap() {
            browser.client().switch_to_window(handle).await.unwrap();
            // The last lines may still be on their way.
            let _ = poll(Duration::from_secs(10), || async {
                let seen: usize = browser.js("return window.__seen.size;", vec![]).await;
                (seen >= TICKS).then_some(())
            })
            .await;
            let tab: Vec<f64> = browser.js("return window.__latencies;", vec![]).await;
            per_tab.push(tab.len());
            latencies.extend(
                tab.into_iter()
                    .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
            );
        }
    }
    let after = rss_bytes();
    let during = during.into_inner();
    for browser in browsers {
        browser.close().await;
    }
    latencies.sort();
    println!(
        "\nstep line -> the same line in a following browser ({} tabs in {BROWSERS} browsers, a line every 200 ms, run {}):",
        per_tab.len(),
        finished
    );
    println!(
        "{:<34} {:>6} lines   p50 {:>7} ms   p90 {:>7} ms   p99 {:>7} ms   max {:>7} ms   (target p50: under 100 ms)",
        "printed -> shown",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    println!(
        "{:<34} min {} max {} of {TICKS}",
        "lines seen per tab (live)",
        per_tab.iter().min().unwrap_or(&0),
        per_tab.iter().max().unwrap_or(&0)
    );
    println!(
        "{:<34} {:.1} s",
        "opening the 20 run pages",
        opened.as_secs_f64()
    );
    println!(
        "{:<34} before {} MiB   following (max) {} MiB   after {} MiB   added {} MiB   (target: under 20 MB)",
        "server RSS",
        mib(before),
        mib(during),
        mib(after),
        mib(during.saturating_sub(before))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runs: usize = std::env::var("PIPEWRIGHT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let only = std::env::var("PIPEWRIGHT_BENCH_ONLY").unwrap_or_default();
    let gitea = FakeGitea::start().await;
    let bench = start(&gitea).await;
    if only != "logs" {
        queries(&bench, runs).await;
    }
    if only != "queries" {
        logs(&gitea, &bench).await;
    }
    bench.shutdown.cancel();
}

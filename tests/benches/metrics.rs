//! Benchmark of `GET /metrics` (run: `cargo bench -p pipewright-tests --bench metrics`): the
//! cost of a scrape with 100 000 runs in the SQLite database (and as many statuses and
//! deliveries), of which a few are queued, running or unsent, as on a busy runner host.
//!
//! The history is written with one SQL statement per table into the database the server
//! migrated; the server's agent claims none of it (its labels match no run). Then
//! PIPEWRIGHT_BENCH_SCRAPES scrapes (default 2000), one after another over one keep-alive
//! connection, as Prometheus makes them, side by side with `GET /healthz` as the baseline,
//! and the store's count query alone.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use pipewright::server::{App, serve};
use pipewright_containers::{CancellationToken, SharedExecutor};
use pipewright_tests::bench::percentile;
use pipewright_tests::{NoEngine, fake_gitea::FakeGitea};
use sqlx::{Connection, Executor, SqliteConnection};
use tokio::net::TcpListener;

const RUNS: i64 = 100_000;
const QUEUED: i64 = 40;
const RUNNING: i64 = 8;
const UNSENT: i64 = 25;

async fn start(gitea: &FakeGitea, data: &std::path::Path) -> (String, Arc<App>, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let env = [
        ("PIPEWRIGHT_SERVER__LISTEN", addr.clone()),
        ("PIPEWRIGHT_SERVER__PUBLIC_URL", format!("http://{addr}")),
        ("PIPEWRIGHT_SERVER__DATA_DIR", data.display().to_string()),
        ("PIPEWRIGHT_GITEA__URL", gitea.url().to_string()),
        ("PIPEWRIGHT_GITEA__TOKEN", gitea.token().to_string()),
        (
            "PIPEWRIGHT_GITEA__WEBHOOK_SECRET",
            "bench-secret".to_string(),
        ),
        ("PIPEWRIGHT_AGENT__LABELS", "bench-only".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let file = data.join("pipewright.toml");
    std::fs::write(&file, "").unwrap();
    let config = pipewright::config::load(Some(&file), env).expect("bench configuration");
    let app = App::with_executor(config, SharedExecutor::new("none", NoEngine))
        .await
        .expect("server parts");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, app.clone(), shutdown.clone()));
    (format!("http://{addr}"), app, shutdown)
}

/// Writes the history: `RUNS` runs (the newest `QUEUED` queued and `RUNNING` running on
/// another agent's lease, the rest finished in turn as success, failure, error, cancelled
/// and superseded), one status per run (the newest `UNSENT` not sent), one processed
/// delivery per run.
async fn fill(url: &str) {
    let mut db = SqliteConnection::connect(url).await.unwrap();
    let started = Instant::now();
    db.execute("BEGIN").await.unwrap();
    let runs = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {RUNS})
         INSERT INTO runs (delivery, repo, repo_id, owner_id, clone_url, default_branch,
           status_repo, pipeline, pipeline_file, event, git_ref, sha, pr, actor, inputs,
           dedupe_key, concurrency_group, cancel_in_progress, state, description, created_at,
           started_at, finished_at, lease_owner, lease_until, from_fork, attempt, runs_on,
           input_types)
         SELECT i, 'org/repo' || (i % 50), 1, 1, '', 'main', 'org/repo' || (i % 50),
           'ci' || (i % 4), '.pipewright/ci.yml', 'push', 'refs/heads/main',
           printf('%040x', i), NULL, 'bench', '{{}}', 'push:' || i, 'group' || i, 0,
           CASE WHEN i > {RUNS} - {QUEUED} THEN 'queued'
                WHEN i > {RUNS} - {QUEUED} - {RUNNING} THEN 'running'
                ELSE (CASE i % 5 WHEN 0 THEN 'success' WHEN 1 THEN 'failure' WHEN 2 THEN 'error'
                      WHEN 3 THEN 'cancelled' ELSE 'superseded' END) END,
           'bench', 1700000000000 + i, 1700000000000 + i, 
           CASE WHEN i > {RUNS} - {QUEUED} - {RUNNING} THEN NULL ELSE 1700000000000 + i END,
           CASE WHEN i > {RUNS} - {QUEUED} - {RUNNING} AND i <= {RUNS} - {QUEUED} THEN 'other-agent' END,
           CASE WHEN i > {RUNS} - {QUEUED} - {RUNNING} AND i <= {RUNS} - {QUEUED} THEN 9000000000000 END,
           0, 1, '[\"gpu\"]', '{{}}'
         FROM n"
    );
    db.execute(sqlx::AssertSqlSafe(runs)).await.unwrap();
    let statuses = format!(
        "INSERT INTO status_outbox (repo, sha, state, description, created_at, attempts,
           next_attempt_at, sent_at, run_id, pipeline)
         SELECT status_repo, sha, 'success', 'bench', created_at, 1, created_at,
           CASE WHEN id > {RUNS} - {UNSENT} THEN NULL ELSE created_at + 1 END, id, pipeline
         FROM runs"
    );
    db.execute(sqlx::AssertSqlSafe(statuses)).await.unwrap();
    db.execute(
        "INSERT INTO deliveries (delivery_id, event_type, repo, received_at, payload, state, note)
         SELECT 'bench-' || id, 'push', repo, created_at, x'7b7d', 'processed', '1 runs' FROM runs",
    )
    .await
    .unwrap();
    db.execute("COMMIT").await.unwrap();
    db.execute("ANALYZE").await.unwrap();
    db.close().await.unwrap();
    println!(
        "history: {RUNS} runs, statuses and deliveries written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn report(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    println!(
        "{name:<28} n={:<5} p50={} ms  p90={} ms  p99={} ms  max={} ms",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
    );
}

async fn timed_gets(client: &reqwest::Client, url: &str, n: usize) -> (Vec<Duration>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        bytes = resp.bytes().await.unwrap().len();
        lat.push(started.elapsed());
    }
    (lat, bytes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scrapes: usize = std::env::var("PIPEWRIGHT_BENCH_SCRAPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let gitea = FakeGitea::start().await;
    let data = tempfile::tempdir().unwrap();
    // The server creates and migrates the database; the history goes in before it serves
    // anything that reads it.
    let (url, app, shutdown) = start(&gitea, data.path()).await;
    fill(&app.config.database.url).await;
    let sizes = app.store.queue_sizes().await.unwrap();
    assert_eq!(
        (
            sizes.runs_queued,
            sizes.runs_running,
            sizes.statuses_pending,
            sizes.deliveries_pending
        ),
        (QUEUED, RUNNING, UNSENT, 0),
        "the history as written"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Warm-up: connections, the database's pages.
    timed_gets(&client, &format!("{url}/metrics"), 50).await;
    timed_gets(&client, &format!("{url}/healthz"), 50).await;

    let (metrics, bytes) = timed_gets(&client, &format!("{url}/metrics"), scrapes).await;
    let (health, _) = timed_gets(&client, &format!("{url}/healthz"), scrapes).await;
    let mut query = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let started = Instant::now();
        app.store.queue_sizes().await.unwrap();
        query.push(started.elapsed());
    }
    let mut encode = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let started = Instant::now();
        let text = app
            .metrics
            .encode(&app.store.run_ends(), Some(sizes))
            .unwrap();
        std::hint::black_box(text);
        encode.push(started.elapsed());
    }
    println!("scrape size: {bytes} bytes");
    report("GET /metrics", metrics);
    report("GET /healthz (baseline)", health);
    report("store queue_sizes", query);
    report("encode (no I/O)", encode);
    shutdown.cancel();
}

//! Benchmarks of several hosts on PostgreSQL (run: `cargo bench -p pipewright-tests --bench
//! agents`), each beside its single-host SQLite figure:
//!
//! 1. webhook acknowledgement latency at 200/s and 1000/s, open-loop, deliveries of a
//!    repository outside `[[repos]]` (no fetch), as in the serve bench's first phase;
//! 2. claim latency: a run queued (through the store's enqueue, so `NOTIFY pipewright_runs`
//!    fires) until an idle `pipewright agent` process claimed it, one run at a time, from
//!    the run's own `created_at` and `started_at` (milliseconds); beside it the same with
//!    SQLite's in-process serve claiming;
//! 3. PIPEWRIGHT_BENCH_RUNS (default 1000) queued runs of one `true` step drained by 4
//!    agent processes of capacity 2 on this machine's engine: runs/s, beside the engine's
//!    own `docker run --rm` rate with the same parallelism.
//!
//! PIPEWRIGHT_BENCH_SECONDS shortens phase 1 (default 30 s at 200/s, 10 s at 1000/s);
//! PIPEWRIGHT_BENCH_CLAIMS sets phase 2's runs (default 100);
//! PIPEWRIGHT_BENCH_ONLY=ack|claim|drain runs one phase.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pipewright::server::{App, serve};
use pipewright::store::{RunSpec, RunState};
use pipewright_containers::CancellationToken;
use pipewright_tests::bench::{load, ms, percentile, report};
use pipewright_tests::fake_gitea::{FakeGitea, http_client, sign};
use pipewright_tests::services::Postgres;
use tokio::net::TcpListener;

const SECRET: &str = "bench-secret";
const IMAGE: &str = "pipewright-test/busybox:1";
const AGENTS: usize = 4;
const AGENT_CAPACITY: usize = 2;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// An in-process `pipewright serve`.
struct Server {
    url: String,
    app: Arc<App>,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A server on SQLite (`database` none) or on PostgreSQL; `repos` its `[[repos]]` (all
/// repositories when none); `extra` more settings.
async fn start(
    gitea: &FakeGitea,
    database: Option<&str>,
    repos: Option<&str>,
    extra: &[(&str, &str)],
) -> Server {
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config_file = data.path().join("pipewright.toml");
    let repos = repos
        .map(|r| format!("[[repos]]\nname = \"{r}\"\n"))
        .unwrap_or_default();
    std::fs::write(&config_file, repos).unwrap();
    let mut env: Vec<(String, String)> = [
        ("PIPEWRIGHT_SERVER__LISTEN", addr.clone()),
        ("PIPEWRIGHT_SERVER__PUBLIC_URL", format!("http://{addr}")),
        (
            "PIPEWRIGHT_SERVER__DATA_DIR",
            data.path().display().to_string(),
        ),
        ("PIPEWRIGHT_GITEA__URL", gitea.url().to_string()),
        ("PIPEWRIGHT_GITEA__TOKEN", gitea.token().to_string()),
        ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET", SECRET.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    if let Some(url) = database {
        env.push(("PIPEWRIGHT_DATABASE__URL".into(), url.into()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = pipewright::config::load(Some(&config_file), env).expect("bench configuration");
    let app = App::new(config)
        .await
        .expect("server parts (Docker engine running?)");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, app.clone(), shutdown.clone()));
    Server {
        url: format!("http://{addr}"),
        app,
        shutdown,
        _data: data,
    }
}

/// The `pipewright` binary of the bench profile, built once.
fn pipewright_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Built on its own, the binary's dependencies get their own features: the first
        // time, this is a build of its own of several minutes.
        eprintln!("building the pipewright binary (bench profile) for the agent processes");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--profile", "bench", "-p", "pipewright"])
            .args(["--bin", "pipewright"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("failed to run cargo build");
        assert!(status.success(), "cargo build -p pipewright failed");
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("pipewright");
        assert!(bin.is_file(), "no pipewright binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A `pipewright agent` process with a data directory (so an instance id) of its own.
struct Agent {
    child: Child,
    _data: tempfile::TempDir,
}

impl Agent {
    async fn start(
        gitea: &FakeGitea,
        server: &Server,
        database: &str,
        name: &str,
        capacity: usize,
    ) -> Agent {
        let data = tempfile::tempdir().unwrap();
        let health = free_addr();
        let child = Command::new(pipewright_bin())
            .arg("agent")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PIPEWRIGHT_SERVER__DATA_DIR", data.path())
            .env("PIPEWRIGHT_DATABASE__URL", database)
            .env("PIPEWRIGHT_SERVER__PUBLIC_URL", &server.url)
            .env("PIPEWRIGHT_GITEA__URL", gitea.url())
            .env("PIPEWRIGHT_GITEA__TOKEN", gitea.token())
            .env("PIPEWRIGHT_AGENT__NAME", name)
            .env("PIPEWRIGHT_AGENT__CAPACITY", capacity.to_string())
            .env("PIPEWRIGHT_AGENT__LISTEN", &health)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join("agent.log")).unwrap())
            .spawn()
            .expect("failed to start pipewright agent");
        let ready = format!("http://{health}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = http_client()
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "agent {name} not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Agent { child, _data: data }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Phase 1: the serve bench's acknowledgement load, on SQLite and on PostgreSQL.
async fn ack_latency(gitea: &FakeGitea, database: &str, seconds: u32) {
    let repo = gitea.create_repo("bench", "hooks");
    let first = repo.commit("main", "one").write("README.md", "x\n").push();
    let second = repo.commit("main", "two").write("README.md", "y\n").push();
    let delivery = repo.push_event("main", &first, &second);
    let signature = sign(SECRET, &delivery.body);
    let body = bytes::Bytes::from(delivery.body.clone());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let hook_request = |url: &str, prefix: &'static str| {
        let (client, hook, signature, body) = (
            client.clone(),
            format!("{url}/hooks/gitea"),
            signature.clone(),
            body.clone(),
        );
        move |i: u64| {
            client
                .post(&hook)
                .header("content-type", "application/json")
                .header("x-gitea-event", "push")
                .header("x-gitea-event-type", "push")
                .header(
                    "x-gitea-delivery",
                    format!("{prefix}-{}-{i}", std::process::id()),
                )
                .header("x-gitea-signature", &signature)
                .body(body.clone())
        }
    };
    // Deliveries of a repository outside `[[repos]]`: stored and answered as any other,
    // set aside without a git fetch. The PostgreSQL server runs no job itself, as a
    // server with agents elsewhere.
    let sqlite = start(gitea, None, Some("bench/other"), &[]).await;
    let postgres = start(
        gitea,
        Some(database),
        Some("bench/other"),
        &[("PIPEWRIGHT_AGENT__CAPACITY", "0")],
    )
    .await;
    load(100, 1, hook_request(&sqlite.url, "warm-sqlite")).await;
    load(100, 1, hook_request(&postgres.url, "warm-pg")).await;

    println!(
        "\nwebhook acknowledgement (delivery committed), open-loop load from the same machine:"
    );
    let burst = seconds.min(10);
    for (rate, secs) in [(200, seconds), (1000, burst)] {
        report(
            "POST /hooks/gitea, SQLite",
            rate,
            &load(rate, secs, hook_request(&sqlite.url, "sqlite")).await,
        );
        report(
            "POST /hooks/gitea, PostgreSQL",
            rate,
            &load(rate, secs, hook_request(&postgres.url, "pg")).await,
        );
    }
    println!(
        "deliveries stored: SQLite {}, PostgreSQL {}",
        sqlite.app.store.delivery_count().await.unwrap(),
        postgres.app.store.delivery_count().await.unwrap()
    );
}

/// A repository with one pipeline of a `true` step; its head.
fn true_repo(gitea: &FakeGitea, name: &str) -> String {
    let repo = gitea.create_repo("bench", name);
    let pipeline =
        format!("on: push\nsteps:\n  - name: first\n    image: {IMAGE}\n    run: \"true\"\n");
    repo.commit("main", "init")
        .write(".pipewright/ci.yml", &pipeline)
        .write("README.md", "0\n")
        .push()
}

/// Run `n` of `repo` at `sha`: a group and a dedupe key of its own.
fn spec(repo: &str, sha: &str, tag: &str, n: usize) -> RunSpec {
    RunSpec {
        pipeline_file: ".pipewright/ci.yml".into(),
        dedupe_key: format!("bench:{tag}:{n}"),
        concurrency_group: format!("{repo}/ci/{tag}/{n}"),
        ..pipewright_tests::push_run(repo, "ci", sha)
    }
}

/// Waits until every run of `ids` has ended; panics after `limit`.
async fn all_finished(server: &Server, ids: &[i64], limit: Duration) -> Vec<RunState> {
    let deadline = Instant::now() + limit;
    let mut states = Vec::with_capacity(ids.len());
    for &id in ids {
        loop {
            let run = server.app.store.run(id).await.unwrap().expect("the run");
            if run.state.is_finished() {
                states.push(run.state);
                break;
            }
            assert!(Instant::now() < deadline, "run {id} did not end in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    states
}

/// Queues `count` runs one at a time, each after the last ended: claim delays from the
/// runs' own timestamps, sorted.
async fn claims(server: &Server, repo: &str, sha: &str, tag: &str, count: usize) -> Vec<Duration> {
    let mut delays = Vec::with_capacity(count);
    for n in 0..=count {
        let id = server
            .app
            .enqueue(None, &[spec(repo, sha, tag, n)])
            .await
            .unwrap()
            .ids[0];
        all_finished(server, &[id], Duration::from_secs(120)).await;
        let run = server.app.store.run(id).await.unwrap().unwrap();
        assert_eq!(
            run.state,
            RunState::Success,
            "run {id}: {}",
            run.description
        );
        if n == 0 {
            continue; // warm-up: the first mirror and the first claim
        }
        let claimed = run.started_at.expect("claimed") - run.created_at;
        delays.push(Duration::from_millis(claimed.max(0) as u64));
    }
    delays.sort();
    delays
}

fn claim_line(name: &str, delays: &[Duration]) {
    println!(
        "{name:<44} {:>4} runs   p50 {:>7} ms   p99 {:>7} ms   max {:>7} ms",
        delays.len(),
        ms(percentile(delays, 0.5)),
        ms(percentile(delays, 0.99)),
        ms(*delays.last().unwrap_or(&Duration::ZERO)),
    );
}

/// Phase 2: queued → claimed by an idle claimer.
async fn claim_latency(gitea: &FakeGitea, database: &str, count: usize) {
    let sha = true_repo(gitea, "claims");
    let sqlite = start(gitea, None, None, &[("PIPEWRIGHT_AGENT__CAPACITY", "1")]).await;
    let sqlite_delays = claims(&sqlite, "bench/claims", &sha, "sqlite", count).await;
    drop(sqlite);

    let postgres = start(
        gitea,
        Some(database),
        None,
        &[("PIPEWRIGHT_AGENT__CAPACITY", "0")],
    )
    .await;
    let agent = Agent::start(gitea, &postgres, database, "claimer", 1).await;
    let pg_delays = claims(&postgres, "bench/claims", &sha, "pg", count).await;
    drop(agent);

    println!(
        "\nclaim latency: run queued (created_at) -> claimed (started_at), one run at a time, the claimer idle:"
    );
    claim_line("SQLite, in-process serve (capacity 1)", &sqlite_delays);
    claim_line("PostgreSQL, one agent process (capacity 1)", &pg_delays);
    println!("(the runs' timestamps have millisecond resolution)");
}

/// `total` runs of `docker run --rm IMAGE true`, `parallel` at a time: runs/s.
fn docker_rate(total: usize, parallel: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let status = Command::new("docker")
                        .args(["run", "--rm", IMAGE, "true"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("docker run");
                    assert!(status.success(), "docker run --rm {IMAGE} true failed");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Phase 3: `total` queued runs drained by the agents.
async fn drain(gitea: &FakeGitea, database: &str, total: usize) {
    let sha = true_repo(gitea, "drain");
    let server = start(
        gitea,
        Some(database),
        None,
        &[("PIPEWRIGHT_AGENT__CAPACITY", "0")],
    )
    .await;
    let mut agents = Vec::new();
    for a in 0..AGENTS {
        agents.push(
            Agent::start(
                gitea,
                &server,
                database,
                &format!("drain-{a}"),
                AGENT_CAPACITY,
            )
            .await,
        );
    }
    // Warm-up: every agent's first mirror of the repository.
    let warm: Vec<RunSpec> = (0..AGENTS * AGENT_CAPACITY)
        .map(|n| spec("bench/drain", &sha, "warm", n))
        .collect();
    let ids = server.app.enqueue(None, &warm).await.unwrap().ids;
    all_finished(&server, &ids, Duration::from_secs(300)).await;

    let specs: Vec<RunSpec> = (0..total)
        .map(|n| spec("bench/drain", &sha, "drain", n))
        .collect();
    let start = Instant::now();
    let mut ids = Vec::with_capacity(total);
    for chunk in specs.chunks(100) {
        ids.extend(server.app.enqueue(None, chunk).await.unwrap().ids);
    }
    let states = all_finished(&server, &ids, Duration::from_secs(3600)).await;
    let took = start.elapsed();
    drop(agents);
    let failed = states.iter().filter(|s| **s != RunState::Success).count();
    let parallel = AGENTS * AGENT_CAPACITY;
    let engine = docker_rate(total, parallel);
    println!(
        "\n{total} queued runs of one `true` step ({IMAGE}), {AGENTS} agents of capacity {AGENT_CAPACITY} on this machine's engine:"
    );
    println!(
        "{:<44} {:>7.2} runs/s   ({total} in {:.1} s, {failed} not successful)",
        "drained by the agents (PostgreSQL)",
        total as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    println!(
        "{:<44} {:>7.2} runs/s   ({parallel} at a time)",
        format!("docker run --rm {IMAGE} true"),
        engine
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let seconds = env("PIPEWRIGHT_BENCH_SECONDS", 30) as u32;
    let claims = env("PIPEWRIGHT_BENCH_CLAIMS", 100);
    let runs = env("PIPEWRIGHT_BENCH_RUNS", 1000);
    let only = std::env::var("PIPEWRIGHT_BENCH_ONLY").unwrap_or_default();
    let gitea = FakeGitea::start().await;
    let _ = http_client();
    let pg = Postgres::start();
    let database = pg.url();
    if only.is_empty() || only == "ack" {
        ack_latency(&gitea, &database, seconds).await;
    }
    if only.is_empty() || only == "claim" {
        claim_latency(&gitea, &database, claims).await;
    }
    if only.is_empty() || only == "drain" {
        drain(&gitea, &database, runs).await;
    }
}

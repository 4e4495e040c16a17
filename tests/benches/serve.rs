//! Benchmarks of `pipewright serve` (run: `cargo bench -p pipewright-tests --bench serve`):
//!
//! 1. webhook acknowledgement latency (signature checked, delivery committed to SQLite) at a
//!    steady 200 deliveries/s for 30 s, side by side with the same load on `GET /healthz`
//!    (an answer with no durable write) as the baseline; then 200/s again with a new
//!    connection for every request, as a simple webhook sender (Gitea among them) does it,
//!    beside the floor of the durable write itself: a 4 KiB append and `fdatasync` on the
//!    same disk at the same rate; then a burst of 1000/s for 10 s;
//! 2. time from a push webhook to its first step container started (image present, small
//!    repository), side by side with a bare `git fetch` of the same commit.
//!
//! The load comes from a runtime of its own (one thread), as from a sender in another
//! process: the server's tasks never wait behind the client's, nor the client's behind the
//! server's; both share the machine's cores, as they would.
//!
//! PIPEWRIGHT_BENCH_SECONDS shortens phase 1; PIPEWRIGHT_BENCH_ONLY=ack|event runs one.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use pipewright::server::{App, serve};
use pipewright_containers::CancellationToken;
use pipewright_tests::bench::{load, ms, paced, percentile, report};
use pipewright_tests::fake_gitea::{Delivery, FakeGitea, http_client, sign};
use tokio::net::TcpListener;

const SECRET: &str = "bench-secret";

struct Bench {
    url: String,
    app: Arc<App>,
    shutdown: CancellationToken,
    data: tempfile::TempDir,
}

async fn start(gitea: &FakeGitea, allow_only: Option<&str>) -> Bench {
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config_file = data.path().join("pipewright.toml");
    let repos = allow_only
        .map(|r| format!("[[repos]]\nname = \"{r}\"\n"))
        .unwrap_or_default();
    std::fs::write(&config_file, repos).unwrap();
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
        app,
        shutdown,
        data,
    }
}

async fn ack_latency(gitea: &FakeGitea, seconds: u32) {
    let repo = gitea.create_repo("bench", "hooks");
    let first = repo.commit("main", "one").write("README.md", "x\n").push();
    let second = repo.commit("main", "two").write("README.md", "y\n").push();
    let delivery = repo.push_event("main", &first, &second);
    // Deliveries of a repository outside `[[repos]]`: stored durably and answered exactly
    // as any other, then set aside by the ingest loop without a git fetch, so the figure is
    // the acknowledgement path itself.
    let bench = start(gitea, Some("bench/other")).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let hook = format!("{}/hooks/gitea", bench.url);
    let signature = sign(SECRET, &delivery.body);
    let body = bytes::Bytes::from(delivery.body.clone());
    let hook_request = |client: &reqwest::Client, prefix: &'static str| {
        let (client, hook, signature, body) = (
            client.clone(),
            hook.clone(),
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
    let health = format!("{}/healthz", bench.url);
    let health_request = |client: &reqwest::Client| {
        let (client, health) = (client.clone(), health.clone());
        move |_| client.get(&health)
    };
    // Warm up both paths.
    load(100, 1, hook_request(&client, "bench-warm")).await;
    load(100, 1, health_request(&client)).await;

    println!(
        "\nwebhook acknowledgement (SQLite, synchronous=FULL), open-loop load from the same machine:"
    );
    report(
        "GET /healthz (baseline, no write)",
        200,
        &load(200, seconds, health_request(&client)).await,
    );
    report(
        "POST /hooks/gitea (durable)",
        200,
        &load(200, seconds, hook_request(&client, "bench-200")).await,
    );
    // No idle connections kept: every request opens its own.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    report(
        "GET /healthz (new connection each)",
        200,
        &load(200, seconds, health_request(&fresh)).await,
    );
    report(
        "POST /hooks/gitea (new connection each)",
        200,
        &load(200, seconds, hook_request(&fresh, "bench-fresh")).await,
    );
    let probe = bench.data.path().join("sync-probe");
    report(
        "4 KiB append + fdatasync (the floor)",
        200,
        &tokio::task::spawn_blocking(move || sync_probe(&probe, 200, seconds))
            .await
            .unwrap(),
    );
    // The burst last: its writes are still being flushed to the disk for a while after
    // it, which a phase after it would count.
    let burst = seconds.min(10);
    report(
        "GET /healthz (baseline, no write)",
        1000,
        &load(1000, burst, health_request(&client)).await,
    );
    report(
        "POST /hooks/gitea (durable)",
        1000,
        &load(1000, burst, hook_request(&client, "bench-1000")).await,
    );
    println!(
        "budget (DESIGN.md): p99 under 5 ms at 200/s; 1000/s sustained, every answer well inside 5 s"
    );
    println!(
        "deliveries stored: {}",
        bench.app.store.delivery_count().await.unwrap()
    );
    bench.shutdown.cancel();
}

/// A 4 KiB append and `fdatasync` of one file at a steady rate, each timed from its
/// scheduled instant as the requests are: what one durable commit costs on this disk.
fn sync_probe(path: &std::path::Path, rate: u32, seconds: u32) -> (Vec<Duration>, usize) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = [b'x'; 4096];
    let mut latencies = Vec::new();
    for (_, at) in paced(rate, seconds) {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        latencies.push(at.elapsed());
    }
    latencies.sort();
    (latencies, 0)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn event_to_container(gitea: &FakeGitea, iterations: usize) {
    let repo = gitea.create_repo("bench", "small");
    let pipeline = "on: push\nsteps:\n  - name: first\n    image: pipewright-test/busybox:1\n    run: \"true\"\n";
    let mut head = repo
        .commit("main", "init")
        .write(".pipewright/ci.yml", pipeline)
        .write("README.md", "0\n")
        .push();
    let bench = start(gitea, None).await;
    // A mirror of our own, to time a bare `git fetch` of each new commit the same way.
    let mirror = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(mirror.path())
            .args(args)
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: token {}", gitea.token()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "--quiet", "--bare"]);
    let clone_url = repo.clone_url();
    git(&["fetch", "--quiet", &clone_url, "+refs/heads/*:refs/heads/*"]);

    let mut events = Command::new("docker")
        .args([
            "events",
            "--format",
            "{{.TimeNano}}",
            "--filter",
            "event=start",
        ])
        .args([
            "--filter",
            &format!("label=io.pipewright.instance={}", bench.app.instance),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u128>();
    let stdout = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if let Ok(ns) = line.unwrap_or_default().trim().parse::<u128>() {
                let _ = tx.send(ns);
            }
        }
    });

    let mut to_container = Vec::new();
    let mut fetches = Vec::new();
    for i in 0..=iterations {
        let next = repo
            .commit("main", "change")
            .write("README.md", &format!("{i}\n"))
            .push();
        let t = Instant::now();
        git(&["fetch", "--quiet", &clone_url, "+refs/heads/*:refs/heads/*"]);
        let fetch = t.elapsed();
        let delivery: Delivery = repo.push_event("main", &head, &next);
        let sent = now_ns();
        let (code, _) = delivery
            .deliver(&format!("{}/hooks/gitea", bench.url), SECRET)
            .await;
        assert_eq!(code, 202);
        let started = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("a step container start")
            .unwrap();
        // Let the run finish before the next one, as a quiet system would.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        head = next;
        if i == 0 {
            continue; // warm-up: first mirror creation and first claim
        }
        to_container.push(Duration::from_nanos((started.saturating_sub(sent)) as u64));
        fetches.push(fetch);
    }
    let _ = events.kill();
    let _ = events.wait();
    to_container.sort();
    fetches.sort();
    println!(
        "\nwebhook received -> first step container started ({iterations} pushes, image present, small repository):"
    );
    println!(
        "{:<34} p50 {:>7} ms   min {:>7} ms   max {:>7} ms",
        "webhook -> container start",
        ms(percentile(&to_container, 0.5)),
        ms(to_container[0]),
        ms(*to_container.last().unwrap())
    );
    println!(
        "{:<34} p50 {:>7} ms   min {:>7} ms   max {:>7} ms",
        "git fetch of the same commit (CLI)",
        ms(percentile(&fetches, 0.5)),
        ms(fetches[0]),
        ms(*fetches.last().unwrap())
    );
    let without_fetch = percentile(&to_container, 0.5).saturating_sub(percentile(&fetches, 0.5));
    println!(
        "{:<34} p50 {:>7} ms   (budget: under 300 ms plus the git fetch)",
        "difference (medians)",
        ms(without_fetch)
    );
    bench.shutdown.cancel();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // RUST_LOG=pipewright=debug shows, with timestamps, where an event's time goes.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let seconds: u32 = std::env::var("PIPEWRIGHT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let gitea = FakeGitea::start().await;
    let _ = http_client();
    // PIPEWRIGHT_BENCH_ONLY=ack or =event runs one half.
    let only = std::env::var("PIPEWRIGHT_BENCH_ONLY").unwrap_or_default();
    if only != "event" {
        ack_latency(&gitea, seconds).await;
    }
    if only != "ack" {
        event_to_container(&gitea, 10).await;
    }
}

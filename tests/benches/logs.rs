//! Benchmark of step logs (run: `cargo bench -p pipewright-tests --bench logs`): lines per
//! second written through `LogStore` to files (SQLite's) and to PostgreSQL's `log_lines`
//! (batched), until `finish` has stored the last; then how long a line takes from being
//! written to being read by a follower, p50/p99, on the writer's host (woken at each batch)
//! and on another (a second `LogStore` on the same database: polled).
//!
//! PIPEWRIGHT_BENCH_LINES lines of 80 bytes are written (default 200 000), and
//! PIPEWRIGHT_BENCH_FOLLOWED (default 200) are followed, one every 20 ms.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pipewright::{
    logs::{LogCursor, LogStore},
    store::Store,
};
use pipewright_tests::{
    bench::{ms, percentile},
    services::Postgres,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

async fn write(logs: &LogStore, run: i64, lines: usize) -> Duration {
    let line = vec![b'x'; 80];
    let start = Instant::now();
    let mut writer = logs.writer(run, 0).unwrap();
    for _ in 0..lines {
        writer.line(&line).unwrap();
    }
    writer.finish().await.unwrap();
    let took = start.elapsed();
    assert_eq!(logs.line_count(run, 0).await.unwrap(), lines as u64);
    took
}

/// Writes `count` lines, one every 20 ms, through `writer_logs` while a follower reads them
/// through `reader_logs` as the API does; the delay of each line, sorted.
async fn follow(
    writer_logs: &LogStore,
    reader_logs: &LogStore,
    run: i64,
    count: usize,
) -> Vec<Duration> {
    let written: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let reader = {
        let logs = reader_logs.clone();
        let written = written.clone();
        tokio::spawn(async move {
            let mut watch = logs.watch(run, 0);
            let (mut at, mut delays) = (LogCursor::at_line(0), Vec::new());
            while delays.len() < count {
                watch.seen();
                let (lines, next) = logs.read_lines(run, 0, at, 64 << 10).await.unwrap();
                let now = Instant::now();
                for i in at.line()..next.line() {
                    delays.push(now - written.lock().unwrap()[i as usize]);
                }
                at = next;
                if lines.is_empty() {
                    watch.next(Duration::from_millis(500)).await;
                }
            }
            delays
        })
    };
    let mut writer = writer_logs.writer(run, 0).unwrap();
    for i in 0..count {
        written.lock().unwrap().push(Instant::now());
        writer.line(format!("line {i}").as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.finish().await.unwrap();
    let mut delays = reader.await.unwrap();
    delays.sort();
    delays
}

fn report(what: &str, delays: &[Duration]) {
    println!(
        "{what}: p50 {} ms, p99 {} ms ({} lines)",
        ms(percentile(delays, 0.5)),
        ms(percentile(delays, 0.99)),
        delays.len()
    );
}

#[tokio::main]
async fn main() {
    let lines = env("PIPEWRIGHT_BENCH_LINES", 200_000);
    let followed = env("PIPEWRIGHT_BENCH_FOLLOWED", 200);
    let dir = tempfile::tempdir().unwrap();
    let files = LogStore::new(dir.path().join("logs"));
    let pg = Postgres::start();
    let store = Store::open(&pg.url()).await.unwrap();
    let here = LogStore::for_store(dir.path().join("here"), &store);
    let other = Store::open(&pg.url()).await.unwrap();
    let there = LogStore::for_store(dir.path().join("there"), &other);

    for (what, logs, run) in [("files", &files, 1), ("postgres", &here, 2)] {
        let took = write(logs, run, lines).await;
        println!(
            "write {lines} lines of 80 bytes to {what}: {} ms, {:.0} lines/s",
            ms(took),
            lines as f64 / took.as_secs_f64()
        );
    }
    report(
        "follow, files, same host",
        &follow(&files, &files, 3, followed).await,
    );
    report(
        "follow, postgres, same host",
        &follow(&here, &here, 4, followed).await,
    );
    report(
        "follow, postgres, other host",
        &follow(&here, &there, 5, followed).await,
    );
}

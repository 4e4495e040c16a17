//! `GET /metrics`: scraped over HTTP and parsed with a Prometheus text-format parser of its
//! own (not the encoder's crate); the counters move with real deliveries and a real run.

use std::time::Duration;

use pipewright::store::{
    DeliveryState, LEASE, NewDelivery, QueueSizes, RunSpec, RunState, Store, now_ms,
};
use pipewright_pipelines::{EventKind, GitRef};
use pipewright_tests::fake_gitea::{DeliverOptions, Delivery, FakeGitea, SignatureMode};
use pipewright_tests::services::Postgres;
use prometheus_parse::{LineInfo, Scrape, Value};

use crate::serve::{SECRET, Server, client, eventually, final_statuses, states, step};

/// One scrape, parsed, with its raw text.
struct Metrics {
    text: String,
    scrape: Scrape,
}

async fn scrape(server: &Server) -> Metrics {
    // No credentials: Prometheus scrapes without a token.
    let resp = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    // Every line is a comment, or a sample the parser reads (it skips what it cannot).
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. } => {}
            _ => panic!("not a line of the text format: {line:?}\n{text}"),
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    Metrics { text, scrape }
}

impl Metrics {
    /// The value of a counter or gauge sample, by name and one label (or none).
    fn value(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .find_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    fn get(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        self.value(name, label)
            .unwrap_or_else(|| panic!("no {name} {label:?} in\n{}", self.text))
    }

    /// A histogram's observations: its `+Inf` bucket, checked against its `_count`.
    fn observations(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let buckets = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .find_map(|s| match &s.value {
                Value::Histogram(b) => Some(b.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name} {label:?} in\n{}", self.text));
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "{name}: buckets are cumulative"
        );
        let inf = buckets.last().unwrap();
        assert!(
            inf.less_than.is_infinite(),
            "{name}: the last bucket is +Inf"
        );
        assert_eq!(self.get(&format!("{name}_count"), label), inf.count);
        inf.count
    }

    fn webhooks(&self, result: &str) -> f64 {
        self.get("pipewright_webhooks_total", Some(("result", result)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_webhooks_and_a_real_run() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "metered");

    let before = scrape(&server).await;
    assert_eq!(
        before.get(
            "pipewright_build_info",
            Some(("version", env!("CARGO_PKG_VERSION")))
        ),
        1.0
    );
    assert_eq!(before.get("pipewright_store_up", None), 1.0);
    for result in [
        "accepted",
        "duplicate",
        "ping",
        "ignored",
        "refused",
        "invalid",
        "unavailable",
    ] {
        assert_eq!(before.webhooks(result), 0.0, "{result}");
    }
    assert_eq!(
        before.observations("pipewright_webhook_ack_seconds", None),
        0.0
    );
    for state in ["success", "failure", "error", "cancelled", "superseded"] {
        assert_eq!(
            before.get("pipewright_runs_total", Some(("state", state))),
            0.0
        );
    }
    assert_eq!(before.get("pipewright_runs_queued", None), 0.0);
    assert_eq!(before.get("pipewright_runs_running", None), 0.0);
    assert_eq!(before.get("pipewright_deliveries_pending", None), 0.0);
    assert_eq!(before.get("pipewright_status_outbox_pending", None), 0.0);
    assert!(before.get("process_resident_memory_bytes", None) > 1e6);
    assert!(before.get("process_open_fds", None) > 2.0);
    assert!(before.get("process_start_time_seconds", None) > 1.7e9);
    eventually(Duration::from_secs(30), "the agent to be live", || async {
        (scrape(&server)
            .await
            .get("pipewright_agents", Some(("state", "live")))
            == 1.0)
            .then_some(())
    })
    .await;

    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(
            ".pipewright/ci.yml",
            &format!(
                "on:\n  push:\n    branches: [main]\nsteps:\n{}",
                step("hello", "echo metered")
            ),
        )
        .push();
    let push = repo.push_event("main", &first, &second);

    // The attacker's deliveries: a wrong signature, and a signed one whose event type
    // tries to inject a label. Neither is stored; each is counted under a fixed result.
    let wrong = DeliverOptions {
        signature: SignatureMode::Wrong,
        ..DeliverOptions::new(SECRET)
    };
    assert_eq!(push.deliver_with(&server.hook(), &wrong).await.0, 401);
    let injected = Delivery::from_body("push{result=\"accepted\"}", push.text().into_bytes());
    assert_eq!(injected.deliver(&server.hook(), SECRET).await.0, 400);
    let garbage = Delivery::from_body("push", b"{not json".to_vec());
    assert_eq!(garbage.deliver(&server.hook(), SECRET).await.0, 400);
    // Gitea's test delivery, an event that runs nothing, the push, and the push again.
    assert_eq!(
        repo.test_delivery().deliver(&server.hook(), SECRET).await.0,
        200
    );
    let release = repo.release_event("v1");
    assert_eq!(release.deliver(&server.hook(), SECRET).await.0, 202);
    assert_eq!(push.deliver(&server.hook(), SECRET).await.0, 202);
    assert_eq!(push.deliver(&server.hook(), SECRET).await.0, 200);
    assert_eq!(
        states(&final_statuses(&repo, &second, "pipewright/ci").await),
        ["pending", "success"]
    );

    let after = eventually(
        Duration::from_secs(60),
        "the run's end and its statuses to be counted",
        || async {
            let m = scrape(&server).await;
            (m.get("pipewright_runs_total", Some(("state", "success"))) == 1.0
                && m.get("pipewright_status_outbox_pending", None) == 0.0
                && m.get("pipewright_deliveries_pending", None) == 0.0)
                .then_some(m)
        },
    )
    .await;
    assert_eq!(after.webhooks("refused"), 1.0);
    assert_eq!(after.webhooks("invalid"), 2.0);
    assert_eq!(after.webhooks("ping"), 1.0);
    assert_eq!(after.webhooks("ignored"), 1.0);
    assert_eq!(after.webhooks("accepted"), 1.0);
    assert_eq!(after.webhooks("duplicate"), 1.0);
    assert_eq!(after.webhooks("unavailable"), 0.0);
    assert!(
        !after.text.contains("result=\"push"),
        "no label comes from a delivery:\n{}",
        after.text
    );
    // Every answered webhook has its answer time.
    assert_eq!(
        after.observations("pipewright_webhook_ack_seconds", None),
        7.0
    );
    // The run: one step that succeeded, nothing running or queued any more.
    assert_eq!(
        after.observations("pipewright_step_seconds", Some(("result", "success"))),
        1.0
    );
    assert_eq!(
        after.observations("pipewright_step_seconds", Some(("result", "failure"))),
        0.0
    );
    for state in ["failure", "error", "cancelled", "superseded"] {
        assert_eq!(
            after.get("pipewright_runs_total", Some(("state", state))),
            0.0,
            "{state}"
        );
    }
    assert_eq!(after.get("pipewright_runs_running", None), 0.0);
    assert_eq!(after.get("pipewright_runs_queued", None), 0.0);
    // The delivery fetched from the fake Gitea's git (and the run found its commit there).
    assert!(after.observations("pipewright_git_fetch_seconds", Some(("result", "ok"))) >= 1.0);
    assert_eq!(
        after.observations("pipewright_git_fetch_seconds", Some(("result", "error"))),
        0.0
    );
    assert_eq!(after.get("pipewright_agents", Some(("state", "live"))), 1.0);
    server.stop().await;
}

/// Runs that end without running count too: a queued run superseded by a newer push of
/// its concurrency group, and the queue gauges see the queued run while no agent takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_queued_runs_are_counted_and_the_queue_is_read_from_the_store() {
    let gitea = FakeGitea::start().await;
    // An agent whose labels no run asks for: runs stay queued.
    let server =
        Server::start_without_engine(&gitea, &[("PIPEWRIGHT_AGENT__LABELS", "elsewhere")], "")
            .await;
    let repo = gitea.create_repo("org", "queued");
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let pipeline = "on:\n  push:\n    branches: [main]\nruns_on: [gpu]\nconcurrency:\n  group: one\nsteps:\n  - name: a\n    image: busybox\n    run: echo a\n";
    let c1 = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", pipeline)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let queued = eventually(Duration::from_secs(30), "a queued run", || async {
        let m = scrape(&server).await;
        (m.get("pipewright_runs_queued", None) == 1.0).then_some(m)
    })
    .await;
    assert_eq!(queued.get("pipewright_runs_running", None), 0.0);
    let c2 = repo
        .commit("main", "again")
        .write("README.md", "again\n")
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    let after = eventually(
        Duration::from_secs(30),
        "the older run superseded",
        || async {
            let m = scrape(&server).await;
            (m.get("pipewright_runs_total", Some(("state", "superseded"))) == 1.0).then_some(m)
        },
    )
    .await;
    assert_eq!(after.get("pipewright_runs_queued", None), 1.0);
    assert_eq!(
        after.get("pipewright_runs_total", Some(("state", "success"))),
        0.0
    );
    assert_eq!(after.webhooks("accepted"), 2.0);
    server.stop().await;
}

/// A run for the store tests below.
fn spec(sha: &str, group: &str, state: RunState) -> RunSpec {
    RunSpec {
        repo: "org/app".into(),
        repo_id: 1,
        owner_id: 2,
        default_branch: "main".into(),
        status_repo: "org/app".into(),
        pipeline: "ci".into(),
        pipeline_file: ".pipewright/ci.yml".into(),
        event: EventKind::Push,
        git_ref: GitRef::Branch("main".into()),
        sha: sha.into(),
        pr: None,
        actor: "alice".into(),
        from_fork: false,
        attempt: 1,
        inputs: Vec::new(),
        input_types: Vec::new(),
        rerun_of: None,
        runs_on: Vec::new(),
        dedupe_key: format!("push:{sha}"),
        concurrency_group: group.into(),
        cancel_in_progress: false,
        state,
        description: state.as_str().into(),
    }
}

fn ended(store: &Store, state: RunState) -> u64 {
    store
        .run_ends()
        .iter()
        .find(|(s, _)| *s == state)
        .map(|(_, n)| *n)
        .unwrap()
}

/// The store's side of the metrics, on SQLite and on PostgreSQL: each way a run ends is
/// counted once, after it committed, and the queue sizes follow the tables.
async fn the_store_counts_each_run_end_once_and_sizes_its_queues(url: String) {
    let store = Store::open(&url).await.unwrap();
    let sizes = |q: i64, r: i64, d: i64| (q, r, d);
    let of = |s: QueueSizes| (s.runs_queued, s.runs_running, s.deliveries_pending);
    assert_eq!(of(store.queue_sizes().await.unwrap()), sizes(0, 0, 0));
    assert!(store.run_ends().iter().all(|(_, n)| *n == 0));

    let delivery = |id: &str| NewDelivery {
        delivery_id: id.into(),
        event_type: "push".into(),
        repo: "org/app".into(),
        payload: b"{}".to_vec(),
    };
    store
        .insert_deliveries(&[delivery("d1"), delivery("d2")])
        .await
        .unwrap();
    let first = store
        .enqueue_runs(None, &[spec("a1", "g", RunState::Queued)])
        .await
        .unwrap();
    assert_eq!(of(store.queue_sizes().await.unwrap()), sizes(1, 0, 2));
    // A newer run of the group supersedes the queued one.
    store
        .enqueue_runs(None, &[spec("a2", "g", RunState::Queued)])
        .await
        .unwrap();
    assert_eq!(ended(&store, RunState::Superseded), 1);
    assert_eq!(of(store.queue_sizes().await.unwrap()), sizes(1, 0, 2));
    let claimed = store.claim_next("pw-me", &[]).await.unwrap().unwrap();
    assert_ne!(claimed.id, first.ids[0]);
    assert_eq!(of(store.queue_sizes().await.unwrap()), sizes(0, 1, 2));
    // Ending a run twice counts it once.
    assert!(
        store
            .finish_run(claimed.id, RunState::Success, "ok")
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_run(claimed.id, RunState::Failure, "again")
            .await
            .unwrap()
    );
    assert_eq!(ended(&store, RunState::Success), 1);
    assert_eq!(ended(&store, RunState::Failure), 0);
    // A lost lease, and a run that ends as it is queued (an invalid pipeline file).
    store
        .enqueue_runs(None, &[spec("b1", "h", RunState::Queued)])
        .await
        .unwrap();
    store.claim_next("pw-other", &[]).await.unwrap().unwrap();
    let later = now_ms() + 2 * LEASE.as_millis() as i64;
    assert_eq!(store.settle_lost_leases(later, &[]).await.unwrap().len(), 1);
    assert_eq!(ended(&store, RunState::Error), 1);
    store
        .enqueue_runs(None, &[spec("c1", "i", RunState::Failure)])
        .await
        .unwrap();
    assert_eq!(ended(&store, RunState::Failure), 1);
    // A duplicate enqueues (and ends) nothing.
    store
        .enqueue_runs(None, &[spec("c1", "i", RunState::Failure)])
        .await
        .unwrap();
    assert_eq!(ended(&store, RunState::Failure), 1);
    assert_eq!(ended(&store, RunState::Cancelled), 0);

    // Statuses: pending until sent.
    assert!(store.queue_sizes().await.unwrap().statuses_pending > 0);
    loop {
        let due = store.due_statuses(100).await.unwrap();
        if due.is_empty() {
            break;
        }
        for status in due {
            store.status_sent(status.id).await.unwrap();
        }
    }
    let pending = store.pending_deliveries(10).await.unwrap();
    store
        .finish_delivery(pending[0].id, DeliveryState::Processed, "done")
        .await
        .unwrap();
    let last = store.queue_sizes().await.unwrap();
    assert_eq!(last.statuses_pending, 0);
    assert_eq!(of(last), sizes(0, 0, 1));
}

#[tokio::test]
async fn store_counts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_store_counts_each_run_end_once_and_sizes_its_queues(format!(
        "sqlite://{}/pw.db",
        dir.path().display()
    ))
    .await
}

#[tokio::test]
async fn store_counts_on_postgres() {
    let pg = Postgres::start();
    the_store_counts_each_run_end_once_and_sizes_its_queues(pg.url()).await
}

//! The store against real databases, each test on SQLite and on PostgreSQL: the delivery
//! inbox, the queue's concurrency groups and labels, leases, the status outbox, and
//! migrations of databases made by earlier releases (`tests/data/store/`), and the public
//! signing keys each process publishes.

use std::{path::Path, time::Duration};

use pipewright::store::{
    CommitState, Enqueued, LEASE, NewDelivery, Received, RunSpec, RunState, StepState, Store,
    now_ms,
};
use pipewright_pipelines::{EventKind, GitRef};
use pipewright_tests::{fake_gitea::FakeGitea, services::Postgres};

use crate::serve::{Server, eventually};

/// A database for one test: a file in a temporary directory, or a PostgreSQL server of its
/// own.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Db {
    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}/pw.db", dir.path().display()),
            Db::Postgres(pg) => pg.url(),
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.url())
            .await
            .unwrap_or_else(|e| panic!("failed to open {}: {e:?}", self.url()))
    }
}

/// Runs each of these tests once on SQLite and once on PostgreSQL
/// (`store::<name>::sqlite`, `store::<name>::postgres`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                super::$name(Db::Sqlite(tempfile::tempdir().unwrap())).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(Db::Postgres(Postgres::start())).await
            }
        }
    )*};
}

fn run(pipeline: &str, sha: &str, group: &str, cancel_in_progress: bool) -> RunSpec {
    RunSpec {
        inputs: vec![("mode".into(), "plan".into())],
        dedupe_key: format!("push:{sha}"),
        concurrency_group: group.into(),
        cancel_in_progress,
        ..pipewright_tests::push_run("org/app", pipeline, sha)
    }
}

async fn enqueue(store: &Store, spec: RunSpec) -> Enqueued {
    store.enqueue_runs(None, &[spec]).await.unwrap()
}

/// Enqueues one run that is no duplicate; returns its id.
async fn add(store: &Store, spec: RunSpec) -> i64 {
    enqueue(store, spec).await.ids[0]
}

fn labels(list: &[&str]) -> Vec<String> {
    list.iter().map(|l| l.to_string()).collect()
}

on_both!(
    deliveries_are_stored_once_and_survive_reopening,
    a_delivery_stored_settled_is_never_pending,
    a_group_runs_one_at_a_time_and_newer_runs_supersede_queued_ones,
    cancel_in_progress_cancels_queued_and_asks_to_stop_running,
    push_keys_dedupe_forever_and_pull_request_keys_while_active,
    the_outbox_sends_the_newest_status_of_each_pipeline,
    leases_belong_to_their_owner,
    a_run_whose_lease_expired_is_settled_as_its_agent_lost,
    an_instance_finds_only_its_own_running_runs,
    a_run_waits_for_an_agent_with_all_its_labels,
    a_named_agent_claims_with_its_lease_and_its_heartbeat_is_read_back,
    published_keys_are_public_and_replaced_per_owner,
);

async fn a_named_agent_claims_with_its_lease_and_its_heartbeat_is_read_back(db: Db) {
    use pipewright::store::{
        Claimant,
        agents::{AgentBeat, AgentState},
    };
    let store = db.open().await;
    let pinned = add(
        &store,
        RunSpec {
            runs_on: labels(&["pi1"]),
            ..run("backup", "aaaaaaaa", "g-backup", false)
        },
    )
    .await;
    let pi3 = labels(&["pi3", "linux"]);
    let lease = std::time::Duration::from_secs(5);
    let as_pi3 = Claimant {
        owner: "pw-instance-3",
        agent: "pi3",
        labels: &pi3,
        lease,
    };
    assert!(
        store.claim(&as_pi3).await.unwrap().is_none(),
        "a run pinned to pi1 is not pi3's"
    );
    let pi1 = labels(&["pi1"]);
    let as_pi1 = Claimant {
        owner: "pw-instance-1",
        agent: "pi1",
        labels: &pi1,
        lease,
    };
    let claimed = store.claim(&as_pi1).await.unwrap().unwrap();
    assert_eq!(claimed.id, pinned);
    assert_eq!(claimed.agent.as_deref(), Some("pi1"));
    assert_eq!(claimed.lease_owner.as_deref(), Some("pw-instance-1"));
    assert!(
        store
            .renew_lease_for(pinned, "pw-instance-1", lease)
            .await
            .unwrap()
    );
    // The lease is the agent's: expired after it, and the run is lost under its name.
    let later = now_ms() + lease.as_millis() as i64 + 1;
    let settled = store.settle_lost_leases(later, &[]).await.unwrap();
    assert_eq!(settled, [(pinned, "pi1".to_string())]);
    let lost = store.run(pinned).await.unwrap().unwrap();
    assert_eq!(lost.description, "agent pi1 lost");
    assert_eq!(lost.agent.as_deref(), Some("pi1"), "the name stays");

    let beat = |name: &'static str, state, docker_up| AgentBeat {
        name,
        instance: "pw-instance-1",
        labels: &pi1,
        capacity: 2,
        state,
        docker_up,
    };
    store
        .agent_heartbeat(&beat("pi1", AgentState::Running, true))
        .await
        .unwrap();
    store
        .agent_heartbeat(&beat("pi1", AgentState::Draining, false))
        .await
        .unwrap();
    let live = store.live_agents().await.unwrap();
    assert_eq!(live.len(), 1, "one row per name: {live:?}");
    assert_eq!(
        (live[0].name.as_str(), live[0].state, live[0].docker_up),
        ("pi1", AgentState::Draining, false)
    );
    assert_eq!(live[0].labels, pi1);
    store.agent_stopped("pi1", "pw-another").await.unwrap();
    assert_eq!(store.live_agents().await.unwrap().len(), 1, "not its row");
    store.agent_stopped("pi1", "pw-instance-1").await.unwrap();
    assert!(store.live_agents().await.unwrap().is_empty());
}

/// What `Issuer::publish` writes: the public JWKs of the owner's keys, replacing what it
/// published before, beside other owners' keys.
async fn published_keys_are_public_and_replaced_per_owner(db: Db) {
    use pipewright::{config::Algorithm, identity::Issuer};
    let store = db.open().await;
    let issuer = |dir: &Path, alg| {
        Issuer::load(
            dir,
            alg,
            "https://ci.lab",
            "vault",
            Duration::from_secs(600),
        )
        .unwrap()
    };
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    issuer(a.path(), Algorithm::EdDSA)
        .publish(&store, "server")
        .await
        .unwrap();
    issuer(b.path(), Algorithm::ES256)
        .publish(&store, "agent-pi1")
        .await
        .unwrap();
    let first = store.published_keys().await.unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    for key in &first {
        let jwk: serde_json::Value = serde_json::from_str(&key.jwk).unwrap();
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert!(jwk.get("d").is_none(), "{}: {jwk}", key.owner);
        assert!(jwk.get("x").is_some(), "{jwk}");
    }
    // The agent's keys change: its old key goes, the server's stays.
    issuer(c.path(), Algorithm::ES256)
        .publish(&store, "agent-pi1")
        .await
        .unwrap();
    let again = store.published_keys().await.unwrap();
    assert_eq!(again.len(), 2, "{again:?}");
    let old = first.iter().find(|k| k.owner == "agent-pi1").unwrap();
    assert!(again.iter().all(|k| k.kid != old.kid), "{again:?}");
    assert!(again.iter().any(|k| k.owner == "server"), "{again:?}");
}

async fn deliveries_are_stored_once_and_survive_reopening(db: Db) {
    let store = db.open().await;
    let d = |id: &str| NewDelivery {
        delivery_id: id.into(),
        event_type: "push".into(),
        repo: "org/app".into(),
        payload: b"{}".to_vec(),
    };
    let first = store
        .insert_deliveries(&[d("a"), d("b"), d("a")])
        .await
        .unwrap();
    assert!(matches!(first[0], Received::New(_)));
    assert!(matches!(first[1], Received::New(_)));
    assert_eq!(first[2], Received::Duplicate);
    assert_eq!(
        store.insert_deliveries(&[d("b")]).await.unwrap(),
        [Received::Duplicate]
    );
    store.close().await;
    let reopened = db.open().await;
    let pending = reopened.pending_deliveries(10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

async fn a_delivery_stored_settled_is_never_pending(db: Db) {
    let store = db.open().await;
    let d = |id: &str, repo: &str| NewDelivery {
        delivery_id: id.into(),
        event_type: "push".into(),
        repo: repo.into(),
        payload: b"{}".to_vec(),
    };
    let stored = store
        .insert_deliveries_settled(
            &[
                d("kept", "org/app"),
                d("aside", "org/other"),
                d("kept", "org/app"),
            ],
            |d| (d.repo == "org/other").then_some("not ours"),
        )
        .await
        .unwrap();
    assert!(matches!(stored[0], Received::New(_)));
    assert!(matches!(stored[1], Received::New(_)));
    assert_eq!(stored[2], Received::Duplicate);
    // Stored all the same: a second delivery of the set-aside one is a duplicate.
    assert_eq!(
        store
            .insert_deliveries(&[d("aside", "org/other")])
            .await
            .unwrap(),
        [Received::Duplicate]
    );
    assert_eq!(store.delivery_count().await.unwrap(), 2);
    let pending = store.pending_deliveries(10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["kept"]
    );
}

async fn a_group_runs_one_at_a_time_and_newer_runs_supersede_queued_ones(db: Db) {
    let store = db.open().await;
    let first = add(&store, run("iac", "aaaaaaaa1", "g", false)).await;
    let claimed = store.claim_next("agent", &[]).await.unwrap().unwrap();
    assert_eq!(claimed.id, first);
    assert_eq!(claimed.inputs, [("mode".to_string(), "plan".to_string())]);
    assert_eq!(
        (claimed.event, &claimed.git_ref),
        (EventKind::Push, &GitRef::Branch("main".into()))
    );
    let second = enqueue(&store, run("iac", "bbbbbbbb2", "g", false)).await;
    assert!(
        second.cancel_running.is_empty(),
        "a running run is never cancelled by a newer push"
    );
    // The group is busy: nothing to claim.
    assert!(store.claim_next("agent", &[]).await.unwrap().is_none());
    let third = enqueue(&store, run("iac", "cccccccc3", "g", false)).await;
    let superseded = store.run(second.ids[0]).await.unwrap().unwrap();
    assert_eq!(superseded.state, RunState::Superseded);
    assert_eq!(superseded.description, "superseded by cccccccc");
    store
        .finish_run(first, RunState::Success, "ok")
        .await
        .unwrap();
    assert_eq!(
        store.claim_next("agent", &[]).await.unwrap().unwrap().id,
        third.ids[0]
    );
}

async fn cancel_in_progress_cancels_queued_and_asks_to_stop_running(db: Db) {
    let store = db.open().await;
    let a = add(&store, run("plan", "aaaaaaaa", "pr-1", true)).await;
    store.claim_next("agent", &[]).await.unwrap().unwrap();
    let b = enqueue(&store, run("plan", "bbbbbbbb", "pr-1", true)).await;
    assert_eq!(b.cancel_running, [a]);
    let c = enqueue(&store, run("plan", "cccccccc", "pr-1", true)).await;
    assert_eq!(
        store.run(b.ids[0]).await.unwrap().unwrap().state,
        RunState::Cancelled
    );
    assert_eq!(c.cancel_running, [a]);
    // Other groups are not affected.
    let other = enqueue(&store, run("plan", "dddddddd", "pr-2", true)).await;
    assert!(other.cancel_running.is_empty());
    assert_eq!(
        store.claim_next("agent", &[]).await.unwrap().unwrap().id,
        other.ids[0]
    );
}

async fn push_keys_dedupe_forever_and_pull_request_keys_while_active(db: Db) {
    let store = db.open().await;
    let push = run("ci", "aaaaaaaa", "g", false);
    let id = add(&store, push.clone()).await;
    store.finish_run(id, RunState::Success, "ok").await.unwrap();
    assert!(enqueue(&store, push).await.duplicate);
    let pr = RunSpec {
        event: EventKind::PullRequest,
        pr: Some(4),
        dedupe_key: "pull_request:org/app:4:bbbbbbbb:synchronized".into(),
        ..run("ci", "bbbbbbbb", "pr-4", false)
    };
    let id = add(&store, pr.clone()).await;
    assert!(enqueue(&store, pr.clone()).await.duplicate);
    store.finish_run(id, RunState::Success, "ok").await.unwrap();
    assert!(!enqueue(&store, pr).await.duplicate);
}

async fn the_outbox_sends_the_newest_status_of_each_pipeline(db: Db) {
    let store = db.open().await;
    let id = add(&store, run("iac", "aaaaaaaa", "g", false)).await;
    store.claim_next("agent", &[]).await.unwrap().unwrap();
    let long = format!("step apply failed with exit code 1: {}", "x".repeat(300));
    store
        .finish_run(id, RunState::Failure, &long)
        .await
        .unwrap();
    let due = store.due_statuses(10).await.unwrap();
    assert_eq!(
        due.len(),
        1,
        "the pending status was overtaken by the final one: {due:?}"
    );
    let status = &due[0];
    assert_eq!(
        (status.state, status.pipeline.as_str(), status.run_id),
        (CommitState::Failure, "iac", id)
    );
    assert_eq!(status.description, long, "the store keeps the whole text");
    store.status_failed(status.id, 60_000).await.unwrap();
    assert!(
        store.due_statuses(10).await.unwrap().is_empty(),
        "retried later, not now"
    );
    store.status_sent(status.id).await.unwrap();
    assert_eq!(store.next_status_due().await.unwrap(), None);
}

async fn leases_belong_to_their_owner(db: Db) {
    let store = db.open().await;
    let id = add(&store, run("iac", "aaaaaaaa", "g", false)).await;
    store.claim_next("agent-1", &[]).await.unwrap().unwrap();
    assert!(store.renew_lease(id, "agent-1").await.unwrap());
    assert!(!store.renew_lease(id, "agent-2").await.unwrap());
    store.finish_run(id, RunState::Success, "ok").await.unwrap();
    assert!(
        !store.renew_lease(id, "agent-1").await.unwrap(),
        "a finished run has no lease"
    );
    assert!(
        !store
            .finish_run(id, RunState::Error, "again")
            .await
            .unwrap(),
        "a run ends once"
    );
}

async fn a_run_whose_lease_expired_is_settled_as_its_agent_lost(db: Db) {
    let store = db.open().await;
    let theirs = add(&store, run("a", "aaaaaaaa", "ga", false)).await;
    let ours = add(&store, run("b", "bbbbbbbb", "gb", false)).await;
    assert_eq!(
        store.claim_next("pw-other", &[]).await.unwrap().unwrap().id,
        theirs
    );
    assert_eq!(
        store.claim_next("pw-me", &[]).await.unwrap().unwrap().id,
        ours
    );
    assert!(
        store
            .settle_lost_leases(now_ms(), &[])
            .await
            .unwrap()
            .is_empty(),
        "leases just taken have not expired"
    );
    let later = now_ms() + LEASE.as_millis() as i64 + 1;
    let settled = store.settle_lost_leases(later, &[ours]).await.unwrap();
    assert_eq!(settled, [(theirs, "pw-other".to_string())]);
    let lost = store.run(theirs).await.unwrap().unwrap();
    assert_eq!(
        (lost.state, lost.description.as_str()),
        (RunState::Error, "agent pw-other lost")
    );
    assert_eq!(
        store.run(ours).await.unwrap().unwrap().state,
        RunState::Running
    );
    let due = store.due_statuses(10).await.unwrap();
    assert!(
        due.iter()
            .any(|s| s.run_id == theirs && s.state == CommitState::Error),
        "the lost run's status is queued: {due:?}"
    );
    assert!(
        !store.renew_lease(theirs, "pw-other").await.unwrap(),
        "the lost agent cannot take the run back"
    );
}

async fn an_instance_finds_only_its_own_running_runs(db: Db) {
    let store = db.open().await;
    for (pipeline, sha, group) in [("a", "aaaaaaaa", "ga"), ("b", "bbbbbbbb", "gb")] {
        enqueue(&store, run(pipeline, sha, group, false)).await;
    }
    let mine = store.claim_next("pw-me", &[]).await.unwrap().unwrap();
    store.claim_next("pw-other", &[]).await.unwrap().unwrap();
    let found: Vec<i64> = store
        .running_runs_of("pw-me")
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(found, [mine.id]);
    assert_eq!(mine.lease_owner.as_deref(), Some("pw-me"));
}

async fn a_run_waits_for_an_agent_with_all_its_labels(db: Db) {
    let store = db.open().await;
    let spec = RunSpec {
        runs_on: labels(&["pi1", "linux"]),
        ..run("flash", "aaaaaaaa", "ga", false)
    };
    let pi = add(&store, spec).await;
    let plain = add(&store, run("ci", "bbbbbbbb", "gb", false)).await;
    let here = labels(&["linux"]);
    assert_eq!(
        store.claim_next("me", &here).await.unwrap().unwrap().id,
        plain
    );
    assert!(store.claim_next("me", &here).await.unwrap().is_none());
    let waiting = store.run(pi).await.unwrap().unwrap();
    assert_eq!(waiting.state, RunState::Queued);
    assert_eq!(waiting.runs_on, labels(&["pi1", "linux"]));
    let claimed = store
        .claim_next("me", &labels(&["linux", "pi1", "usb"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, pi);
}

/// The fixture: a data directory written by release d082364 (its `Store` and log layout):
/// runs 1 (push, success, two steps with logs), 2 (pull request, failure, three steps, its
/// final status unsent) and 3 (dispatch on a tag, queued); deliveries d-1 to d-4.
fn v1_fixture() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/store/v1"),
        data.path(),
    );
    data
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_database_of_the_schema_version_era_is_migrated_and_keeps_its_data() {
    let data = v1_fixture();
    let store = Store::open(&format!("sqlite://{}/pipewright.db", data.path().display()))
        .await
        .expect("the old database opens");
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| (r.id, r.event, r.git_ref.full(), r.state))
            .collect::<Vec<_>>(),
        [
            (
                3,
                EventKind::Dispatch,
                "refs/tags/v1.0.0".to_string(),
                RunState::Queued
            ),
            (
                2,
                EventKind::PullRequest,
                "refs/heads/main".to_string(),
                RunState::Failure
            ),
            (
                1,
                EventKind::Push,
                "refs/heads/main".to_string(),
                RunState::Success
            ),
        ]
    );
    assert!(runs.iter().all(|r| r.runs_on.is_empty()));
    let steps = store.steps(2).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.name.as_str(), s.state))
            .collect::<Vec<_>>(),
        [
            ("init", StepState::Success),
            ("plan", StepState::Failure),
            ("comment", StepState::NotRun),
        ]
    );
    assert_eq!(store.delivery_count().await.unwrap(), 4);
    let pending = store.pending_deliveries(10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["d-3"]
    );
    assert_eq!(
        store.start_delivery(pending[0].id).await.unwrap(),
        1,
        "migration 2 ran"
    );
    // The unsent status of run 2 is kept, now naming its run and pipeline.
    let due = store.due_statuses(10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|s| (s.run_id, s.pipeline.as_str(), s.state))
            .collect::<Vec<_>>(),
        [(2, "plan", CommitState::Failure)]
    );
    // Opening again finds nothing to do.
    store.close().await;
    Store::open(&format!("sqlite://{}/pipewright.db", data.path().display()))
        .await
        .expect("the migrated database opens again");
}

#[tokio::test]
async fn a_postgres_database_of_the_schema_version_era_is_migrated() {
    let pg = Postgres::start();
    let schema = include_str!("../../runner/src/store/migrations/postgres/0001_schema.sql");
    pg.sql(&format!(
        "{schema}
         CREATE TABLE schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version (version) VALUES (1);
         INSERT INTO deliveries (delivery_id, event_type, repo, received_at, payload, state)
           VALUES ('d-1', 'push', 'org/app', 1, '\\x7b7d', 'processed');
         INSERT INTO runs (delivery, repo, repo_id, owner_id, clone_url, default_branch, status_repo,
           pipeline, pipeline_file, event, git_ref, sha, pr, actor, from_fork, attempt, inputs,
           dedupe_key, concurrency_group, cancel_in_progress, state, description, created_at)
           VALUES (1, 'org/app', 7, 3, '', 'main', 'org/app', 'plan', '.pipewright/plan.yml',
           'pull_request', 'refs/heads/main', 'abc', 4, 'alice', 0, 1, '[]', 'k', 'org/app/pr-4', 1,
           'failure', 'step plan failed', 2);
         INSERT INTO status_outbox (repo, sha, context, state, description, target_url, created_at,
           attempts, next_attempt_at)
           VALUES ('org/app', 'abc', 'pipewright/plan', 'failure', 'step plan failed',
           'https://ci.example.lab/runs/1', 2, 0, 0);"
    ));
    let store = Store::open(&pg.url())
        .await
        .expect("the old database opens");
    let run = store.run(1).await.unwrap().unwrap();
    assert_eq!(
        (run.event, run.pr, run.state),
        (EventKind::PullRequest, Some(4), RunState::Failure)
    );
    assert_eq!(store.delivery_count().await.unwrap(), 1);
    let due = store.due_statuses(10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|s| (s.run_id, s.pipeline.as_str()))
            .collect::<Vec<_>>(),
        [(1, "plan")]
    );
    store.close().await;
    Store::open(&pg.url()).await.expect("opens again");
}

/// The new server on the old release's data directory: its runs, steps and logs through
/// the API, its deliveries in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_runs_and_logs_of_a_database_of_the_last_release() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_in(v1_fixture(), &gitea, &[], "").await;
    let run = server.api("/api/v1/runs/1").await;
    assert_eq!(run["state"], "success");
    assert_eq!(run["event"], "push");
    assert_eq!(run["ref"], "refs/heads/main");
    assert_eq!(run["steps"][1]["name"], "test");
    assert_eq!(run["steps"][1]["state"], "success");
    assert_eq!(server.log(1, 1).await, "all 3 tests passed\n");
    let run = server.api("/api/v1/runs/2").await;
    assert_eq!(run["state"], "failure");
    assert_eq!(run["pull_request"], 4);
    assert_eq!(run["steps"][2]["state"], "not_run");
    assert_eq!(server.log(2, 1).await, "Error: missing variable\n");
    assert_eq!(server.runs().await.len(), 3);
    assert_eq!(server.app.store.delivery_count().await.unwrap(), 4);
    server.stop().await;
}

/// At start an instance takes its own runs left running over again (one that had recorded
/// no step ends as interrupted); another instance's run is left to its lease, and ended as
/// its agent lost when that expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_settles_its_own_runs_and_the_worker_ends_expired_leases() {
    let gitea = FakeGitea::start().await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("instance"), "pw-this-one").unwrap();
    let store = Store::open(&format!("sqlite://{}/pipewright.db", data.path().display()))
        .await
        .unwrap();
    for (pipeline, sha, group) in [("a", "aaaaaaaa", "ga"), ("b", "bbbbbbbb", "gb")] {
        enqueue(&store, run(pipeline, sha, group, false)).await;
    }
    let own = store
        .claim_next("pw-this-one", &[])
        .await
        .unwrap()
        .unwrap()
        .id;
    let other = store
        .claim_next("pw-another", &[])
        .await
        .unwrap()
        .unwrap()
        .id;
    store.close().await;
    let server = Server::start_in(data, &gitea, &[], "").await;
    // Adopted at start, it goes on in the worker, which finds that it had recorded no step
    // and starts it over: its fetch (of a repository this fake Gitea does not have) ends it.
    let settled = eventually(
        Duration::from_secs(30),
        "the interrupted run to end",
        || async {
            let json = server.api(&format!("/api/v1/runs/{own}")).await;
            (json["state"] != "running").then_some(json)
        },
    )
    .await;
    assert_eq!(settled["state"], "error");
    let description = settled["description"].as_str().unwrap();
    assert!(
        description.starts_with("git: ") && description.contains("not found"),
        "started over, as if just claimed: {description}"
    );
    let theirs = server.app.store.run(other).await.unwrap().unwrap();
    assert_eq!(
        theirs.state,
        RunState::Running,
        "another instance's run is its own"
    );
    assert_eq!(theirs.lease_owner.as_deref(), Some("pw-another"));
    // Nobody renews that lease: once it expires, the worker ends the run.
    let lost = eventually(
        LEASE * 3,
        "the run of the lost instance to be settled",
        || async {
            let run = server.app.store.run(other).await.unwrap().unwrap();
            run.state.is_finished().then_some(run)
        },
    )
    .await;
    assert_eq!(
        (lost.state, lost.description.as_str()),
        (RunState::Error, "agent pw-another lost")
    );
    server.stop().await;
}

/// A run whose `runs_on` labels this server lacks stays queued, and the API says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_for_labels_this_server_lacks_stays_queued_with_its_reason() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_with(&gitea, &[("PIPEWRIGHT_AGENT__LABELS", "linux")]).await;
    let spec = RunSpec {
        runs_on: labels(&["pi1"]),
        ..run("flash", "aaaaaaaa", "org/app/flash", false)
    };
    let id = server.app.enqueue(None, &[spec]).await.unwrap().ids[0];
    // A run the server can take, enqueued after it, is claimed (and fails: the repository
    // does not exist): the worker has looked at the queue since.
    let later = server
        .app
        .enqueue(None, &[run("ci", "bbbbbbbb", "org/app/ci", false)])
        .await
        .unwrap()
        .ids[0];
    eventually(Duration::from_secs(30), "the later run to end", || async {
        server
            .app
            .store
            .run(later)
            .await
            .unwrap()
            .filter(|r| r.state.is_finished())
    })
    .await;
    let waiting = server.api(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(waiting["state"], "queued");
    assert_eq!(waiting["waiting_reason"], "no agent with labels [pi1]");
    let listed = server.api("/api/v1/runs").await;
    let ended = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == later)
        .unwrap();
    assert!(ended.get("waiting_reason").is_none(), "{ended}");
    server.stop().await;
}

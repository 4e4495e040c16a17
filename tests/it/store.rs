//! The store against a real SQLite database: the delivery inbox, the queue's concurrency
//! groups, leases and the status outbox.

use pipewright::store::{NewDelivery, NewRun, Received, RunState, Store};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/pw.db", dir.path().display());
    (Store::open(&url).await.expect("failed to open SQLite"), dir)
}

fn run(pipeline: &str, sha: &str, group: &str, cancel_in_progress: bool) -> NewRun {
    NewRun {
        repo: "org/app".into(),
        repo_id: 1,
        owner_id: 2,
        default_branch: "main".into(),
        status_repo: "org/app".into(),
        pipeline: pipeline.into(),
        pipeline_file: format!(".pipewright/{pipeline}.yml"),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        sha: sha.into(),
        pr: None,
        actor: "alice".into(),
        from_fork: false,
        attempt: 1,
        inputs: vec![("mode".into(), "plan".into())],
        dedupe_key: format!("push:{sha}"),
        concurrency_group: group.into(),
        cancel_in_progress,
        state: RunState::Queued,
        description: "queued".into(),
    }
}

const BASE: &str = "https://ci.example.lab";

#[tokio::test]
async fn deliveries_are_stored_once_and_survive_reopening() {
    let (store, dir) = store().await;
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
    let reopened = Store::open(&format!("sqlite://{}/pw.db", dir.path().display()))
        .await
        .unwrap();
    let pending = reopened.pending_deliveries(10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[tokio::test]
async fn a_group_runs_one_at_a_time_and_newer_runs_supersede_queued_ones() {
    let (store, _dir) = store().await;
    let first = store
        .enqueue_runs(None, &[run("iac", "aaaaaaaa1", "g", false)], BASE)
        .await
        .unwrap()
        .ids[0];
    let claimed = store.claim_next("agent").await.unwrap().unwrap();
    assert_eq!(claimed.id, first);
    assert_eq!(claimed.inputs, [("mode".to_string(), "plan".to_string())]);
    let second = store
        .enqueue_runs(None, &[run("iac", "bbbbbbbb2", "g", false)], BASE)
        .await
        .unwrap();
    assert!(
        second.cancel_running.is_empty(),
        "a running run is never cancelled by a newer push"
    );
    // The group is busy: nothing to claim.
    assert!(store.claim_next("agent").await.unwrap().is_none());
    let third = store
        .enqueue_runs(None, &[run("iac", "cccccccc3", "g", false)], BASE)
        .await
        .unwrap();
    let superseded = store.run(second.ids[0]).await.unwrap().unwrap();
    assert_eq!(superseded.state, RunState::Superseded);
    assert_eq!(superseded.description, "superseded by cccccccc");
    store
        .finish_run(first, RunState::Success, "ok", BASE)
        .await
        .unwrap();
    assert_eq!(
        store.claim_next("agent").await.unwrap().unwrap().id,
        third.ids[0]
    );
}

#[tokio::test]
async fn cancel_in_progress_cancels_queued_and_asks_to_stop_running() {
    let (store, _dir) = store().await;
    let a = store
        .enqueue_runs(None, &[run("plan", "aaaaaaaa", "pr-1", true)], BASE)
        .await
        .unwrap()
        .ids[0];
    store.claim_next("agent").await.unwrap().unwrap();
    let b = store
        .enqueue_runs(None, &[run("plan", "bbbbbbbb", "pr-1", true)], BASE)
        .await
        .unwrap();
    assert_eq!(b.cancel_running, [a]);
    let c = store
        .enqueue_runs(None, &[run("plan", "cccccccc", "pr-1", true)], BASE)
        .await
        .unwrap();
    assert_eq!(
        store.run(b.ids[0]).await.unwrap().unwrap().state,
        RunState::Cancelled
    );
    assert_eq!(c.cancel_running, [a]);
    // Other groups are not affected.
    let other = store
        .enqueue_runs(None, &[run("plan", "dddddddd", "pr-2", true)], BASE)
        .await
        .unwrap();
    assert!(other.cancel_running.is_empty());
    assert_eq!(
        store.claim_next("agent").await.unwrap().unwrap().id,
        other.ids[0]
    );
}

#[tokio::test]
async fn the_outbox_sends_the_newest_status_of_each_context() {
    let (store, _dir) = store().await;
    let id = store
        .enqueue_runs(None, &[run("iac", "aaaaaaaa", "g", false)], BASE)
        .await
        .unwrap()
        .ids[0];
    store.claim_next("agent").await.unwrap().unwrap();
    store
        .finish_run(
            id,
            RunState::Failure,
            "step apply failed with exit code 1",
            BASE,
        )
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
        (status.state.as_str(), status.context.as_str()),
        ("failure", "pipewright/iac")
    );
    assert_eq!(status.target_url, format!("{BASE}/runs/{id}"));
    store.status_failed(status.id, 60_000).await.unwrap();
    assert!(
        store.due_statuses(10).await.unwrap().is_empty(),
        "retried later, not now"
    );
    store.status_sent(status.id).await.unwrap();
    assert_eq!(store.next_status_due().await.unwrap(), None);
}

#[tokio::test]
async fn leases_belong_to_their_owner() {
    let (store, _dir) = store().await;
    let id = store
        .enqueue_runs(None, &[run("iac", "aaaaaaaa", "g", false)], BASE)
        .await
        .unwrap()
        .ids[0];
    store.claim_next("agent-1").await.unwrap().unwrap();
    assert!(store.renew_lease(id, "agent-1").await.unwrap());
    assert!(!store.renew_lease(id, "agent-2").await.unwrap());
    store
        .finish_run(id, RunState::Success, "ok", BASE)
        .await
        .unwrap();
    assert!(
        !store.renew_lease(id, "agent-1").await.unwrap(),
        "a finished run has no lease"
    );
    assert!(
        !store
            .finish_run(id, RunState::Error, "again", BASE)
            .await
            .unwrap(),
        "a run ends once"
    );
}

//! Retention and disk space (`[retention]`): old runs and their logs deleted while queued,
//! running, recent and still-needed runs stay (the store on SQLite and PostgreSQL, and a
//! server end to end), mirrors compacted, pushed images removed from the engine unless
//! kept, workspaces gone with their run, and a full log disk failing the step while the
//! server goes on serving.

use std::{path::Path, path::PathBuf, process::Command, time::Duration};

use pipewright::server::retention_pass;
use pipewright::store::{
    DeliveryState, NewDelivery, ReviewedPlanRow, RunEnd, RunSpec, RunState, StepState, Store,
    comments::NewComment, now_ms,
};
use pipewright_pipelines::GitRef;
use pipewright_tests::{
    containers_labelled, docker_cli, fake_gitea::FakeGitea, registry::Registry, services::Postgres,
};
use serde_json::Value;

use crate::serve::{API_TOKEN, IMAGE, Server, client, eventually, final_statuses, states, step};

/// A database for one test: SQLite in a temporary directory, or a PostgreSQL of its own.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Db {
    async fn open(&self) -> Store {
        let url = match self {
            Db::Sqlite(dir) => format!("sqlite://{}/pw.db", dir.path().display()),
            Db::Postgres(pg) => pg.url(),
        };
        Store::open(&url)
            .await
            .unwrap_or_else(|e| panic!("failed to open {url}: {e:?}"))
    }
}

mod old_runs_go_and_needed_runs_stay {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        super::old_runs_go_and_needed_runs_stay(Db::Sqlite(tempfile::tempdir().unwrap())).await
    }

    #[tokio::test]
    async fn postgres() {
        super::old_runs_go_and_needed_runs_stay(Db::Postgres(Postgres::start())).await
    }
}

pub(crate) fn spec(branch: &str, sha: &str, group: &str) -> RunSpec {
    RunSpec {
        pipeline_file: ".pipewright/ci.yml".into(),
        git_ref: GitRef::Branch(branch.into()),
        dedupe_key: format!("push:{sha}"),
        concurrency_group: group.into(),
        ..pipewright_tests::push_run("org/app", "ci", sha)
    }
}

pub(crate) async fn add(store: &Store, spec: RunSpec) -> i64 {
    store.enqueue_runs(None, &[spec]).await.unwrap().ids[0]
}

/// Marks every unsent status sent, except those of the runs in `keep_unsent`.
pub(crate) async fn send_statuses(store: &Store, keep_unsent: &[i64]) {
    loop {
        let due: Vec<_> = store
            .due_statuses(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|s| !keep_unsent.contains(&s.run_id))
            .collect();
        if due.is_empty() {
            return;
        }
        for status in due {
            store.status_sent(status.id).await.unwrap();
        }
    }
}

/// A run that ended, with one step, its statuses sent.
pub(crate) async fn ended(store: &Store, spec: RunSpec) -> i64 {
    let id = add(store, spec).await;
    store
        .insert_steps(id, &[(0, "build".into())])
        .await
        .unwrap();
    store
        .step_finished(id, 0, StepState::Success, "succeeded", Some(0))
        .await
        .unwrap();
    store.finish_run(id, RunState::Success, "ok").await.unwrap();
    id
}

async fn old_runs_go_and_needed_runs_stay(db: Db) {
    let store = db.open().await;
    let old_a = ended(&store, spec("main", "aaaaaaa1", "g-a")).await;
    let old_b = ended(&store, spec("main", "aaaaaaa2", "g-b")).await;
    // The newest run of its branch: catch-up would run that head again without it.
    let only_of_feature = ended(&store, spec("feature", "aaaaaaa3", "g-c")).await;
    send_statuses(&store, &[]).await;
    // Its final status is still to send.
    let unsent = ended(&store, spec("main", "aaaaaaa4", "g-d")).await;
    // Its pull-request comment is still to send.
    let commented = add(&store, spec("main", "aaaaaa41", "g-h")).await;
    let comment = NewComment {
        repo: "org/app".into(),
        pr: 7,
        marker: "<!-- m -->".into(),
        body: "plan".into(),
    };
    store
        .finish_run_commenting(commented, RunState::Success, "ok", Some(&comment))
        .await
        .unwrap();
    // A pull request's review uses its plan.
    let reviewed = add(&store, spec("main", "aaaaaa42", "g-i")).await;
    let plan = ReviewedPlanRow {
        repo: "org/app".into(),
        pr: 8,
        pipeline: "ci".into(),
        sha: "aaaaaa42".into(),
        run_id: reviewed,
        changes: Vec::new(),
        applied_run: None,
    };
    let end = RunEnd {
        reviewed: Some(&plan),
        ..RunEnd::default()
    };
    store
        .finish_run_reviewing(reviewed, RunState::Success, "ok", &end)
        .await
        .unwrap();
    let running = add(&store, spec("main", "aaaaaaa5", "g-e")).await;
    assert_eq!(
        store.claim_next("agent", &[]).await.unwrap().unwrap().id,
        running
    );
    let queued = add(&store, spec("main", "aaaaaaa6", "g-e")).await;
    send_statuses(&store, &[unsent]).await;
    // Everything above ended (or was queued) before the cut-off; the next one after it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let recent = ended(&store, spec("main", "aaaaaaa7", "g-f")).await;
    send_statuses(&store, &[unsent]).await;
    let _newest = add(&store, spec("main", "aaaaaaa8", "g-g")).await;

    assert_eq!(
        store.removable_runs(before, 500).await.unwrap(),
        [old_a, old_b]
    );
    // In batches: one at a time.
    assert_eq!(store.removable_runs(before, 1).await.unwrap(), [old_a]);
    assert_eq!(store.delete_runs(&[old_a], before).await.unwrap(), 1);
    // Ids that are not removable are not deleted, even when asked for.
    assert_eq!(
        store
            .delete_runs(&[unsent, running, queued, recent, only_of_feature], before)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.removable_runs(before, 500).await.unwrap(), [old_b]);
    assert_eq!(store.delete_runs(&[old_b], before).await.unwrap(), 1);
    for gone in [old_a, old_b] {
        assert!(store.run(gone).await.unwrap().is_none(), "run {gone}");
        assert!(store.steps(gone).await.unwrap().is_empty(), "run {gone}");
    }
    for kept in [only_of_feature, unsent, running, queued, recent] {
        assert!(store.run(kept).await.unwrap().is_some(), "run {kept}");
    }
    assert_eq!(
        store.run(running).await.unwrap().unwrap().state,
        RunState::Running
    );
    assert_eq!(
        store.run(queued).await.unwrap().unwrap().state,
        RunState::Queued
    );
    assert_eq!(store.steps(unsent).await.unwrap().len(), 1);
    for kept in [commented, reviewed] {
        assert!(store.run(kept).await.unwrap().is_some(), "run {kept}");
    }
    // Once its status is sent, the run may go; once its comment is, that one too.
    send_statuses(&store, &[]).await;
    assert_eq!(store.removable_runs(before, 500).await.unwrap(), [unsent]);
    for due in store.due_comments(10).await.unwrap() {
        store.comment_sent(&due).await.unwrap();
    }
    assert_eq!(
        store.removable_runs(before, 500).await.unwrap(),
        [unsent, commented]
    );
    // The review's plan is forgotten (after 30 days in the server): its run may go.
    store.forget_reviewed_plans(now_ms() + 1).await.unwrap();
    assert_eq!(
        store.removable_runs(before, 500).await.unwrap(),
        [unsent, commented, reviewed]
    );

    // Logs: runs that ended before the cut-off and still have them, oldest first.
    assert_eq!(
        store.runs_with_old_logs(before, 500).await.unwrap(),
        [only_of_feature, unsent, commented, reviewed]
    );
    assert!(!store.steps(only_of_feature).await.unwrap()[0].log_removed);
    store
        .mark_logs_removed(&[only_of_feature], now_ms())
        .await
        .unwrap();
    let steps = store.steps(only_of_feature).await.unwrap();
    assert!(steps[0].log_removed, "{steps:?}");
    assert_eq!(steps[0].state, StepState::Success);
    assert_eq!(
        store.runs_with_old_logs(before, 500).await.unwrap(),
        [unsent, commented, reviewed]
    );
    assert!(!store.steps(recent).await.unwrap()[0].log_removed);

    // Deliveries: processed ones received before the cut-off go, pending ones stay.
    let delivery = |id: &str| NewDelivery {
        delivery_id: id.into(),
        event_type: "push".into(),
        repo: "org/app".into(),
        payload: b"{}".to_vec(),
    };
    store
        .insert_deliveries(&[delivery("done"), delivery("waiting")])
        .await
        .unwrap();
    let done = store.pending_deliveries(10).await.unwrap()[0].id;
    store
        .finish_delivery(done, DeliveryState::Processed, "")
        .await
        .unwrap();
    assert_eq!(store.delete_old_deliveries(before, 500).await.unwrap(), 0);
    let later = now_ms() + 1;
    assert_eq!(store.delete_old_deliveries(later, 500).await.unwrap(), 1);
    assert_eq!(store.delivery_count().await.unwrap(), 1);
    let pending = store.pending_deliveries(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].delivery_id, "waiting");
}

fn step_json(run: &Value, index: usize) -> &Value {
    &run["steps"][index]
}

async fn get(url: &str) -> (u16, String) {
    let resp = client()
        .get(url)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_deletes_old_runs_and_logs_keeps_the_newest_of_a_branch_and_compacts_mirrors() {
    let gitea = FakeGitea::start().await;
    // Ages of a second: what ended before the pass below is old. The task's own passes
    // (at start, then hourly) find nothing older when the server starts.
    let server = Server::start_with(
        &gitea,
        &[
            ("PIPEWRIGHT_RETENTION__LOGS", "1s"),
            ("PIPEWRIGHT_RETENTION__RUNS", "1s"),
        ],
    )
    .await;
    let repo = gitea.create_repo("org", "kept");
    let pipeline = format!("on:\n  push: {{}}\nsteps:\n{}", step("say", "echo hello"));
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &pipeline)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    assert_eq!(
        states(&final_statuses(&repo, &c1, "pipewright/ci").await),
        ["pending", "success"]
    );
    let c2 = repo
        .commit("main", "again")
        .write("README.md", "y\n")
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    assert_eq!(
        states(&final_statuses(&repo, &c2, "pipewright/ci").await),
        ["pending", "success"]
    );
    let runs = server.runs().await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let (newer, older) = (
        runs[0]["id"].as_i64().unwrap(),
        runs[1]["id"].as_i64().unwrap(),
    );
    assert_eq!(server.log(older, 0).await, "hello\n");
    let logs = server.app.config.server.data_dir.join("logs");
    assert!(logs.join(older.to_string()).join("0.log").is_file());
    // The workspaces went with their runs.
    let workspaces = server.app.config.server.data_dir.join("workspaces");
    assert_eq!(dir_entries(&workspaces), Vec::<String>::new());

    // A mirror that fetches made into many packs (gc.autoPackLimit is 50).
    let mirror = server.app.config.server.data_dir.join("git/org/kept.git");
    for i in 0..55 {
        let object = git_in(
            &mirror,
            &["hash-object", "-w", "--stdin"],
            &format!("object {i}\n"),
        );
        git_in(
            &mirror,
            &["pack-objects", "-q", "objects/pack/pack"],
            &object,
        );
    }
    let packs_before = packs(&mirror);
    assert!(packs_before > 50, "{packs_before} packs");

    // Logs of a run the database does not have (deleted by another instance sharing it,
    // or before a crash).
    std::fs::create_dir_all(logs.join("987654")).unwrap();
    std::fs::write(logs.join("987654/0.log"), "stray\n").unwrap();

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The reporter marks the statuses sent just after Gitea has them: until then the
    // older run is kept (its status is still to send).
    let removed = eventually(Duration::from_secs(60), "the older run deleted", || async {
        let removed = retention_pass(&server.app).await.unwrap();
        server
            .app
            .store
            .run(older)
            .await
            .unwrap()
            .is_none()
            .then_some(removed)
    })
    .await;
    assert!(removed.mirrors >= 1, "{removed:?}");
    assert!(!logs.join("987654").exists());
    // The two pushes' deliveries are processed and old too.
    assert_eq!(server.app.store.delivery_count().await.unwrap(), 0);
    assert!(packs(&mirror) < 5, "{} packs after gc", packs(&mirror));
    assert!(!logs.join(older.to_string()).exists());
    let (code, _) = get(&format!("{}/api/v1/runs/{older}", server.url)).await;
    assert_eq!(code, 404);

    // The newest run of main stays (catch-up would run its commit again), without its log.
    let run = server.api(&format!("/api/v1/runs/{newer}")).await;
    assert_eq!(run["state"], "success");
    assert_eq!(step_json(&run, 0)["state"], "success");
    assert_eq!(step_json(&run, 0)["log_removed"], true, "{run:#}");
    assert!(!logs.join(newer.to_string()).exists());
    let (code, body) = get(&format!("{}/api/v1/runs/{newer}/steps/0/log", server.url)).await;
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("older than [retention].logs"), "{body}");
    let (code, page) = get(&format!("{}/runs/{newer}", server.url)).await;
    assert_eq!(code, 200);
    assert!(page.contains("the log of this step was removed"), "{page}");

    // Nothing more to do on the next pass.
    let again = retention_pass(&server.app).await.unwrap();
    assert_eq!(
        (again.logs, again.runs, again.strays),
        (0, 0, 0),
        "{again:?}"
    );

    // The task is supervised: killed, it comes back (and makes its first pass again).
    server.app.tasks.crash("retention");
    eventually(
        Duration::from_secs(30),
        "the retention task restarted",
        || async {
            let (_, body) = get(&format!("{}/readyz", server.url)).await;
            let body: Value = serde_json::from_str(&body).unwrap();
            let task = &body["tasks"]["retention"];
            (task["running"] == true && task["restarts"] == 1).then_some(())
        },
    )
    .await;
    server.stop().await;
}

fn dir_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn packs(mirror: &Path) -> usize {
    dir_entries(&mirror.join("objects/pack"))
        .iter()
        .filter(|name| name.ends_with(".pack"))
        .count()
}

fn git_in(dir: &Path, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_images_are_removed_from_the_engine_unless_kept() {
    let registry = Registry::start().await;
    let host = registry.host();
    let (gone, kept) = (
        format!("{host}/org/retained:pushed"),
        format!("{host}/org/retained:kept"),
    );
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_with(&gitea, &[("PIPEWRIGHT_DOCKER__PIN_IMAGES", kept.as_str())]).await;
    let repo = gitea.create_repo("org", "retained");
    let pipeline = format!(
        "on:\n  push:\n    branches: [main]\nsteps:\n  - name: build\n    uses: image\n    with:\n      tags: [\"{gone}\", \"{kept}\"]\n  - name: after\n    image: {IMAGE}\n    run: echo built\n"
    );
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "image")
        .write(".pipewright/image.yml", &pipeline)
        .write(
            "Dockerfile",
            &format!("FROM {IMAGE}\nRUN echo retained > /retained\n"),
        )
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let statuses = final_statuses(&repo, &c1, "pipewright/image").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");
    let mut tags = registry.tags("org/retained").await;
    tags.sort();
    assert_eq!(tags, ["kept", "pushed"]);
    let run = server.runs().await[0]["id"].as_i64().unwrap();
    let log = server.log(run, 0).await;
    assert!(
        log.contains(&format!(
            "removing the local {gone} when the run ends (pushed)"
        )),
        "{log}"
    );
    stop_and_clean(server, &kept).await;
    assert!(!image_exists(&gone), "{gone} is still in the engine");
    assert!(
        image_exists(&kept),
        "{kept}, which pin_images lists, was removed"
    );
    docker_cli(&["image", "rm", &kept]);
}

/// Stops the server, then removes the keepers it may have made of `kept`.
async fn stop_and_clean(server: Server, kept: &str) {
    server.stop().await;
    for keeper in containers_labelled("io.pipewright.pin", kept) {
        docker_cli(&["rm", "-f", &keeper]);
    }
}

/// A tmpfs mounted for the duration of a test, unmounted (and its mount point removed)
/// when dropped, also when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("mount (the tests run as root)");
        assert!(status.success(), "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a file open in a task that has not stopped yet): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_disk_fails_the_step_and_the_server_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let logs = data.path().join("logs");
    let _tmpfs = Tmpfs::mount(logs.clone(), "1m");
    let gitea = FakeGitea::start().await;
    let server = Server::start_in(data, &gitea, &[], "").await;
    let repo = gitea.create_repo("org", "loud");
    // 2 MB of output into a 1 MiB disk.
    let loud = format!(
        "on:\n  push: {{}}\nsteps:\n{}{}",
        step(
            "loud",
            "yes 0123456789012345678901234567890123456789012345678 | head -n 40000"
        ),
        step("never", "echo not reached")
    );
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "loud")
        .write(".pipewright/ci.yml", &loud)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let statuses = final_statuses(&repo, &c1, "pipewright/ci").await;
    assert_eq!(states(&statuses), ["pending", "error"], "{statuses:?}");
    let last = &statuses.last().unwrap().description;
    assert!(last.contains("the log disk is full"), "{last}");
    let failed = server.runs().await[0]["id"].as_i64().unwrap();
    let run = server.api(&format!("/api/v1/runs/{failed}")).await;
    assert_eq!(run["state"], "error", "{run:#}");
    let path = logs.join(failed.to_string()).join("0.log");
    let first = step_json(&run, 0);
    assert_eq!(first["state"], "error", "{run:#}");
    let description = first["description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!(
            "the log disk is full: cannot write {}",
            path.display()
        )),
        "{description}"
    );
    assert_ne!(step_json(&run, 1)["state"], "success", "{run:#}");
    // The log holds what fitted.
    let kept = std::fs::metadata(&path).unwrap().len();
    assert!(kept > 0 && kept <= 1 << 20, "{kept} bytes");

    // The disk is still full: the server answers, webhooks included (a repository
    // without pipelines: nothing to run, nothing to log).
    let (code, body) = get(&format!("{}/healthz", server.url)).await;
    assert_eq!(code, 200, "{body}");
    let other = gitea.create_repo("org", "quiet");
    let o0 = other
        .commit("main", "init")
        .write("README.md", "x\n")
        .push();
    let o1 = other
        .commit("main", "more")
        .write("README.md", "y\n")
        .push();
    assert_eq!(
        server.deliver(other.push_event("main", &o0, &o1)).await,
        202
    );
    // Space comes back; the next push is answered and runs.
    server.app.logs.remove_run(failed).await.unwrap();
    let quiet = format!("on:\n  push: {{}}\nsteps:\n{}", step("quiet", "echo fine"));
    let c2 = repo
        .commit("main", "quiet")
        .write(".pipewright/ci.yml", &quiet)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    let statuses = final_statuses(&repo, &c2, "pipewright/ci").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");
    let next = server.runs().await[0]["id"].as_i64().unwrap();
    assert_eq!(server.log(next, 0).await, "fine\n");
    let data = server.stop_keeping_data().await;
    drop(_tmpfs);
    drop(data);
}

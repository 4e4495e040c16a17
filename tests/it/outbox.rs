//! The outbox end to end: statuses and pull-request comments reach Gitea after it was down,
//! also across a restart; shutdown sends what is due and does not wait for a Gitea that
//! does not answer.

use std::{path::Path, time::Duration};

use pipewright::store::RunState;
use pipewright_tests::fake_gitea::{FakeGitea, PullAction, Repo};
use tokio::net::TcpListener;

use crate::{
    actions::TOOLS,
    serve::{IMAGE, Server, eventually},
};

const CONTEXT: &str = "pipewright/outbox";

async fn queue_status(server: &Server, repo: &Repo, sha: &str, description: &str) {
    server
        .app
        .store
        .queue_status(
            &repo.full_name(),
            sha,
            1,
            CONTEXT.trim_start_matches("pipewright/"),
            RunState::Success,
            description,
        )
        .await
        .unwrap();
}

fn described(repo: &Repo, sha: &str) -> Vec<String> {
    repo.statuses(sha)
        .into_iter()
        .filter(|s| s.context == CONTEXT)
        .map(|s| s.description)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_pending_statuses_and_a_restart_what_gitea_missed() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "outbox");
    let sha = repo.commit("main", "init").write("README.md", "x\n").push();

    // Queued without waking the reporter: the shutdown itself sends it.
    let server = Server::start(&gitea).await;
    queue_status(&server, &repo, &sha, "before the stop").await;
    let data = server.stop_keeping_data().await;
    assert_eq!(described(&repo, &sha), ["before the stop"]);

    // Gitea down: the shutdown gives up on it at once, and the next start sends it.
    gitea.set_down(true);
    let server = Server::start_in(data, &gitea, &[], "").await;
    queue_status(&server, &repo, &sha, "while Gitea is down").await;
    let data = server.stop_keeping_data().await;
    gitea.set_down(false);
    assert_eq!(described(&repo, &sha), ["before the stop"]);
    let server = Server::start_in(data, &gitea, &[], "").await;
    eventually(Duration::from_secs(30), "the missed status", || async {
        (described(&repo, &sha).len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        described(&repo, &sha),
        ["before the stop", "while Gitea is down"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_gitea_that_never_answers() {
    // Accepts connections and never answers (a hung Gitea): each request would take the
    // client's whole timeout (30 s).
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "hung");
    let sha = repo.commit("main", "init").write("README.md", "x\n").push();
    let server = Server::start_with(&gitea, &[("PIPEWRIGHT_GITEA__URL", url.as_str())]).await;
    queue_status(&server, &repo, &sha, "never answered").await;
    server.app.reporter_wake.notify_one();
    tokio::time::timeout(Duration::from_secs(30), accepted.recv())
        .await
        .expect("the reporter to call the hung Gitea")
        .unwrap();
    // Well under the client's timeout of 30 s, well over the drain's 5 s.
    tokio::time::timeout(Duration::from_secs(20), server.stop_keeping_data())
        .await
        .expect("the server to stop while Gitea hangs");
    holder.abort();
}

/// Waits until a run of the pipeline is at its `hold` step (so its checkout is done).
async fn held(sync: &Path, sha: &str) {
    let marker = sync.join(format!("held-{sha}"));
    eventually(
        Duration::from_secs(90),
        "the run at its hold step",
        || async { marker.exists().then_some(()) },
    )
    .await;
}

/// Lets the run at its `hold` step go on, and waits until it has ended.
async fn release_and_finish(server: &Server, sync: &Path, sha: &str) {
    std::fs::write(sync.join(format!("go-{sha}")), "").unwrap();
    eventually(Duration::from_secs(120), "the run to end", || async {
        let runs = server.runs().await;
        runs.iter()
            .find(|r| r["sha"] == sha)
            .filter(|r| !matches!(r["state"].as_str(), Some("queued" | "running")))
            .map(|r| assert_eq!(r["state"], "success", "{r:#}"))
    })
    .await;
}

fn plan_comments(repo: &Repo, number: u64, plan: &str) -> Option<Vec<String>> {
    let bodies: Vec<String> = repo.comments(number).into_iter().map(|c| c.body).collect();
    bodies.iter().any(|b| b.contains(plan)).then_some(bodies)
}

fn module(resources: &[&str]) -> String {
    resources
        .iter()
        .map(|r| format!("resource \"terraform_data\" \"{r}\" {{\n  input = \"{r}\"\n}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_comment_waits_for_gitea_also_across_a_restart() {
    let sync = tempfile::tempdir().unwrap();
    let sync_dir = sync.path().display().to_string();
    let gitea = FakeGitea::start().await;
    let policy = format!("[[repos]]\nname = \"org/plans\"\nhost_volumes = [\"{sync_dir}\"]\n");
    let server = Server::start_with_config(&gitea, &[], &policy).await;
    let repo = gitea.create_repo("org", "plans");
    // The hold step keeps the run going until the test has taken Gitea down.
    let pipeline = format!(
        "on: pull_request\nvolumes: [\"{sync_dir}:/sync\"]\nsteps:\n  - name: hold\n    image: {IMAGE}\n    timeout: 2m\n    run: |\n      touch /sync/held-$PIPEWRIGHT_SHA\n      until [ -e /sync/go-$PIPEWRIGHT_SHA ]; do sleep 0.1; done\n  - name: tofu\n    uses: tofu\n    with: {{ path: iac, image: {TOOLS} }}\n"
    );
    repo.commit("main", "init")
        .write(".pipewright/plans.yml", &pipeline)
        .write("iac/main.tf", &module(&[]))
        .push();
    repo.create_branch("dns", "main");
    let p1 = repo
        .commit("dns", "dns")
        .write("iac/main.tf", &module(&["dns"]))
        .push();
    let number = repo.open_pull("dns", "main");
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );

    // Gitea goes down before the run ends: the comment waits in the outbox.
    held(sync.path(), &p1).await;
    gitea.set_down(true);
    release_and_finish(&server, sync.path(), &p1).await;
    assert!(repo.comments(number).is_empty());
    gitea.set_down(false);
    let comments = eventually(Duration::from_secs(90), "the plan comment", || async {
        plan_comments(&repo, number, "plan: 1 to add")
    })
    .await;
    assert_eq!(comments.len(), 1, "{comments:?}");

    // Down again at the end of the next run, and Pipewright restarts before Gitea is
    // back: the restarted server edits the comment.
    let p2 = repo
        .commit("dns", "mail")
        .write("iac/main.tf", &module(&["dns", "mail"]))
        .push();
    repo.sync_pull(number);
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Synchronized))
            .await,
        202
    );
    held(sync.path(), &p2).await;
    gitea.set_down(true);
    release_and_finish(&server, sync.path(), &p2).await;
    let data = server.stop_keeping_data().await;
    let server = Server::start_in(data, &gitea, &[], &policy).await;
    gitea.set_down(false);
    let comments = eventually(
        Duration::from_secs(90),
        "the edited plan comment",
        || async { plan_comments(&repo, number, "plan: 2 to add") },
    )
    .await;
    assert_eq!(comments.len(), 1, "edited, not added: {comments:?}");
    server.stop().await;
}

//! Offline dispatch: with Gitea down, a pipeline with `on.dispatch.offline: true` runs from
//! the commit the mirror last fetched (not from what Gitea has since), others are refused
//! with 502 naming Gitea, and the run's status reaches Gitea once it is back.

use std::time::Duration;

use pipewright_tests::fake_gitea::FakeGitea;
use serde_json::{Value, json};

use crate::serve::{API_TOKEN, Server, client, eventually, final_statuses, step};

async fn dispatch(server: &Server, repo: &str, pipeline: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!(
            "{}/api/v1/repos/{repo}/pipelines/{pipeline}/dispatch",
            server.url
        ))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_dispatch_runs_from_the_mirror_while_gitea_is_down() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "lab");
    let recover = format!(
        "on:\n  dispatch: {{ offline: true }}\nsteps:\n{}",
        step("restore", "echo \"restoring at $PIPEWRIGHT_SHA\"")
    );
    let plain = format!(
        "on: dispatch\nsteps:\n{}",
        step("other", "echo should not run")
    );
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "lab\n")
        .push();
    let c1 = repo
        .commit("main", "pipelines")
        .write(".pipewright/recover.yml", &recover)
        .write(".pipewright/plain.yml", &plain)
        .write(
            ".pipewright/seen.yml",
            &format!("on: push\nsteps:\n{}", step("seen", "true")),
        )
        .push();
    // The push is fetched (its run has ended): the mirror knows c1, the repository is known.
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let seen = final_statuses(&repo, &c1, "pipewright/seen").await;
    assert_eq!(seen.last().unwrap().state, "success", "{seen:?}");
    // Gitea moves on (no webhook reaches Pipewright), then goes down.
    let c2 = repo
        .commit("main", "later")
        .write("later.txt", "x\n")
        .push();
    repo.create_branch("fresh", "main");
    gitea.set_down(true);

    // A pipeline without `offline`: refused, naming Gitea, as before.
    let (code, body) = dispatch(&server, "org/lab", "plain", json!({})).await;
    assert_eq!(code, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Gitea: ") && message.contains("on.dispatch.offline"),
        "{message}"
    );
    // A branch the mirror never fetched is not taken on trust.
    let (code, body) = dispatch(&server, "org/lab", "recover", json!({ "ref": "fresh" })).await;
    assert_eq!(code, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("offline: org/lab has no branch or tag `fresh`"),
        "{body}"
    );
    // A repository Pipewright never fetched cannot run offline.
    let (code, body) = dispatch(&server, "org/unknown", "recover", json!({})).await;
    assert_eq!(code, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("Gitea: "),
        "{body}"
    );

    // The offline pipeline runs from the mirror's commit of main: c1, not Gitea's c2.
    let (code, run) = dispatch(&server, "org/lab", "recover", json!({ "ref": "main" })).await;
    assert_eq!(code, 201, "{run}");
    assert_eq!(run["sha"], c1.as_str(), "{run}");
    assert_ne!(c1, c2);
    let id = run["id"].as_i64().unwrap();
    let done = eventually(
        Duration::from_secs(90),
        "the offline run to end",
        || async {
            let run = server.api(&format!("/api/v1/runs/{id}")).await;
            (run["state"] != "queued" && run["state"] != "running").then_some(run)
        },
    )
    .await;
    assert_eq!(done["state"], "success", "{done:#}");
    assert_eq!(server.log(id, 0).await, format!("restoring at {c1}\n"));
    assert!(
        !repo
            .statuses(&c1)
            .iter()
            .any(|s| s.context == "pipewright/recover"),
        "Gitea is down: no status could reach it"
    );

    // The command line goes through the same API.
    let cli = |pipeline: &str| {
        let out = std::process::Command::new(crate::exec_cli::pipewright_bin())
            .args(["dispatch", "--server", &server.url, "--repo", "org/lab"])
            .args(["--pipeline", pipeline])
            .env("PIPEWRIGHT_API_TOKEN", API_TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = cli("plain");
    assert!(!ok && text.contains("Gitea: "), "{text}");
    let (ok, text) = cli("recover");
    assert!(ok && text.starts_with("queued run "), "{text}");
    let id = eventually(Duration::from_secs(30), "the second run", || async {
        let runs = server.runs().await;
        runs.iter()
            .filter(|r| r["pipeline"] == "recover")
            .filter_map(|r| r["id"].as_i64())
            .find(|&other| other != id)
    })
    .await;
    let done = eventually(Duration::from_secs(90), "the second run to end", || async {
        let run = server.api(&format!("/api/v1/runs/{id}")).await;
        (run["state"] != "queued" && run["state"] != "running").then_some(run)
    })
    .await;
    assert_eq!(done["state"], "success", "{done:#}");
    assert_eq!(done["sha"], c1.as_str(), "{done:#}");

    // Gitea is back: the outbox delivers the run's status.
    gitea.set_down(false);
    let statuses = final_statuses(&repo, &c1, "pipewright/recover").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    assert!(repo.statuses(&c2).is_empty());
    server.stop().await;
}

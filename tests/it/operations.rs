//! Running the server as an operator does: its own log (format, level, colour) and the
//! warnings it gives at start about settings it cannot work without.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{exec_cli::pipewright_bin, serve::eventually};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts `pipewright serve` with only these settings (and PATH), waits until it answers,
/// stops it, and gives back what it wrote to its standard error.
async fn serve_log(settings: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let log_path = data.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(pipewright_bin())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPEWRIGHT_SERVER__LISTEN", &addr)
        .env(
            "PIPEWRIGHT_SERVER__DATA_DIR",
            data.path().join("data").display().to_string(),
        )
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("failed to start pipewright serve");
    let url = format!("http://{addr}");
    eventually(
        Duration::from_secs(30),
        "the server to answer /healthz",
        || async {
            crate::serve::client()
                .get(format!("{url}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        },
    )
    .await;
    // A delivery without a configured secret: refused, and logged.
    let refused = crate::serve::client()
        .post(format!("{url}/hooks/gitea"))
        .header("x-gitea-event", "push")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::read_to_string(&log_path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_and_name_every_missing_essential() {
    let log = serve_log(&[
        ("PIPEWRIGHT_LOG__FORMAT", "json"),
        ("PIPEWRIGHT_LOG__LEVEL", "info"),
    ])
    .await;
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let warnings: Vec<&str> = events
        .iter()
        .filter(|e| e["level"] == "WARN")
        .filter_map(|e| e["message"].as_str())
        .collect();
    for essential in [
        "[gitea].webhook_secret",
        "[gitea].url",
        "[gitea].token",
        "[api].tokens",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(essential)),
            "no warning about {essential}: {warnings:#?}"
        );
    }
    // Events carry their fields and where they come from.
    let serving = events
        .iter()
        .find(|e| e["message"] == "pipewright serving")
        .unwrap_or_else(|| panic!("no start event: {log}"));
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["target"], "pipewright::server");
    assert!(
        serving["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(events.iter().all(|e| e["timestamp"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_have_no_colour_and_rust_log_wins_over_the_level() {
    let log = serve_log(&[
        ("PIPEWRIGHT_LOG__LEVEL", "debug"),
        ("RUST_LOG", "warn"),
        ("PIPEWRIGHT_GITEA__URL", "http://127.0.0.1:9"),
        ("PIPEWRIGHT_API__READ_PUBLIC", "true"),
    ])
    .await;
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(
        !log.contains(" INFO ") && !log.contains(" DEBUG "),
        "RUST_LOG=warn let lower levels through: {log}"
    );
    assert!(log.contains("[gitea].webhook_secret"), "{log}");
    assert!(
        !log.contains("[gitea].url"),
        "a warning about a URL that is set: {log}"
    );
    assert!(
        !log.contains("nobody can use the API"),
        "read_public = true still warned: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_sees_a_run_go_from_queued_to_running() {
    use crate::serve::{API_TOKEN, SECRET, Server, client, of_context, step};
    use pipewright_tests::fake_gitea::FakeGitea;

    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "lab");
    let base = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let head = repo
        .commit("main", "ci")
        .write(
            ".pipewright/ci.yml",
            &format!("on: push\nsteps:\n{}", step("long", "sleep 300")),
        )
        .push();
    let (code, _) = repo
        .push_event("main", &base, &head)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    let running = eventually(
        Duration::from_secs(120),
        "a pending \"running\" status",
        || async {
            of_context(&repo.statuses(&head), "pipewright/ci")
                .into_iter()
                .find(|s| s.state == "pending" && s.description == "running")
        },
    )
    .await;
    let id = running.target_url.rsplit('/').next().unwrap();
    let run = server.api(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["state"], "running", "{run}");
    let cancelled = client()
        .post(format!("{}/api/v1/runs/{id}/cancel", server.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success());
    let last = eventually(Duration::from_secs(60), "the final status", || async {
        of_context(&repo.statuses(&head), "pipewright/ci")
            .pop()
            .filter(|s| s.state != "pending")
    })
    .await;
    assert_eq!(last.state, "error", "{last:?}");
    server.stop().await;
}

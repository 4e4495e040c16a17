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

/// `pipewright gitea install-hook` with these settings and arguments: exit code, stdout,
/// stderr.
fn install_hook(
    gitea: &pipewright_tests::fake_gitea::FakeGitea,
    secret: &str,
    args: &[&str],
) -> (i32, String, String) {
    let out = Command::new(pipewright_bin())
        .args(["gitea", "install-hook"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPEWRIGHT_SERVER__PUBLIC_URL", "https://ci.example.lab")
        .env("PIPEWRIGHT_GITEA__URL", gitea.url())
        .env("PIPEWRIGHT_GITEA__TOKEN", gitea.token())
        .env("PIPEWRIGHT_GITEA__WEBHOOK_SECRET", secret)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_hook_creates_the_webhook_then_updates_it() {
    use pipewright_tests::fake_gitea::FakeGitea;

    let gitea = FakeGitea::start().await;
    gitea.create_repo("org", "app");
    gitea.create_repo("org", "other");

    let (code, out, err) = install_hook(&gitea, "first-secret", &["--repo", "org/app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("created hook "), "{out}");
    let hooks = gitea.hooks("org/app");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!(hook.url, "https://ci.example.lab/hooks/gitea");
    assert_eq!(
        (hook.kind.as_str(), hook.content_type.as_str(), hook.active),
        ("gitea", "json", true)
    );
    assert_eq!(hook.secret, "first-secret");
    for event in [
        "push",
        "pull_request_only",
        "pull_request_sync",
        "issue_comment",
        "pull_request_comment",
    ] {
        assert!(
            hook.events.iter().any(|e| e == event),
            "{event} missing: {:?}",
            hook.events
        );
    }
    assert!(!out.contains("first-secret") && !err.contains("first-secret"));

    // Again, with a rotated secret: the same hook, updated, and no second one.
    let (code, out, err) = install_hook(&gitea, "rotated", &["--repo", "org/app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(
            "updated hook {} of the repository org/app: https://ci.example.lab/hooks/gitea",
            hook.id
        )
    );
    let hooks = gitea.hooks("org/app");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].secret, "rotated");
    assert!(gitea.hooks("org/other").is_empty());

    // An organisation's hook covers its repositories.
    let (code, out, err) = install_hook(&gitea, "rotated", &["--org", "org"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(gitea.hooks("org").len(), 1);

    // Bad names never reach Gitea's API as a path.
    for args in [
        ["--repo", "../admin"],
        ["--repo", "org/app/../x"],
        ["--org", "a/b"],
    ] {
        let (code, _, err) = install_hook(&gitea, "s", &args);
        assert_ne!(code, 0, "{args:?} accepted");
        assert!(err.contains(args[1]), "{args:?}: {err}");
    }
    let (code, _, err) = install_hook(&gitea, "s", &["--repo", "org/missing"]);
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn serve_without_git_on_path_says_it_needs_git() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(pipewright_bin())
        .arg("serve")
        .env_clear()
        .env("PATH", data.path())
        .env("PIPEWRIGHT_SERVER__LISTEN", free_addr())
        .env(
            "PIPEWRIGHT_SERVER__DATA_DIR",
            data.path().join("data").display().to_string(),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served without git: {stderr}");
    assert!(
        stderr.contains("git is needed on PATH"),
        "the error does not name git: {stderr}"
    );
}

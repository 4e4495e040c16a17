//! `pipewright serve` end to end: signed Gitea deliveries from the fake Gitea, real git over
//! HTTP, real containers, commit statuses back to the fake Gitea.

use std::{
    future::Future,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use pipewright::server::{App, serve};
use pipewright_containers::{CancellationToken, SharedExecutor};
use pipewright_tests::NoEngine;
use pipewright_tests::fake_gitea::{
    DeliverOptions, Delivery, FakeGitea, PullAction, Repo, SignatureMode, Status,
};
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinHandle};

pub(crate) const SECRET: &str = "webhook-secret";
pub(crate) const API_TOKEN: &str = "api-token-for-tests";
pub(crate) const IMAGE: &str = "pipewright-test/busybox:1";

/// The container engine of a test server.
enum Engine {
    /// The machine's Docker engine.
    Docker,
    /// None: the test runs no step.
    None,
}

/// A Pipewright server in this process, on its own data directory.
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) app: Arc<App>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
}

fn env_for(gitea: &FakeGitea, addr: &str, data: &std::path::Path) -> Vec<(String, String)> {
    [
        ("PIPEWRIGHT_SERVER__LISTEN", addr.to_string()),
        ("PIPEWRIGHT_SERVER__PUBLIC_URL", format!("http://{addr}")),
        ("PIPEWRIGHT_SERVER__DATA_DIR", data.display().to_string()),
        ("PIPEWRIGHT_GITEA__URL", gitea.url().to_string()),
        ("PIPEWRIGHT_GITEA__TOKEN", gitea.token().to_string()),
        ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET", SECRET.to_string()),
        ("PIPEWRIGHT_API__TOKENS", API_TOKEN.to_string()),
        ("PIPEWRIGHT_DOCKER__STOP_GRACE", "2s".to_string()),
        ("PIPEWRIGHT_AGENT__CAPACITY", "4".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Server {
    pub(crate) async fn start(gitea: &FakeGitea) -> Server {
        Server::start_with(gitea, &[]).await
    }

    /// A server with more settings (`PIPEWRIGHT_…` pairs) than the defaults of these tests.
    pub(crate) async fn start_with(gitea: &FakeGitea, extra: &[(&str, &str)]) -> Server {
        Server::start_with_config(gitea, extra, "").await
    }

    /// A server with a configuration file too (for what the environment cannot say, like
    /// `[[repos]]`).
    pub(crate) async fn start_with_config(
        gitea: &FakeGitea,
        extra: &[(&str, &str)],
        toml: &str,
    ) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), gitea, extra, toml).await
    }

    /// A server on a given data directory (one an earlier server used, say).
    pub(crate) async fn start_in(
        data: tempfile::TempDir,
        gitea: &FakeGitea,
        extra: &[(&str, &str)],
        toml: &str,
    ) -> Server {
        Server::start_on(data, gitea, extra, toml, Engine::Docker).await
    }

    /// A server with no container engine (see [`NoEngine`]): for tests that run no step.
    pub(crate) async fn start_without_engine(
        gitea: &FakeGitea,
        extra: &[(&str, &str)],
        toml: &str,
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        Server::start_on(data, gitea, extra, toml, Engine::None).await
    }

    async fn start_on(
        data: tempfile::TempDir,
        gitea: &FakeGitea,
        extra: &[(&str, &str)],
        toml: &str,
        engine: Engine,
    ) -> Server {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("PIPEWRIGHT_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut env = env_for(gitea, &addr, data.path());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let file = data.path().join("pipewright.toml");
        std::fs::write(&file, toml).unwrap();
        let config = pipewright::config::load(Some(&file), env).expect("test configuration");
        let app = match engine {
            Engine::Docker => App::new(config)
                .await
                .expect("the server's parts (is the Docker engine running?)"),
            Engine::None => App::with_executor(config, SharedExecutor::new("none", NoEngine))
                .await
                .expect("the server's parts"),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app.clone(), shutdown.clone()));
        Server {
            url: format!("http://{addr}"),
            app,
            shutdown,
            task: Some(task),
            _data: data,
        }
    }

    /// Delivers a signed webhook; returns the HTTP status of the answer.
    pub(crate) async fn deliver(&self, delivery: Delivery) -> u16 {
        delivery.deliver(&self.hook(), SECRET).await.0
    }

    /// The stored log of a run's step.
    pub(crate) async fn log(&self, run: i64, step: i64) -> String {
        client()
            .get(format!("{}/api/v1/runs/{run}/steps/{step}/log", self.url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) fn hook(&self) -> String {
        format!("{}/hooks/gitea", self.url)
    }

    pub(crate) async fn api(&self, path: &str) -> Value {
        get_json(&self.url, path).await
    }

    pub(crate) async fn runs(&self) -> Vec<Value> {
        self.api("/api/v1/runs?limit=500")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops the server and hands back its data directory.
    pub(crate) async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self._data
    }
}

/// The tests' client of the API. Unlike Gitea's webhook sender (5 s, as the fake Gitea's
/// deliveries), it waits as long as a busy machine may need: a dispatch fetches from git.
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .expect("cannot build an HTTP client")
}

pub(crate) async fn get_json(base: &str, path: &str) -> Value {
    let resp = client()
        .get(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Polls `check` until it gives a value, failing after `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn of_context(statuses: &[Status], context: &str) -> Vec<Status> {
    statuses
        .iter()
        .filter(|s| s.context == context)
        .cloned()
        .collect()
}

/// The statuses of a context once the last is final, consecutive ones of the same state
/// taken as one (the newest): `pending` "queued" then `pending` "running" is one pending,
/// or only one of them when the reporter sent the newest alone.
pub(crate) async fn final_statuses(repo: &Repo, sha: &str, context: &str) -> Vec<Status> {
    let mut list = eventually(
        Duration::from_secs(240),
        &format!("a final {context} status on {sha}"),
        || async {
            let list = of_context(&repo.statuses(sha), context);
            list.last()
                .is_some_and(|s| s.state != "pending")
                .then_some(list)
        },
    )
    .await;
    list.reverse();
    list.dedup_by(|later, earlier| later.state == earlier.state);
    list.reverse();
    list
}

pub(crate) fn states(list: &[Status]) -> Vec<&str> {
    list.iter().map(|s| s.state.as_str()).collect()
}

/// A run step in the local test image.
pub(crate) fn step(name: &str, script: &str) -> String {
    format!(
        "  - name: {name}\n    image: {IMAGE}\n    run: |\n{}\n",
        indent(script, 6)
    )
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}", " ".repeat(by)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_the_pipelines_its_paths_select_and_reports_them() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("arcodange-org", "factory");
    // The factory's triggers, with `run:` steps in the local image standing in for the
    // `tofu` action and Vault (built by later work).
    let iac = format!(
        "on:\n  push:\n    branches: [main]\n    paths: [\"iac/*.tf\", \"iac/**/*.tf\"]\n  pull_request:\n    branches: [main]\n    paths: [\"iac/**/*.tf\"]\nconcurrency:\n  group: factory-iac\nsteps:\n{}",
        step("tofu", "echo applying iac")
    );
    let postgres = format!(
        "on:\n  push:\n    branches: [main]\n    paths: [\"postgres/**/*.tf\", \"postgres/**/*.tfvars\"]\nconcurrency:\n  group: factory-postgres\nsteps:\n{}{}",
        step(
            "plan",
            "test -f postgres/iac/main.tf\necho planned > /workspace/plan.txt"
        ),
        step(
            "apply",
            "cat plan.txt\necho \"sha $PIPEWRIGHT_SHA on $PIPEWRIGHT_BRANCH\""
        )
    );
    let first = repo
        .commit("main", "factory")
        .write(".pipewright/iac.yml", &iac)
        .write(".pipewright/postgres.yml", &postgres)
        .write("iac/main.tf", "resource \"terraform_data\" \"edge\" {}\n")
        .write(
            "postgres/iac/main.tf",
            "resource \"terraform_data\" \"databases\" {}\n",
        )
        .write("README.md", "# factory\n")
        .push();
    let second = repo
        .commit("main", "add a database")
        .write(
            "postgres/iac/main.tf",
            "resource \"terraform_data\" \"databases\" { input = [\"erp\"] }\n",
        )
        .push();
    let (code, body) = repo
        .push_event("main", &first, &second)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202, "{body}");

    let postgres_statuses = final_statuses(&repo, &second, "pipewright/postgres").await;
    assert_eq!(
        states(&postgres_statuses),
        ["pending", "success"],
        "{postgres_statuses:?}"
    );
    let runs = server.runs().await;
    assert_eq!(runs.len(), 1, "only postgres runs: {runs:#?}");
    let run_id = runs[0]["id"].as_i64().unwrap();
    for status in &postgres_statuses {
        assert_eq!(status.target_url, format!("{}/runs/{run_id}", server.url));
    }
    assert!(
        of_context(&repo.statuses(&second), "pipewright/iac").is_empty(),
        "iac is not selected"
    );
    // The steps shared the workspace, and the logs are stored.
    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "success");
    assert_eq!(run["steps"][1]["state"], "success");
    let log = server.log(run_id, 1).await;
    assert_eq!(log, format!("planned\nsha {second} on main\n"));
    // The API needs a token.
    let anonymous = client()
        .get(format!("{}/api/v1/runs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // A push touching iac/ runs iac.
    let third = repo
        .commit("main", "edge")
        .write("iac/dns/records.tf", "# records\n")
        .push();
    let (code, _) = repo
        .push_event("main", &second, &third)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    assert_eq!(
        states(&final_statuses(&repo, &third, "pipewright/iac").await),
        ["pending", "success"]
    );
    assert!(of_context(&repo.statuses(&third), "pipewright/postgres").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_invalid_files_get_their_own_statuses() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "app");
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "pipelines")
        .write(
            ".pipewright/ok.yml",
            &format!("on: push\nsteps:\n{}", step("hello", "echo hello")),
        )
        .write(
            ".pipewright/tests.yml",
            &format!(
                "on: push\nsteps:\n{}{}",
                step("unit", "echo testing\nexit 3"),
                step("never", "echo no")
            ),
        )
        .write(
            ".pipewright/broken.yml",
            &format!("on: push\nsteps:\n{}    timout: 5m\n", step("x", "true")),
        )
        .push();
    let (code, _) = repo
        .push_event("main", &first, &second)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    let ok = final_statuses(&repo, &second, "pipewright/ok").await;
    assert_eq!(states(&ok), ["pending", "success"]);
    let tests = final_statuses(&repo, &second, "pipewright/tests").await;
    assert_eq!(tests.last().unwrap().state, "failure");
    assert_eq!(
        tests.last().unwrap().description,
        "step unit failed with exit code 3"
    );
    let broken = final_statuses(&repo, &second, "pipewright/broken").await;
    assert_eq!(
        broken.len(),
        1,
        "an invalid file gets one error status: {broken:?}"
    );
    assert_eq!(broken[0].state, "error");
    assert_eq!(
        broken[0].description,
        "invalid pipeline: .pipewright/broken.yml:7:5: unknown key `timout` in step; did you mean `timeout`?"
    );
    let runs = server.runs().await;
    let failed = runs.iter().find(|r| r["pipeline"] == "tests").unwrap();
    let run = server.api(&format!("/api/v1/runs/{}", failed["id"])).await;
    assert_eq!(run["steps"][0]["exit_code"], 3);
    assert_eq!(run["steps"][1]["state"], "not_run");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_get_statuses_on_their_head_and_new_pushes_cancel_older_plans() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "infra");
    let plan = format!(
        "on:\n  pull_request:\n    branches: [main]\nconcurrency:\n  cancel_in_progress: true\nsteps:\n{}",
        step(
            "plan",
            "if [ -f slow.txt ]; then echo slow; sleep 60; fi\necho \"planned PR $PIPEWRIGHT_PR at $PIPEWRIGHT_REF\""
        )
    );
    repo.commit("main", "init")
        .write(".pipewright/plan.yml", &plan)
        .push();
    repo.create_branch("feature", "main");
    let slow = repo
        .commit("feature", "slow change")
        .write("slow.txt", "zzz\n")
        .push();
    let number = repo.open_pull("feature", "main");
    let (code, body) = repo
        .pull_request_event(number, PullAction::Opened)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202, "{body}");
    eventually(
        Duration::from_secs(60),
        "the first plan to be running",
        || async {
            server
                .runs()
                .await
                .iter()
                .any(|r| r["state"] == "running")
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "its step to have started",
        || async {
            let runs = server.runs().await;
            let id = runs.iter().find(|r| r["state"] == "running")?["id"].as_i64()?;
            let run = server.api(&format!("/api/v1/runs/{id}")).await;
            (run["steps"][0]["state"] == "running").then_some(())
        },
    )
    .await;

    let fast = repo.commit("feature", "fast now").delete("slow.txt").push();
    repo.sync_pull(number);
    let (code, _) = repo
        .pull_request_event(number, PullAction::Synchronized)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    let newer = final_statuses(&repo, &fast, "pipewright/plan").await;
    assert_eq!(states(&newer), ["pending", "success"]);
    let older = final_statuses(&repo, &slow, "pipewright/plan").await;
    assert_eq!(states(&older), ["pending", "error"]);
    assert!(older[1].description.starts_with("cancelled"), "{older:?}");
    let runs = server.runs().await;
    assert_eq!(runs.len(), 2);
    let newest = server.api(&format!("/api/v1/runs/{}", runs[0]["id"])).await;
    assert_eq!(newest["pull_request"], number);
    let log = client()
        .get(format!(
            "{}/api/v1/runs/{}/steps/0/log",
            server.url, runs[0]["id"]
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        log,
        format!("planned PR {number} at refs/pull/{number}/head\n")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_duplicates_and_events_that_run_nothing() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "svc");
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(
            ".pipewright/ci.yml",
            &format!(
                "on:\n  push:\n    tags: [\"v*\"]\n    branches: [main]\nsteps:\n{}",
                step("wait", "sleep 2\necho done")
            ),
        )
        .push();
    let push = repo.push_event("main", &first, &second);

    // Bad, empty or missing signatures: 401, nothing stored.
    for mode in [
        SignatureMode::Wrong,
        SignatureMode::Empty,
        SignatureMode::Missing,
    ] {
        let options = DeliverOptions {
            signature: mode,
            ..DeliverOptions::new(SECRET)
        };
        let (code, _) = push.deliver_with(&server.hook(), &options).await;
        assert_eq!(code, 401, "{mode:?}");
    }
    assert_eq!(server.app.store.delivery_count().await.unwrap(), 0);

    // The same delivery twice: one run. A second hook's delivery of the same event (another
    // id, same body) while the run is still going: nothing more.
    let (code, _) = push.deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 202);
    let (code, body) = push.deliver(&server.hook(), SECRET).await;
    assert_eq!((code, body.contains("duplicate")), (200, true), "{body}");
    let (code, _) = push.replay().deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 202);
    assert_eq!(
        states(&final_statuses(&repo, &second, "pipewright/ci").await),
        ["pending", "success"]
    );
    assert_eq!(server.runs().await.len(), 1);
    // A later replay (Gitea's "Replay" button, or a signed body sent again with a fresh
    // delivery id) runs nothing: that push has run. A re-run is asked of Pipewright.
    let (code, _) = push.replay().deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 202);
    eventually(
        Duration::from_secs(30),
        "the replay to be processed",
        || async {
            let deliveries = server.app.store.delivery_count().await.unwrap();
            let pending = server.app.store.pending_deliveries(10).await.unwrap();
            (deliveries == 3 && pending.is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(server.runs().await.len(), 1, "a replayed push runs nothing");
    let first_run = server.runs().await[0]["id"].as_i64().unwrap();
    let resp = client()
        .post(format!("{}/api/v1/runs/{first_run}/rerun", server.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    eventually(Duration::from_secs(60), "the re-run to finish", || async {
        let runs = server.runs().await;
        (runs.len() == 2 && runs.iter().all(|r| r["state"] == "success")).then_some(())
    })
    .await;

    // A form-encoded delivery is verified over its payload field.
    let tag = repo.create_tag("v1.0.0", &second);
    let options = DeliverOptions {
        content_type: pipewright_tests::fake_gitea::ContentType::Form,
        ..DeliverOptions::new(SECRET)
    };
    let (code, body) = repo
        .new_tag_event("v1.0.0")
        .deliver_with(&server.hook(), &options)
        .await;
    assert_eq!(code, 202, "{body}");
    eventually(Duration::from_secs(60), "the tag's run", || async {
        server
            .runs()
            .await
            .iter()
            .any(|r| r["ref"] == "refs/tags/v1.0.0" && r["state"] == "success")
            .then_some(())
    })
    .await;
    let _ = tag;

    // Events that run nothing.
    let (code, body) = repo.test_delivery().deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = repo
        .status_event(&second, "success", "pipewright/ci")
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    let (code, _) = repo
        .release_event("v1.0.0")
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    let (code, _) = repo
        .tag_deleted_event("v1.0.0", &second)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    // Unparseable JSON with a valid signature: 400.
    let garbage = pipewright_tests::fake_gitea::Delivery::from_body("push", b"{not json".to_vec());
    let (code, _) = garbage.deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 400);
    // Over 5 MiB: 413.
    let huge = pipewright_tests::fake_gitea::Delivery::from_body("push", vec![b' '; 6 << 20]);
    let (code, _) = huge.deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 413);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.runs().await.len(), 3, "nothing else ran");
    server.stop().await;
}

/// The real binary `pipewright serve`, which tests may kill with SIGKILL.
pub(crate) struct Process {
    child: Child,
}

impl Process {
    pub(crate) fn start(gitea: &FakeGitea, addr: &str, data: &std::path::Path) -> Process {
        Process::start_with(gitea, addr, data, &[], Stdio::null())
    }

    /// With more settings, and its standard error (its log) going to `stderr`.
    pub(crate) fn start_with(
        gitea: &FakeGitea,
        addr: &str,
        data: &std::path::Path,
        extra: &[(&str, &str)],
        stderr: Stdio,
    ) -> Process {
        let child = Command::new(crate::exec_cli::pipewright_bin())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env_for(gitea, addr, data))
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("failed to start pipewright serve");
        Process { child }
    }

    pub(crate) async fn ready(&self, url: &str) {
        eventually(
            Duration::from_secs(30),
            "the server to answer /healthz",
            || async {
                client()
                    .get(format!("{url}/healthz"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
    }

    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answered_before_a_crash_runs_exactly_once_after_restart() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "durable");
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(
            ".pipewright/ci.yml",
            &format!("on: push\nsteps:\n{}", step("once", "echo ran")),
        )
        .push();
    let data = tempfile::tempdir().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let url = format!("http://{addr}");
    let server = Process::start(&gitea, &addr, data.path());
    server.ready(&url).await;
    let (code, _) = repo
        .push_event("main", &first, &second)
        .deliver(&format!("{url}/hooks/gitea"), SECRET)
        .await;
    assert_eq!(code, 202);
    server.kill();

    let restarted = Process::start(&gitea, &addr, data.path());
    restarted.ready(&url).await;
    let statuses = final_statuses(&repo, &second, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    let runs = get_json(&url, "/api/v1/runs").await;
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "exactly one run: {runs:#}"
    );
    // Give a second run, if there were one, the time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get_json(&url, "/api/v1/runs")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        of_context(&repo.statuses(&second), "pipewright/ci")
            .iter()
            .filter(|s| s.state == "success")
            .count(),
        1
    );
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_runs_a_pipeline_by_hand_with_checked_inputs() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "ops");
    let recover = format!(
        "on:\n  dispatch:\n    confirm: true\n    inputs:\n      date: {{ type: string, required: false }}\n      dry: {{ type: boolean, default: \"false\" }}\nsteps:\n{}",
        step(
            "restore",
            "echo \"restoring ${PIPEWRIGHT_INPUT_DATE:-latest} dry=$PIPEWRIGHT_INPUT_DRY on $PIPEWRIGHT_REF ($PIPEWRIGHT_EVENT)\""
        )
    );
    let head = repo
        .commit("main", "ops")
        .write(".pipewright/recover.yml", &recover)
        .push();
    let url = format!(
        "{}/api/v1/repos/org/ops/pipelines/recover/dispatch",
        server.url
    );
    let post = |body: Value, token: Option<&'static str>| {
        let mut req = client().post(&url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        }
    };
    assert_eq!(post(serde_json::json!({}), None).await.0, 401);
    let (code, body) = post(
        serde_json::json!({ "inputs": { "date": "20260413" } }),
        Some(API_TOKEN),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing input `confirm`"),
        "{body}"
    );
    let (code, body) = post(
        serde_json::json!({ "inputs": { "confirm": "recover", "dry": "maybe", "when": "now" } }),
        Some(API_TOKEN),
    )
    .await;
    assert_eq!(code, 422);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("unknown input `when`")
            && message.contains("input `dry`: expected true or false"),
        "{message}"
    );
    let missing = client()
        .post(format!(
            "{}/api/v1/repos/org/ops/pipelines/nope/dispatch",
            server.url
        ))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The command line, as a person runs it.
    let out = Command::new(crate::exec_cli::pipewright_bin())
        .args([
            "dispatch",
            "--server",
            &server.url,
            "--repo",
            "org/ops",
            "--pipeline",
            "recover",
            "--input",
            "date=20260413",
            "--input",
            "confirm=recover",
        ])
        .env("PIPEWRIGHT_API_TOKEN", API_TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("queued run "), "{stdout}");
    assert_eq!(
        states(&final_statuses(&repo, &head, "pipewright/recover").await),
        ["pending", "success"]
    );
    let runs = server.runs().await;
    let id = runs[0]["id"].as_i64().unwrap();
    assert_eq!(runs[0]["event"], "dispatch");
    let log = server.log(id, 0).await;
    assert_eq!(
        log,
        "restoring 20260413 dry=false on refs/heads/main (dispatch)\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_once_per_due_minute_on_the_default_branch() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "nightly");
    let nightly = format!(
        "on:\n  schedule:\n    - cron: \"0 4 * * *\"\nsteps:\n{}",
        step(
            "drift",
            "echo \"checking $PIPEWRIGHT_BRANCH on $PIPEWRIGHT_EVENT\""
        )
    );
    // A push runs nothing here, but makes the repository known.
    let c1 = push_and_know(&server, &repo, "nightly", &nightly).await;
    assert!(server.runs().await.is_empty());

    let four_am = 1_795_320_030; // 2026-11-22T04:00:30Z
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, four_am).await,
        Ok(1)
    );
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, four_am + 20).await,
        Ok(0),
        "once per minute"
    );
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, four_am + 60).await,
        Ok(0),
        "not due at 04:01"
    );
    assert_eq!(
        states(&final_statuses(&repo, &c1, "pipewright/nightly").await),
        ["pending", "success"]
    );
    let runs = server.runs().await;
    assert_eq!(
        (runs[0]["event"].as_str(), runs[0]["actor"].as_str()),
        (Some("schedule"), Some("schedule"))
    );
    let id = runs[0]["id"].as_i64().unwrap();
    assert_eq!(server.log(id, 0).await, "checking main on schedule\n");
    server.stop().await;
}

/// Pushes `.pipewright/<name>.yml` to `main` after a first commit, delivers the push, and
/// waits until the server knows the repository (as schedules need); the pushed commit.
pub(crate) async fn push_and_know(
    server: &Server,
    repo: &Repo,
    name: &str,
    pipeline: &str,
) -> String {
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let c1 = repo
        .commit("main", name)
        .write(&format!(".pipewright/{name}.yml"), pipeline)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    eventually(
        Duration::from_secs(30),
        "the repository to be known",
        || async { (!server.app.store.known_repos().await.unwrap().is_empty()).then_some(()) },
    )
    .await;
    c1
}

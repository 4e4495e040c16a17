//! Re-attaching after a crash: the real `pipewright serve` killed with SIGKILL while a step
//! container runs, started again on the same data directory, follows that container from
//! where the step's log ends and finishes the run; a container gone, or exited meanwhile,
//! ends the run as it should; no step is started twice.

use std::{process::Command, time::Duration};

use pipewright_tests::fake_gitea::{FakeGitea, Repo};
use serde_json::Value;

use crate::serve::{IMAGE, Process, SECRET, eventually, final_statuses, get_json};

/// A server process on a data directory of its own, at a fixed address kept across
/// restarts.
struct Host {
    data: tempfile::TempDir,
    addr: String,
    url: String,
}

impl Host {
    fn new() -> Host {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        Host {
            data: tempfile::tempdir().unwrap(),
            url: format!("http://{addr}"),
            addr,
        }
    }

    async fn start(&self, gitea: &FakeGitea) -> Process {
        let process = Process::start(gitea, &self.addr, self.data.path());
        process.ready(&self.url).await;
        process
    }

    /// This instance's id, as its containers carry it.
    fn instance(&self) -> String {
        std::fs::read_to_string(self.data.path().join("instance"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The ids of the containers of a run of this instance.
    fn containers(&self, run: i64) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-a", "-q", "--no-trunc"])
            .arg("--filter")
            .arg(format!("label=io.pipewright.instance={}", self.instance()))
            .arg("--filter")
            .arg(format!("label=io.pipewright.run={run}"))
            .output()
            .expect("the docker command");
        assert!(out.status.success(), "docker ps: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn workspace(&self, run: i64) -> std::path::PathBuf {
        self.data
            .path()
            .join("workspaces")
            .join(format!("run-{run}"))
    }

    async fn run(&self, id: i64) -> Value {
        get_json(&self.url, &format!("/api/v1/runs/{id}")).await
    }

    async fn log(&self, run: i64, step: i64) -> String {
        crate::serve::client()
            .get(format!("{}/api/v1/runs/{run}/steps/{step}/log", self.url))
            .bearer_auth(crate::serve::API_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The one run of the server, once it is there.
    async fn only_run(&self) -> i64 {
        eventually(Duration::from_secs(60), "the run to be queued", || async {
            get_json(&self.url, "/api/v1/runs")
                .await
                .as_array()?
                .first()?["id"]
                .as_i64()
        })
        .await
    }

    /// Waits until step `step` of `run` has logged a line with `text`.
    async fn logged(&self, run: i64, step: i64, text: &str) {
        eventually(
            Duration::from_secs(120),
            &format!("step {step} to log {text}"),
            || async {
                self.log(run, step)
                    .await
                    .lines()
                    .any(|l| l == text)
                    .then_some(())
            },
        )
        .await;
    }

    /// Waits until the run has ended; its JSON.
    async fn ended(&self, run: i64) -> Value {
        eventually(Duration::from_secs(120), "the run to end", || async {
            let json = self.run(run).await;
            (json["state"] != "running" && json["state"] != "queued").then_some(json)
        })
        .await
    }
}

/// Pushes a pipeline and delivers the push; the commit.
async fn push_pipeline(host: &Host, repo: &Repo, pipeline: &str) -> String {
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", pipeline)
        .push();
    let (code, _) = repo
        .push_event("main", &first, &second)
        .deliver(&format!("{}/hooks/gitea", host.url), SECRET)
        .await;
    assert_eq!(code, 202);
    second
}

fn step(name: &str, script: &str) -> String {
    crate::serve::step(name, script)
}

/// A script that waits until the test creates `file` in the workspace.
fn wait_for(file: &str) -> String {
    format!("while [ ! -f /workspace/{file} ]; do sleep 0.1; done")
}

fn docker(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command");
    assert!(out.status.success(), "docker {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_follows_the_running_step_from_where_its_log_ends() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "reattach");
    let host = Host::new();
    let server = host.start(&gitea).await;
    let pipeline = format!(
        "on: push\nsteps:\n{}{}",
        step(
            "count",
            "for i in $(seq 1 40); do echo line-$i; sleep 0.1; done"
        ),
        step("after", "echo after ran")
    );
    let sha = push_pipeline(&host, &repo, &pipeline).await;
    let run = host.only_run().await;
    host.logged(run, 0, "line-5").await;
    assert_eq!(host.containers(run).len(), 1, "the step's container runs");
    server.kill();

    let restarted = host.start(&gitea).await;
    let statuses = final_statuses(&repo, &sha, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    let json = host.ended(run).await;
    assert_eq!(json["state"], "success", "{json:#}");
    let log = host.log(run, 0).await;
    let expected: Vec<String> = (1..=40).map(|i| format!("line-{i}")).collect();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        expected,
        "every line once, in order"
    );
    assert_eq!(json["steps"][0]["exit_code"], 0);
    assert_eq!(json["steps"][1]["state"], "success", "{json:#}");
    assert_eq!(host.log(run, 1).await, "after ran\n");
    eventually(
        Duration::from_secs(30),
        "the followed container to be removed",
        || async { host.containers(run).is_empty().then_some(()) },
    )
    .await;
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_container_was_removed_meanwhile_ends_the_run_as_interrupted() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "gone");
    let host = Host::new();
    let server = host.start(&gitea).await;
    let pipeline = format!(
        "on: push\nsteps:\n{}{}",
        step("wait", &format!("echo waiting\n{}", wait_for("never"))),
        step("after", "echo never")
    );
    let sha = push_pipeline(&host, &repo, &pipeline).await;
    let run = host.only_run().await;
    host.logged(run, 0, "waiting").await;
    server.kill();
    for id in host.containers(run) {
        docker(&["rm", "-f", &id]);
    }

    let restarted = host.start(&gitea).await;
    let json = host.ended(run).await;
    assert_eq!(json["state"], "error", "{json:#}");
    let description = json["description"].as_str().unwrap();
    assert!(description.contains("interrupted"), "{description}");
    assert_eq!(json["steps"][0]["state"], "error", "{json:#}");
    assert_eq!(json["steps"][1]["state"], "not_run", "{json:#}");
    assert_eq!(host.log(run, 0).await, "waiting\n", "the log is kept");
    let statuses = final_statuses(&repo, &sha, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "error", "{statuses:?}");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_failed_while_the_server_was_down_fails_the_run_and_cleanup_runs() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "exited");
    let host = Host::new();
    let server = host.start(&gitea).await;
    let pipeline = format!(
        "on: push\nsteps:\n{}{}  - name: tidy\n    image: {IMAGE}\n    run: echo tidied\n    when: {{ status: [failure] }}\n",
        step(
            "wait",
            &format!("echo waiting\n{}\necho failing\nexit 3", wait_for("go"))
        ),
        step("after", "echo never"),
    );
    let sha = push_pipeline(&host, &repo, &pipeline).await;
    let run = host.only_run().await;
    host.logged(run, 0, "waiting").await;
    server.kill();
    std::fs::write(host.workspace(run).join("go"), "").unwrap();
    let containers = host.containers(run);
    assert_eq!(containers.len(), 1, "{containers:?}");
    // Until it has exited: `docker wait` returns then.
    docker(&["wait", &containers[0]]);

    let restarted = host.start(&gitea).await;
    let json = host.ended(run).await;
    assert_eq!(json["state"], "failure", "{json:#}");
    assert_eq!(json["steps"][0]["state"], "failure", "{json:#}");
    assert_eq!(json["steps"][0]["exit_code"], 3, "{json:#}");
    assert_eq!(json["steps"][1]["state"], "not_run", "{json:#}");
    assert_eq!(json["steps"][2]["state"], "success", "{json:#}");
    assert_eq!(host.log(run, 0).await, "waiting\nfailing\n");
    assert_eq!(host.log(run, 2).await, "tidied\n");
    let statuses = final_statuses(&repo, &sha, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "failure", "{statuses:?}");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_second_step_does_not_run_the_first_again() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "second");
    let host = Host::new();
    let server = host.start(&gitea).await;
    let pipeline = format!(
        "on: push\nsteps:\n{}{}",
        step("first", "echo first ran\necho x >> /workspace/first-count"),
        step(
            "second",
            &format!(
                "echo waiting\n{}\necho \"first ran $(wc -l < /workspace/first-count) time(s)\"",
                wait_for("go")
            )
        ),
    );
    let sha = push_pipeline(&host, &repo, &pipeline).await;
    let run = host.only_run().await;
    host.logged(run, 1, "waiting").await;
    let before = host.run(run).await;
    assert_eq!(before["steps"][0]["state"], "success", "{before:#}");
    server.kill();

    let restarted = host.start(&gitea).await;
    // The restarted server follows the second step, which goes on once told to.
    std::fs::write(host.workspace(run).join("go"), "").unwrap();
    let json = host.ended(run).await;
    assert_eq!(json["state"], "success", "{json:#}");
    assert_eq!(
        json["steps"][0], before["steps"][0],
        "the first step is as it was recorded"
    );
    assert_eq!(host.log(run, 0).await, "first ran\n");
    assert_eq!(host.log(run, 1).await, "waiting\nfirst ran 1 time(s)\n");
    let statuses = final_statuses(&repo, &sha, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    drop(restarted);
}

/// Recording a step's start can fail (a full disk) while its container runs: the step is
/// recorded as never started. A restart must still find the container and follow it, not
/// take the run for one that had not begun and start it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_is_followed_even_when_its_steps_start_was_not_recorded() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", "unrecorded");
    let host = Host::new();
    let server = host.start(&gitea).await;
    let pipeline = format!(
        "on: push\nsteps:\n{}",
        step(
            "apply",
            &format!(
                "echo x >> /workspace/applied\necho waiting in $(hostname)\n{}\necho \"applied $(wc -l < /workspace/applied) time(s)\"",
                wait_for("go")
            )
        ),
    );
    let sha = push_pipeline(&host, &repo, &pipeline).await;
    let run = host.only_run().await;
    let running = eventually(Duration::from_secs(120), "the step to run", || async {
        host.log(run, 0)
            .await
            .starts_with("waiting in ")
            .then_some(())?;
        Some(host.containers(run)).filter(|c| c.len() == 1)
    })
    .await;
    // A container's host name is the start of its id.
    let first_line = format!("waiting in {}\n", &running[0][..12]);
    assert_eq!(host.log(run, 0).await, first_line);
    server.kill();
    // As if the write of the step's start had failed.
    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}",
        host.data.path().join("pipewright.db").display()
    );
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE steps SET state = 'pending', started_at = NULL WHERE run_id = $1 AND idx = 0",
    )
    .bind(run)
    .execute(&db)
    .await
    .unwrap();
    db.close().await;

    let restarted = host.start(&gitea).await;
    std::fs::write(host.workspace(run).join("go"), "").unwrap();
    let json = host.ended(run).await;
    assert_eq!(json["state"], "success", "{json:#}");
    // The first container's output, followed to its end; no second start.
    assert_eq!(
        host.log(run, 0).await,
        format!("{first_line}applied 1 time(s)\n")
    );
    let statuses = final_statuses(&repo, &sha, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_killed_before_its_container_started_starts_after_the_restart() {
    killed_during_the_pull_of(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_before_its_first_container_started_starts_over() {
    killed_during_the_pull_of(0).await;
}

/// Kills the server while step `late` (of two) pulls its image, so that it is recorded as
/// running with no container; once restarted, the step runs (and the other once).
async fn killed_during_the_pull_of(late: usize) {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo("org", &format!("unstarted-{late}"));
    // A registry that accepts connections and never answers: the step's pull hangs.
    let registry = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image = format!("{}/pipewright-late:1", registry.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in registry.incoming() {
            held.push(conn);
        }
    });
    let host = Host::new();
    let server = host.start(&gitea).await;
    let steps = [
        ("first", "echo first ran\necho x >> /workspace/first-count"),
        (
            "second",
            "echo second ran after $(wc -l < /workspace/first-count) first",
        ),
    ];
    let mut pipeline = String::from("on: push\nsteps:\n");
    for (n, (name, script)) in steps.iter().enumerate() {
        let image = if n == late { image.as_str() } else { IMAGE };
        pipeline.push_str(&format!(
            "  - name: {name}\n    image: {image}\n    run: {}\n",
            serde_json::to_string(script).unwrap()
        ));
    }
    let sha = push_pipeline(&host, &repo, &pipeline).await;
    let run = host.only_run().await;
    eventually(
        Duration::from_secs(120),
        "the late step to start",
        || async { (host.run(run).await["steps"][late]["state"] == "running").then_some(()) },
    )
    .await;
    assert!(host.containers(run).is_empty(), "no container yet");
    server.kill();
    // The image is there now; the restarted server runs the step, which never ran.
    docker(&["tag", IMAGE, &image]);

    let restarted = host.start(&gitea).await;
    let json = host.ended(run).await;
    docker(&["rmi", &image]);
    assert_eq!(json["state"], "success", "{json:#}");
    assert_eq!(host.log(run, 0).await, "first ran\n");
    assert_eq!(host.log(run, 1).await, "second ran after 1 first\n");
    let statuses = final_statuses(&repo, &sha, "pipewright/ci").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    drop(restarted);
}

//! `pipewright agent` end to end: a `serve` that runs no job itself and agents with their
//! own labels, data directories and instance ids, all real processes on one PostgreSQL
//! database and this machine's Docker engine; pinned runs, lost agents, draining.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use pipewright_containers::LABEL_INSTANCE;
use pipewright_tests::fake_gitea::{FakeGitea, Repo};
use pipewright_tests::services::Postgres;
use pipewright_tests::{containers_labelled, docker_cli};
use serde_json::Value;

use crate::exec_cli::pipewright_bin;
use crate::serve::{Process, SECRET, client, eventually, final_statuses, get_json, step};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A `pipewright serve` process on PostgreSQL with `[agent].capacity = 0`.
struct Server {
    url: String,
    _process: Process,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start(gitea: &FakeGitea, database: &str) -> Server {
        let data = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let log = std::fs::File::create(data.path().join("serve.log")).unwrap();
        let process = Process::start_with(
            gitea,
            &addr,
            data.path(),
            &[
                ("PIPEWRIGHT_DATABASE__URL", database),
                ("PIPEWRIGHT_AGENT__CAPACITY", "0"),
            ],
            Stdio::from(log),
        );
        let url = format!("http://{addr}");
        process.ready(&url).await;
        Server {
            url,
            _process: process,
            _data: data,
        }
    }

    async fn run(&self, id: i64) -> Value {
        get_json(&self.url, &format!("/api/v1/runs/{id}")).await
    }

    /// The run of `pipeline` at `sha`, once it exists.
    async fn run_of(&self, pipeline: &str, sha: &str) -> Value {
        eventually(
            Duration::from_secs(60),
            &format!("a run of {pipeline} at {sha}"),
            || async {
                let runs = get_json(&self.url, "/api/v1/runs?limit=500").await;
                let id = runs
                    .as_array()?
                    .iter()
                    .find(|r| r["pipeline"] == pipeline && r["sha"] == sha)?["id"]
                    .as_i64()?;
                Some(self.run(id).await)
            },
        )
        .await
    }

    /// Waits until step `index` of the run is running.
    async fn step_running(&self, id: i64, index: usize) {
        eventually(
            Duration::from_secs(120),
            &format!("step {index} of run {id} to run"),
            || async {
                let run = self.run(id).await;
                (run["steps"][index]["state"] == "running").then_some(())
            },
        )
        .await;
    }
}

/// A `pipewright agent` process with its own data directory (so its own instance id).
struct Agent {
    name: String,
    child: Child,
    data: tempfile::TempDir,
    /// Its `/healthz` and `/readyz` listener.
    health: String,
}

impl Agent {
    async fn start(
        gitea: &FakeGitea,
        server: &Server,
        database: &str,
        name: &str,
        labels: &str,
        extra: &[(&str, &str)],
    ) -> Agent {
        let data = tempfile::tempdir().unwrap();
        let health = free_addr();
        let child = agent_command(data.path())
            .envs([
                ("PIPEWRIGHT_DATABASE__URL", database),
                ("PIPEWRIGHT_SERVER__PUBLIC_URL", &server.url),
                ("PIPEWRIGHT_GITEA__URL", gitea.url()),
                ("PIPEWRIGHT_GITEA__TOKEN", gitea.token()),
                ("PIPEWRIGHT_DOCKER__STOP_GRACE", "2s"),
                ("PIPEWRIGHT_AGENT__NAME", name),
                ("PIPEWRIGHT_AGENT__LABELS", labels),
                ("PIPEWRIGHT_AGENT__CAPACITY", "2"),
                ("PIPEWRIGHT_AGENT__LISTEN", &health),
            ])
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join("agent.log")).unwrap())
            .spawn()
            .expect("failed to start pipewright agent");
        let agent = Agent {
            name: name.to_owned(),
            child,
            data,
            health: health.clone(),
        };
        let url = format!("http://{health}/readyz");
        eventually(
            Duration::from_secs(60),
            &format!("agent {name} to be ready"),
            || async {
                client()
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
        agent
    }

    /// The status of its `/readyz`.
    async fn readyz(&self) -> u16 {
        client()
            .get(format!("http://{}/readyz", self.health))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The instance id of its data directory, as its containers' label says.
    fn instance(&self) -> String {
        std::fs::read_to_string(self.data.path().join("instance"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// What it logged, for failure messages.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.data.path().join("agent.log")).unwrap_or_default();
        format!("log of agent {}:\n{text}", self.name)
    }

    /// SIGKILL: the process ends where it stands.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: the agent drains.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Removes the containers its killed process left behind.
    fn remove_containers(&self) {
        for id in containers_labelled(LABEL_INSTANCE, &self.instance()) {
            docker_cli(&["rm", "--force", &id]);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_command(data: &Path) -> Command {
    let mut command = Command::new(pipewright_bin());
    command
        .arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPEWRIGHT_SERVER__DATA_DIR", data.display().to_string());
    command
}

/// A database of its own for one test, on a cluster of its own.
fn database() -> (Postgres, String) {
    let pg = Postgres::start();
    let url = pg.url();
    (pg, url)
}

fn pipeline(runs_on: &[&str], script: &str) -> String {
    let runs_on = match runs_on {
        [] => String::new(),
        labels => format!("runs_on: [{}]\n", labels.join(", ")),
    };
    format!("on: push\n{runs_on}steps:\n{}", step("work", script))
}

/// Pushes the pipelines to `main` and delivers the push to the server.
async fn push(repo: &Repo, server: &Server, files: &[(&str, String)]) -> String {
    let before = repo.try_head("main").unwrap_or_else(|| {
        repo.commit("main", "init")
            .write("README.md", "hi\n")
            .push()
    });
    let mut commit = repo.commit("main", "pipelines");
    for (path, text) in files {
        commit = commit.write(path, text);
    }
    let after = commit.push();
    let (code, body) = repo
        .push_event("main", &before, &after)
        .deliver(&format!("{}/hooks/gitea", server.url), SECRET)
        .await;
    assert_eq!(code, 202, "{body}");
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_runs_go_to_the_agent_with_their_labels() {
    let (_pg, db) = database();
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea, &db).await;
    let pi1 = Agent::start(&gitea, &server, &db, "pi1-agent", "pi1,linux", &[]).await;
    let pi3 = Agent::start(&gitea, &server, &db, "pi3-agent", "pi3,linux", &[]).await;
    assert_ne!(pi1.instance(), pi3.instance());
    let repo = gitea.create_repo("org", "homelab");
    let sha = push(
        &repo,
        &server,
        &[
            (".pipewright/backup.yml", pipeline(&["pi1"], "echo backup")),
            (
                ".pipewright/other.yml",
                pipeline(&["pi3", "linux"], "echo other"),
            ),
            (".pipewright/any.yml", pipeline(&[], "echo any")),
            (
                ".pipewright/nowhere.yml",
                pipeline(&["nowhere"], "echo never"),
            ),
        ],
    )
    .await;
    for (pipeline, agents) in [
        ("backup", &["pi1-agent"][..]),
        ("other", &["pi3-agent"][..]),
        ("any", &["pi1-agent", "pi3-agent"][..]),
    ] {
        let statuses = final_statuses(&repo, &sha, &format!("pipewright/{pipeline}")).await;
        let last = statuses.last().unwrap();
        assert_eq!(
            last.state,
            "success",
            "{pipeline}: {statuses:?}\n{}\n{}",
            pi1.log(),
            pi3.log()
        );
        let run = server.run_of(pipeline, &sha).await;
        assert_eq!(run["state"], "success", "{run:#}");
        let agent = run["agent"].as_str().unwrap_or_default();
        assert!(
            agents.contains(&agent),
            "{pipeline} ran on {agent}: {run:#}"
        );
    }
    let waiting = server.run_of("nowhere", &sha).await;
    assert_eq!(waiting["state"], "queued", "{waiting:#}");
    assert_eq!(
        waiting["waiting_reason"], "no agent with labels [nowhere]",
        "{waiting:#}"
    );
    assert!(waiting["agent"].is_null(), "{waiting:#}");
    // The server (capacity 0, no agent of its own) counts the two agents' heartbeats.
    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pipewright_agents{state=\"live\"} 2\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_agent_was_killed_ends_as_lost_once_its_lease_expires() {
    let (_pg, db) = database();
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea, &db).await;
    let mut pi1 = Agent::start(
        &gitea,
        &server,
        &db,
        "pi1-lost",
        "pi1",
        &[("PIPEWRIGHT_AGENT__LEASE", "3s")],
    )
    .await;
    let repo = gitea.create_repo("org", "backups");
    let sha = push(
        &repo,
        &server,
        &[(
            ".pipewright/backup.yml",
            pipeline(&["pi1"], "echo started\nsleep 600"),
        )],
    )
    .await;
    let run = server.run_of("backup", &sha).await;
    let id = run["id"].as_i64().unwrap();
    server.step_running(id, 0).await;
    pi1.kill();
    let statuses = final_statuses(&repo, &sha, "pipewright/backup").await;
    let last = statuses.last().unwrap();
    assert_eq!(
        (last.state.as_str(), last.description.as_str()),
        ("error", "agent pi1-lost lost"),
        "{statuses:?}"
    );
    let ended = server.run(id).await;
    assert_eq!(ended["state"], "error");
    assert_eq!(ended["description"], "agent pi1-lost lost");
    assert_eq!(ended["agent"], "pi1-lost");
    // Nothing ran it again: it is the only run, and nothing else is queued.
    let runs = get_json(&server.url, "/api/v1/runs").await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");
    pi1.remove_containers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_agent_its_step_finishes_and_nothing_new_is_claimed() {
    let (pg, db) = database();
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea, &db).await;
    let mut agent = Agent::start(&gitea, &server, &db, "drainer", "drain", &[]).await;
    let repo = gitea.create_repo("org", "drain");
    // The step waits for a file that the test writes once the agent is draining.
    let first = push(
        &repo,
        &server,
        &[(
            ".pipewright/job.yml",
            pipeline(
                &["drain"],
                "echo started\nwhile [ ! -f /workspace/go ]; do sleep 0.2; done\necho finished",
            ),
        )],
    )
    .await;
    let run = server.run_of("job", &first).await;
    let id = run["id"].as_i64().unwrap();
    server.step_running(id, 0).await;
    agent.terminate();
    eventually(
        Duration::from_secs(30),
        "the agent to say it drains",
        || async {
            let state = pg.sql("SELECT state FROM agents WHERE name = 'drainer'");
            (state.trim() == "draining").then_some(())
        },
    )
    .await;
    // A run the draining agent could take is queued now.
    let second = push(
        &repo,
        &server,
        &[(".pipewright/later.yml", pipeline(&["drain"], "echo later"))],
    )
    .await;
    let later = server.run_of("later", &second).await;
    // The running step goes on to its end.
    let workspace = agent
        .data
        .path()
        .join("workspaces")
        .join(format!("run-{id}"));
    std::fs::write(workspace.join("go"), "").unwrap();
    let statuses = final_statuses(&repo, &first, "pipewright/job").await;
    assert_eq!(
        statuses.last().unwrap().state,
        "success",
        "{statuses:?}\n{}",
        agent.log()
    );
    let exit = {
        let child = std::sync::Mutex::new(&mut agent.child);
        eventually(Duration::from_secs(60), "the agent to exit", || {
            let exited = child.lock().unwrap().try_wait().unwrap();
            async move { exited }
        })
        .await
    };
    assert!(exit.success(), "{exit:?}\n{}", agent.log());
    let later = server.run(later["id"].as_i64().unwrap()).await;
    assert_eq!(later["state"], "queued", "{later:#}");
    assert!(later["agent"].is_null(), "{later:#}");
    assert_eq!(later["waiting_reason"], "no agent with labels [drain]");
    assert_eq!(
        pg.sql("SELECT count(*) FROM agents WHERE name = 'drainer'")
            .trim(),
        "0",
        "a drained agent removes its row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_sqlite_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/pipewright.db", data.path().display());
    for database in [None, Some(sqlite.as_str())] {
        let mut command = agent_command(data.path());
        if let Some(url) = database {
            command.env("PIPEWRIGHT_DATABASE__URL", url);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(
                "pipewright agent needs [database].url to be the server's PostgreSQL database (postgres://…), not sqlite://"
            ),
            "{stderr}"
        );
        assert!(
            !data.path().join("pipewright.db").exists(),
            "no database file is made"
        );
    }
}

/// A unix socket that forwards to the machine's Docker engine while it is up; going down
/// drops every connection through it and refuses new ones, as a stopped engine does.
struct EngineProxy {
    path: std::path::PathBuf,
    up: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl EngineProxy {
    fn start() -> EngineProxy {
        let dir = tempfile::Builder::new()
            .prefix("pw-engine-")
            .tempdir_in("/tmp")
            .unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (up, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*watch.borrow() {
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut engine) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        EngineProxy {
            path,
            up,
            _dir: dir,
            task,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_docker_is_down_runs_stay_queued_and_readyz_fails_then_they_run() {
    let (pg, db) = database();
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea, &db).await;
    let engine = EngineProxy::start();
    let host = engine.host();
    let agent = Agent::start(
        &gitea,
        &server,
        &db,
        "flaky",
        "flaky",
        &[("PIPEWRIGHT_DOCKER__HOST", &host)],
    )
    .await;
    engine.set_up(false);
    eventually(
        Duration::from_secs(30),
        "the agent to report its engine down",
        || async {
            let up = pg.sql("SELECT docker_up FROM agents WHERE name = 'flaky'");
            (up.trim() == "0").then_some(())
        },
    )
    .await;
    assert_eq!(agent.readyz().await, 503);
    let repo = gitea.create_repo("org", "flaky");
    let sha = push(
        &repo,
        &server,
        &[(".pipewright/job.yml", pipeline(&["flaky"], "echo ran"))],
    )
    .await;
    let run = server.run_of("job", &sha).await;
    let id = run["id"].as_i64().unwrap();
    let waiting = eventually(
        Duration::from_secs(30),
        "the run to say Docker is down",
        || async {
            let run = server.run(id).await;
            (run["waiting_reason"] == "Docker is down").then_some(run)
        },
    )
    .await;
    assert_eq!(waiting["state"], "queued", "{waiting:#}");
    assert!(waiting["agent"].is_null(), "{waiting:#}");
    engine.set_up(true);
    let statuses = final_statuses(&repo, &sha, "pipewright/job").await;
    assert_eq!(
        statuses.last().unwrap().state,
        "success",
        "{statuses:?}\n{}",
        agent.log()
    );
    assert_eq!(server.run(id).await["agent"], "flaky");
    assert_eq!(agent.readyz().await, 200);
}

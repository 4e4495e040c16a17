//! Crashes on several hosts: a `serve` with capacity 0 and agents on one PostgreSQL
//! database, killed with SIGKILL at random (seeded) points and started again on their data
//! directories; the promises checked afterwards are the ones a crash must not break (no
//! answered delivery lost, no run left unfinished, no apply twice, no log line lost or
//! repeated). `PIPEWRIGHT_CHAOS_SEED` replays a seed, `PIPEWRIGHT_CHAOS_RUNS` sets the size.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use pipewright_tests::fake_gitea::FakeGitea;
use pipewright_tests::services::Postgres;
use serde_json::Value;

use crate::exec_cli::pipewright_bin;
use crate::serve::{API_TOKEN, SECRET, client, eventually, get_json, step};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// What every process of a test shares: the database, the fake Gitea, the configuration
/// file (for `[[repos]]`) and the lease.
struct Shared {
    database: String,
    gitea_url: String,
    gitea_token: String,
    config: PathBuf,
    lease: String,
    server_url: String,
}

impl Shared {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PIPEWRIGHT_DATABASE__URL", self.database.clone()),
            ("PIPEWRIGHT_GITEA__URL", self.gitea_url.clone()),
            ("PIPEWRIGHT_GITEA__TOKEN", self.gitea_token.clone()),
            ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET", SECRET.to_owned()),
            ("PIPEWRIGHT_API__TOKENS", API_TOKEN.to_owned()),
            ("PIPEWRIGHT_DOCKER__STOP_GRACE", "2s".to_owned()),
            ("PIPEWRIGHT_AGENT__LEASE", self.lease.clone()),
            ("PIPEWRIGHT_SERVER__PUBLIC_URL", self.server_url.clone()),
        ]
    }
}

/// A process (`serve` or `agent`) on a data directory and addresses kept across restarts.
struct Host {
    name: String,
    /// `serve` or `agent`.
    command: &'static str,
    extra: Vec<(&'static str, String)>,
    data: tempfile::TempDir,
    /// What `/readyz` (or `/healthz` for the server) answers on.
    health: String,
    child: Option<Child>,
    starts: u32,
}

impl Host {
    fn server(shared: &Shared, addr: &str) -> Host {
        Host::new(
            "server",
            "serve",
            addr,
            vec![
                ("PIPEWRIGHT_SERVER__LISTEN", addr.to_owned()),
                ("PIPEWRIGHT_AGENT__CAPACITY", "0".to_owned()),
            ],
            shared,
        )
    }

    fn agent(shared: &Shared, name: &str, labels: &str) -> Host {
        let health = free_addr();
        Host::new(
            name,
            "agent",
            &health,
            vec![
                ("PIPEWRIGHT_AGENT__NAME", name.to_owned()),
                ("PIPEWRIGHT_AGENT__LABELS", labels.to_owned()),
                ("PIPEWRIGHT_AGENT__CAPACITY", "2".to_owned()),
                ("PIPEWRIGHT_AGENT__LISTEN", health.clone()),
            ],
            shared,
        )
    }

    fn new(
        name: &str,
        command: &'static str,
        health: &str,
        extra: Vec<(&'static str, String)>,
        _shared: &Shared,
    ) -> Host {
        Host {
            name: name.to_owned(),
            command,
            extra,
            data: tempfile::tempdir().unwrap(),
            health: health.to_owned(),
            child: None,
            starts: 0,
        }
    }

    /// Starts the process (again, on the same data directory) and waits until it answers.
    async fn start(&mut self, shared: &Shared) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("process.log"))
            .unwrap();
        let child = Command::new(pipewright_bin())
            .arg(self.command)
            .arg("--config")
            .arg(&shared.config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "PIPEWRIGHT_SERVER__DATA_DIR",
                self.data.path().display().to_string(),
            )
            .envs(shared.env())
            .envs(self.extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start pipewright {}: {e}", self.command));
        self.child = Some(child);
        let path = match self.command {
            "serve" => "healthz",
            _ => "readyz",
        };
        let url = format!("http://{}/{path}", self.health);
        eventually(
            Duration::from_secs(60),
            &format!("{} to answer {path}", self.name),
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
    }

    fn up(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: the process ends where it stands.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("a running process to kill");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// What it logged, for failure messages.
    fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.data.path().join("process.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("last lines of {}'s log:\n{}", self.name, tail.join("\n"))
    }

    /// Removes the containers this instance left behind.
    fn remove_containers(&self) {
        let Ok(instance) = std::fs::read_to_string(self.data.path().join("instance")) else {
            return;
        };
        for id in pipewright_tests::containers_labelled(
            pipewright_containers::LABEL_INSTANCE,
            instance.trim(),
        ) {
            // A container being removed already is fine: this only tidies up.
            let _ = Command::new("docker").args(["rm", "--force", &id]).output();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove_containers();
    }
}

/// The server's API, read with the test's token.
struct Api {
    url: String,
}

impl Api {
    async fn run(&self, id: i64) -> Value {
        get_json(&self.url, &format!("/api/v1/runs/{id}")).await
    }

    /// Every run, or `None` while the server does not answer.
    async fn runs(&self) -> Option<Vec<Value>> {
        let response = client()
            .get(format!("{}/api/v1/runs?limit=1000", self.url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .ok()?;
        response.error_for_status().ok()?.json().await.ok()
    }

    /// The step's log, or `None` while the step has none yet.
    async fn log_so_far(&self, run: i64, step: i64) -> Option<String> {
        let response = client()
            .get(format!("{}/api/v1/runs/{run}/steps/{step}/log", self.url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .ok()?;
        response.error_for_status().ok()?.text().await.ok()
    }

    async fn log(&self, run: i64, step: i64) -> String {
        let response = client()
            .get(format!("{}/api/v1/runs/{run}/steps/{step}/log", self.url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "log of step {step} of run {run}: {}",
            response.status()
        );
        response.text().await.unwrap()
    }
}

/// A script that prints `prefix-1` … `prefix-n`, one line every `pause` seconds.
fn numbered(prefix: &str, n: u32, pause: &str) -> String {
    format!("for i in $(seq 1 {n}); do echo {prefix}-$i; sleep {pause}; done")
}

fn expected(prefix: &str, n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

fn final_state(run: &Value) -> bool {
    !matches!(run["state"].as_str(), Some("queued" | "running") | None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_step_and_started_again_re_attaches() {
    let pg = Postgres::start();
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipewright.toml");
    std::fs::write(&config, "").unwrap();
    let addr = free_addr();
    let shared = Shared {
        database: pg.url(),
        gitea_url: gitea.url().to_owned(),
        gitea_token: gitea.token().to_owned(),
        config,
        lease: "30s".to_owned(),
        server_url: format!("http://{addr}"),
    };
    let mut server = Host::server(&shared, &addr);
    server.start(&shared).await;
    let mut agent = Host::agent(&shared, "pi1-reattach", "pi1");
    agent.start(&shared).await;
    let api = Api {
        url: shared.server_url.clone(),
    };

    let repo = gitea.create_repo("org", "reattach-agent");
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let pipeline = format!(
        "on: push\nruns_on: [pi1]\nsteps:\n{}{}",
        step("count", &numbered("line", 40, "0.1")),
        step("after", "echo after ran"),
    );
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &pipeline)
        .push();
    let (code, body) = repo
        .push_event("main", &first, &second)
        .deliver(&format!("{}/hooks/gitea", api.url), SECRET)
        .await;
    assert_eq!(code, 202, "{body}");
    let run = eventually(Duration::from_secs(60), "the run to be queued", || async {
        api.runs().await?.first()?["id"].as_i64()
    })
    .await;
    eventually(
        Duration::from_secs(120),
        "the step to log some lines",
        || async {
            api.log_so_far(run, 0)
                .await?
                .contains("line-5\n")
                .then_some(())
        },
    )
    .await;
    agent.kill();
    let before = api.log(run, 0).await;
    assert!(
        !before.contains("line-40\n"),
        "the step ended before the kill: {before}"
    );

    agent.start(&shared).await;
    let json = eventually(Duration::from_secs(120), "the run to end", || async {
        let json = api.run(run).await;
        final_state(&json).then_some(json)
    })
    .await;
    assert_eq!(
        json["state"],
        "success",
        "{json:#}\n{}\n{}",
        agent.log(),
        server.log()
    );
    assert_eq!(json["agent"], "pi1-reattach", "{json:#}");
    assert_eq!(json["steps"][0]["exit_code"], 0, "{json:#}");
    let log = api.log(run, 0).await;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        expected("line", 40),
        "every line once, in order"
    );
    assert_eq!(json["steps"][1]["state"], "success", "{json:#}");
    assert_eq!(api.log(run, 1).await, "after ran\n");
    assert_eq!(agent.starts, 2);
    drop(server);
}

/// A small seeded generator (xorshift64*), so that a seed replays the same kills.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

/// The lines of the `apply` pipeline's steps and of the `count` pipeline's.
const BEFORE_LINES: u32 = 5;
const APPLY_LINES: u32 = 12;
const COUNT_LINES: u32 = 15;

/// The lines a step that succeeded must have logged, by pipeline and step index.
fn step_lines(pipeline: &str, index: i64) -> Vec<String> {
    match (pipeline, index) {
        ("apply", 0) => expected("before", BEFORE_LINES),
        ("apply", 1) => {
            let mut lines = vec!["applying".to_owned()];
            lines.extend(expected("apply", APPLY_LINES));
            lines
        }
        ("apply", 2) => vec!["after".to_owned()],
        ("count", 0) => expected("count", COUNT_LINES),
        other => panic!("no step {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_of_agents_and_the_server_keep_every_promise() {
    let seed = env_number("PIPEWRIGHT_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let runs_wanted = env_number("PIPEWRIGHT_CHAOS_RUNS").unwrap_or(30).max(2);
    println!("chaos: seed {seed} (PIPEWRIGHT_CHAOS_SEED={seed} replays it), {runs_wanted} runs");
    let mut rng = Rng::new(seed);

    let pg = Postgres::start();
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The host directory the apply steps write to, outside every workspace.
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let applies = state.path().join("applies");
    let state_dir = state.path().display().to_string();
    let config = dir.path().join("pipewright.toml");
    std::fs::write(
        &config,
        format!("[[repos]]\nname = \"org/chaos\"\nhost_volumes = [\"{state_dir}\"]\n"),
    )
    .unwrap();
    let lease_secs = 5;
    let addr = free_addr();
    let shared = Shared {
        database: pg.url(),
        gitea_url: gitea.url().to_owned(),
        gitea_token: gitea.token().to_owned(),
        config,
        lease: format!("{lease_secs}s"),
        server_url: format!("http://{addr}"),
    };
    let api = Api {
        url: shared.server_url.clone(),
    };
    let hook = format!("{}/hooks/gitea", api.url);
    // 0: the server, 1: pi1 (which the apply pipeline is pinned to), 2: pi3.
    let mut hosts = vec![
        Host::server(&shared, &addr),
        Host::agent(&shared, "pi1-chaos", "pi1,linux"),
        Host::agent(&shared, "pi3-chaos", "pi3,linux"),
    ];
    for host in &mut hosts {
        host.start(&shared).await;
    }

    let repo = gitea.create_repo("org", "chaos");
    let apply = format!(
        "on: push\nruns_on: [pi1]\nvolumes: [\"{state_dir}:/state\"]\nsteps:\n{}{}{}",
        step("before", &numbered("before", BEFORE_LINES, "0.05")),
        step(
            "apply",
            &format!(
                "echo applying\necho \"apply $PIPEWRIGHT_RUN_ID\" >> /state/applies\n{}",
                numbered("apply", APPLY_LINES, "0.1")
            ),
        ),
        step("after", "echo after"),
    );
    let count = format!(
        "on: push\nruns_on: [linux]\nsteps:\n{}",
        step("count", &numbered("count", COUNT_LINES, "0.1")),
    );
    let base = repo
        .commit("main", "pipelines")
        .write(".pipewright/apply.yml", &apply)
        .write(".pipewright/count.yml", &count)
        .push();

    let pushes = runs_wanted.div_ceil(2);
    // The push after which a process stays down past the lease, once.
    let long_down = rng.below(pushes);
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let mut answered: Vec<String> = Vec::new();
    let mut unanswered = 0u32;
    for i in 0..pushes {
        let branch = format!("b{i}");
        repo.create_branch(&branch, &base);
        let sha = repo
            .commit(&branch, &format!("change {i}"))
            .write("change.txt", &format!("{i}\n"))
            .push();
        let delivery = repo.push_event(&branch, &base, &sha);
        // Delivered while the server may be down: Gitea would try again, the test as well,
        // once it is up (the same delivery, so its id is known to the server if it had
        // answered just before a kill).
        let mut code = 0;
        for _ in 0..2 {
            if !hosts[0].up() {
                break;
            }
            (code, _) = delivery.deliver(&hook, SECRET).await;
            if (200..300).contains(&code) {
                break;
            }
        }
        if (200..300).contains(&code) {
            answered.push(sha);
        } else {
            unanswered += 1;
        }
        // A kill at a random point of the work going on.
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        if rng.below(3) != 0 {
            let which = rng.below(3) as usize;
            hosts[which].kill();
            *kills.entry(hosts[which].name.clone()).or_default() += 1;
            let down = match i == long_down {
                true => Duration::from_secs(lease_secs + 3),
                false => Duration::from_millis(rng.below(2000)),
            };
            tokio::time::sleep(down).await;
            hosts[which].start(&shared).await;
        }
        // A delivery the server did not answer goes again now it is up, as Gitea's would.
        if !(200..300).contains(&code) {
            let (code, body) = delivery.deliver(&hook, SECRET).await;
            assert!((200..300).contains(&code), "{code}: {body}");
            answered.push(delivery_sha(&repo, &branch));
        }
    }

    // Every answered delivery has its two runs, and every run ends.
    let runs = eventually(Duration::from_secs(300), "every run to end", || async {
        let runs = api.runs().await?;
        runs.iter().all(final_state).then_some(runs)
    })
    .await;
    let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
    for run in &runs {
        *by_state
            .entry(format!(
                "{} {}",
                run["state"].as_str().unwrap_or_default(),
                run["description"].as_str().unwrap_or_default()
            ))
            .or_default() += 1;
    }
    let summary = format!(
        "chaos: seed {seed}; {} runs; by state {by_state:?}; kills {kills:?}; \
         {unanswered} deliveries sent again after a kill",
        runs.len()
    );
    println!("{summary}");
    let logs = hosts.iter().map(Host::log).collect::<Vec<_>>().join("\n");
    for sha in &answered {
        for pipeline in ["apply", "count"] {
            let of: Vec<&Value> = runs
                .iter()
                .filter(|r| r["sha"] == sha.as_str() && r["pipeline"] == pipeline)
                .collect();
            assert_eq!(
                of.len(),
                1,
                "{summary}\nruns of {pipeline} at {sha}: {of:#?}"
            );
        }
    }
    let others: Vec<String> = runs
        .iter()
        .filter(|r| !answered.iter().any(|sha| r["sha"] == sha.as_str()))
        // A restarted server's catch-up queues the heads without runs: `main`'s, never
        // delivered here, is one.
        .filter(|r| !(r["sha"] == base.as_str() && r["ref"] == "refs/heads/main"))
        .map(|r| {
            format!(
                "run {} {} at {} ({})",
                r["id"], r["pipeline"], r["sha"], r["ref"]
            )
        })
        .collect();
    assert!(
        others.is_empty(),
        "{summary}\nruns of no answered delivery: {others:?}\nanswered: {answered:?}"
    );

    // No apply twice; a run that succeeded applied once.
    let text = std::fs::read_to_string(&applies).unwrap_or_default();
    let mut applied: BTreeMap<i64, u32> = BTreeMap::new();
    for line in text.lines() {
        let id = line
            .strip_prefix("apply ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{summary}\nan unexpected line in the apply file: {line:?}"));
        *applied.entry(id).or_default() += 1;
    }
    for run in runs.iter().filter(|r| r["pipeline"] == "apply") {
        let id = run["id"].as_i64().unwrap();
        let times = applied.get(&id).copied().unwrap_or(0);
        assert!(times <= 1, "{summary}\nrun {id} applied {times} times");
        if run["state"] == "success" {
            assert_eq!(times, 1, "{summary}\nrun {id} succeeded: {run:#}");
        }
    }

    // Every step that succeeded logged each of its lines once, in order.
    for run in &runs {
        let id = run["id"].as_i64().unwrap();
        let pipeline = run["pipeline"].as_str().unwrap();
        let json = api.run(id).await;
        for step in json["steps"].as_array().unwrap() {
            if step["state"] != "success" {
                continue;
            }
            let index = step["index"].as_i64().unwrap();
            let log = api.log(id, index).await;
            assert_eq!(
                log.lines().collect::<Vec<_>>(),
                step_lines(pipeline, index),
                "{summary}\nstep {index} of run {id} ({pipeline}): {json:#}\n{logs}"
            );
        }
    }
    drop(hosts);
}

/// The head of `branch`: the commit its push delivered.
fn delivery_sha(repo: &pipewright_tests::fake_gitea::Repo, branch: &str) -> String {
    repo.try_head(branch).expect("the branch was pushed")
}

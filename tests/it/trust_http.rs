//! Attacks on the HTTP surface and the files at rest: slow and many clients, stalled bodies,
//! a background task that dies, `data_dir` modes, crash leftovers, revision syntax and path
//! tricks in dispatches, repositories outside `[[repos]]`, and scoped API tokens.

use std::{
    collections::HashSet,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use pipewright_containers::CancellationToken;
use pipewright_tests::fake_gitea::{FakeGitea, Repo};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use crate::serve::{API_TOKEN, Server, client, eventually, final_statuses, states, step};

/// Connections to `port` that this process holds open at once (server side, established).
/// The kernel's table is read first, then this process's descriptors: a socket counted
/// was there before the listing began and still has a descriptor here in it, so all of
/// them were open together. (The other order also counts a socket this process closed
/// between the two reads that a spawned child, such as git, still held a copy of.)
fn server_side_connections(port: u16) -> usize {
    let mut established = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // 01: established; inode 0: not accepted yet.
            if local_port == Some(port) && fields[3] == "01" && fields[9] != "0" {
                established.insert(fields[9].to_owned());
            }
        }
    }
    let mut ours = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.display().to_string();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                && established.contains(inode)
            {
                ours.insert(inode.to_owned());
            }
        }
    }
    ours.len()
}

fn port(server: &Server) -> u16 {
    server.url.rsplit(':').next().unwrap().parse().unwrap()
}

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// What a slowloris connection saw.
struct Slow {
    /// The server closed the connection (the attacker did not give up first).
    cut: bool,
    answer: Vec<u8>,
}

/// A client that sends a request line, then its headers a byte every 100 ms, never ending
/// them; returns when the server closes the connection or `give_up` fires.
async fn slowloris(addr: String, cut: Arc<AtomicUsize>, give_up: CancellationToken) -> Slow {
    let Ok(stream) = TcpStream::connect(&addr).await else {
        return Slow {
            cut: true,
            answer: b"(refused)".to_vec(),
        };
    };
    let (mut read, mut write) = stream.into_split();
    let trickle = async move {
        if write
            .write_all(b"POST /hooks/gitea HTTP/1.1\r\nHost: pipewright\r\nX-Padding: ")
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    let listen = async move {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        answer
    };
    tokio::select! {
        answer = async { tokio::join!(trickle, listen).1 } => {
            cut.fetch_add(1, Ordering::SeqCst);
            Slow { cut: true, answer }
        }
        _ = give_up.cancelled() => Slow { cut: false, answer: Vec::new() },
    }
}

async fn start_slowloris(
    server: &Server,
    n: usize,
) -> (JoinSet<Slow>, Arc<AtomicUsize>, CancellationToken) {
    let cut = Arc::new(AtomicUsize::new(0));
    let give_up = CancellationToken::new();
    let mut attackers = JoinSet::new();
    for _ in 0..n {
        attackers.spawn(slowloris(address(server), cut.clone(), give_up.clone()));
    }
    (attackers, cut, give_up)
}

/// A repository with one commit pushed, and a push delivery for a second one.
fn quiet_repo(gitea: &FakeGitea, name: &str) -> (Repo, pipewright_tests::fake_gitea::Delivery) {
    let repo = gitea.create_repo("org", name);
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "docs")
        .write("README.md", "hello\n")
        .push();
    let push = repo.push_event("main", &first, &second);
    (repo, push)
}

/// A repository whose second commit adds a push pipeline with one step: the repository,
/// and the push delivery of that commit with its id.
fn ci_repo(
    gitea: &FakeGitea,
    name: &str,
    script: &str,
) -> (Repo, pipewright_tests::fake_gitea::Delivery, String) {
    let repo = gitea.create_repo("org", name);
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let pipeline = format!("on: push\nsteps:\n{}", step("ci", script));
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &pipeline)
        .push();
    let push = repo.push_event("main", &first, &second);
    (repo, push, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_while_deliveries_are_answered() {
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_without_engine(&gitea, &[("PIPEWRIGHT_SERVER__HEADER_TIMEOUT", "10s")], "")
            .await;
    let (_repo, push) = quiet_repo(&gitea, "slow");
    let (mut attackers, cut, give_up) = start_slowloris(&server, 300).await;
    // Most of them connected and trickling at once (on a busy machine the first may already
    // have been cut by the header timeout when the last connects).
    eventually(Duration::from_secs(30), "slow connections", || async {
        (server_side_connections(port(&server)) >= 250).then_some(())
    })
    .await;

    // A real, signed delivery while they trickle.
    assert_eq!(server.deliver(push).await, 202);
    let cut_when_answered = cut.load(Ordering::SeqCst);
    assert!(
        cut_when_answered < 300,
        "the delivery was answered only after every slow client was cut"
    );

    // Every slow client is cut by the server, none gets an answer to its request.
    let mut answers = Vec::new();
    let collect = async {
        while let Some(slow) = attackers.join_next().await {
            answers.push(slow.unwrap());
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(60), collect).await;
    give_up.cancel();
    assert!(
        finished.is_ok(),
        "slow clients still connected after a minute"
    );
    assert_eq!(answers.len(), 300);
    for slow in &answers {
        assert!(slow.cut);
        let text = String::from_utf8_lossy(&slow.answer);
        assert!(!text.starts_with("HTTP/1.1 2"), "a slow client got {text}");
    }
    eventually(Duration::from_secs(20), "no connection left", || async {
        (server_side_connections(port(&server)) == 0).then_some(())
    })
    .await;
    // Still serving.
    let (_, again) = quiet_repo(&gitea, "after");
    assert_eq!(server.deliver(again).await, 202);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_slow_clients_than_the_cap_never_hold_more_descriptors_than_the_cap() {
    let gitea = FakeGitea::start().await;
    // A header timeout longer than the delivery client waits (5 s): only eviction at the cap
    // can make room for the delivery.
    let server = Server::start_without_engine(
        &gitea,
        &[
            ("PIPEWRIGHT_SERVER__HEADER_TIMEOUT", "60s"),
            ("PIPEWRIGHT_SERVER__MAX_CONNECTIONS", "32"),
        ],
        "",
    )
    .await;
    let (_repo, push) = quiet_repo(&gitea, "capped");
    let (mut attackers, cut, give_up) = start_slowloris(&server, 300).await;
    let port = port(&server);
    let watch = CancellationToken::new();
    let most = tokio::spawn({
        let watch = watch.clone();
        async move {
            let mut most = 0;
            while !watch.is_cancelled() {
                most = most.max(server_side_connections(port));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        }
    });
    eventually(
        Duration::from_secs(30),
        "the slow clients to fill the cap",
        || async {
            (server_side_connections(port) >= 32 && cut.load(Ordering::SeqCst) > 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        server.deliver(push).await,
        202,
        "a delivery under the attack"
    );
    watch.cancel();
    let most = most.await.unwrap();
    // The cap, and the one connection accepted while waiting for a slot.
    assert!(most <= 33, "the server held {most} connections");
    give_up.cancel();
    while attackers.join_next().await.is_some() {}
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_after_the_body_timeout() {
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_without_engine(&gitea, &[("PIPEWRIGHT_SERVER__BODY_TIMEOUT", "2s")], "")
            .await;
    let (_repo, push) = quiet_repo(&gitea, "stall");
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let head = format!(
        "POST /hooks/gitea HTTP/1.1\r\nHost: pipewright\r\nContent-Type: application/json\r\nX-Gitea-Event: push\r\nX-Gitea-Delivery: stalled\r\nX-Gitea-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        "0".repeat(64),
        5 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; 1 << 20]).await.unwrap();
    // Meanwhile, deliveries are answered.
    assert_eq!(server.deliver(push).await, 202);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled connection is still open");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 2s"), "{text}");
    assert_eq!(server.app.store.delivery_count().await.unwrap(), 1);
    server.stop().await;
}

async fn readyz(server: &Server) -> (u16, Value) {
    let resp = client()
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_tasks_that_die_come_back_and_readyz_says_so() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let (code, body) = readyz(&server).await;
    assert_eq!((code, &body["ready"]), (200, &json!(true)), "{body}");
    for task in ["webhook writer", "ingest"] {
        assert_eq!(body["tasks"][task]["running"], true, "{body}");
    }

    server.app.tasks.crash("webhook writer");
    server.app.tasks.crash("ingest");
    let body = eventually(Duration::from_secs(30), "both tasks restarted", || async {
        let (code, body) = readyz(&server).await;
        let back = ["webhook writer", "ingest"]
            .iter()
            .all(|t| body["tasks"][t]["running"] == true && body["tasks"][t]["restarts"] == 1);
        (code == 503 && back).then_some(body)
    })
    .await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], true);
    let problems: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("ingest restarted 1 time")
                && p.ends_with("panic: ingest was made to crash")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("webhook writer restarted 1 time")),
        "{problems:?}"
    );
    assert_eq!(body["tasks"]["reporter"]["restarts"], 0);

    // Both work again: a delivery is stored and runs.
    let (repo, push, head) = ci_repo(&gitea, "revived", "echo ok");
    assert_eq!(server.deliver(push).await, 202);
    assert_eq!(
        states(&final_statuses(&repo, &head, "pipewright/ci").await),
        ["pending", "success"]
    );
    server.stop().await;
}

/// Every file and directory under `dir` (symlinks not followed), with its mode.
fn walk(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        out.push((
            entry.path().display().to_string(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_private_and_crash_leftovers_are_removed() {
    let gitea = FakeGitea::start().await;
    let (repo, push, head) = ci_repo(&gitea, "private", "echo secret > out.txt");
    let data = tempfile::tempdir().unwrap();
    // An older version left the directory open to everyone, and a crash left a workspace.
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let leftover = data.path().join("workspaces/run-77");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("terraform.tfstate"), "secrets of run 77").unwrap();

    let server = Server::start_in(data, &gitea, &[], "").await;
    assert_eq!(server.deliver(push).await, 202);
    assert_eq!(
        states(&final_statuses(&repo, &head, "pipewright/ci").await),
        ["pending", "success"]
    );
    assert!(!leftover.exists(), "the leftover workspace is still there");
    let data_dir = server.app.config.server.data_dir.clone();
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mut entries = Vec::new();
    walk(&data_dir, &mut entries);
    assert!(entries.len() > 10, "{entries:?}");
    // The test harness writes the configuration file there before the server starts.
    let open: Vec<&(String, u32)> = entries
        .iter()
        .filter(|(path, mode)| mode & 0o077 != 0 && !path.ends_with("/pipewright.toml"))
        .collect();
    assert!(open.is_empty(), "readable by group or others: {open:?}");
    server.stop().await;
}

async fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let resp = client().get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

fn dispatchable(gitea: &FakeGitea, owner: &str, name: &str) -> Repo {
    let repo = gitea.create_repo(owner, name);
    let job = format!("on:\n  dispatch: {{}}\nsteps:\n{}", step("job", "echo job"));
    let recover = format!(
        "on:\n  dispatch:\n    confirm: true\nsteps:\n{}",
        step("restore", "echo restore")
    );
    repo.commit("main", "ops")
        .write(".pipewright/job.yml", &job)
        .write(".pipewright/recover.yml", &recover)
        .push();
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_refuses_revision_syntax_and_stays_on_its_gitea_paths() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = dispatchable(&gitea, "org", "ops");
    repo.commit("main", "second").write("b.txt", "b\n").push();
    let dispatch = format!("{}/api/v1/repos/org/ops/pipelines/job/dispatch", server.url);
    gitea.clear_requests();
    let head = repo.head("main");
    for wanted in [
        "main~1",
        "main^",
        "--upload-pack=touch /tmp/pwned",
        "HEAD",
        "@{-1}",
        head.as_str(),
    ] {
        let (code, body) = post(&dispatch, API_TOKEN, json!({ "ref": wanted })).await;
        assert_eq!(code, 422, "{wanted}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("`{wanted}` is not a branch or tag name")),
            "{message}"
        );
    }
    assert!(
        gitea.requests().is_empty(),
        "refused refs reached Gitea: {:?}",
        gitea.requests()
    );
    assert!(!Path::new("/tmp/pwned").exists());

    // Names from the URL that try to leave their path segment.
    for path in [
        "org%2F..%2Fadmin/ops",
        "org/ops%3Fx=1",
        "org/..",
        "org/ops%2Fhooks",
    ] {
        let url = format!("{}/api/v1/repos/{path}/pipelines/job/dispatch", server.url);
        let (code, body) = post(&url, API_TOKEN, json!({})).await;
        assert!(code == 422 || code == 404, "{path}: {code} {body}");
    }
    assert!(gitea.requests().is_empty(), "{:?}", gitea.requests());
    for name in ["..%2F..%2Fadmin", "%2E%2E%2Fhooks", "job%3Fx", "..%2Fjob"] {
        let url = format!(
            "{}/api/v1/repos/org/ops/pipelines/{name}/dispatch",
            server.url
        );
        let (code, body) = post(&url, API_TOKEN, json!({})).await;
        assert_eq!(code, 404, "{name}: {body}");
    }
    for request in gitea.requests() {
        assert!(
            request.path == "/api/v1/repos/org/ops" || request.path.starts_with("/org/ops.git/"),
            "a dispatch reached {request:?}"
        );
    }
    // An exact branch name still runs, on the branch's head.
    let (code, body) = post(&dispatch, API_TOKEN, json!({ "ref": "refs/heads/main" })).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["sha"], head.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_and_schedules_skip_repositories_not_in_repos() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let nightly = format!(
        "on:\n  push: {{}}\n  schedule:\n    - cron: \"0 4 * * *\"\nsteps:\n{}",
        step("nightly", "echo nightly")
    );
    let mut repos = Vec::new();
    for name in ["allowed", "dropped"] {
        let (repo, push) = quiet_repo(&gitea, name);
        assert_eq!(server.deliver(push).await, 202);
        repos.push(repo);
    }
    eventually(
        Duration::from_secs(30),
        "both repositories known",
        || async { (server.app.store.known_repos().await.unwrap().len() == 2).then_some(()) },
    )
    .await;
    let data = server.stop_keeping_data().await;
    // Missed while down: new commits with pipelines.
    let heads: Vec<String> = repos
        .iter()
        .map(|r| {
            r.commit("main", "nightly")
                .write(".pipewright/nightly.yml", &nightly)
                .push()
        })
        .collect();
    gitea.clear_requests();

    let toml = "[[repos]]\nname = \"org/allowed\"\n";
    let server = Server::start_in(data, &gitea, &[], toml).await;
    assert_eq!(
        states(&final_statuses(&repos[0], &heads[0], "pipewright/nightly").await),
        ["pending", "success"]
    );
    // One more pass, to be sure catch-up went over every known repository.
    pipewright::server::catch_up(&server.app).await.unwrap();
    let four_am = 1_795_320_030; // 2026-11-22T04:00:30Z
    assert_eq!(
        pipewright::server::schedule_tick(&server.app, four_am).await,
        Ok(1)
    );
    let runs = server.runs().await;
    assert!(runs.iter().all(|r| r["repo"] == "org/allowed"), "{runs:#?}");
    assert!(repos[1].statuses(&heads[1]).is_empty());
    for request in gitea.requests() {
        assert!(
            !request.path.contains("/dropped"),
            "Pipewright asked for {request:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_reach_only_their_repositories_and_scopes() {
    let gitea = FakeGitea::start().await;
    let toml = r#"
[[api.token]]
token = "reader-a"
repos = ["org/a*"]
scopes = ["read"]
[[api.token]]
token = "deployer-a"
repos = ["org/a"]
scopes = ["dispatch"]
[[api.token]]
token = "admin-a"
repos = ["org/a"]
scopes = ["admin"]
"#;
    let server = Server::start_with_config(&gitea, &[], toml).await;
    let (a, b) = (
        dispatchable(&gitea, "org", "a"),
        dispatchable(&gitea, "org", "b"),
    );
    let url = |path: &str| format!("{}{path}", server.url);
    let dispatch = |repo: &str, pipeline: &str| {
        url(&format!(
            "/api/v1/repos/org/{repo}/pipelines/{pipeline}/dispatch"
        ))
    };
    let (code, run_a) = post(&dispatch("a", "job"), API_TOKEN, json!({})).await;
    assert_eq!(code, 201, "{run_a}");
    let (code, run_b) = post(&dispatch("b", "job"), API_TOKEN, json!({})).await;
    assert_eq!(code, 201, "{run_b}");
    for (repo, sha) in [
        (&a, run_a["sha"].as_str().unwrap()),
        (&b, run_b["sha"].as_str().unwrap()),
    ] {
        assert_eq!(
            states(&final_statuses(repo, sha, "pipewright/job").await),
            ["pending", "success"]
        );
    }
    let (id_a, id_b) = (run_a["id"].as_i64().unwrap(), run_b["id"].as_i64().unwrap());

    // Read-only, org/a: sees org/a only, cannot dispatch, cancel or re-run.
    let (code, list) = get(&url("/api/v1/runs"), "reader-a").await;
    assert_eq!(code, 200);
    let repos: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repo"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["org/a"]);
    let (code, list) = get(&url("/api/v1/runs?repo=org/b"), "reader-a").await;
    assert_eq!((code, list), (200, json!([])));
    assert_eq!(
        get(&url(&format!("/api/v1/runs/{id_a}")), "reader-a")
            .await
            .0,
        200
    );
    assert_eq!(
        get(&url(&format!("/api/v1/runs/{id_b}")), "reader-a")
            .await
            .0,
        404
    );
    assert_eq!(
        get(
            &url(&format!("/api/v1/runs/{id_b}/steps/0/log")),
            "reader-a"
        )
        .await
        .0,
        404
    );
    let page = client()
        .get(url("/"))
        .bearer_auth("reader-a")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("org/a") && !page.contains("org/b"), "{page}");
    let (code, body) = post(&dispatch("a", "job"), "reader-a", json!({})).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "this token does not have the `dispatch` scope"
    );
    assert_eq!(
        post(
            &url(&format!("/api/v1/runs/{id_a}/rerun")),
            "reader-a",
            json!({})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            &url(&format!("/api/v1/runs/{id_a}/cancel")),
            "reader-a",
            json!({})
        )
        .await
        .0,
        403
    );

    // Dispatch, org/a: not org/b; confirmations still needed; no reads.
    let (code, body) = post(&dispatch("b", "job"), "deployer-a", json!({})).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("this token does not cover org/b"))
    );
    let (code, body) = post(&dispatch("a", "recover"), "deployer-a", json!({})).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing input `confirm`"),
        "{body}"
    );
    let (code, body) = post(
        &dispatch("a", "recover"),
        "deployer-a",
        json!({ "inputs": { "confirm": "recover" } }),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(get(&url("/api/v1/runs"), "deployer-a").await.0, 403);

    // Admin, org/a: everything on org/a, nothing on org/b.
    assert_eq!(
        post(
            &url(&format!("/api/v1/runs/{id_b}/rerun")),
            "admin-a",
            json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        post(
            &url(&format!("/api/v1/runs/{id_b}/cancel")),
            "admin-a",
            json!({})
        )
        .await
        .0,
        404
    );
    let (code, body) = post(
        &url(&format!("/api/v1/runs/{id_a}/rerun")),
        "admin-a",
        json!({}),
    )
    .await;
    assert_eq!(
        (code, body["repo"].as_str()),
        (201, Some("org/a")),
        "{body}"
    );
    let (code, list) = get(&url("/api/v1/runs?limit=500"), "admin-a").await;
    assert_eq!(code, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["repo"] == "org/a"),
        "{list}"
    );
    // Unknown tokens are nobody.
    assert_eq!(get(&url("/api/v1/runs"), "reader-b").await.0, 401);
    server.stop().await;
}

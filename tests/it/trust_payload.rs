//! Attacks through webhook payloads, played by someone who holds the webhook secret (every
//! Gitea admin who set up a hook has seen it) or who can open a pull request: payload fields
//! aimed at git and the file system, commits that are not on the ref they claim, replays,
//! payloads built to crash the server, a stalled remote, concurrency groups aimed at other
//! repositories' runs, and pull requests that pass for trusted ones.

use std::{process::Stdio, time::Duration};

use pipewright_tests::fake_gitea::{Delivery, FakeGitea, Permission, PullAction, Repo};
use serde_json::Value;

use crate::serve::{Process, SECRET, Server, client, eventually, final_statuses, states, step};

/// A pipeline run on every push (and pull request) in the local test image.
fn on_push(script: &str) -> String {
    format!("on: [push, pull_request]\nsteps:\n{}", step("say", script))
}

/// A repository `org/<name>` whose second commit adds a pipeline running `script` on every
/// push; returns it with both commits.
fn ci_repo(gitea: &FakeGitea, name: &str, script: &str) -> (Repo, String, String) {
    let repo = gitea.create_repo("org", name);
    let (first, second) = ci_commits(&repo, script);
    (repo, first, second)
}

/// The two commits of [`ci_repo`], on an existing repository.
fn ci_commits(repo: &Repo, script: &str) -> (String, String) {
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &on_push(script))
        .push();
    (first, second)
}

/// A branch `branch` off main with one commit writing `file`, and a pull request of it into
/// main: the pull request's number and head commit.
fn open_pr(repo: &Repo, branch: &str, file: &str) -> (u64, String) {
    repo.create_branch(branch, "main");
    let head = repo.commit(branch, "work").write(file, "x\n").push();
    (repo.open_pull(branch, "main"), head)
}

/// Waits until every stored delivery has been processed.
async fn processed(server: &Server, deliveries: i64) {
    eventually(
        Duration::from_secs(60),
        "deliveries to be processed",
        || async {
            let count = server.app.store.delivery_count().await.unwrap();
            let pending = server.app.store.pending_deliveries(10).await.unwrap();
            (count == deliveries && pending.is_empty()).then_some(())
        },
    )
    .await;
}

async fn healthy(server: &Server) {
    let resp = client()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("the server still answers");
    assert!(resp.status().is_success(), "healthz: {}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_fields_never_reach_git_as_options_urls_or_paths() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let (repo, first, second) = ci_repo(&gitea, "app", "echo ran");
    let scratch = tempfile::tempdir().unwrap();
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "intact\n").unwrap();
    let pwned = scratch.path().join("pwned");
    let push = repo.push_event("main", &first, &second);

    // The clone URL is never read: the run fetches from [gitea].url, and no command runs.
    let (code, body) = push
        .edit(|v| {
            v["repository"]["clone_url"] =
                format!("--upload-pack=touch {};:", pwned.display()).into();
        })
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202, "{body}");
    let done = final_statuses(&repo, &second, "pipewright/ci").await;
    assert_eq!(states(&done).last(), Some(&"success"), "{done:?}");

    // Fields that would be options, revisions or paths: refused with 400 naming the field.
    let zero = repo.zero_sha();
    let output = format!("--output={}", victim.display());
    let attacks: Vec<(&str, Delivery)> = vec![
        (
            "before",
            push.edit(|v| v["before"] = output.clone().into()).replay(),
        ),
        (
            "after",
            push.edit(|v| v["after"] = output.clone().into()).replay(),
        ),
        ("after", push.edit(|v| v["after"] = "HEAD".into()).replay()),
        (
            "after",
            push.edit(|v| v["after"] = format!("{}~1", &second[..38]).into())
                .replay(),
        ),
        (
            "ref",
            push.edit(|v| v["ref"] = "refs/heads/--upload-pack=touch".into())
                .replay(),
        ),
        (
            "ref",
            push.edit(|v| v["ref"] = "refs/heads/a..b".into()).replay(),
        ),
        (
            "repository.full_name",
            push.edit(|v| v["repository"]["full_name"] = "../../../tmp/x".into())
                .replay(),
        ),
        (
            "repository.full_name",
            push.edit(|v| {
                v["repository"]["full_name"] =
                    format!("--upload-pack=touch {}/x", pwned.display()).into()
            })
            .replay(),
        ),
        (
            "repository.id",
            push.edit(|v| v["repository"]["id"] = 0.into()).replay(),
        ),
        (
            "repository.default_branch",
            push.edit(|v| v["repository"]["default_branch"] = "--output=x".into())
                .replay(),
        ),
        (
            "before",
            push.edit(|v| v["before"] = zero[..20].to_string().into())
                .replay(),
        ),
    ];
    for (field, delivery) in attacks {
        let (code, body) = delivery.deliver(&server.hook(), SECRET).await;
        assert_eq!(code, 400, "{field}: {body}");
        assert!(body.contains(field), "the answer names {field}: {body}");
    }
    let pr_head = repo.create_branch("feature", "main");
    let number = repo.open_pull("feature", "main");
    let pr = repo.pull_request_event(number, PullAction::Opened);
    let (code, body) = pr
        .edit(|v| v["pull_request"]["head"]["sha"] = output.clone().into())
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("pull_request.head.sha"), "{body}");
    let (code, body) = pr
        .edit(|v| v["pull_request"]["base"]["ref"] = "--upload-pack=x".into())
        .replay()
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 400, "{body}");
    let _ = pr_head;

    // Nothing was run on the host, no file was written, nothing was fetched elsewhere.
    assert!(!pwned.exists(), "a payload ran a command on the host");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "intact\n");
    let mirrors = server.app.config.server.data_dir.join("git");
    let owners: Vec<String> = std::fs::read_dir(&mirrors)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(owners, ["org"], "mirrors only of the real repository");
    assert_eq!(server.runs().await.len(), 1);
    healthy(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_is_not_on_its_ref_runs_nothing() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "app");
    let base = repo
        .commit("main", "ci")
        .write(
            ".pipewright/ci.yml",
            &on_push("echo \"ran on $PIPEWRIGHT_REF\""),
        )
        .push();
    // A commit on another branch, never merged: its pipeline would run with main's trust.
    repo.create_branch("evil", "main");
    let evil = repo
        .commit("evil", "evil")
        .write(
            ".pipewright/ci.yml",
            &on_push("echo \"evil on $PIPEWRIGHT_REF\""),
        )
        .push();
    let forged = repo.push_event("main", &base, &evil);
    let (code, _) = forged.deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 202);
    processed(&server, 1).await;
    assert!(
        server.runs().await.is_empty(),
        "a commit not on main ran as main"
    );

    // A pull request whose payload names a commit that is not its head.
    let (number, _) = open_pr(&repo, "feature", "a.txt");
    let (code, _) = repo
        .pull_request_event(number, PullAction::Opened)
        .edit(|v| v["pull_request"]["head"]["sha"] = evil.clone().into())
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    processed(&server, 2).await;
    assert!(server.runs().await.is_empty());

    // The genuine events run, each with its own verified ref.
    let (code, _) = repo
        .push_event("evil", &base, &evil)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202);
    let statuses = final_statuses(&repo, &evil, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    let runs = server.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["ref"], "refs/heads/evil");
    let log = server.log(runs[0]["id"].as_i64().unwrap(), 0).await;
    assert!(log.contains("evil on refs/heads/evil"), "{log}");
    healthy(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_push_runs_nothing_even_after_its_run_ended() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let (repo, first, second) = ci_repo(&gitea, "app", "echo once");
    let push = repo.push_event("main", &first, &second);
    assert_eq!(push.deliver(&server.hook(), SECRET).await.0, 202);
    final_statuses(&repo, &second, "pipewright/ci").await;
    for n in 0..3 {
        assert_eq!(push.replay().deliver(&server.hook(), SECRET).await.0, 202);
        processed(&server, n + 2).await;
    }
    assert_eq!(
        server.runs().await.len(),
        1,
        "each replay ran the push again"
    );
    server.stop().await;
}

/// `{"a":[[[[…]]]]}` nested `depth` levels inside an otherwise valid push.
fn deep_push(push: &Delivery, depth: usize) -> Delivery {
    let text = push.text();
    let body = format!(
        "{{\"deep\":{}{},{}",
        "[".repeat(depth),
        "]".repeat(depth),
        text.trim_start().trim_start_matches('{')
    );
    Delivery::from_body("push", body.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_built_to_crash_the_server_are_refused_and_it_stays_up() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let (repo, first, second) = ci_repo(&gitea, "app", "echo ran");
    let push = repo.push_event("main", &first, &second);

    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        ("50 000 levels deep", deep_push(&push, 50_000).body),
        ("deep objects", {
            let mut s = "{\"a\":".repeat(50_000);
            s.push('1');
            s.push_str(&"}".repeat(50_000));
            s.into_bytes()
        }),
        ("not UTF-8", {
            let mut b = push.text().into_bytes();
            let at = b.iter().position(|c| *c == b'"').unwrap() + 1;
            b.insert(at, 0xff);
            b
        }),
    ];
    bodies.push((
        "a number too large",
        push.text()
            .replacen(&format!("\"id\": {}", repo.id()), "\"id\": 1e400", 1)
            .into_bytes(),
    ));
    bodies.push((
        "an id past i64",
        push.text()
            .replacen(
                &format!("\"id\": {}", repo.id()),
                "\"id\": 18446744073709551615",
                1,
            )
            .into_bytes(),
    ));
    for (what, body) in bodies {
        let (code, answer) = Delivery::from_body("push", body)
            .deliver(&server.hook(), SECRET)
            .await;
        assert_eq!(code, 400, "{what}: {answer}");
        healthy(&server).await;
    }
    // A deep document of an event type that runs nothing is refused too.
    let (code, _) = Delivery::from_body("issues", deep_push(&push, 50_000).body)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 400);
    assert_eq!(server.app.store.delivery_count().await.unwrap(), 0);

    // Still serving: the genuine push runs.
    assert_eq!(push.deliver(&server.hook(), SECRET).await.0, 202);
    let statuses = final_statuses(&repo, &second, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_remote_delays_only_its_own_repository() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_with(&gitea, &[("PIPEWRIGHT_GITEA__GIT_TIMEOUT", "2s")]).await;
    let stuck = gitea.create_repo("org", "stuck");
    let fine = gitea.create_repo("org", "fine");
    let heads = [
        ci_commits(&stuck, "echo ran"),
        ci_commits(&fine, "echo ran"),
    ];
    stuck.stall_git(true);
    let (first, second) = &heads[0];
    assert_eq!(
        stuck
            .push_event("main", first, second)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    let (first, second) = &heads[1];
    assert_eq!(
        fine.push_event("main", first, second)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    let statuses = final_statuses(&fine, second, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    // The stalled repository's delivery has not run: its fetch was stopped, it waits to
    // be tried again.
    assert!(stuck.statuses(&heads[0].1).is_empty());
    assert_eq!(
        server.app.store.pending_deliveries(10).await.unwrap().len(),
        1
    );
    // Its fetch is stopped at the timeout and tried again later (a second request).
    eventually(
        Duration::from_secs(30),
        "the stalled fetch to be retried",
        || async {
            let tries = gitea
                .requests()
                .iter()
                .filter(|r| r.path.starts_with("/org/stuck.git/info/refs"))
                .count();
            (tries >= 2).then_some(())
        },
    )
    .await;
    assert!(stuck.statuses(&heads[0].1).is_empty());
    stuck.stall_git(false);
    let statuses = final_statuses(&stuck, &heads[0].1, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_crashing_the_process_is_given_up() {
    let gitea = FakeGitea::start().await;
    let (repo, first, second) = ci_repo(&gitea, "crashy", "echo ran");
    let data = tempfile::tempdir().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let url = format!("http://{addr}");
    // Processing this delivery never finishes (its fetch hangs) and the process dies in
    // the middle of it, again and again: what a payload that crashes the server looks like
    // from the database's side.
    repo.stall_git(true);
    let fetches = || {
        gitea
            .requests()
            .iter()
            .filter(|r| r.path.contains("org/crashy.git"))
            .count()
    };
    let log = data.path().join("serve.log");
    let start = || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        Process::start_with(&gitea, &addr, data.path(), &[], Stdio::from(file))
    };
    let server = start();
    server.ready(&url).await;
    let (code, _) = repo
        .push_event("main", &first, &second)
        .deliver(&format!("{url}/hooks/gitea"), SECRET)
        .await;
    assert_eq!(code, 202);
    let mut server = Some(server);
    for crash in 1..=5 {
        let before = fetches();
        if crash > 1 {
            let restarted = start();
            restarted.ready(&url).await;
            server = Some(restarted);
        }
        eventually(Duration::from_secs(30), "processing to start", || async {
            (fetches() > before).then_some(())
        })
        .await;
        server.take().unwrap().kill();
    }
    repo.stall_git(false);
    let last = start();
    last.ready(&url).await;
    eventually(
        Duration::from_secs(30),
        "the delivery to be given up",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("given up").then_some(())
        },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("started 5 times without finishing"),
        "the log says why: {text}"
    );
    // The server goes on serving, and the next event of that repository runs. (Catch-up may
    // run the given-up commit too, from Gitea's branch list rather than the payload.)
    let third = repo.commit("main", "more").write("b.txt", "b\n").push();
    let (code, _) = repo
        .push_event("main", &second, &third)
        .deliver(&format!("{url}/hooks/gitea"), SECRET)
        .await;
    assert_eq!(code, 202);
    let statuses = final_statuses(&repo, &third, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    drop(last);
}

/// The runs of a repository, oldest first.
async fn runs_of(server: &Server, repo: &str) -> Vec<Value> {
    let mut runs: Vec<Value> = server
        .runs()
        .await
        .into_iter()
        .filter(|r| r["repo"] == repo)
        .collect();
    runs.sort_by_key(|r| r["id"].as_i64());
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_groups_cannot_reach_other_repositories_or_trusted_runs() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let victim = gitea.create_repo("org", "victim");
    let deploy = format!(
        "on: push\nconcurrency: {{ group: deploy }}\nsteps:\n{}",
        step("apply", "sleep 3\necho applied")
    );
    // The victim's own pull requests plan in the same group, cancelling older ones.
    let plan = format!(
        "on: pull_request\nconcurrency: {{ group: deploy, cancel_in_progress: true }}\nsteps:\n{}",
        step("plan", "echo planned")
    );
    let base = victim
        .commit("main", "ci")
        .write(".pipewright/deploy.yml", &deploy)
        .write(".pipewright/plan.yml", &plan)
        .push();
    let applying = victim.commit("main", "one").write("a.txt", "1\n").push();
    assert_eq!(
        victim
            .push_event("main", &base, &applying)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    eventually(Duration::from_secs(30), "the apply to run", || async {
        runs_of(&server, "org/victim")
            .await
            .first()
            .is_some_and(|r| r["state"] == "running")
            .then_some(())
    })
    .await;
    let queued = victim.commit("main", "two").write("a.txt", "2\n").push();
    assert_eq!(
        victim
            .push_event("main", &applying, &queued)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );

    // Another repository names the victim's group, with cancel_in_progress.
    let attacker = gitea.create_repo("org", "attacker");
    let hostile = format!(
        "on: push\nconcurrency: {{ group: \"org/victim/deploy\", cancel_in_progress: true }}\nsteps:\n{}",
        step("x", "echo hostile")
    );
    let a1 = attacker
        .commit("main", "init")
        .write("README.md", "x\n")
        .push();
    let a2 = attacker
        .commit("main", "ci")
        .write(".pipewright/x.yml", &hostile)
        .push();
    assert_eq!(
        attacker
            .push_event("main", &a1, &a2)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    // And a pull request of the victim's own plans in the group, cancelling.
    let (number, _) = open_pr(&victim, "feature", "b.txt");
    assert_eq!(
        victim
            .pull_request_event(number, PullAction::Opened)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    final_statuses(&attacker, &a2, "pipewright/x").await;
    let applied = final_statuses(&victim, &applying, "pipewright/deploy").await;
    assert_eq!(states(&applied).last(), Some(&"success"), "{applied:?}");
    let next = final_statuses(&victim, &queued, "pipewright/deploy").await;
    assert_eq!(states(&next).last(), Some(&"success"), "{next:?}");
    let runs = runs_of(&server, "org/victim").await;
    let deploys: Vec<&Value> = runs.iter().filter(|r| r["pipeline"] == "deploy").collect();
    assert_eq!(deploys.len(), 2);
    for run in deploys {
        assert_eq!(run["state"], "success", "{run:#}");
        assert_eq!(run["description"], "all steps succeeded", "{run:#}");
    }
    let attacker_runs = runs_of(&server, "org/attacker").await;
    assert_eq!(
        attacker_runs[0]["concurrency_group"], "org/attacker/org/victim/deploy",
        "groups are kept within their repository"
    );
    server.stop().await;
}

/// Runs a pull request's pipeline and returns what its step printed.
async fn pull_request_log(server: &Server, delivery: Delivery, sha: &str) -> String {
    let newest = |runs: &[Value]| runs.iter().filter_map(|r| r["id"].as_i64()).max();
    let before = newest(&server.runs().await).unwrap_or(0);
    assert_eq!(delivery.deliver(&server.hook(), SECRET).await.0, 202);
    let run = eventually(
        Duration::from_secs(60),
        "the pull request's run",
        || async {
            server.runs().await.into_iter().find(|r| {
                r["sha"] == sha
                    && r["id"].as_i64().unwrap_or(0) > before
                    && !matches!(r["state"].as_str(), Some("queued" | "running"))
            })
        },
    )
    .await;
    server.log(run["id"].as_i64().unwrap(), 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_that_only_look_trusted_get_no_identity_token() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "app");
    let ci = format!(
        "on: pull_request\nsteps:\n{}",
        step("who", "echo \"token=${PIPEWRIGHT_ID_TOKEN:+present}\"")
    );
    repo.commit("main", "ci")
        .write(".pipewright/ci.yml", &ci)
        .push();

    // The repository's owner: trusted, gets a token.
    let (number, owned) = open_pr(&repo, "owner-work", "a.txt");
    let opened = repo.pull_request_event(number, PullAction::Opened);
    let log = pull_request_log(&server, opened.clone(), &owned).await;
    assert!(log.contains("token=present"), "{log}");

    // The same pull request's payload with the head repository's id left out (0): not
    // trusted. (A new delivery of the same event is allowed once its runs ended.)
    let log = pull_request_log(
        &server,
        opened
            .edit(|v| v["pull_request"]["head"]["repo_id"] = 0.into())
            .replay(),
        &owned,
    )
    .await;
    assert!(log.contains("token=") && !log.contains("present"), "{log}");

    // A reader's pull request whose head is the base repository itself (Gitea's AGit flow):
    // not trusted either.
    let mallory = repo.as_user("mallory");
    let (number, theirs) = open_pr(&mallory, "mallory-work", "b.txt");
    let log = pull_request_log(
        &server,
        mallory.pull_request_event(number, PullAction::Opened),
        &theirs,
    )
    .await;
    assert!(
        !log.contains("present"),
        "a reader's pull request got a token: {log}"
    );
    assert!(
        gitea
            .api_requests()
            .iter()
            .any(|r| r.path == "/api/v1/repos/org/app/collaborators/mallory/permission"),
        "Gitea was asked for the author's permission"
    );

    // When Pipewright's user may not ask (it is no repository admin), even the owner's pull
    // request runs untrusted, rather than not at all.
    repo.set_permission(gitea.bot_login(), Permission::Write);
    let (number, more) = open_pr(&repo, "owner-more", "c.txt");
    let log = pull_request_log(
        &server,
        repo.pull_request_event(number, PullAction::Opened),
        &more,
    )
    .await;
    assert!(log.contains("token=") && !log.contains("present"), "{log}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_request_with_hostile_pipeline_files_cannot_crash_the_server() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "app");
    repo.commit("main", "ci")
        .write(".pipewright/ci.yml", &on_push("echo fine"))
        .push();
    let fork = gitea.fork_repo(&repo, "mallory");
    // 50 000 levels of nesting (the review's crash, at every restart), aliases that would
    // expand to billions of values, a file of 10 MB, and a pids count past i64.
    let deep = format!(
        "on: push\nsteps: {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i", "j"]
        .iter()
        .enumerate()
    {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h", "i"][i];
        laughs.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    laughs.push_str("on: push\nsteps: *j\n");
    let huge = format!("on: push\n# {}\nsteps: []\n", "x".repeat(10 << 20));
    let pids = "on: pull_request\nsteps:\n  - name: s\n    image: busybox\n    run: \"true\"\n    pids: 18446744073709551615\n";
    let head = fork
        .commit("main", "hostile")
        .write(".pipewright/deep.yml", &deep)
        .write(".pipewright/laughs.yml", &laughs)
        .write(".pipewright/huge.yml", &huge)
        .write(".pipewright/pids.yml", pids)
        .push();
    let number = repo.open_pull_from(&fork, "main", "main");
    let opened = repo.pull_request_event(number, PullAction::Opened);
    assert_eq!(server.deliver(opened.clone()).await, 202);
    for (context, says) in [
        (
            "pipewright/deep",
            &["nesting deeper than 64", "recursion limit"][..],
        ),
        ("pipewright/laughs", &["values"]),
        ("pipewright/huge", &["larger than the limit"]),
        ("pipewright/pids", &["pids"]),
    ] {
        let statuses = final_statuses(&repo, &head, context).await;
        let last = statuses.last().unwrap();
        assert_eq!(last.state, "error", "{context}: {statuses:?}");
        assert!(
            says.iter().any(|s| last.description.contains(s)),
            "{context}: {}",
            last.description
        );
        assert!(
            last.description.chars().count() <= 140,
            "{}",
            last.description
        );
    }
    healthy(&server).await;
    // The delivery is done with: a restart on the same data finds nothing to choke on, and
    // the repository's own pushes still run.
    let data = server.stop_keeping_data().await;
    let server = Server::start_in(data, &gitea, &[], "").await;
    healthy(&server).await;
    assert!(
        server
            .app
            .store
            .pending_deliveries(10)
            .await
            .unwrap()
            .is_empty()
    );
    let before = repo.head("main");
    let after = repo.commit("main", "more").write("b.txt", "b\n").push();
    assert_eq!(
        server
            .deliver(repo.push_event("main", &before, &after))
            .await,
        202
    );
    let statuses = final_statuses(&repo, &after, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_runs_missed_events_once_through_the_same_checks() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let ci = format!(
        "on: [push, pull_request]\nsteps:\n{}",
        step(
            "who",
            "echo \"token=${PIPEWRIGHT_ID_TOKEN:+present} on $PIPEWRIGHT_REF\""
        )
    );
    let repo = gitea.create_repo("org", "app");
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &ci)
        .push();
    // One delivered push makes the repository known; what follows is missed.
    assert_eq!(
        server
            .deliver(repo.push_event("main", &first, &second))
            .await,
        202
    );
    final_statuses(&repo, &second, "pipewright/ci").await;
    let data = server.stop_keeping_data().await;
    let missed = repo.commit("main", "missed").write("a.txt", "a\n").push();
    let fork = gitea.fork_repo(&repo, "mallory");
    let forked = fork.commit("main", "fork").write("b.txt", "b\n").push();
    let number = repo.open_pull_from(&fork, "main", "main");

    // Catch-up at start, and again a second later: each missed event runs once.
    let server = Server::start_in(
        data,
        &gitea,
        &[("PIPEWRIGHT_SERVER__CATCH_UP_INTERVAL", "1s")],
        "",
    )
    .await;
    let statuses = final_statuses(&repo, &missed, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    let statuses = final_statuses(&repo, &forked, "pipewright/ci").await;
    assert_eq!(states(&statuses).last(), Some(&"success"));
    // Two more catch-ups (each lists the branches) find nothing more to run.
    let listings = || {
        gitea
            .api_requests()
            .iter()
            .filter(|r| r.path == "/api/v1/repos/org/app/branches")
            .count()
    };
    let seen = listings();
    eventually(Duration::from_secs(30), "two more catch-ups", || async {
        (listings() >= seen + 2).then_some(())
    })
    .await;
    let runs = server.runs().await;
    let of = |sha: &str| runs.iter().filter(|r| r["sha"] == sha).count();
    assert_eq!((of(&missed), of(&forked)), (1, 1), "{runs:#?}");
    // The fork's pull request found by catch-up is as untrusted as a delivered one.
    let pr_run = runs.iter().find(|r| r["sha"] == forked.as_str()).unwrap();
    let log = server.log(pr_run["id"].as_i64().unwrap(), 0).await;
    assert!(
        log.contains(&format!("token= on refs/pull/{number}/head")),
        "{log}"
    );
    server.stop().await;
}

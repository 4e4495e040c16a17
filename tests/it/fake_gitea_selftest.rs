//! Checks that the fake Gitea (`pipewright_tests::fake_gitea`) behaves like Gitea where the
//! end-to-end tests rely on it: git over smart HTTP with token auth, the REST API's shapes
//! and errors, webhook payloads and signatures, fault injection.

use std::{
    collections::BTreeMap,
    process::Output,
    sync::{Arc, Mutex},
};

use axum::{
    extract::Request,
    http::{HeaderMap, StatusCode},
};
use expect_test::expect;
use hmac::{Hmac, KeyInit, Mac};
use pipewright_tests::fake_gitea::{
    BOT_LOGIN, ContentType, DeliverOptions, FakeGitea, Permission, PullAction, RefKind, Repo,
    SignatureMode, http_client, sign, sign_sha1,
};
use serde_json::{Value, json};
use sha2::Sha256;

/// Runs the fake's clean `git` with `args` in `dir`.
fn git(gitea: &FakeGitea, dir: &std::path::Path, args: &[&str]) -> Output {
    gitea
        .git_command()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cannot run git")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// An API call with the token in `Authorization: token`.
async fn call(
    gitea: &FakeGitea,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    call_as(
        gitea,
        method,
        path,
        body,
        Some(&format!("token {}", gitea.token())),
    )
    .await
}

async fn call_as(
    gitea: &FakeGitea,
    method: &str,
    path: &str,
    body: Option<Value>,
    authorization: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let url = format!("{}{path}", gitea.api_url());
    let mut request = http_client().request(method.parse().unwrap(), url);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, headers, json)
}

/// A repository with one commit on `main`.
fn repo_with_history(gitea: &FakeGitea, owner: &str, name: &str) -> (Repo, String) {
    let repo = gitea.create_repo(owner, name);
    let sha = repo
        .commit("main", "initial")
        .write("README.md", "hello\n")
        .write("src/lib.rs", "// lib\n")
        .push();
    (repo, sha)
}

#[tokio::test]
async fn git_clone_and_fetch_over_http_need_the_token() {
    let gitea = FakeGitea::start().await;
    let (repo, main) = repo_with_history(&gitea, "acme", "infra");
    let work = tempfile::tempdir().unwrap();
    let header = format!("http.extraHeader=Authorization: token {}", gitea.token());

    // Authorization: token, on the URL with .git.
    let out = git(
        &gitea,
        work.path(),
        &["-c", &header, "clone", "--quiet", &repo.clone_url(), "a"],
    );
    stdout(&out);
    let head = stdout(&git(&gitea, &work.path().join("a"), &["rev-parse", "HEAD"]));
    assert_eq!(head, main);

    // Basic auth with the token as password, on the URL without .git.
    let url = format!(
        "http://someone:{}@{}/acme/infra",
        gitea.token(),
        gitea.url().trim_start_matches("http://")
    );
    stdout(&git(&gitea, work.path(), &["clone", "--quiet", &url, "b"]));

    // Basic auth with the token as user name.
    let url = format!(
        "http://{}@{}/acme/infra.git",
        gitea.token(),
        gitea.url().trim_start_matches("http://")
    );
    stdout(&git(&gitea, work.path(), &["clone", "--quiet", &url, "c"]));

    // No credentials, or a wrong token: refused.
    let out = git(
        &gitea,
        work.path(),
        &["clone", "--quiet", &repo.clone_url(), "d"],
    );
    assert!(
        !out.status.success(),
        "an anonymous clone of a private repository worked"
    );
    let wrong = "http.extraHeader=Authorization: token 0123456789abcdef0123456789abcdef01234567";
    let out = git(
        &gitea,
        work.path(),
        &["-c", wrong, "clone", "--quiet", &repo.clone_url(), "e"],
    );
    assert!(!out.status.success(), "a clone with a wrong token worked");

    // A fork's pull request is fetchable from the base repository as refs/pull/1/head.
    let fork = gitea.fork_repo(&repo, "mallory");
    let fork_tip = fork
        .commit("feature", "from the fork")
        .write("evil.sh", "echo hi\n")
        .push();
    let number = repo.open_pull_from(&fork, "feature", "main");
    assert_eq!(number, 1);
    let a = work.path().join("a");
    stdout(&git(
        &gitea,
        &a,
        &[
            "-c",
            &header,
            "fetch",
            "--quiet",
            "origin",
            "refs/pull/1/head",
        ],
    ));
    assert_eq!(
        stdout(&git(&gitea, &a, &["rev-parse", "FETCH_HEAD"])),
        fork_tip
    );

    // New commits on the fork reach refs/pull/1/head when Gitea syncs the pull request.
    let newer = fork
        .commit("feature", "more")
        .write("evil.sh", "echo more\n")
        .push();
    assert_eq!(repo.pull_head(1), fork_tip);
    assert_eq!(repo.sync_pull(1), newer);
    stdout(&git(
        &gitea,
        &a,
        &[
            "-c",
            &header,
            "fetch",
            "--quiet",
            "origin",
            "refs/pull/1/head",
        ],
    ));
    assert_eq!(
        stdout(&git(&gitea, &a, &["rev-parse", "FETCH_HEAD"])),
        newer
    );

    // What was recorded: schemes only, never the token.
    let requests = gitea.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/acme/infra.git/info/refs" && r.status == Some(200))
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/acme/infra/git-upload-pack")
    );
    assert!(requests.iter().any(|r| r.status == Some(401)));
    assert!(!format!("{requests:?}").contains(gitea.token()));
}

#[tokio::test]
async fn git_http_serves_sha256_repositories_and_gzip_requests() {
    let gitea = FakeGitea::start().await;
    let repo = gitea.create_repo_sha256("acme", "next");
    let sha = repo.commit("main", "first").write("a.txt", "a\n").push();
    assert_eq!(sha.len(), 64);
    let work = tempfile::tempdir().unwrap();
    let header = format!("http.extraHeader=Authorization: bearer {}", gitea.token());
    stdout(&git(
        &gitea,
        work.path(),
        &["-c", &header, "clone", "--quiet", &repo.clone_url(), "n"],
    ));
    let clone = work.path().join("n");
    assert_eq!(stdout(&git(&gitea, &clone, &["rev-parse", "HEAD"])), sha);
    assert_eq!(
        stdout(&git(&gitea, &clone, &["rev-parse", "--show-object-format"])),
        "sha256"
    );

    // A gzip-compressed protocol-v2 request, as git sends large ones.
    let request = b"0014command=ls-refs\n0019object-format=sha256\n0000";
    let mut gzip = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    std::io::Write::write_all(&mut gzip.stdin.take().unwrap(), request).unwrap();
    let compressed = gzip.wait_with_output().unwrap().stdout;
    let response = http_client()
        .post(format!("{}/acme/next.git/git-upload-pack", gitea.url()))
        .header("Authorization", format!("token {}", gitea.token()))
        .header("Content-Type", "application/x-git-upload-pack-request")
        .header("Content-Encoding", "gzip")
        .header("Git-Protocol", "version=2")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-git-upload-pack-result"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains(&format!("{sha} refs/heads/main")), "{text}");
}

#[tokio::test]
async fn statuses_are_created_listed_and_combined_like_gitea() {
    let gitea = FakeGitea::start().await;
    let (_repo, sha) = repo_with_history(&gitea, "acme", "infra");

    // Create with a short sha and `Authorization: token`.
    let body = json!({
        "state": "pending",
        "target_url": "http://pipewright/runs/1",
        "description": " queued ",
        "context": "pipewright/build",
    });
    let (status, _, created) = call(
        &gitea,
        "POST",
        &format!("/repos/acme/infra/statuses/{}", &sha[..10]),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "pending");
    assert!(
        created.get("state").is_none(),
        "Gitea puts the state under `status`"
    );
    assert_eq!(created["id"], 1);
    assert_eq!(created["description"], "queued");
    assert_eq!(created["creator"]["login"], BOT_LOGIN);
    assert_eq!(created["creator"]["username"], BOT_LOGIN);
    assert!(
        created["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/statuses/{sha}"))
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    // `Bearer`, in any case, and ?access_token= work too.
    let body = json!({"state": "success", "context": "pipewright/build", "description": "ok"});
    let (status, _, second) = call_as(
        &gitea,
        "POST",
        &format!("/repos/acme/infra/statuses/{sha}"),
        Some(body),
        Some(&format!("BEARER {}", gitea.token())),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(second["id"], 2);
    let body = json!({"state": "error", "context": "pipewright/deploy"});
    let path = format!(
        "/repos/acme/infra/statuses/{sha}?access_token={}",
        gitea.token()
    );
    let (status, _, _) = call_as(&gitea, "POST", &path, Some(body), None).await;
    assert_eq!(status, 201);

    // Lists: newest first, by ref or by sha.
    let (status, headers, list) = call(
        &gitea,
        "GET",
        "/repos/acme/infra/commits/main/statuses",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "3");
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["error", "success", "pending"]);
    let (_, _, by_sha) = call(
        &gitea,
        "GET",
        &format!("/repos/acme/infra/statuses/{sha}"),
        None,
    )
    .await;
    assert_eq!(by_sha, list);

    // Combined (1.25): latest per context; an error makes it failure.
    let (status, _, combined) =
        call(&gitea, "GET", "/repos/acme/infra/commits/main/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(combined["state"], "failure");
    assert_eq!(combined["sha"], sha.as_str());
    assert_eq!(combined["total_count"], 2);
    assert_eq!(combined["repository"]["full_name"], "acme/infra");

    // A commit without statuses: state "" and statuses null.
    let other = _repo.commit("main", "second").write("b", "b").push();
    let (_, _, empty) = call(
        &gitea,
        "GET",
        &format!("/repos/acme/infra/commits/{other}/status"),
        None,
    )
    .await;
    assert_eq!(empty["state"], "");
    assert_eq!(empty["statuses"], Value::Null);

    // Errors: unknown commit 404, unknown state 422, no token 404 (private), wrong token 401.
    let missing = "0123456789012345678901234567890123456789";
    let (status, _, _) = call(
        &gitea,
        "POST",
        &format!("/repos/acme/infra/statuses/{missing}"),
        Some(json!({"state": "success"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = call(
        &gitea,
        "POST",
        &format!("/repos/acme/infra/statuses/{sha}"),
        Some(json!({"state": "done"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _, _) = call_as(
        &gitea,
        "POST",
        &format!("/repos/acme/infra/statuses/{sha}"),
        Some(json!({"state": "success"})),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, error) = call_as(
        &gitea,
        "GET",
        "/repos/acme/infra",
        None,
        Some("token wrong"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(error["message"], "invalid username, password or token");

    // The accessor sees them in the order received; requests keep schemes, not tokens.
    let stored = gitea.statuses("acme", "infra", &sha);
    let contexts: Vec<(&str, &str)> = stored
        .iter()
        .map(|s| (s.state.as_str(), s.context.as_str()))
        .collect();
    assert_eq!(
        contexts,
        [
            ("pending", "pipewright/build"),
            ("success", "pipewright/build"),
            ("error", "pipewright/deploy")
        ]
    );
    let requests = gitea.api_requests();
    let schemes: Vec<Option<&str>> = requests.iter().take(3).map(|r| r.auth.as_deref()).collect();
    assert_eq!(schemes, [Some("token"), Some("bearer"), Some("query")]);
    assert!(
        requests[2]
            .query
            .as_deref()
            .unwrap()
            .contains("access_token=REDACTED")
    );
    assert_eq!(
        requests[0].body_json().unwrap()["context"],
        "pipewright/build"
    );
    assert!(!format!("{requests:?}").contains(gitea.token()));
}

#[tokio::test]
async fn repository_branch_pull_comment_and_permission_endpoints() {
    let gitea = FakeGitea::start().await;
    let (repo, main) = repo_with_history(&gitea, "acme", "infra");
    let feature = repo
        .commit("feature", "feature work")
        .write("f.txt", "f\n")
        .push();
    let other = repo
        .commit("other", "other work")
        .write("o.txt", "o\n")
        .push();
    assert_eq!(repo.as_user("alice").open_pull("feature", "main"), 1);
    assert_eq!(repo.open_pull("other", "main"), 2);

    let (status, _, json) = call(&gitea, "GET", "/repos/ACME/Infra", None).await;
    assert_eq!(status, 200);
    assert_eq!(json["id"], repo.id());
    assert_eq!(json["owner"]["id"], repo.owner_id());
    assert_eq!(json["private"], true);
    assert_eq!(json["object_format_name"], "sha1");
    assert_eq!(json["default_branch"], "main");
    assert_eq!(json["clone_url"], repo.clone_url());
    assert_eq!(
        json["permissions"],
        json!({"admin": true, "push": true, "pull": true})
    );

    let (_, headers, branches) = call(&gitea, "GET", "/repos/acme/infra/branches", None).await;
    assert_eq!(headers["x-total-count"], "3");
    let main_branch = branches
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "main")
        .unwrap();
    assert_eq!(main_branch["commit"]["id"], main.as_str());
    assert_eq!(main_branch["commit"]["message"], "initial\n");
    assert_eq!(main_branch["protected"], false);

    // Pulls: newest first, paginated with limit/page, X-Total-Count and Link.
    let (_, headers, page) = call(
        &gitea,
        "GET",
        "/repos/acme/infra/pulls?state=open&limit=1&page=1",
        None,
    )
    .await;
    assert_eq!(headers["x-total-count"], "2");
    assert!(headers["link"].to_str().unwrap().contains("rel=\"next\""));
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["number"], 2);
    let (status, _, pull) = call(&gitea, "GET", "/repos/acme/infra/pulls/1", None).await;
    assert_eq!(status, 200);
    assert_eq!(pull["user"]["login"], "alice");
    assert_eq!(pull["base"]["ref"], "main");
    assert_eq!(pull["base"]["sha"], main.as_str());
    assert_eq!(pull["base"]["repo_id"], repo.id());
    assert_eq!(pull["head"]["ref"], "feature");
    assert_eq!(pull["head"]["sha"], feature.as_str());
    assert_eq!(pull["head"]["repo"]["full_name"], "acme/infra");
    assert_eq!(pull["merge_base"], main.as_str());
    assert_ne!(other, feature);

    // Comments: created, edited, listed; Gitea's shape has no `url` or `node_id`.
    let (status, _, comment) = call(
        &gitea,
        "POST",
        "/repos/acme/infra/issues/1/comments",
        Some(json!({"body": "plan: 1 to add"})),
    )
    .await;
    assert_eq!(status, 201);
    assert!(comment.get("url").is_none() && comment.get("node_id").is_none());
    assert_eq!(comment["user"]["login"], BOT_LOGIN);
    assert!(comment["html_url"].as_str().unwrap().ends_with(&format!(
        "/acme/infra/pulls/1#issuecomment-{}",
        comment["id"]
    )));
    assert!(
        comment["pull_request_url"]
            .as_str()
            .unwrap()
            .ends_with("/pulls/1")
    );
    assert_eq!(comment["issue_url"], "");
    let id = comment["id"].as_i64().unwrap();
    let (status, _, edited) = call(
        &gitea,
        "PATCH",
        &format!("/repos/acme/infra/issues/comments/{id}"),
        Some(json!({"body": "plan: 2 to add"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(edited["body"], "plan: 2 to add");
    let (_, _, listed) = call(&gitea, "GET", "/repos/acme/infra/issues/1/comments", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let stored = gitea.comments("acme", "infra", 1);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, "plan: 2 to add");
    let (status, _, _) = call(
        &gitea,
        "POST",
        "/repos/acme/infra/issues/9/comments",
        Some(json!({"body": "x"})),
    )
    .await;
    assert_eq!(status, 404);

    // Permissions: owner, default none (private), what a test sets.
    let permission = |user: &str| format!("/repos/acme/infra/collaborators/{user}/permission");
    let (_, _, owner) = call(&gitea, "GET", &permission("acme"), None).await;
    assert_eq!(owner["permission"], "owner");
    let (_, _, alice) = call(&gitea, "GET", &permission("alice"), None).await;
    assert_eq!(alice["permission"], "none");
    assert_eq!(alice["user"]["login"], "alice");
    repo.set_permission("alice", Permission::Write);
    let (_, _, alice) = call(&gitea, "GET", &permission("alice"), None).await;
    assert_eq!(
        alice,
        json!({"permission": "write", "role_name": "write", "user": alice["user"]})
    );
    let (status, _, _) = call(&gitea, "GET", &permission("nobody"), None).await;
    assert_eq!(status, 404);

    // Unknown routes: 404 JSON. Anonymous writes to a public repository: 401.
    let (status, _, json) = call(&gitea, "GET", "/repos/acme/infra/nothing/here", None).await;
    assert_eq!((status, json["message"].as_str()), (404, Some("not found")));
    let public = gitea.create_repo_with(
        "acme",
        "public",
        pipewright_tests::fake_gitea::RepoOptions {
            private: false,
            ..Default::default()
        },
    );
    let sha = public.commit("main", "x").write("x", "x").push();
    let (status, _, json) = call_as(&gitea, "GET", "/repos/acme/public", None, None).await;
    assert_eq!((status, &json["permissions"]["push"]), (200, &json!(false)));
    let (status, _, json) = call_as(
        &gitea,
        "POST",
        &format!("/repos/acme/public/statuses/{sha}"),
        Some(json!({"state": "success"})),
        None,
    )
    .await;
    assert_eq!(
        (status, json["message"].as_str()),
        (401, Some("token is required"))
    );
}

#[tokio::test]
async fn push_payloads_have_gitea_shapes() {
    let gitea = FakeGitea::start().await;
    let (repo, base) = repo_with_history(&gitea, "acme", "infra");
    let mut shas = Vec::new();
    for i in 0..7 {
        let sha = repo
            .commit("main", &format!("change {i}"))
            .write(&format!("file{i}.txt"), &format!("{i}\n"))
            .write("README.md", &format!("version {i}\n"))
            .push();
        shas.push(sha);
    }
    // A rename is removed + added.
    let renamed = repo
        .commit("main", "rename")
        .delete("file0.txt")
        .write("renamed.txt", "0\n")
        .push();
    shas.push(renamed.clone());

    let delivery = repo.push_event("main", &base, &renamed);
    assert_eq!(
        (delivery.event.as_str(), delivery.event_type.as_str()),
        ("push", "push")
    );
    let text = delivery.text();
    assert!(
        text.starts_with("{\n  \"ref\": \"refs/heads/main\",\n  \"before\": "),
        "{text}"
    );
    assert!(
        !text.ends_with('\n'),
        "MarshalIndent adds no trailing newline"
    );
    let push = delivery.json();
    assert_eq!(push["before"], base.as_str());
    assert_eq!(push["after"], renamed.as_str());
    assert_eq!(push["total_commits"], 8);
    let listed: Vec<&str> = push["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = shas.iter().rev().take(5).map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(push["head_commit"]["id"], renamed.as_str());
    assert_eq!(push["head_commit"]["added"], json!(["renamed.txt"]));
    assert_eq!(push["head_commit"]["removed"], json!(["file0.txt"]));
    assert_eq!(push["head_commit"]["modified"], json!([]));
    let change6 = &push["commits"][1];
    assert_eq!(change6["message"], "change 6\n");
    assert_eq!(change6["added"], json!(["file6.txt"]));
    assert_eq!(change6["modified"], json!(["README.md"]));
    assert_eq!(
        change6["author"],
        json!({"name": "acme", "email": "acme@noreply.localhost", "username": "acme"})
    );
    assert!(
        change6["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/acme/infra/commit/{}", shas[6]))
    );
    assert_eq!(
        push["compare_url"],
        format!("{}/acme/infra/compare/{base}...{renamed}", gitea.url())
    );
    assert_eq!(push["repository"]["clone_url"], repo.clone_url());
    assert_eq!(push["repository"]["object_format_name"], "sha1");
    assert_eq!(push["pusher"]["login"], "acme");
    assert_eq!(push["sender"]["username"], "acme");

    // A merge commit's files are its first-parent diff.
    repo.commit("side", "side")
        .from(&base)
        .write("side.txt", "s\n")
        .push();
    let before_merge = repo.head("main");
    let merge = repo.merge("main", "side", "merge side");
    let push = repo.push_event("main", &before_merge, &merge).json();
    assert_eq!(push["total_commits"], 2);
    assert_eq!(push["head_commit"]["added"], json!(["side.txt"]));

    // New branch: before all zeros, the last 10 commits of history, 5 listed.
    let branch = repo.create_branch("release", "main");
    let created = repo.new_branch_event("release").json();
    assert_eq!(created["before"], "0".repeat(40));
    assert_eq!(created["after"], branch.as_str());
    assert_eq!(created["total_commits"], 10);
    assert_eq!(created["commits"].as_array().unwrap().len(), 5);
    assert_eq!(
        repo.push_event("release", &repo.zero_sha(), &branch).json()["total_commits"],
        10
    );

    // Tags: new (before zeros, no commits, head_commit set), deleted (after zeros).
    repo.create_tag("v1.0", "main");
    let tag = repo.new_tag_event("v1.0").json();
    assert_eq!(tag["ref"], "refs/tags/v1.0");
    assert_eq!(tag["before"], repo.zero_sha());
    assert_eq!(tag["commits"], json!([]));
    assert_eq!(tag["total_commits"], 0);
    assert_eq!(tag["head_commit"]["id"], merge.as_str());
    let old = repo.delete_tag("v1.0");
    let deleted = repo.tag_deleted_event("v1.0", &old).json();
    assert_eq!(deleted["after"], repo.zero_sha());
    assert_eq!(deleted["head_commit"], Value::Null);
    let annotated = repo.create_annotated_tag("v2.0", "main", "release 2");
    assert_ne!(annotated, merge);
    assert_eq!(
        repo.new_tag_event("v2.0").json()["after"],
        annotated.as_str()
    );
    assert_eq!(
        repo.create_event(RefKind::Tag, "v2.0").json()["ref"],
        "v2.0"
    );
    let delete = repo.delete_event(RefKind::Branch, "release");
    assert_eq!(delete.event, "delete");
    assert!(delete.json().get("sha").is_none());

    // The UI's test delivery: before = after = zeros and one fake commit.
    let test = repo.as_user("admin").test_delivery().json();
    assert_eq!(test["before"], repo.zero_sha());
    assert_eq!(test["after"], repo.zero_sha());
    assert_eq!(test["commits"][0]["message"], "This is a fake commit");
    assert_eq!(test["commits"][0]["id"], repo.zero_sha());
    assert_eq!(test["total_commits"], 1);
    assert_eq!(test["sender"]["login"], "admin");

    // SHA-256 repositories: 64-character ids and zeros.
    let next = gitea.create_repo_sha256("acme", "next");
    let first = next.commit("main", "first").write("a", "a").push();
    let push = next.new_branch_event("main").json();
    assert_eq!(next.zero_sha().len(), 64);
    assert_eq!(push["before"], "0".repeat(64));
    assert_eq!(push["after"], first.as_str());
    assert_eq!(push["commits"][0]["id"].as_str().unwrap().len(), 64);
    assert_eq!(push["repository"]["object_format_name"], "sha256");
}

#[tokio::test]
async fn pull_request_comment_and_other_payloads_have_gitea_shapes() {
    let gitea = FakeGitea::start().await;
    let (repo, main) = repo_with_history(&gitea, "acme", "infra");
    repo.commit("develop", "develop").write("d", "d").push();
    let fork = gitea.fork_repo(&repo, "mallory");
    let first = fork.commit("feature", "fork work").write("x", "x").push();
    let number = repo.open_pull_from(&fork, "feature", "main");

    let opened = repo.pull_request_event(number, PullAction::Opened);
    assert_eq!(
        (opened.event.as_str(), opened.event_type.as_str()),
        ("pull_request", "pull_request")
    );
    let opened = opened.json();
    assert_eq!(opened["action"], "opened");
    assert_eq!(opened["number"], number);
    assert_eq!(opened["sender"]["login"], "mallory");
    let pr = &opened["pull_request"];
    assert_eq!(pr["head"]["repo_id"], fork.id());
    assert_eq!(pr["head"]["repo"]["full_name"], "mallory/infra");
    assert_eq!(pr["head"]["repo"]["fork"], true);
    assert_eq!(pr["head"]["repo"]["parent"]["full_name"], "acme/infra");
    assert_eq!(pr["head"]["sha"], first.as_str());
    assert_eq!(pr["base"]["repo_id"], repo.id());
    assert_eq!(pr["base"]["sha"], main.as_str());
    assert_eq!(pr["merge_base"], main.as_str());
    assert_eq!(pr["state"], "open");
    assert!(pr["url"].as_str().unwrap().ends_with("/acme/infra/pulls/1"));

    let newer = fork.commit("feature", "more").write("x", "y").push();
    repo.sync_pull(number);
    let sync = repo.pull_request_event(number, PullAction::Synchronized);
    assert_eq!(
        (sync.event.as_str(), sync.event_type.as_str()),
        ("pull_request", "pull_request_sync")
    );
    let sync = sync.json();
    assert_eq!(sync["action"], "synchronized");
    assert_eq!(sync["pull_request"]["head"]["sha"], newer.as_str());
    assert_eq!(repo.ref_target("refs/pull/1/head").unwrap(), newer);
    assert!(sync.get("before").is_none() && sync.get("changes").is_none());

    let old_base = repo.change_pull_base(number, "develop");
    let edited = repo.pull_request_event(
        number,
        PullAction::Edited {
            base_from: Some(old_base),
            title_from: None,
            body_from: None,
        },
    );
    let edited = edited.json();
    assert_eq!(edited["changes"], json!({"ref": {"from": "main"}}));
    assert_eq!(edited["pull_request"]["base"]["ref"], "develop");

    // Conversation comments on a pull request: issue_comment / pull_request_comment.
    let comment = repo
        .as_user("alice")
        .comment_event(number, "/pipewright run <deploy> & more");
    assert_eq!(
        (comment.event.as_str(), comment.event_type.as_str()),
        ("issue_comment", "pull_request_comment")
    );
    assert!(
        comment
            .text()
            .contains("/pipewright run \\u003cdeploy\\u003e \\u0026 more"),
        "Go escapes HTML characters"
    );
    let comment = comment.json();
    assert_eq!(comment["action"], "created");
    assert_eq!(comment["is_pull"], true);
    assert_eq!(comment["sender"]["login"], "alice");
    assert_eq!(
        comment["comment"]["body"],
        "/pipewright run <deploy> & more"
    );
    assert!(comment["comment"].get("url").is_none());
    assert_eq!(comment["issue"]["number"], number);
    assert_ne!(comment["issue"]["pull_request"], Value::Null);
    assert_eq!(comment["pull_request"]["number"], number);
    let id = comment["comment"]["id"].as_i64().unwrap();
    let edit = repo
        .as_user("alice")
        .comment_edited_event(id, "never mind")
        .json();
    assert_eq!(edit["action"], "edited");
    assert_eq!(
        edit["changes"]["body"]["from"],
        "/pipewright run <deploy> & more"
    );

    // On a plain issue: event type issue_comment, no pull_request.
    let issue = repo.create_issue("broken", "it is");
    let on_issue = repo
        .as_user("bob")
        .comment_event(issue, "/pipewright run backup");
    assert_eq!(
        (on_issue.event.as_str(), on_issue.event_type.as_str()),
        ("issue_comment", "issue_comment")
    );
    let on_issue = on_issue.json();
    assert_eq!(on_issue["is_pull"], false);
    assert!(on_issue.get("pull_request").is_none());
    assert_eq!(on_issue["issue"]["pull_request"], Value::Null);

    // Merged: closed with merged true.
    let merge = repo.merge_pull(number);
    let closed = repo.pull_request_event(number, PullAction::Closed).json();
    assert_eq!(closed["action"], "closed");
    assert_eq!(closed["pull_request"]["merged"], true);
    assert_eq!(closed["pull_request"]["merge_commit_sha"], merge.as_str());
    assert_eq!(closed["pull_request"]["state"], "closed");

    // A deleted fork: head.repo null, head.repo_id -1, head.ref refs/pull/1/head.
    gitea.delete_repo(&fork);
    let after_delete = repo.pull_request_event(number, PullAction::Reopened).json();
    assert_eq!(after_delete["pull_request"]["head"]["repo"], Value::Null);
    assert_eq!(after_delete["pull_request"]["head"]["repo_id"], -1);
    assert_eq!(
        after_delete["pull_request"]["head"]["ref"],
        "refs/pull/1/head"
    );
    assert_eq!(after_delete["pull_request"]["head"]["sha"], newer.as_str());

    // Events Pipewright does not act on, and status events.
    assert_eq!(repo.release_event("v1").event, "release");
    assert_eq!(repo.issue_event(issue).event, "issues");
    let status = repo.status_event(&main, "success", "pipewright/build");
    assert_eq!(status.event, "status");
    let status = status.json();
    assert_eq!(status["state"], "success");
    assert_eq!(status["sha"], main.as_str());
    assert_eq!(status["sender"]["login"], BOT_LOGIN);
}

/// What a receiver saw: headers and raw body.
type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hooks/gitea",
        axum::routing::post(move |request: Request| {
            let store = store.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                store.lock().unwrap().push((parts.headers, body.to_vec()));
                (StatusCode::ACCEPTED, "queued")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/gitea", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// HMAC computed by the `openssl` command, independent of the code under test.
fn openssl_hmac(algorithm: &str, key: &str, data: &[u8]) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", &format!("-{algorithm}"), "-hmac", key, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn deliveries_carry_gitea_headers_and_verifiable_signatures() {
    let gitea = FakeGitea::start().await;
    let (repo, _) = repo_with_history(&gitea, "acme", "infra");
    let (url, seen) = receiver().await;
    let secret = "s3cret";
    let delivery = repo.new_branch_event("main");

    assert_eq!(
        delivery.deliver(&url, secret).await,
        (202, "queued".to_owned())
    );
    let (headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(body, delivery.body);
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(header("x-gitea-signature"), expected);
    assert_eq!(expected, openssl_hmac("sha256", secret, &body));
    assert_eq!(header("x-gogs-signature"), expected);
    assert_eq!(header("x-hub-signature-256"), format!("sha256={expected}"));
    assert_eq!(
        header("x-hub-signature"),
        format!("sha1={}", openssl_hmac("sha1", secret, &body))
    );
    assert_eq!(sign(secret, &body), expected);
    let id = header("x-gitea-delivery");
    assert_eq!(id, delivery.id);
    assert_eq!((id.len(), &id[14..15]), (36, "4"), "a UUID v4: {id}");
    for prefix in ["x-gitea", "x-gogs", "x-github"] {
        assert_eq!(header(&format!("{prefix}-event")), "push");
        assert_eq!(header(&format!("{prefix}-event-type")), "push");
        assert_eq!(header(&format!("{prefix}-delivery")), id);
    }
    assert_eq!(
        header("x-gitea-hook-installation-target-type"),
        "repository"
    );
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("user-agent"), "Go-http-client/1.1");

    // HMAC-SHA1 against RFC 2202's test vector.
    assert_eq!(
        sign_sha1("Jefe", b"what do ya want for nothing?"),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );

    // The same id again (a duplicate), a replay (new id, same body), wrong and empty
    // signatures, and the form content type (signature over the JSON).
    delivery.deliver(&url, secret).await;
    let replay = delivery.replay();
    assert_ne!(replay.id, delivery.id);
    replay.deliver(&url, secret).await;
    let wrong = DeliverOptions {
        signature: SignatureMode::Wrong,
        ..DeliverOptions::new(secret)
    };
    delivery
        .with_id("fixed-id")
        .deliver_with(&url, &wrong)
        .await;
    delivery.deliver(&url, "").await;
    let form = DeliverOptions {
        content_type: ContentType::Form,
        ..DeliverOptions::new(secret)
    };
    delivery.deliver_with(&url, &form).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[1].0["x-gitea-delivery"], delivery.id.as_str());
    assert_eq!(seen[2].0["x-gitea-delivery"], replay.id.as_str());
    assert_eq!(seen[2].1, delivery.body);
    assert_eq!(seen[3].0["x-gitea-delivery"], "fixed-id");
    assert_ne!(seen[3].0["x-gitea-signature"], expected.as_str());
    assert_eq!(seen[4].0["x-gitea-signature"], "");
    assert_eq!(seen[4].0["x-hub-signature"], "sha1=");
    assert_eq!(seen[4].0["x-hub-signature-256"], "sha256=");
    let (form_headers, form_body) = &seen[5];
    assert_eq!(
        form_headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(form_headers["x-gitea-signature"], expected.as_str());
    let form_body = String::from_utf8(form_body.clone()).unwrap();
    let encoded = form_body.strip_prefix("payload=").unwrap();
    assert!(!encoded.contains(' ') && !encoded.contains('{'));
    let decoded = url_decode(encoded);
    assert_eq!(decoded.as_bytes(), delivery.body.as_slice());
}

fn url_decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn fault_injection_fails_calls_and_takes_the_server_down() {
    let gitea = FakeGitea::start().await;
    let (_repo, sha) = repo_with_history(&gitea, "acme", "infra");
    let path = format!("/repos/acme/infra/statuses/{sha}");
    let body = json!({"state": "success", "context": "pipewright/build"});

    gitea.fail_api(2);
    assert_eq!(call(&gitea, "POST", &path, Some(body.clone())).await.0, 500);
    assert_eq!(call(&gitea, "POST", &path, Some(body.clone())).await.0, 500);
    assert_eq!(call(&gitea, "POST", &path, Some(body.clone())).await.0, 201);
    assert_eq!(
        gitea.statuses("acme", "infra", &sha).len(),
        1,
        "failed calls change nothing"
    );
    let codes: Vec<Option<u16>> = gitea.api_requests().iter().map(|r| r.status).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(201)]);

    gitea.set_down(true);
    let refused = http_client()
        .get(format!("{}/version", gitea.api_url()))
        .send()
        .await;
    assert!(refused.is_err(), "the port should be closed: {refused:?}");
    gitea.set_down(false);
    let (status, _, version) = call(&gitea, "GET", "/version", None).await;
    assert_eq!((status, version["version"].as_str()), (200, Some("1.25.4")));
}

/// The fake's `pull_request_sync` payload against the shape of one captured from a Gitea
/// 1.21 server (`tests/data/gitea/`): every field of the capture is in the fake's payload,
/// with the same JSON type wherever neither is `null`. The fake imitates Gitea 1.25, which
/// sends more; what it adds is pinned below, by the object it is added to.
#[tokio::test]
async fn the_pull_request_sync_payload_has_the_captured_fields() {
    let captured: Value =
        serde_json::from_str(include_str!("../data/gitea/pull_request_synchronized.json"))
            .expect("the fixture is JSON");
    let gitea = FakeGitea::start().await;
    let (repo, _) = repo_with_history(&gitea, "acme", "infra");
    repo.commit("fix-timeouts", "first").write("x", "1").push();
    let number = repo.open_pull("fix-timeouts", "main");
    repo.commit("fix-timeouts", "second").write("x", "2").push();
    repo.sync_pull(number);
    let sync = repo.pull_request_event(number, PullAction::Synchronized);
    assert_eq!(sync.event_type, "pull_request_sync");
    let generated = sync.json();

    let (captured, generated) = (fields(&captured), fields(&generated));
    // Items of an array empty on one side (the fake's pull request has no labels) cannot
    // be compared.
    let comparable = |path: &str| {
        let (parent, key) = parent(path);
        key != "[]"
            && (parent.is_empty()
                || (captured.contains_key(parent) && generated.contains_key(parent)))
    };
    let missing: Vec<&String> = captured
        .keys()
        .filter(|path| comparable(path) && !generated.contains_key(*path))
        .collect();
    assert!(
        missing.is_empty(),
        "fields of the capture missing: {missing:?}"
    );
    let differing: Vec<String> = captured
        .iter()
        .filter_map(|(path, kind)| Some((path, kind, generated.get(path)?)))
        .filter(|(_, a, b)| a != b && **a != "null" && **b != "null")
        .map(|(path, a, b)| format!("{path}: {a} captured, {b} generated"))
        .collect();
    assert!(differing.is_empty(), "{differing:#?}");

    let mut added: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for path in generated
        .keys()
        .filter(|path| !captured.contains_key(*path))
    {
        let (parent, key) = parent(path);
        if parent.is_empty() || captured.contains_key(parent) {
            added.entry(parent).or_default().push(key);
        }
    }
    let added: Vec<String> = added
        .iter()
        .map(|(parent, keys)| format!("{parent}: {}", keys.join(" ")))
        .collect();
    expect![[r#"
        pull_request: allow_maintainer_edit assignee comments draft requested_reviewers_teams
        pull_request.base: repo
        pull_request.head: repo
        pull_request.user: active description followers_count following_count html_url language location prohibit_login restricted source_id starred_repos_count website
        repository: allow_fast_forward_only_merge allow_manual_merge allow_merge_commits allow_rebase allow_rebase_explicit allow_rebase_update allow_squash_merge archived archived_at autodetect_manual_merge created_at default_allow_maintainer_edit default_delete_branch_after_merge default_merge_style empty fork forks_count has_actions has_packages has_projects has_releases has_wiki ignore_whitespace_conflicts language licenses mirror mirror_updated open_issues_count open_pr_counter projects_mode release_counter size stars_count template topics updated_at watchers_count website
        repository.owner: active description followers_count following_count html_url location restricted source_id starred_repos_count website
        sender: active description followers_count following_count html_url language location prohibit_login restricted source_id starred_repos_count website"#]].assert_eq(&added.join("\n"));
}

/// The path of a field's object or array, and the field's name (`[]` for an array's items).
fn parent(path: &str) -> (&str, &str) {
    match path.strip_suffix("[]") {
        Some(array) => (array, "[]"),
        None => path.rsplit_once('.').unwrap_or(("", path)),
    }
}

/// Every field of a JSON value by its path (`pull_request.base.sha`; an array's items as
/// `labels[]`, from its first item), with its JSON type.
fn fields(value: &Value) -> BTreeMap<String, &'static str> {
    fn walk(value: &Value, path: &str, out: &mut BTreeMap<String, &'static str>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    let path = match path {
                        "" => key.clone(),
                        _ => format!("{path}.{key}"),
                    };
                    out.insert(path.clone(), kind(item));
                    walk(item, &path, out);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    let path = format!("{path}[]");
                    out.insert(path.clone(), kind(first));
                    walk(first, &path, out);
                }
            }
            _ => {}
        }
    }
    fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    let mut out = BTreeMap::new();
    walk(value, "", &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_mergeability_and_the_pull_request_of_a_merge_commit() {
    use pipewright_tests::fake_gitea::ReviewState;
    let gitea = FakeGitea::start().await;
    let (repo, _) = repo_with_history(&gitea, "org", "app");
    repo.create_branch("topic", "main");
    let first = repo.commit("topic", "one").write("a.txt", "1\n").push();
    let number = repo.as_user("mallory").open_pull("topic", "main");
    let approval = repo.review(number, "bob", ReviewState::Approved);
    repo.review(number, "carol", ReviewState::Pending);
    let reviews = format!("/repos/org/app/pulls/{number}/reviews");
    let (code, headers, list) = call(&gitea, "GET", &reviews, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        headers["x-total-count"], "1",
        "others' pending reviews are not listed"
    );
    let review = &list[0];
    let keys: Vec<&str> = review
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "user",
            "team",
            "state",
            "body",
            "commit_id",
            "stale",
            "official",
            "dismissed",
            "comments_count",
            "submitted_at",
            "updated_at",
            "html_url",
            "pull_request_url",
        ]
    );
    assert_eq!(
        (
            &review["state"],
            &review["commit_id"],
            &review["stale"],
            &review["dismissed"]
        ),
        (
            &json!("APPROVED"),
            &json!(first),
            &json!(false),
            &json!(false)
        )
    );
    assert_eq!(review["user"]["login"], "bob");
    // A new head makes older reviews stale; a dismissal keeps the state.
    repo.commit("topic", "two").write("a.txt", "2\n").push();
    repo.sync_pull(number);
    repo.dismiss_review(approval);
    let (_, _, list) = call(&gitea, "GET", &reviews, None).await;
    assert_eq!(
        (&list[0]["stale"], &list[0]["dismissed"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(list[0]["state"], "APPROVED");
    assert_eq!(
        call(&gitea, "GET", "/repos/org/app/pulls/99/reviews", None)
            .await
            .0,
        404
    );

    let pull = format!("/repos/org/app/pulls/{number}");
    assert_eq!(call(&gitea, "GET", &pull, None).await.2["mergeable"], true);
    repo.set_mergeable(number, false);
    assert_eq!(call(&gitea, "GET", &pull, None).await.2["mergeable"], false);
    repo.set_mergeable(number, true);

    // `/commits/{sha}/pull`: only a merge commit names its pull request.
    let head = repo.pull_head(number);
    let of = |sha: &str| format!("/repos/org/app/commits/{sha}/pull");
    assert_eq!(call(&gitea, "GET", &of(&head), None).await.0, 404);
    let merged = repo.merge_pull(number);
    let (code, _, body) = call(&gitea, "GET", &of(&merged), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        (&body["number"], &body["merged"], &body["merge_commit_sha"]),
        (&json!(number), &json!(true), &json!(merged))
    );
    assert_eq!(call(&gitea, "GET", &of(&merged[..10]), None).await.0, 200);
}

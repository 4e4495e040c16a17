//! Comment commands end to end: `issue_comment` deliveries from the fake Gitea (both event
//! types), the commenter's permission asked of Gitea, `/pipewright run|plan|apply|help`,
//! the reply comment of every command, and the apply requirements read from Gitea's pull
//! request, review and status APIs.

use std::time::Duration;

use pipewright_tests::fake_gitea::{Comment, Delivery, FakeGitea, Permission, Repo, ReviewState};
use serde_json::Value;

use crate::{
    actions::{TOOLS, main_tf, state_resources},
    serve::{Server, eventually, final_statuses, states, step},
};

/// The id of the comment a comment event is about.
fn comment_id(delivery: &Delivery) -> i64 {
    delivery.json()["comment"]["id"].as_i64().unwrap()
}

/// Pipewright's reply to comment `id` on `number`, once the reporter has sent it.
async fn reply(repo: &Repo, number: u64, id: i64) -> Comment {
    let marker = format!("<!-- pipewright:reply {id} -->");
    eventually(
        Duration::from_secs(30),
        &format!("the reply to comment {id}"),
        || async {
            repo.comments(number)
                .into_iter()
                .find(|c| c.body.contains(&marker))
        },
    )
    .await
}

/// Delivers a comment by `who` and returns the reply's body.
async fn command(server: &Server, repo: &Repo, who: &str, number: u64, body: &str) -> String {
    let delivery = repo.as_user(who).comment_event(number, body);
    let id = comment_id(&delivery);
    assert_eq!(server.deliver(delivery).await, 202, "{body}");
    reply(repo, number, id).await.body
}

async fn runs_of(server: &Server, pipeline: &str) -> Vec<Value> {
    server
        .runs()
        .await
        .into_iter()
        .filter(|r| r["pipeline"] == pipeline)
        .collect()
}

/// Waits until no delivery is pending (so "nothing happened" is an answer, not a race).
async fn settled(server: &Server) {
    eventually(
        Duration::from_secs(30),
        "every delivery processed",
        || async {
            (server
                .app
                .store
                .pending_deliveries(10)
                .await
                .unwrap()
                .is_empty())
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_commands_run_pipelines_and_every_command_gets_one_reply() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "ops");
    let deploy = format!(
        "on:\n  dispatch:\n    inputs:\n      target: {{ type: string, required: true }}\nsteps:\n{}",
        step(
            "show",
            "echo \"deploy $PIPEWRIGHT_INPUT_TARGET ($PIPEWRIGHT_EVENT) at $PIPEWRIGHT_SHA on $PIPEWRIGHT_REF\""
        )
    );
    let base = repo
        .commit("main", "ops")
        .write(".pipewright/deploy.yml", &deploy)
        .push();
    repo.create_branch("feature", "main");
    let head = repo
        .commit("feature", "change")
        .write("app.txt", "v2\n")
        .push();
    let number = repo.open_pull("feature", "main");
    let issue = repo.create_issue("deploy staging", "");
    repo.set_permission("alice", Permission::Write);
    repo.set_permission("bob", Permission::Read);

    // `/pipewright run` on a pull request: at its head, with the inputs, as `comment`, by
    // the commenter; the reply links the run.
    let delivery = repo.as_user("alice").comment_event(
        number,
        "Let's try it.\n/pipewright run deploy target=staging\n",
    );
    assert_eq!(
        (delivery.event.as_str(), delivery.event_type.as_str()),
        ("issue_comment", "pull_request_comment")
    );
    let id = comment_id(&delivery);
    assert_eq!(server.deliver(delivery.clone()).await, 202);
    let answer = reply(&repo, number, id).await;
    assert_eq!(answer.user, gitea.bot_login());
    let runs = runs_of(&server, "deploy").await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    let run_id = run["id"].as_i64().unwrap();
    assert_eq!(
        (
            run["event"].as_str(),
            run["actor"].as_str(),
            run["sha"].as_str()
        ),
        (Some("comment"), Some("alice"), Some(head.as_str()))
    );
    assert_eq!(run["pull_request"], number);
    assert!(
        answer
            .body
            .contains(&format!("{}/runs/{run_id}", server.url))
            && answer
                .body
                .starts_with(&format!("<!-- pipewright:reply {id} -->\n@alice "))
            && answer.body.contains("`/pipewright run` started"),
        "{}",
        answer.body
    );
    let statuses = final_statuses(&repo, &head, "pipewright/deploy").await;
    assert_eq!(states(&statuses), ["pending", "success"]);
    assert_eq!(
        server.log(run_id, 0).await,
        format!("deploy staging (comment) at {head} on refs/pull/{number}/head\n")
    );

    // The same comment delivered again (Gitea's Replay, or a second hook): nothing more.
    assert_eq!(server.deliver(delivery.replay()).await, 202);
    settled(&server).await;
    assert_eq!(runs_of(&server, "deploy").await.len(), 1);
    let marker = format!("<!-- pipewright:reply {id} -->");
    let replies = |repo: &Repo| {
        repo.comments(number)
            .into_iter()
            .filter(|c| c.body.contains(&marker))
            .count()
    };
    assert_eq!(replies(&repo), 1);

    // On an issue: the default branch, event type `issue_comment`.
    let delivery = repo
        .as_user("alice")
        .comment_event(issue, "/pipewright run deploy target=prod");
    assert_eq!(delivery.event_type, "issue_comment");
    let id = comment_id(&delivery);
    assert_eq!(server.deliver(delivery).await, 202);
    let body = reply(&repo, issue, id).await.body;
    assert!(body.contains("started"), "{body}");
    let runs = runs_of(&server, "deploy").await;
    let on_main = runs.iter().find(|r| r["sha"] == base.as_str()).unwrap();
    assert_eq!(on_main["ref"], "refs/heads/main");
    assert_eq!(on_main["pull_request"], Value::Null);

    // Refusals: each reply names the reason, and nothing runs.
    let before = server.runs().await.len();
    let cases = [
        (
            "bob",
            "/pipewright run deploy target=staging",
            "@bob `/pipewright run` refused: @bob may not give commands in org/ops: Gitea gives them `read` permission, and `write` is needed",
        ),
        (
            "mallory",
            "/pipewright run deploy target=staging",
            "@mallory may not give commands in org/ops: Gitea gives them `none` permission",
        ),
        (
            "alice",
            "/pipewright run nightly",
            &format!("there is no pipeline \"nightly\" at `{}`", &head[..10]),
        ),
        (
            "alice",
            "/pipewright run deploy",
            "missing required input `target`",
        ),
        (
            "alice",
            "/pipewright run deploy target=x color=red",
            "unknown input `color`",
        ),
        (
            "alice",
            "/pipewright run deploy target",
            "\"target\" is not an input: inputs are written key=value",
        ),
        (
            "alice",
            "/pipewright plan",
            "this pull request selects no pipeline with a `uses: tofu` step",
        ),
    ];
    for (who, text, reason) in cases {
        let body = command(&server, &repo, who, number, text).await;
        assert!(body.contains(reason), "{text} by {who}: {body}");
    }
    let body = command(&server, &repo, "alice", issue, "/pipewright apply").await;
    assert!(
        body.contains("`/pipewright apply` works on pull requests only"),
        "{body}"
    );
    // Help lists the commands, and so does a command that is not one; no line of a
    // reply is a command itself.
    for (text, first) in [
        ("/pipewright help", "@alice Pipewright reads a comment line"),
        (
            "/pipewright frobnicate",
            "@alice \"frobnicate\" is not a command.",
        ),
    ] {
        let body = command(&server, &repo, "alice", number, text).await;
        assert!(body.lines().nth(1).unwrap().starts_with(first), "{body}");
        for listed in [
            "`/pipewright run <pipeline>",
            "`/pipewright plan`",
            "`/pipewright apply`",
        ] {
            assert!(body.contains(listed), "{body}");
        }
        assert!(
            !body
                .lines()
                .any(|l| l.trim_start().starts_with("/pipewright")),
            "{body}"
        );
    }
    settled(&server).await;
    assert_eq!(
        server.runs().await.len(),
        before,
        "a refused command runs nothing"
    );

    // What is not a command runs nothing and gets no reply: a mention inside a sentence, a
    // quoted command, an edit, a deletion.
    let comments_before = repo.comments(number).len();
    for text in [
        "We could run /pipewright run deploy target=x later",
        "> /pipewright run deploy target=x",
    ] {
        let delivery = repo.as_user("alice").comment_event(number, text);
        assert_eq!(server.deliver(delivery).await, 202);
    }
    let delivery = repo.as_user("alice").comment_event(number, "typo");
    let typo = comment_id(&delivery);
    assert_eq!(server.deliver(delivery).await, 202);
    let edited = repo
        .as_user("alice")
        .comment_edited_event(typo, "/pipewright run deploy target=staging");
    assert_eq!(edited.json()["action"], "edited");
    assert_eq!(server.deliver(edited).await, 202);
    settled(&server).await;
    assert_eq!(server.runs().await.len(), before);
    assert_eq!(repo.comments(number).len(), comments_before + 3, "no reply");
    server.stop().await;
}

/// A repository with a tofu pipeline (never run here: the server has no engine) and a pull
/// request that changes its paths, opened by `mallory`.
fn tofu_repo(gitea: &FakeGitea) -> (Repo, u64) {
    let repo = gitea.create_repo("org", "infra");
    let iac = "on:\n  pull_request:\n    paths: [\"iac/**\"]\n  push:\n    branches: [main]\n    paths: [\"iac/**\"]\nsteps:\n  - name: tofu\n    uses: tofu\n    with: { path: iac }\n";
    repo.commit("main", "iac")
        .write(".pipewright/iac.yml", iac)
        .write("iac/main.tf", "# empty\n")
        .write("docs/README.md", "docs\n")
        .push();
    repo.create_branch("dns", "main");
    repo.commit("dns", "dns")
        .write("iac/main.tf", "# dns\n")
        .push();
    let number = repo.as_user("mallory").open_pull("dns", "main");
    for (who, permission) in [
        ("alice", Permission::Write),
        ("bob", Permission::Write),
        ("mallory", Permission::Write),
    ] {
        repo.set_permission(who, permission);
    }
    (repo, number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_waits_for_an_approval_by_someone_else_and_a_mergeable_pull_request() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_without_engine(&gitea, &[], "").await;
    let (repo, number) = tofu_repo(&gitea);
    let refused = async |reason: &str| {
        let body = command(&server, &repo, "alice", number, "/pipewright apply").await;
        assert!(
            body.contains("`/pipewright apply` refused: ") && body.contains(reason),
            "{reason}: {body}"
        );
    };
    let not_approved = "it is not approved: it needs an approving review by someone other than its author that is neither stale nor dismissed";
    refused(not_approved).await;
    repo.review(number, "mallory", ReviewState::Approved);
    refused(not_approved).await;
    repo.review(number, "carol", ReviewState::Comment);
    refused(not_approved).await;
    let bobs = repo.review(number, "bob", ReviewState::Approved);
    repo.dismiss_review(bobs);
    refused(not_approved).await;
    // Approved at an older head: stale once the head moves.
    repo.review(number, "bob", ReviewState::Approved);
    repo.commit("dns", "more dns")
        .write("iac/main.tf", "# dns 2\n")
        .push();
    let head = repo.sync_pull(number);
    refused(not_approved).await;
    repo.review(number, "bob", ReviewState::Approved);

    // Approved, but Gitea finds a conflict; then another check fails on the head.
    repo.set_mergeable(number, false);
    refused("it is not mergeable: Gitea says it cannot be merged").await;
    repo.set_mergeable(number, true);
    let resp = pipewright_tests::fake_gitea::http_client()
        .post(format!(
            "{}/repos/org/infra/statuses/{head}",
            gitea.api_url()
        ))
        .header("authorization", format!("token {}", gitea.token()))
        .json(&serde_json::json!({"state": "failure", "context": "ci/lint"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    refused(&format!(
        "it is not mergeable: `ci/lint` is `failure` on {}",
        &head[..10]
    ))
    .await;
    settled(&server).await;
    assert!(server.runs().await.is_empty(), "nothing ran");

    // Every requirement holds, but no plan was made (this server runs nothing): the
    // applied plan is a reviewed plan, so there is nothing to apply.
    let resp = pipewright_tests::fake_gitea::http_client()
        .post(format!(
            "{}/repos/org/infra/statuses/{head}",
            gitea.api_url()
        ))
        .header("authorization", format!("token {}", gitea.token()))
        .json(&serde_json::json!({"state": "success", "context": "ci/lint"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    refused("there is no plan of `iac` to apply: comment `/pipewright plan` first").await;
    settled(&server).await;
    assert!(server.runs().await.is_empty(), "nothing ran");

    // `/pipewright plan` needs no approval; a closed pull request takes no command.
    let body = command(&server, &repo, "bob", number, "/pipewright plan").await;
    assert!(body.contains("`/pipewright plan` started"), "{body}");
    repo.close_issue(number);
    refused("the pull request is closed").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undiverged_refuses_an_apply_whose_base_branch_changed_the_pipeline_paths() {
    let gitea = FakeGitea::start().await;
    let policy = "[[repos]]\nname = \"org/infra\"\napply_requirements = [\"undiverged\"]\n";
    let server = Server::start_without_engine(&gitea, &[], policy).await;
    let (repo, number) = tofu_repo(&gitea);
    // The base moves elsewhere: still undiverged (and no approval is asked here).
    repo.commit("main", "docs")
        .write("docs/README.md", "more docs\n")
        .push();
    let body = command(&server, &repo, "alice", number, "/pipewright apply").await;
    assert!(
        body.contains("there is no plan of `iac` to apply"),
        "past undiverged: {body}"
    );
    // The base changes the pipeline's paths: refused until the pull request catches up.
    repo.commit("main", "hotfix")
        .write("iac/hotfix.tf", "# hotfix\n")
        .push();
    let body = command(&server, &repo, "alice", number, "/pipewright apply").await;
    assert!(
        body.contains("refused: it has diverged: its base branch changed paths of pipeline `iac`"),
        "{body}"
    );
    assert!(server.runs().await.is_empty());
    // Without a Gitea permission to ask, the configured commenters decide.
    server.stop().await;
    let policy = "[[repos]]\nname = \"org/infra\"\ncommenters = [\"carol\"]\n";
    let server = Server::start_without_engine(&gitea, &[], policy).await;
    repo.set_permission(gitea.bot_login(), Permission::Write);
    let body = command(&server, &repo, "alice", number, "/pipewright plan").await;
    assert!(
        body.contains("@alice is not in [[repos]].commenters of org/infra"),
        "{body}"
    );
    let body = command(&server, &repo, "carol", number, "/pipewright plan").await;
    assert!(body.contains("started"), "{body}");
    server.stop().await;
    let server = Server::start_without_engine(&gitea, &[], "").await;
    let body = command(&server, &repo, "carol", number, "/pipewright plan").await;
    assert!(
        body.contains("Gitea does not tell Pipewright's user the permissions of @carol"),
        "{body}"
    );
    server.stop().await;
}

async fn last_status(repo: &Repo, sha: &str) -> (String, String) {
    let list = final_statuses(repo, sha, "pipewright/iac").await;
    let last = list.last().unwrap();
    (last.state.clone(), last.description.clone())
}

/// Waits for the run a reply links (the last `/runs/<id>` in it) to end.
async fn linked_run(server: &Server, body: &str) -> Value {
    let id: i64 = body
        .rsplit("/runs/")
        .next()
        .and_then(|rest| rest.split(')').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run link in {body}"));
    eventually(
        Duration::from_secs(120),
        &format!("run {id} to end"),
        || async {
            let run = server.api(&format!("/api/v1/runs/{id}")).await;
            (!matches!(run["state"].as_str(), Some("queued" | "running"))).then_some(run)
        },
    )
    .await
}

/// A server, and a repository whose `iac` pipeline applied `edge` on main (state in
/// `state`), with writers alice and mallory.
async fn factory(gitea: &FakeGitea, state: &tempfile::TempDir) -> (Server, Repo, String) {
    let state_dir = state.path().display().to_string();
    let policy = format!("[[repos]]\nname = \"org/factory\"\nhost_volumes = [\"{state_dir}\"]\n");
    let server = Server::start_with_config(gitea, &[], &policy).await;
    let repo = gitea.create_repo("org", "factory");
    let tools = TOOLS;
    let iac = format!(
        "on:\n  push:\n    branches: [main]\n    paths: [\"iac/**\"]\n  pull_request:\n    branches: [main]\n    paths: [\"iac/**\"]\nconcurrency:\n  group: factory-iac\nvolumes: [\"{state_dir}:/state\"]\nsteps:\n  - name: tofu\n    uses: tofu\n    with: {{ path: iac, image: {tools} }}\n"
    );
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "edge")
        .write(".pipewright/iac.yml", &iac)
        .write("iac/main.tf", &main_tf(&["edge"]))
        .push();
    for (who, permission) in [("alice", Permission::Write), ("mallory", Permission::Write)] {
        repo.set_permission(who, permission);
    }
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    assert_eq!(last_status(&repo, &c1).await.0, "success");
    assert_eq!(state_resources(state.path()), ["edge"]);
    (server, repo, c1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_at_the_head_applies_the_saved_plan_of_the_comment_and_never_a_stale_one() {
    let state = tempfile::tempdir().unwrap();
    let gitea = FakeGitea::start().await;
    let (server, repo, c1) = factory(&gitea, &state).await;
    // 1. The pull request plans; its comment shows the plan.
    repo.create_branch("dns", "main");
    let p1 = repo
        .commit("dns", "dns")
        .write("iac/main.tf", &main_tf(&["edge", "dns"]))
        .push();
    let number = repo.as_user("mallory").open_pull("dns", "main");
    let opened = repo.pull_request_event(number, pipewright_tests::fake_gitea::PullAction::Opened);
    assert_eq!(server.deliver(opened).await, 202);
    assert_eq!(
        last_status(&repo, &p1).await,
        (
            "success".into(),
            "plan: 1 to add, 0 to change, 0 to destroy".into()
        )
    );

    // 2. Not approved yet: refused.
    let body = command(&server, &repo, "alice", number, "/pipewright apply").await;
    assert!(body.contains("refused: it is not approved"), "{body}");

    // 3. A new commit after the plan, approved at the new head: the plan in the comment
    // is not of the head, so nothing is applied.
    let p2 = repo
        .commit("dns", "mail")
        .write("iac/main.tf", &main_tf(&["edge", "dns", "mail"]))
        .push();
    assert_eq!(repo.sync_pull(number), p2);
    repo.review(number, "bob", ReviewState::Approved);
    let body = command(&server, &repo, "alice", number, "/pipewright apply").await;
    assert!(
        body.contains(&format!(
            "refused: re-plan first: head moved from {} to {}",
            &p1[..10],
            &p2[..10]
        )),
        "{body}"
    );
    assert_eq!(state_resources(state.path()), ["edge"]);

    // 4. `/pipewright plan` plans the head; its plan becomes the one in the comment.
    let body = command(&server, &repo, "alice", number, "/pipewright plan").await;
    let planned = linked_run(&server, &body).await;
    assert_eq!(
        (planned["state"].as_str(), planned["description"].as_str()),
        (
            Some("success"),
            Some("plan: 2 to add, 0 to change, 0 to destroy")
        )
    );
    assert_eq!(planned["event"], "comment");
    let plan_comment = eventually(Duration::from_secs(30), "the new plan comment", || async {
        repo.comments(number).into_iter().find(|c| {
            c.body.contains("<!-- pipewright:plan iac -->") && c.body.contains("plan: 2 to add")
        })
    })
    .await;
    assert!(
        plan_comment.body.contains("`terraform_data.mail` create"),
        "{}",
        plan_comment.body
    );
    // The saved plan is kept in the data directory, private, and served nowhere.
    let kept = server
        .app
        .config
        .server
        .data_dir
        .join(format!("plans/run-{}", planned["id"]));
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{kept:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        files[0].metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );

    // 5. `/pipewright apply`: that saved plan, applied at the head.
    let body = command(&server, &repo, "alice", number, "/pipewright apply").await;
    let applied = linked_run(&server, &body).await;
    assert_eq!(
        (applied["state"].as_str(), applied["description"].as_str()),
        (
            Some("success"),
            Some("applied: 2 to add, 0 to change, 0 to destroy")
        ),
        "{applied:#}"
    );
    assert_eq!(applied["sha"], p2.as_str());
    let log = server.log(applied["id"].as_i64().unwrap(), 0).await;
    assert!(
        log.contains("applying the reviewed plan: no new plan"),
        "{log}"
    );
    assert!(!log.contains("$ tofu plan"), "{log}");
    assert_eq!(state_resources(state.path()), ["dns", "edge", "mail"]);

    // 6. Merged: the default branch plans again; nothing is left to apply.
    let merged = repo.merge_pull(number);
    assert_eq!(
        server.deliver(repo.push_event("main", &c1, &merged)).await,
        202
    );
    assert_eq!(
        last_status(&repo, &merged).await,
        (
            "success".into(),
            "plan: 0 to add, 0 to change, 0 to destroy; nothing to apply".into()
        )
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_whose_plan_differs_from_the_reviewed_one_is_withheld() {
    let state = tempfile::tempdir().unwrap();
    let gitea = FakeGitea::start().await;
    let (server, repo, _) = factory(&gitea, &state).await;
    // A pull request is applied at its head, then main changes before its merge: the
    // merge's plan differs from the reviewed one, and is withheld.
    repo.create_branch("web", "main");
    let w1 = repo
        .commit("web", "web")
        .write("iac/main.tf", &main_tf(&["edge", "web"]))
        .push();
    let second = repo.as_user("mallory").open_pull("web", "main");
    let opened = repo.pull_request_event(second, pipewright_tests::fake_gitea::PullAction::Opened);
    assert_eq!(server.deliver(opened).await, 202);
    assert_eq!(last_status(&repo, &w1).await.0, "success");
    repo.review(second, "bob", ReviewState::Approved);
    let body = command(&server, &repo, "alice", second, "/pipewright apply").await;
    assert_eq!(linked_run(&server, &body).await["state"], "success");
    assert_eq!(state_resources(state.path()), ["edge", "web"]);
    let cdn = repo
        .commit("main", "cdn")
        .write(
            "iac/cdn.tf",
            "resource \"terraform_data\" \"cdn\" {\n  input = \"cdn\"\n}\n",
        )
        .push();
    let merged2 = repo.merge_pull(second);
    assert_eq!(
        server
            .deliver(repo.push_event("main", &cdn, &merged2))
            .await,
        202
    );
    let (state_name, description) = last_status(&repo, &merged2).await;
    assert_eq!(state_name, "failure");
    assert!(
        description.ends_with(&format!("plan differs from the plan reviewed in #{second}")),
        "{description}"
    );
    assert_eq!(state_resources(state.path()), ["edge", "web"], "withheld");
    let differences = eventually(
        Duration::from_secs(30),
        "the differences comment",
        || async {
            repo.comments(second)
                .into_iter()
                .find(|c| c.body.contains("<!-- pipewright:merge iac"))
        },
    )
    .await;
    assert!(
        differences.body.contains(&format!(
            "not applied, the plan differs from the plan reviewed in #{second}"
        )) && differences
            .body
            .contains("- `terraform_data.cdn`: create now, not in the reviewed plan")
            && differences
                .body
                .contains("- `terraform_data.web`: create in the reviewed plan, not planned now"),
        "{}",
        differences.body
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_a_fork_runs_it_untrusted_whoever_comments() {
    let gitea = FakeGitea::start().await;
    let server = Server::start_without_engine(&gitea, &[], "").await;
    let (repo, _) = tofu_repo(&gitea);
    let fork = gitea.fork_repo(&repo, "mallory");
    fork.commit("main", "evil")
        .write("iac/main.tf", "# reads every secret it is given\n")
        .push();
    let number = repo
        .as_user("mallory")
        .open_pull_from(&fork, "main", "main");
    // A writer (even the repository's owner) asks for a plan of the fork's code: it runs
    // as the fork's pull request does, without secrets, identity token or host volumes.
    let body = command(&server, &repo, "org", number, "/pipewright plan").await;
    assert!(body.contains("`/pipewright plan` started"), "{body}");
    let runs = server.runs().await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = server
        .app
        .store
        .run(runs[0]["id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(run.from_fork, "{run:?}");
    assert_eq!((run.pr, run.actor.as_str()), (Some(number as i64), "org"));
    assert!(run.inputs.contains(&("mode".into(), "plan".into())));
    server.stop().await;
}

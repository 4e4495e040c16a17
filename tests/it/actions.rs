//! The built-in actions end to end: `tofu` with a real Terraform engine (the local tools
//! image), `image` with a real registry, `postgres` with a real PostgreSQL server and
//! OpenBao's database secrets engine.

use std::time::Duration;

use pipewright_tests::fake_gitea::{FakeGitea, PullAction, Repo};

use crate::serve::{SECRET, Server, eventually, final_statuses, get_json};

pub(crate) const TOOLS: &str = "pipewright-test/tools:1";

async fn last_status(repo: &Repo, sha: &str, context: &str) -> (String, String) {
    let list = final_statuses(repo, sha, context).await;
    let last = list.last().unwrap();
    (last.state.clone(), last.description.clone())
}

fn main_tf(resources: &[&str]) -> String {
    let mut tf = "terraform {\n  backend \"local\" {\n    path = \"/state/iac.tfstate\"\n  }\n}\n"
        .to_string();
    for r in resources {
        tf.push_str(&format!(
            "resource \"terraform_data\" \"{r}\" {{\n  input = \"{r}\"\n}}\n"
        ));
    }
    tf
}

fn state_resources(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("iac.tfstate")).unwrap_or_default();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut names: Vec<String> = state["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tofu_plans_on_pull_requests_applies_on_main_and_refuses_destroys() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let gitea = FakeGitea::start().await;
    let policy = format!("[[repos]]\nname = \"org/factory\"\nhost_volumes = [\"{state_dir}\"]\n");
    let server = Server::start_with_config(&gitea, &[], &policy).await;
    let repo = gitea.create_repo("org", "factory");
    let with = format!("{{ path: iac, image: {TOOLS} }}");
    let iac = format!(
        "on:\n  push:\n    branches: [main]\n    paths: [\"iac/**\"]\n  pull_request:\n    branches: [main]\n    paths: [\"iac/**\"]\nconcurrency:\n  group: factory-iac\nvolumes: [\"{state_dir}:/state\"]\nsteps:\n  - name: tofu\n    uses: tofu\n    with: {with}\n"
    );
    let drift = format!(
        "on:\n  push:\n    tags: [\"drift-*\"]\nconcurrency:\n  group: factory-iac\nvolumes: [\"{state_dir}:/state\"]\nsteps:\n  - name: plan\n    uses: tofu\n    with: {{ path: iac, image: {TOOLS}, command: plan, fail_on_changes: true }}\n"
    );
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "factory\n")
        .push();
    let c1 = repo
        .commit("main", "edge")
        .write(".pipewright/iac.yml", &iac)
        .write(".pipewright/drift.yml", &drift)
        .write("iac/main.tf", &main_tf(&["edge"]))
        .push();

    // A push to main applies the saved plan.
    assert_eq!(
        repo.push_event("main", &c0, &c1)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    assert_eq!(
        last_status(&repo, &c1, "pipewright/iac").await,
        (
            "success".into(),
            "applied: 1 to add, 0 to change, 0 to destroy".into()
        )
    );
    assert_eq!(state_resources(state.path()), ["edge"]);

    // No drift: the plan-only pipeline succeeds.
    repo.create_tag("drift-1", &c1);
    assert_eq!(
        repo.new_tag_event("drift-1")
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    assert_eq!(
        last_status(&repo, &c1, "pipewright/drift").await,
        (
            "success".into(),
            "plan: 0 to add, 0 to change, 0 to destroy".into()
        )
    );

    // A pull request plans, says so in its status and in one comment, and never applies.
    repo.create_branch("dns", "main");
    let p1 = repo
        .commit("dns", "dns")
        .write("iac/main.tf", &main_tf(&["edge", "dns"]))
        .push();
    let number = repo.open_pull("dns", "main");
    assert_eq!(
        repo.pull_request_event(number, PullAction::Opened)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    assert_eq!(
        last_status(&repo, &p1, "pipewright/iac").await,
        (
            "success".into(),
            "plan: 1 to add, 0 to change, 0 to destroy".into()
        )
    );
    let comments = eventually(Duration::from_secs(30), "the plan comment", || async {
        let c = repo.comments(number);
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains("plan: 1 to add")
            && comments[0].body.contains("`terraform_data.dns` create"),
        "{}",
        comments[0].body
    );
    assert_eq!(
        state_resources(state.path()),
        ["edge"],
        "a pull request never applies"
    );

    // A second push to the pull request edits that comment instead of adding one.
    let p2 = repo
        .commit("dns", "mail")
        .write("iac/main.tf", &main_tf(&["edge", "dns", "mail"]))
        .push();
    repo.sync_pull(number);
    assert_eq!(
        repo.pull_request_event(number, PullAction::Synchronized)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    assert_eq!(
        last_status(&repo, &p2, "pipewright/iac").await.1,
        "plan: 2 to add, 0 to change, 0 to destroy"
    );
    let comments = eventually(Duration::from_secs(30), "the edited comment", || async {
        let c = repo.comments(number);
        c.iter()
            .any(|c| c.body.contains("plan: 2 to add"))
            .then_some(c)
    })
    .await;
    assert_eq!(comments.len(), 1, "edited, not duplicated: {comments:?}");

    // Merged: main applies both.
    let merged = repo.merge_pull(number);
    assert_eq!(
        repo.push_event("main", &c1, &merged)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    assert_eq!(
        last_status(&repo, &merged, "pipewright/iac").await.1,
        "applied: 2 to add, 0 to change, 0 to destroy"
    );
    assert_eq!(state_resources(state.path()), ["dns", "edge", "mail"]);

    // A plan that destroys, without allow_destroy: failure naming the address, no apply.
    let removal = repo
        .commit("main", "drop mail")
        .write("iac/main.tf", &main_tf(&["edge", "dns"]))
        .push();
    assert_eq!(
        repo.push_event("main", &merged, &removal)
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    let (state_name, description) = last_status(&repo, &removal, "pipewright/iac").await;
    assert_eq!(state_name, "failure");
    assert!(
        description.contains("plan destroys 1 without allow_destroy: terraform_data.mail"),
        "{description}"
    );
    assert_eq!(state_resources(state.path()), ["dns", "edge", "mail"]);

    // Drift: the configuration and the real state differ, and fail_on_changes says so.
    repo.create_tag("drift-2", &removal);
    assert_eq!(
        repo.new_tag_event("drift-2")
            .deliver(&server.hook(), SECRET)
            .await
            .0,
        202
    );
    let (state_name, description) = last_status(&repo, &removal, "pipewright/drift").await;
    assert_eq!(state_name, "failure");
    assert!(description.contains("drift"), "{description}");

    let runs = get_json(&server.url, "/api/v1/runs").await;
    assert_eq!(runs.as_array().unwrap().len(), 7, "{runs:#}");
    server.stop().await;
}

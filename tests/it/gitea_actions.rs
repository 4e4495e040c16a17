//! Pipewright as a Gitea Actions runner (`[gitea_actions]`) against the fake Gitea's runner
//! API: registration kept across restarts, "Run workflow" tasks run as Pipewright pipelines
//! (real Docker steps) with their masked log rows, step states and result sent back, bad
//! inputs and unmappable workflows failing the task with the reason, cancellation from
//! Gitea, and the poller riding out a Gitea that is unreachable for a while.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use pipewright_tests::fake_gitea::{ActionsTask, FakeGitea, Repo};
use serde_json::Value;

use crate::serve::{Server, eventually, final_statuses, step};

/// The stub workflow Gitea shows a "Run workflow" form for.
fn stub(inputs: &str, env: &str) -> String {
    format!(
        "name: restore\non:\n  workflow_dispatch:\n    inputs:\n{inputs}jobs:\n  run:\n    runs-on: pipewright\n{env}    steps:\n      - name: pipewright\n        run: echo handled by Pipewright\n"
    )
}

const STUB_INPUTS: &str = "      target:\n        type: choice\n        options: [db, files]\n      count:\n        type: number\n        default: '2'\n      dry_run:\n        type: boolean\n";

fn restore_pipeline() -> String {
    format!(
        "on:\n  dispatch:\n    inputs:\n      target: {{ type: choice, options: [db, files], required: true }}\n      count: {{ type: number, default: 2 }}\n      dry_run: {{ type: boolean, default: false }}\nsteps:\n{}{}",
        step(
            "restore",
            "echo \"restoring $PIPEWRIGHT_INPUT_TARGET x$PIPEWRIGHT_INPUT_COUNT dry=$PIPEWRIGHT_INPUT_DRY_RUN\"\necho \"token: $PIPEWRIGHT_ID_TOKEN\"",
        ),
        step("check", "echo checked"),
    )
}

fn settings(token: &str) -> Vec<(&'static str, String)> {
    vec![(
        "PIPEWRIGHT_GITEA_ACTIONS__REGISTRATION_TOKEN",
        token.to_owned(),
    )]
}

fn pairs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn repo_with(gitea: &FakeGitea, files: &[(&str, &str)]) -> Repo {
    let repo = gitea.create_repo("lab", "infra");
    let mut commit = repo.commit("main", "init").write("README.md", "lab\n");
    for (path, text) in files {
        commit = commit.write(path, text);
    }
    commit.push();
    repo
}

fn calls(gitea: &FakeGitea, procedure: &str) -> usize {
    gitea
        .actions_requests()
        .iter()
        .filter(|r| r.path.ends_with(&format!("/{procedure}")))
        .count()
}

async fn finished_task(gitea: &FakeGitea, job: i64) -> ActionsTask {
    eventually(
        Duration::from_secs(240),
        "the task's final state",
        || async {
            gitea
                .actions_task_of_job(job)
                .filter(|t| t.status != "running" && t.log_archived)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_kept_and_reused_after_a_restart() {
    let gitea = FakeGitea::start().await;
    let token = gitea.actions_registration_token();
    let set = settings(&token);
    let server = Server::start_with(&gitea, &pairs(&set)).await;
    eventually(Duration::from_secs(30), "the runner to poll", || async {
        (calls(&gitea, "FetchTask") > 0).then_some(())
    })
    .await;
    let runners = gitea.actions_runners();
    assert_eq!(runners.len(), 1, "{runners:?}");
    assert_eq!(runners[0].name, "pipewright");
    assert_eq!(runners[0].labels, ["pipewright"]);
    assert!(runners[0].version.starts_with("pipewright "), "{runners:?}");
    let register = &gitea.actions_requests()[0];
    assert!(register.path.ends_with("/Register"), "{register:?}");
    let body = register.body_json().unwrap();
    assert_eq!(body["token"], "REDACTED");
    assert_eq!(body["labels"], serde_json::json!(["pipewright"]));

    let data = server.stop_keeping_data().await;
    let file = data.path().join("gitea-runner.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let kept: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept["uuid"], runners[0].uuid.as_str());

    // Restarted with other labels: the same runner, declared again, never registered twice.
    let mut set = set;
    set.push((
        "PIPEWRIGHT_GITEA_ACTIONS__LABELS",
        "pipewright,lab".to_owned(),
    ));
    let declares = calls(&gitea, "Declare");
    let server = Server::start_in(data, &gitea, &pairs(&set), "").await;
    eventually(
        Duration::from_secs(30),
        "a Declare after the restart",
        || async { (calls(&gitea, "Declare") > declares).then_some(()) },
    )
    .await;
    let runners = gitea.actions_runners();
    assert_eq!(runners.len(), 1, "{runners:?}");
    assert_eq!(runners[0].labels, ["pipewright", "lab"]);
    assert_eq!(calls(&gitea, "Register"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatched_task_runs_its_pipeline_and_reports_back() {
    let gitea = FakeGitea::start().await;
    let pipeline = restore_pipeline();
    let repo = repo_with(&gitea, &[(".pipewright/restore.yml", &pipeline)]);
    let set = settings(&gitea.actions_registration_token());
    let server = Server::start_with(&gitea, &pairs(&set)).await;
    let workflow = stub(STUB_INPUTS, "");
    let job = gitea.dispatch_workflow(
        &repo,
        "restore.yml",
        &workflow,
        "main",
        &[("target", "db"), ("count", ""), ("dry_run", "true")],
        "ana",
    );
    let task = finished_task(&gitea, job).await;
    let lines = task.lines();
    assert_eq!(task.status, "success", "{lines:#?}");
    assert_eq!(lines[0], "── restore");
    assert_eq!(lines[1], "restoring db x2 dry=true");
    assert_eq!(lines[2], "token: ***", "the identity token is masked");
    assert_eq!(
        &lines[3..7],
        [
            "── restore: success, exit code 0",
            "── check",
            "checked",
            "── check: success, exit code 0"
        ]
    );
    assert!(lines[7].starts_with("Pipewright run "), "{lines:#?}");
    assert_eq!(lines.len(), 8, "{lines:#?}");
    // The stub's one step holds the whole log; the task has its stop time.
    assert_eq!(task.steps.len(), 1);
    assert_eq!(task.steps[0].status, "success");
    assert_eq!((task.steps[0].log_index, task.steps[0].log_length), (0, 8));
    assert!(task.stopped > 0 && task.steps[0].started > 0);

    // An ordinary dispatched run: its actor, typed inputs, commit status.
    let runs = server.runs().await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run["event"], "dispatch");
    assert_eq!(run["actor"], "ana");
    assert_eq!(run["inputs"]["count"], 2);
    assert_eq!(run["inputs"]["dry_run"], true);
    let sha = run["sha"].as_str().unwrap();
    let statuses = final_statuses(&repo, sha, "pipewright/restore").await;
    assert_eq!(statuses.last().unwrap().state, "success", "{statuses:?}");
    // Nothing of Gitea's task token reached the log.
    assert!(!lines.iter().any(|l| l.contains(&task.token)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_and_unmappable_workflows_fail_the_task_with_the_reason() {
    let gitea = FakeGitea::start().await;
    let pipeline = restore_pipeline();
    let repo = repo_with(&gitea, &[(".pipewright/restore.yml", &pipeline)]);
    let set = settings(&gitea.actions_registration_token());
    let server = Server::start_without_engine(&gitea, &pairs(&set), "").await;

    // A refused value, and an input the stub declares but the pipeline does not.
    let inputs = format!("{STUB_INPUTS}      extra:\n        type: string\n");
    let job = gitea.dispatch_workflow(
        &repo,
        "restore.yml",
        &stub(&inputs, ""),
        "main",
        &[("target", "tape"), ("extra", "1")],
        "ana",
    );
    let task = finished_task(&gitea, job).await;
    assert_eq!(task.status, "failure");
    let lines = task.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("Pipewright cannot run this task: dispatch refused: ")
            && lines[0].contains("unknown input `extra`")
            && lines[0].contains("input `target`"),
        "{lines:?}"
    );
    assert_eq!(task.steps[0].status, "failure");

    // A workflow naming a pipeline the repository does not have.
    let env = "    env:\n      PIPEWRIGHT_PIPELINE: missing\n";
    let job = gitea.dispatch_workflow(&repo, "other.yml", &stub("", env), "main", &[], "ana");
    let task = finished_task(&gitea, job).await;
    assert_eq!(task.status, "failure");
    assert_eq!(
        task.lines(),
        ["Pipewright cannot run this task: no pipeline `missing` at refs/heads/main"]
    );
    assert!(server.runs().await.is_empty(), "no run was queued");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_task_in_gitea_cancels_the_run() {
    let gitea = FakeGitea::start().await;
    let pipeline = format!(
        "on: dispatch\nsteps:\n{}",
        step("wait", "echo waiting\nsleep 300")
    );
    let repo = repo_with(&gitea, &[(".pipewright/wait.yml", &pipeline)]);
    let set = settings(&gitea.actions_registration_token());
    let server = Server::start_with(&gitea, &pairs(&set)).await;
    let job = gitea.dispatch_workflow(&repo, "wait.yml", &stub("", ""), "main", &[], "ana");
    eventually(Duration::from_secs(120), "the step's first row", || async {
        gitea
            .actions_task_of_job(job)
            .filter(|t| t.lines().iter().any(|l| l == "waiting"))
    })
    .await;
    gitea.cancel_actions_job(job);
    let run = eventually(Duration::from_secs(60), "the run to end", || async {
        let runs = server.runs().await;
        runs.into_iter()
            .find(|r| r["state"] != "running" && r["state"] != "queued")
    })
    .await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert_eq!(run["description"], "cancelled in Gitea", "{run:#}");
    let task = finished_task(&gitea, job).await;
    assert_eq!(task.status, "cancelled");
    let lines = task.lines();
    assert!(
        lines.last().unwrap().starts_with("Pipewright run ")
            && lines.last().unwrap().contains("ended: cancelled"),
        "{lines:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_backs_off_while_gitea_is_unreachable_and_recovers() {
    let gitea = FakeGitea::start().await;
    let repo = repo_with(&gitea, &[]);
    let set = settings(&gitea.actions_registration_token());
    // Gitea's runner API answers 503 to the first calls (Register included).
    gitea.fail_actions(3);
    let server = Server::start_without_engine(&gitea, &pairs(&set), "").await;
    eventually(Duration::from_secs(60), "the runner to poll", || async {
        (calls(&gitea, "FetchTask") > 0).then_some(())
    })
    .await;
    let answered: Vec<Option<u16>> = gitea.actions_requests().iter().map(|r| r.status).collect();
    assert_eq!(&answered[..4], [Some(503), Some(503), Some(503), Some(200)]);
    assert_eq!(gitea.actions_runners().len(), 1);

    // The port closed for a while: connections are refused, then it comes back.
    gitea.set_down(true);
    let before = gitea.actions_requests().len();
    gitea.set_down(false);
    let job = gitea.dispatch_workflow(&repo, "nothing.yml", &stub("", ""), "main", &[], "ana");
    let task = finished_task(&gitea, job).await;
    assert_eq!(task.status, "failure");
    assert_eq!(
        task.lines(),
        ["Pipewright cannot run this task: no pipeline `nothing` at refs/heads/main"]
    );
    assert!(gitea.actions_requests().len() > before);
    assert_eq!(gitea.actions_runners().len(), 1, "no second registration");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finishes_reporting_a_task_whose_run_ended_meanwhile() {
    let gitea = FakeGitea::start().await;
    let pipeline = format!(
        "on: dispatch\nsteps:\n{}",
        step("short", "sleep 2\necho done")
    );
    let repo = repo_with(&gitea, &[(".pipewright/short.yml", &pipeline)]);
    let set = settings(&gitea.actions_registration_token());
    let server = Server::start_with(&gitea, &pairs(&set)).await;
    let job = gitea.dispatch_workflow(&repo, "short.yml", &stub("", ""), "main", &[], "ana");
    eventually(Duration::from_secs(60), "the task to be taken", || async {
        gitea.actions_task_of_job(job)
    })
    .await;
    // Gitea's runner API fails from here on: the run ends, its end cannot be reported.
    gitea.fail_actions(u32::MAX);
    eventually(Duration::from_secs(120), "the run to end", || async {
        let runs = server.runs().await;
        runs.into_iter().find(|r| r["state"] == "success")
    })
    .await;
    let data = server.stop_keeping_data().await;
    assert_eq!(gitea.actions_task_of_job(job).unwrap().status, "running");

    gitea.fail_actions(0);
    let server = Server::start_in(data, &gitea, &pairs(&set), "").await;
    let task = finished_task(&gitea, job).await;
    assert_eq!(task.status, "success");
    let lines = task.lines();
    assert_eq!(
        &lines[..3],
        ["── short", "done", "── short: success, exit code 0"]
    );
    assert_eq!(calls(&gitea, "Register"), 1);
    server.stop().await;
}

/// The fake's runner API answers as connect-go does in front of Gitea: what the runner's
/// client relies on, checked without Pipewright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_runner_api_speaks_connect_as_gitea_does() {
    let gitea = FakeGitea::start().await;
    let http = crate::serve::client();
    let url = |p: &str| format!("{}/api/actions/runner.v1.RunnerService/{p}", gitea.url());
    let post = |p: &str, body: &'static str| {
        http.post(url(p))
            .header("content-type", "application/json")
            .body(body)
    };
    // Transport errors: wrong media type, empty body, unknown procedure.
    let resp = http.post(url("FetchTask")).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let resp = post("FetchTask", "").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument");
    let resp = post("Nope", "{}").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // Gitea's own errors: `unknown`, 500, the reason in the message.
    let resp = post("FetchTask", "{}").send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unknown");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unregistered runner")
    );
    let resp = post("Register", r#"{"name":"x","token":"wrong"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    // Registered with snake_case and an unknown field; answers in protojson's shape.
    let token = gitea.actions_registration_token();
    let body = format!(
        r#"{{"name":"r","token":"{token}","labels":["pipewright"],"agent_labels":[],"newer_field":1}}"#
    );
    let resp = http
        .post(url("Register"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let runner: Value = resp.json().await.unwrap();
    let (uuid, secret) = (
        runner["runner"]["uuid"].as_str().unwrap().to_owned(),
        runner["runner"]["token"].as_str().unwrap().to_owned(),
    );
    assert!(
        runner["runner"]["id"].is_string(),
        "int64 as a string: {runner}"
    );
    let call = |p: &str, body: String| {
        http.post(url(p))
            .header("content-type", "application/json")
            .header("x-runner-uuid", &uuid)
            .header("x-runner-token", &secret)
            .body(body)
    };
    let fetched: Value = call("FetchTask", r#"{"tasks_version":0}"#.into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        fetched,
        serde_json::json!({"tasksVersion": "1"}),
        "no task key"
    );
    // Same version: no look for a task, even with one waiting.
    let repo = repo_with(&gitea, &[]);
    gitea.dispatch_workflow(&repo, "x.yml", &stub("", ""), "main", &[], "ana");
    let same: Value = call("FetchTask", r#"{"tasksVersion":"2"}"#.into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(same.get("task").is_none(), "{same}");
    let got: Value = call("FetchTask", r#"{"tasksVersion":1}"#.into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = got["task"]["id"].as_str().unwrap().to_owned();
    // UpdateLog's ack arithmetic: overlap is idempotent, a gap adds nothing.
    let log = |index: i64, rows: &[&str], no_more: bool| {
        let rows: Vec<Value> = rows
            .iter()
            .map(|c| serde_json::json!({"time": "2026-01-01T10:00:00Z", "content": c}))
            .collect();
        serde_json::json!({"taskId": id, "index": index.to_string(), "rows": rows, "noMore": no_more})
            .to_string()
    };
    let ack = |v: Value| v["ackIndex"].as_str().unwrap().to_owned();
    let send = |body: String| async { call("UpdateLog", body).send().await.unwrap() };
    assert_eq!(
        ack(send(log(0, &["a", "b"], false)).await.json().await.unwrap()),
        "2"
    );
    assert_eq!(
        ack(send(log(1, &["b", "c"], false)).await.json().await.unwrap()),
        "3"
    );
    assert_eq!(
        ack(send(log(5, &["z"], false)).await.json().await.unwrap()),
        "3"
    );
    // `noMore` on a call that adds nothing is ignored; with a new row it archives.
    assert_eq!(
        ack(send(log(0, &["a"], true)).await.json().await.unwrap()),
        "3"
    );
    assert_eq!(
        ack(send(log(3, &["d"], true)).await.json().await.unwrap()),
        "4"
    );
    let archived = send(log(4, &["e"], false)).await;
    assert_eq!(archived.status(), 500);
    let body: Value = archived.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("AlreadyExists"));
    // A final UpdateTask, then a heartbeat answers the final result.
    let state = |result: &str| {
        format!(
            r#"{{"state":{{"id":"{id}","result":"{result}","stoppedAt":"2026-01-01T10:00:05Z"}}}}"#
        )
    };
    let done: Value = call("UpdateTask", state("RESULT_FAILURE"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["state"]["result"], "RESULT_FAILURE");
    let again: Value = call("UpdateTask", state("RESULT_UNSPECIFIED"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["state"]["result"], "RESULT_FAILURE");
    assert!(
        !gitea
            .actions_requests()
            .iter()
            .any(|r| r.body_text().contains(&secret) || r.body_text().contains(&token)),
        "tokens are never recorded"
    );
}

//! How a run's steps flow: `when.status` cleanup steps after a failure, a cancel and a run
//! timeout (through `pipewright exec` and the server's API), `pipefail` under busybox's
//! `sh`, Debian's `dash` and `shell: bash`, and `${{ lower(repo) }}` and `${{ actor }}` in
//! image names, on the real engine.

use std::{fs, path::Path, process::Command, time::Duration};

use pipewright_tests::fake_gitea::FakeGitea;
use serde_json::Value;

use crate::actions::TOOLS;
use crate::exec_cli::pipewright_bin;
use crate::serve::{API_TOKEN, IMAGE, Server, client, eventually, final_statuses, states};

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A checkout with one pipeline file, `.pipewright/<name>.yml`.
fn checkout(name: &str, pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".pipewright").join(format!("{name}.yml"));
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(file, pipeline).unwrap();
    dir
}

/// `pipewright exec --event dispatch DIR` (with `USER` set to `user` when given).
fn exec(dir: &Path, user: Option<&str>) -> Output {
    let mut command = Command::new(pipewright_bin());
    command.args(["exec", "--event", "dispatch"]).arg(dir);
    if let Some(user) = user {
        command.env("USER", user);
    }
    let out = command.output().expect("failed to start pipewright");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Lines a step printed (`name | …` on stdout and stderr), without the prefix.
fn printed(out: &Output, step: &str) -> Vec<String> {
    let prefix = format!("{step} | ");
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

// The erp restore of the home lab: the deployment is scaled to 0, the SQL fails, and the
// step that scales it back up must run all the same, without making the run a success.
const RESTORE: &str = r#"
on: dispatch
steps:
  - name: scale-down
    image: IMAGE
    run: |
      echo 0 > replicas
      echo "scaled to $(cat replicas)"
  - name: restore
    image: IMAGE
    run: |
      echo "restoring"
      echo "ERROR: relation \"erp\" does not exist" >&2
      exit 3
  - name: migrate
    image: IMAGE
    run: echo never, the restore failed
  - name: scale-back-up
    image: IMAGE
    run: |
      echo 1 > replicas
      echo "scaled from 0 to $(cat replicas)"
    when: { status: [success, failure] }
  - name: alert
    image: IMAGE
    run: echo "restore of erp failed"
    when: { status: [failure], event: dispatch }
  - name: alert-on-push
    image: IMAGE
    run: echo never, not a push
    when: { status: [failure], event: push }
  - name: done
    image: IMAGE
    run: echo never after a failure
"#;

#[test]
fn a_failed_restore_runs_its_cleanup_steps_and_stays_failed() {
    let dir = checkout("restore", &RESTORE.replace("IMAGE", IMAGE));
    let out = exec(dir.path(), None);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(printed(&out, "scale-down"), ["scaled to 0"], "{out}");
    assert_eq!(
        printed(&out, "scale-back-up"),
        ["scaled from 0 to 1"],
        "the cleanup step ran in the failed run's workspace: {out}"
    );
    assert_eq!(printed(&out, "alert"), ["restore of erp failed"], "{out}");
    for (step, state) in [
        ("restore", "<-- step restore: failed with exit code 3"),
        ("migrate", "--- step migrate: not run"),
        ("scale-back-up", "<-- step scale-back-up: succeeded"),
        ("alert", "<-- step alert: succeeded"),
        ("alert-on-push", "--- step alert-on-push: skipped"),
        ("done", "--- step done: not run"),
    ] {
        assert!(out.stdout.contains(state), "{step}: {out}");
    }
    assert!(!out.stdout.contains("never") && !out.stderr.contains("never"));
    assert!(
        out.stdout
            .contains("=== pipeline restore: failure: step restore failed with exit code 3"),
        "the run's verdict is the restore's, not the cleanup's success: {out}"
    );
}

#[test]
fn always_steps_run_after_success_and_a_failing_one_fails_the_run() {
    let fine = format!(
        "on: dispatch\nsteps:\n  - {{ name: build, image: {IMAGE}, run: echo built }}\n  - {{ name: tidy, image: {IMAGE}, run: echo tidied, when: {{ status: [success, failure] }} }}\n  - {{ name: alert, image: {IMAGE}, run: echo never, when: {{ status: failure }} }}\n  - {{ name: publish, image: {IMAGE}, run: echo published }}\n"
    );
    let dir = checkout("fine", &fine);
    let out = exec(dir.path(), None);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(printed(&out, "tidy"), ["tidied"], "{out}");
    assert_eq!(printed(&out, "publish"), ["published"], "{out}");
    assert!(
        out.stdout
            .contains("--- step alert: skipped (it runs only after a failure)"),
        "{out}"
    );
    assert!(out.stdout.contains("=== pipeline fine: success"), "{out}");

    // The same with a cleanup step that fails after success: the run fails, at it, and
    // only failure steps run after it.
    let broken = fine.replace("run: echo tidied", "run: \"echo tidying; exit 5\"");
    let dir = checkout("fine", &broken);
    let out = exec(dir.path(), None);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(printed(&out, "alert"), ["never"], "now it is needed: {out}");
    assert!(out.stdout.contains("--- step publish: not run"), "{out}");
    assert!(
        out.stdout
            .contains("=== pipeline fine: failure: step tidy failed with exit code 5"),
        "{out}"
    );
}

#[test]
fn the_run_timeout_does_not_stop_cleanup_steps() {
    // The run has 3 seconds; the first step would take five minutes. The cleanup steps
    // start after the run's time is gone, each with a limit of its own: the default (5m)
    // and `timeout: 2s`, which stops the second.
    let pipeline = format!(
        "on: dispatch\ntimeout: 3s\nsteps:\n  - {{ name: long, image: {IMAGE}, run: \"echo started; sleep 300\" }}\n  - {{ name: next, image: {IMAGE}, run: echo never }}\n  - {{ name: cleanup, image: {IMAGE}, run: \"sleep 1; echo cleaned up\", when: {{ status: [failure] }} }}\n  - {{ name: stuck, image: {IMAGE}, run: \"echo stuck; sleep 300\", timeout: 2s, when: {{ status: [failure] }} }}\n  - {{ name: after, image: {IMAGE}, run: echo after, when: {{ status: [failure] }} }}\n"
    );
    let dir = checkout("slow", &pipeline);
    let out = exec(dir.path(), None);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(printed(&out, "long"), ["started"], "{out}");
    assert!(
        out.stdout.contains("<-- step long: timed out after 3s"),
        "{out}"
    );
    assert!(out.stdout.contains("--- step next: not run"), "{out}");
    assert_eq!(printed(&out, "cleanup"), ["cleaned up"], "{out}");
    assert!(
        out.stdout.contains("<-- step stuck: timed out after 2s"),
        "the cleanup step's own timeout stops it: {out}"
    );
    assert_eq!(printed(&out, "after"), ["after"], "{out}");
    assert!(
        out.stdout
            .contains("=== pipeline slow: failure: step long timed out after 3s"),
        "{out}"
    );
}

#[test]
fn pipelines_of_commands_fail_when_a_command_fails() {
    // busybox's sh and bash fail a pipeline whose first command fails; the `pg_dump |
    // gzip` of the home lab that wrote a 20-byte archive after "connection refused" now
    // fails the step with pg_dump's status.
    let pipeline = format!(
        r#"on: dispatch
steps:
  - name: busybox-false
    image: {IMAGE}
    run: |
      false | cat
      echo never
    continue_on_error: true
  - name: busybox-dump
    image: {IMAGE}
    run: |
      sh -c 'echo "pg_dump: connection refused" >&2; exit 3' | gzip > erp.sql.gz
      echo never
    continue_on_error: true
  - name: bash-false
    image: {TOOLS}
    shell: bash
    run: |
      echo "bash $BASH_VERSION"
      false | cat
      echo never
    continue_on_error: true
  - name: bash-dump
    image: {TOOLS}
    shell: bash
    run: |
      sh -c 'exit 3' | gzip > erp.sql.gz
      echo never
    continue_on_error: true
  - name: pipes-that-work
    image: {IMAGE}
    run: |
      echo one two | cut -d' ' -f2
      ! false | cat
      if false | cat; then echo never; fi
      echo fine
"#
    );
    let dir = checkout("dump", &pipeline);
    let out = exec(dir.path(), None);
    assert_eq!(out.code, 0, "{out}");
    for (step, code) in [
        ("busybox-false", 1),
        ("busybox-dump", 3),
        ("bash-false", 1),
        ("bash-dump", 3),
    ] {
        assert!(
            out.stdout
                .contains(&format!("<-- step {step}: failed with exit code {code}")),
            "{step}: {out}"
        );
    }
    assert!(!out.stdout.contains("never"), "{out}");
    assert!(
        printed(&out, "bash-false")
            .first()
            .is_some_and(|l| l.starts_with("bash 5.")),
        "`shell: bash` runs bash: {out}"
    );
    assert_eq!(printed(&out, "pipes-that-work"), ["two", "fine"], "{out}");
}

#[test]
fn a_shell_without_pipefail_runs_the_script_as_written_with_its_line_numbers() {
    // Debian bookworm's /bin/sh is dash 0.5.12, which has no `pipefail`: the script runs
    // all the same, nothing is said about the option, and dash's messages give the
    // script's own line numbers.
    let pipeline = format!(
        "on: dispatch\nsteps:\n  - name: dash\n    image: {TOOLS}\n    run: |\n      echo \"sh is $(readlink /bin/sh)\"\n      echo second\n      no-such-command\n"
    );
    let dir = checkout("lines", &pipeline);
    let out = exec(dir.path(), None);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        printed(&out, "dash"),
        [
            "sh is dash",
            "second",
            "/bin/sh: 3: no-such-command: not found"
        ],
        "{out}"
    );
    assert!(
        out.stdout
            .contains("<-- step dash: failed with exit code 127"),
        "{out}"
    );
}

/// An image name the test tags (from the busybox test image) and removes when dropped.
struct Tagged(String);

impl Tagged {
    fn new(name: &str) -> Tagged {
        pipewright_tests::docker_cli(&["tag", IMAGE, name]);
        Tagged(name.to_string())
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", &self.0])
            .output();
    }
}

fn unique_tag(what: &str) -> String {
    pipewright_tests::unique_run(what)
        .rsplit('-')
        .take(3)
        .collect::<Vec<_>>()
        .join("-")
}

#[test]
fn image_names_use_the_repository_in_lower_case_and_the_actor() {
    // A repository with capitals (from its remote, as `exec` reads it): `${{ repo }}` would
    // be no valid image name, `${{ lower(repo) }}` is.
    let tag = unique_tag("lower");
    let actor = format!("Local-User-{tag}");
    let image = Tagged::new(&format!("localhost/arcodange-org/erp:{actor}"));
    let dir = checkout(
        "names",
        "on: dispatch\nsteps:\n  - name: in-lower\n    image: \"localhost/${{ lower(repo_owner) }}/${{ lower(repo_name) }}:${{ actor }}\"\n    run: echo ran in lower case\n  - name: lowered-whole\n    image: \"localhost/${{ lower(repo) }}:${{ actor }}\"\n    run: echo \"$PIPEWRIGHT_REPO\"\n",
    );
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(status.status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://gitea.lab/Arcodange-Org/ERP.git",
    ]);
    let out = exec(dir.path(), Some(&actor));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains(&format!("--> step in-lower (image {})", image.0)),
        "{out}"
    );
    assert_eq!(printed(&out, "in-lower"), ["ran in lower case"], "{out}");
    assert_eq!(
        printed(&out, "lowered-whole"),
        ["Arcodange-Org/ERP"],
        "the repository itself keeps its case: {out}"
    );
}

async fn cancel(server: &Server, run: i64) -> reqwest::StatusCode {
    client()
        .post(format!("{}/api/v1/runs/{run}/cancel", server.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
}

fn step_states(run: &Value) -> Vec<String> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_runs_its_cleanup_steps_then_ends_cancelled() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    // The sender's login, with capitals, names the image with the repository's in lower
    // case: `${{ actor }}` is the event's sender.
    let repo = gitea.create_repo("Arcodange-Org", "ERP").as_user("Gab-Ops");
    let tag = unique_tag("cancel");
    let image = Tagged::new(&format!("localhost/arcodange-org/erp:gab-ops-{tag}"));
    let pipeline = format!(
        r#"on: push
steps:
  - name: scale-down
    image: "localhost/${{{{ lower(repo) }}}}:${{{{ lower(actor) }}}}-{tag}"
    run: echo 0 > replicas
  - name: restore
    image: {IMAGE}
    run: |
      echo restoring
      sleep 300
  - name: migrate
    image: {IMAGE}
    run: echo never
  - name: scale-back-up
    image: {IMAGE}
    run: echo "scaled from $(cat replicas) to 1 by $PIPEWRIGHT_EVENT"
    when: {{ status: [success, failure] }}
  - name: alert
    image: {IMAGE}
    run: echo alerted
    when: {{ status: failure }}
"#
    );
    let first = repo
        .commit("main", "init")
        .write("README.md", "erp\n")
        .push();
    let second = repo
        .commit("main", "restore")
        .write(".pipewright/restore.yml", &pipeline)
        .push();
    assert_eq!(
        server
            .deliver(repo.push_event("main", &first, &second))
            .await,
        202
    );
    let run_id = eventually(
        Duration::from_secs(60),
        "the restore step to run",
        || async {
            let runs = server.runs().await;
            let id = runs.first()?["id"].as_i64()?;
            let run = server.api(&format!("/api/v1/runs/{id}")).await;
            (run["steps"][1]["state"] == "running" && server.log(id, 1).await == "restoring\n")
                .then_some(id)
        },
    )
    .await;
    assert_eq!(cancel(&server, run_id).await, 200);
    let statuses = final_statuses(&repo, &second, "pipewright/restore").await;
    assert_eq!(states(&statuses), ["pending", "error"], "{statuses:?}");
    assert_eq!(
        statuses.last().unwrap().description,
        "cancelled through the API"
    );
    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "cancelled", "{run:#}");
    assert_eq!(run["actor"], "Gab-Ops");
    assert_eq!(
        step_states(&run),
        ["success", "cancelled", "not_run", "success", "success"],
        "{run:#}"
    );
    assert_eq!(server.log(run_id, 3).await, "scaled from 0 to 1 by push\n");
    assert_eq!(server.log(run_id, 4).await, "alerted\n");
    drop(image);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_a_failed_run_failed_after_its_cleanup() {
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "erp");
    let first = repo
        .commit("main", "init")
        .write("README.md", "erp\n")
        .push();
    let second = repo
        .commit("main", "restore")
        .write(".pipewright/restore.yml", &RESTORE.replace("IMAGE", IMAGE))
        .push();
    // The restore pipeline runs on dispatch; a push selects nothing, a dispatch runs it.
    assert_eq!(
        server
            .deliver(repo.push_event("main", &first, &second))
            .await,
        202
    );
    let response = client()
        .post(format!(
            "{}/api/v1/repos/org/erp/pipelines/restore/dispatch",
            server.url
        ))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({ "ref": "main" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let statuses = final_statuses(&repo, &second, "pipewright/restore").await;
    assert_eq!(states(&statuses), ["pending", "failure"], "{statuses:?}");
    assert_eq!(
        statuses.last().unwrap().description,
        "step restore failed with exit code 3"
    );
    let runs = server.runs().await;
    let run_id = runs[0]["id"].as_i64().unwrap();
    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "failure", "{run:#}");
    assert_eq!(
        step_states(&run),
        [
            "success", "failure", "not_run", "success", "success", "skipped", "not_run"
        ],
        "{run:#}"
    );
    assert_eq!(server.log(run_id, 3).await, "scaled from 0 to 1\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_sender_login_never_reaches_an_image_name() {
    // `${{ actor }}` comes from the payload's sender: a login that Gitea could not have
    // made (shell syntax, a path, a tag of another image) is dropped, never rendered.
    let gitea = FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("Org", "App");
    let tag = unique_tag("hostile");
    let image = Tagged::new(&format!("localhost/org/app:by-{tag}-"));
    let pipeline = format!(
        "on: push\nsteps:\n  - name: named\n    image: \"localhost/${{{{ lower(repo) }}}}:by-{tag}-${{{{ actor }}}}\"\n    run: echo ran as nobody\n"
    );
    let first = repo.commit("main", "init").write("README.md", "x\n").push();
    let second = repo
        .commit("main", "pipeline")
        .write(".pipewright/named.yml", &pipeline)
        .push();
    let hostile = "x$(touch /tmp/pwned-by-actor)/../../busybox:1";
    let delivery = repo.push_event("main", &first, &second).edit(|v| {
        v["sender"]["login"] = hostile.into();
        v["pusher"]["login"] = "evil user;id".into();
    });
    assert_eq!(server.deliver(delivery).await, 202);
    let statuses = final_statuses(&repo, &second, "pipewright/named").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");
    let runs = server.runs().await;
    let run_id = runs[0]["id"].as_i64().unwrap();
    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(run["actor"], "", "{run:#}");
    assert_eq!(server.log(run_id, 0).await, "ran as nobody\n");
    assert!(!Path::new("/tmp/pwned-by-actor").exists());
    drop(image);
    server.stop().await;
}

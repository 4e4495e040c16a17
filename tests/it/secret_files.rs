//! Secrets as files (`vault.files`) and `[docker].secrets_in_env = false`, against a real
//! OpenBao and the real engine: exact values at `/run/secrets/` (0400, read-only), gone
//! from the host when the run ends, masked in logs, never in the engine's on-disk container
//! config or the data directory; bad paths in a pull request's file; a secrets directory on
//! a disk refused by `serve` and `exec`.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use pipewright::server::{App, serve};
use pipewright_containers::{CancellationToken, LABEL_INSTANCE, LABEL_RUN};
use pipewright_tests::{containers_with_labels, docker_cli, fake_gitea::FakeGitea};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    serve::{Server, eventually, final_statuses, states, step},
    vault::{OpenBao, ROOT, push, run_id_for, started},
};

/// The secrets of one test, with markers of their own (tests run at once on one engine, and
/// one that keeps secrets in the environment must not be found by another's scan): a key
/// with what shell quoting gets wrong (quotes, `$`, backslashes, a trailing newline) and a
/// variable's value as hostile to an environment file (every quote, `$(…)`, newlines). The
/// markers are searched for verbatim (JSON escapes neither).
struct Values {
    ssh_key: String,
    file_marker: String,
    env_value: String,
    env_marker: String,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn store_secrets(bao: &OpenBao) -> Values {
    let unique = sha256_hex(&pipewright_tests::unique_run("secret-files"));
    let file_marker = format!("pwfilesmarker{}", &unique[..12]);
    let env_marker = format!("pwenvmarker{}", &unique[12..24]);
    let values = Values {
        ssh_key: format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA {file_marker}\n'single' \"double\" $HOME `id` \\n \\\\\n-----END OPENSSH PRIVATE KEY-----\n"
        ),
        env_value: format!(
            "{env_marker} it's \"q\" $(touch /tmp/pwned) `id` $HOME \\\n second line '\\''\n"
        ),
        file_marker,
        env_marker,
    };
    bao.post(
        "kvv1/gitea/tofu_module_reader",
        json!({ "ssh_private_key": values.ssh_key }),
    )
    .await;
    bao.post("kvv1/app/env", json!({ "value": values.env_value }))
        .await;
    values
}

const VAULT: &str = "vault:\n  secrets:\n    APP_SECRET: kvv1/app/env#value\n  files:\n    ssh/id_ed25519: kvv1/gitea/tofu_module_reader#ssh_private_key\n";

/// The first step: checks the file and the variable, then waits for the test's go.
const CHECKS: &str = r#"f=/run/secrets/ssh/id_ed25519
echo "mode: $(stat -c %a $f)"
echo "file: $(sha256sum $f | cut -d' ' -f1)"
echo "env: $(printf %s "$APP_SECRET" | sha256sum | cut -d' ' -f1)"
if touch /run/secrets/new 2>/dev/null || echo x >> $f 2>/dev/null; then echo writable; else echo read-only; fi
mount | grep -q ' /run/secrets .*ro[,)]' && echo "mounted ro"
cat $f
echo "leak: $APP_SECRET"
test -e /tmp/pwned && echo "the value ran" || echo "the value did not run"
while [ ! -e /workspace/go ]; do sleep 0.1; done"#;

/// Every file of the engine's containers that holds their configuration, as text.
fn engine_configs() -> Vec<(PathBuf, String)> {
    let root = docker_cli(&["info", "--format", "{{.DockerRootDir}}"]);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(Path::new(&root).join("containers")).expect("the engine's root")
    {
        let dir = entry.unwrap().path();
        for name in ["config.v2.json", "hostconfig.json"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                out.push((dir.join(name), text));
            }
        }
    }
    out
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

/// Runs the checks with `extra` settings and returns, while the step waits: the step's
/// container's config files' text, whether each marker is in any engine config, and the
/// files of the data directory holding a marker; then lets the run end and checks what is
/// common to both deliveries.
async fn run_checks(in_env: bool) {
    let gitea = FakeGitea::start().await;
    let secrets = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let dir = secrets.path().display().to_string();
    let in_env_text = in_env.to_string();
    let (bao, server) = started(
        &gitea,
        &[
            ("PIPEWRIGHT_SERVER__SECRETS_DIR", &dir),
            ("PIPEWRIGHT_DOCKER__SECRETS_IN_ENV", &in_env_text),
        ],
    )
    .await;
    let v = store_secrets(&bao).await;
    let repo = gitea.create_repo("org", "app");
    let pipeline = format!(
        "on: push\n{VAULT}steps:\n{}{}",
        step("check", CHECKS),
        step(
            "later",
            "sha256sum /run/secrets/ssh/id_ed25519 | cut -d' ' -f1 | sed 's/^/later: /'"
        )
    );
    let (sha, delivery) = push(&repo, &pipeline);
    assert_eq!(server.deliver(delivery).await, 202);
    let id = run_id_for(&server, "org/app", "deploy").await;
    let run_dir = secrets
        .path()
        .join(&server.app.instance)
        .join(format!("run-{id}"));
    // While the step waits: its container exists, and the run's files are on the tmpfs.
    let container = eventually(Duration::from_secs(90), "the step's container", || async {
        containers_with_labels(&[
            (LABEL_RUN, &id.to_string()),
            (LABEL_INSTANCE, &server.app.instance),
        ])
        .into_iter()
        .next()
    })
    .await;
    let on_host = run_dir.join("files/ssh/id_ed25519");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), v.ssh_key);
    let mode = std::fs::metadata(&on_host).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
    eventually(Duration::from_secs(60), "the step to wait", || async {
        server.log(id, 0).await.contains("the value").then_some(())
    })
    .await;

    let configs = engine_configs();
    let ours: Vec<&(PathBuf, String)> = configs
        .iter()
        .filter(|(path, _)| path.to_string_lossy().contains(&container))
        .collect();
    assert_eq!(ours.len(), 2, "the step container's config files: {ours:?}");
    let holding = |marker: &str| -> Vec<&PathBuf> {
        configs
            .iter()
            .filter(|(_, text)| text.contains(marker))
            .map(|(path, _)| path)
            .collect()
    };
    assert_eq!(
        holding(&v.file_marker),
        Vec::<&PathBuf>::new(),
        "a file's value in the engine's config"
    );
    if in_env {
        // The default: the variable is the container's environment, which the engine keeps.
        assert!(
            ours.iter().any(|(_, text)| text.contains(&v.env_marker)),
            "secrets_in_env = true gives the secret as the container's environment"
        );
    } else {
        assert_eq!(
            holding(&v.env_marker),
            Vec::<&PathBuf>::new(),
            "a variable's value in the engine's config"
        );
        let env_file = std::fs::read_to_string(run_dir.join("env")).unwrap();
        assert!(env_file.starts_with("export APP_SECRET='"), "{env_file}");
    }
    let data = server.app.config.server.data_dir.clone();
    for marker in [v.file_marker.as_str(), v.env_marker.as_str()] {
        assert_eq!(
            files_containing(&data, marker),
            Vec::<PathBuf>::new(),
            "`{marker}` on disk"
        );
    }

    std::fs::write(data.join(format!("workspaces/run-{id}/go")), "").unwrap();
    let statuses = final_statuses(&repo, &sha, "pipewright/deploy").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");
    let log = server.log(id, 0).await;
    for line in [
        "mode: 400".to_string(),
        format!("file: {}", sha256_hex(&v.ssh_key)),
        format!("env: {}", sha256_hex(&v.env_value)),
        "read-only".into(),
        "mounted ro".into(),
        "leak: ***".into(),
        "the value did not run".into(),
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "`{line}` missing from:\n{log}"
        );
    }
    for marker in [
        v.file_marker.as_str(),
        v.env_marker.as_str(),
        "BEGIN OPENSSH",
        "second line",
    ] {
        assert!(!log.contains(marker), "`{marker}` leaked into:\n{log}");
    }
    // Every step container gets the files.
    let later = server.log(id, 1).await;
    assert_eq!(later.trim(), format!("later: {}", sha256_hex(&v.ssh_key)));
    // The run ended: its directory is gone from the host, and nothing reached the disk.
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
    for marker in [v.file_marker.as_str(), v.env_marker.as_str()] {
        assert_eq!(
            files_containing(&data, marker),
            Vec::<PathBuf>::new(),
            "`{marker}` on disk"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_reach_steps_read_only_and_go_when_the_run_ends() {
    run_checks(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_secrets_in_env_no_secret_byte_reaches_the_engines_config() {
    run_checks(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_cancelled_runs_remove_their_files_and_a_restart_removes_a_crashs() {
    let gitea = FakeGitea::start().await;
    let secrets = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let dir = secrets.path().display().to_string();
    let (bao, server) = started(&gitea, &[("PIPEWRIGHT_SERVER__SECRETS_DIR", &dir)]).await;
    store_secrets(&bao).await;
    let repo = gitea.create_repo("org", "app");
    let pipeline = format!(
        "on: push\n{VAULT}steps:\n{}",
        step("fail", "test -s /run/secrets/ssh/id_ed25519 && exit 3")
    );
    let (sha, delivery) = push(&repo, &pipeline);
    assert_eq!(server.deliver(delivery).await, 202);
    let statuses = final_statuses(&repo, &sha, "pipewright/deploy").await;
    assert_eq!(states(&statuses), ["pending", "failure"], "{statuses:?}");
    let mine = secrets.path().join(&server.app.instance);
    assert_eq!(
        std::fs::read_dir(&mine).unwrap().count(),
        0,
        "a run directory is left"
    );

    // A cancelled run: its directory is there while it runs, gone once it is cancelled.
    let waiting = format!(
        "on: push\n{VAULT}steps:\n{}",
        step("wait", "echo waiting\nwhile true; do sleep 0.1; done")
    );
    let head = repo
        .commit("main", "wait")
        .write(".pipewright/deploy.yml", &waiting)
        .push();
    assert_eq!(
        server.deliver(repo.push_event("main", &sha, &head)).await,
        202
    );
    let id = eventually(Duration::from_secs(60), "the second run", || async {
        server
            .runs()
            .await
            .iter()
            .find(|r| r["sha"] == head.as_str())?["id"]
            .as_i64()
    })
    .await;
    let run_dir = mine.join(format!("run-{id}"));
    eventually(Duration::from_secs(60), "the step to wait", || async {
        server.log(id, 0).await.contains("waiting").then_some(())
    })
    .await;
    assert!(run_dir.join("files/ssh/id_ed25519").is_file());
    let cancelled = crate::serve::client()
        .post(format!("{}/api/v1/runs/{id}/cancel", server.url))
        .bearer_auth(crate::serve::API_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    eventually(
        Duration::from_secs(60),
        "the run to be cancelled",
        || async {
            let run = server.api(&format!("/api/v1/runs/{id}")).await;
            (run["state"] == "cancelled").then_some(())
        },
    )
    .await;
    assert!(!run_dir.exists(), "{} is left", run_dir.display());

    // What a crash would leave is removed at the next start.
    let leftover = mine.join("run-999/files");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("key"), "left").unwrap();
    let data = server.stop_keeping_data().await;
    let server = Server::start_in(
        data,
        &gitea,
        &[("PIPEWRIGHT_SERVER__SECRETS_DIR", &dir)],
        "",
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "leftovers to be removed",
        || async { (!mine.join("run-999").exists()).then_some(()) },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_secrets_dir_on_a_disk() {
    let gitea = FakeGitea::start().await;
    let data = tempfile::tempdir().unwrap();
    let on_disk = data.path().join("secrets");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let env = vec![
        (
            "PIPEWRIGHT_SERVER__DATA_DIR".to_string(),
            data.path().display().to_string(),
        ),
        (
            "PIPEWRIGHT_SERVER__SECRETS_DIR".into(),
            on_disk.display().to_string(),
        ),
        ("PIPEWRIGHT_GITEA__URL".into(), gitea.url().to_string()),
        ("PIPEWRIGHT_GITEA__TOKEN".into(), gitea.token().to_string()),
        ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET".into(), "s".into()),
    ];
    let config = pipewright::config::load(None, env).expect("test configuration");
    let app = App::new(config).await.unwrap();
    let err = serve(listener, app, CancellationToken::new())
        .await
        .expect_err("serve started on a disk");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "secrets_dir {} is not on a tmpfs or ramfs",
            on_disk.display()
        )),
        "{err}"
    );
}

#[test]
fn validate_refuses_secret_files_outside_run_secrets() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join(".pipewright")).unwrap();
    std::fs::write(
        repo.path().join(".pipewright/pr.yml"),
        "on: pull_request\nvault:\n  files:\n    ../x: kvv1/gitea/tofu_module_reader#ssh_private_key\n    /etc/x: kvv1/a#b\n    ssh/../../../root/.ssh/authorized_keys: kvv1/a#b\n    ok/ssh: kvv1/a#b\nsteps:\n  - { name: a, image: busybox, run: 'true' }\n",
    )
    .unwrap();
    let out = Command::new(crate::exec_cli::pipewright_bin())
        .arg("validate")
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    expect_test::expect![[r#"
        .pipewright/pr.yml:4:5: invalid secret file path `../x`: the path has a `..` component
        .pipewright/pr.yml:5:5: invalid secret file path `/etc/x`: the path must be relative to `/run/secrets/`, not start with `/`
        .pipewright/pr.yml:6:5: invalid secret file path `ssh/../../../root/.ssh/authorized_keys`: the path has a `..` component
        1 of 1 pipeline files invalid
    "#]]
    .assert_eq(&String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_writes_files_on_a_tmpfs_and_removes_them() {
    let bao = OpenBao::start().await;
    bao.post(
        "sys/mounts/kvv1",
        json!({ "type": "kv", "options": { "version": "1" } }),
    )
    .await;
    let v = store_secrets(&bao).await;
    let repo = tempfile::tempdir().unwrap();
    let script = "echo \"file: $(sha256sum /run/secrets/ssh/id_ed25519 | cut -d' ' -f1)\"\necho \"env: $(printf %s \"$APP_SECRET\" | sha256sum | cut -d' ' -f1)\"\ncat /run/secrets/ssh/id_ed25519";
    std::fs::create_dir_all(repo.path().join(".pipewright")).unwrap();
    std::fs::write(
        repo.path().join(".pipewright/local.yml"),
        format!("on: push\n{VAULT}steps:\n{}", step("use", script)),
    )
    .unwrap();
    let run = |secrets_dir: &Path| {
        Command::new(crate::exec_cli::pipewright_bin())
            .arg("exec")
            .arg(repo.path())
            .args(["--vault-addr", &bao.addr, "--secrets-in-env", "false"])
            .arg("--secrets-dir")
            .arg(secrets_dir)
            .env("VAULT_TOKEN", ROOT)
            .output()
            .unwrap()
    };
    let secrets = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let out = run(secrets.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("use | file: {}", sha256_hex(&v.ssh_key))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("use | env: {}", sha256_hex(&v.env_value))),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&v.file_marker) && !stdout.contains("BEGIN OPENSSH"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(secrets.path().join("exec"))
            .unwrap()
            .count(),
        0,
        "the run's directory is left"
    );
    // A directory on a disk: no step runs.
    let disk = tempfile::tempdir().unwrap();
    let out = run(disk.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("is not on a tmpfs or ramfs"), "{stdout}");
    assert!(!stdout.contains("--> step"), "{stdout}");
    assert_eq!(
        files_containing(disk.path(), &v.file_marker),
        Vec::<PathBuf>::new()
    );
}

/// `uses: tofu` gets both: `TF_VAR_*` from the environment file and the file itself, in
/// each of its containers (init, plan, show, apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tofu_reads_variables_and_files_without_secrets_in_env() {
    let gitea = FakeGitea::start().await;
    let secrets = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let dir = secrets.path().display().to_string();
    let (bao, server) = started(
        &gitea,
        &[
            ("PIPEWRIGHT_SERVER__SECRETS_DIR", &dir),
            ("PIPEWRIGHT_DOCKER__SECRETS_IN_ENV", "false"),
        ],
    )
    .await;
    let v = store_secrets(&bao).await;
    let repo = gitea.create_repo("org", "app");
    let pipeline = format!(
        "on: push\nvault:\n  secrets:\n    TF_VAR_app_secret: kvv1/app/env#value\n  files:\n    ssh/id_ed25519: kvv1/gitea/tofu_module_reader#ssh_private_key\nsteps:\n  - name: tofu\n    uses: tofu\n    with: {{ path: iac, image: {} }}\n",
        crate::actions::TOOLS
    );
    let main_tf = "variable \"app_secret\" {\n  type = string\n}\nresource \"terraform_data\" \"r\" {\n  input = \"${sha256(var.app_secret)} ${sha256(file(\"/run/secrets/ssh/id_ed25519\"))}\"\n}\noutput \"both\" {\n  value = terraform_data.r.input\n}\n";
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/deploy.yml", &pipeline)
        .write("iac/main.tf", main_tf)
        .push();
    assert_eq!(
        server
            .deliver(repo.push_event("main", &first, &second))
            .await,
        202
    );
    let statuses = final_statuses(&repo, &second, "pipewright/deploy").await;
    let id = run_id_for(&server, "org/app", "deploy").await;
    let log = server.log(id, 0).await;
    assert_eq!(
        states(&statuses),
        ["pending", "success"],
        "{statuses:?}\n{log}"
    );
    let both = format!("{} {}", sha256_hex(&v.env_value), sha256_hex(&v.ssh_key));
    assert!(log.contains(&format!("both = \"{both}\"")), "{log}");
    for marker in [v.file_marker.as_str(), v.env_marker.as_str()] {
        assert!(!log.contains(marker), "`{marker}` leaked into:\n{log}");
    }
    server.stop().await;
}

//! Trust boundaries around files and images, played as the attacker: a fork's pull request
//! whose checkout links out of its workspace (to `/`, to Pipewright's data directory, to
//! the signing key) through `uses: image`, `tofu` and `postgres` inputs and volumes; pull
//! request images that try to replace a local tag; a re-tagged image under a trusted run;
//! pipelines asking more than the operator's `[docker]` ceilings.

use std::{path::Path, process::Command, time::Duration};

use base64::Engine as _;
use pipewright_tests::{docker_cli, fake_gitea::PullAction};
use serde_json::Value;

use crate::serve::{IMAGE, Server, client, eventually, step};

/// What must never show: the signing key files' bytes (each line of a PEM, the whole file
/// and its base64) and the marker files planted outside the workspace.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(data_dir: &Path, markers: &[&str]) -> Secrets {
        let mut needles: Vec<String> = markers.iter().map(|m| m.to_string()).collect();
        let keys = std::fs::read_dir(data_dir.join("keys")).expect("the server's key directory");
        for entry in keys {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            needles.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
            let text = String::from_utf8_lossy(&bytes).into_owned();
            needles.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
            if !text.contains('\n') {
                needles.push(text);
            }
        }
        assert!(needles.len() > markers.len(), "no signing key found");
        Secrets(needles)
    }

    fn assert_absent(&self, text: &str) {
        for needle in &self.0 {
            assert!(
                !text.contains(needle.as_str()),
                "leaked {needle:?} into:\n{text}"
            );
        }
    }
}

/// Waits for the run of `pipeline` to finish; returns it with its steps.
async fn finished_run(server: &Server, pipeline: &str) -> Value {
    eventually(
        Duration::from_secs(120),
        &format!("the run of {pipeline} to finish"),
        || async {
            let runs = server.runs().await;
            let run = runs.iter().find(|r| r["pipeline"] == pipeline)?;
            let id = run["id"].as_i64()?;
            let run = server.api(&format!("/api/v1/runs/{id}")).await;
            (!matches!(run["state"].as_str(), Some("queued" | "running"))).then_some(run)
        },
    )
    .await
}

/// Every description, status and log the server has, as one text.
async fn everything(server: &Server, statuses: &[pipewright_tests::fake_gitea::Status]) -> String {
    let mut text = String::new();
    for run in server.runs().await {
        let id = run["id"].as_i64().unwrap();
        let run = server.api(&format!("/api/v1/runs/{id}")).await;
        text.push_str(&run.to_string());
        for step in run["steps"].as_array().unwrap() {
            text.push_str(&server.log(id, step["index"].as_i64().unwrap()).await);
        }
    }
    for status in statuses {
        text.push_str(&format!("{} {}\n", status.state, status.description));
    }
    text
}

fn step_of<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

async fn assert_serving(server: &Server) {
    let health = client()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_request_reads_nothing_outside_its_workspace_through_links() {
    let outside = tempfile::tempdir().unwrap();
    let allowed = outside.path().join("allowed");
    let secret_dir = outside.path().join("secret");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&secret_dir).unwrap();
    let host_marker = "host-file-content-7d1c4e";
    std::fs::write(secret_dir.join("secret.txt"), host_marker).unwrap();
    std::os::unix::fs::symlink(&secret_dir, allowed.join("out")).unwrap();
    let allowed_str = allowed.display().to_string();
    let gitea = pipewright_tests::fake_gitea::FakeGitea::start().await;
    let policy = format!("[[repos]]\nname = \"org/app\"\nhost_volumes = [\"{allowed_str}\"]\n");
    let server = Server::start_with_config(&gitea, &[], &policy).await;
    let data_dir = server.app.config.server.data_dir.clone();
    let data_marker = "data-dir-content-93ab01";
    std::fs::write(data_dir.join("marker.txt"), data_marker).unwrap();
    let key_file = std::fs::read_dir(data_dir.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = key_file.display().to_string();
    let data = data_dir.display().to_string();
    let secrets = Secrets::of(&data_dir, &[host_marker, data_marker]);

    let repo = gitea.create_repo("org", "app");
    let base = repo
        .commit("main", "init")
        .write("README.md", "app\n")
        .push();
    let fork = gitea.fork_repo(&repo, "mallory");
    let leak = "FROM pipewright-test/busybox:1\nCOPY . /ctx\nRUN cat /ctx/key /ctx/marker.txt /ctx/keys/* || true\n";
    let image = |name: &str, with: &str| {
        format!(
            "  - name: {name}\n    continue_on_error: true\n    uses: image\n    with: {{ tags: [\"evil/{name}:1\"], {with} }}\n"
        )
    };
    let files = format!(
        "on: pull_request\nsteps:\n{}{}{}{}{}{}{}",
        image("context-root", "context: ctx-root"),
        image("context-data", "context: ctx-data"),
        image("dockerfile-key", "dockerfile: Dockerfile.key"),
        image("link-in-context", "context: leak"),
        "  - name: tofu-path\n    continue_on_error: true\n    uses: tofu\n    with: { path: iac-data }\n",
        "  - name: tofu-vars\n    continue_on_error: true\n    uses: tofu\n    with: { path: iac, var_files: [key.tfvars] }\n",
        "  - name: sql\n    continue_on_error: true\n    uses: postgres\n    with: { files: [\"sql/*.sql\"], host: 127.0.0.1, database: app, credentials: secret/db }\n",
    );
    let volume = format!(
        "on: pull_request\nsteps:\n  - name: mount\n    image: {IMAGE}\n    run: cat /x/out/secret.txt\n    volumes: [\"{allowed_str}:/x:ro\"]\n"
    );
    let head = fork
        .commit("main", "innocent")
        .write(".pipewright/files.yml", &files)
        .write(".pipewright/volume.yml", &volume)
        .symlink("ctx-root", "/")
        .symlink("ctx-data", &data)
        .write("Dockerfile", leak)
        .symlink("Dockerfile.key", &key)
        .write("leak/Dockerfile", leak)
        .symlink("leak/key", &key)
        .symlink("iac-data", &data)
        .write("iac/main.tf", "")
        .symlink("iac/key.tfvars", &key)
        .symlink("sql/a.sql", &key)
        .push();
    assert_ne!(head, base);
    let number = repo.open_pull_from(&fork, "main", "main");
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );

    let run = finished_run(&server, "files").await;
    for (name, input) in [
        ("context-root", "`with.context`: `ctx-root`"),
        ("context-data", "`with.context`: `ctx-data`"),
        ("dockerfile-key", "`with.dockerfile`: `Dockerfile.key`"),
        ("tofu-path", "`with.path`: `iac-data`"),
        ("tofu-vars", "`with.var_files`: `iac/key.tfvars`"),
        ("sql", "`with.files`: `sql/a.sql`"),
    ] {
        let step = step_of(&run, name);
        let description = step["description"].as_str().unwrap();
        assert_eq!(step["state"], "failure", "{name}: {step}");
        assert!(
            description.contains(input) && description.contains("outside the workspace"),
            "{name}: {description}"
        );
    }
    let linked = step_of(&run, "link-in-context");
    assert_eq!(linked["state"], "failure");
    assert!(
        linked["description"]
            .as_str()
            .unwrap()
            .contains("symbolic link key in the build context points outside it"),
        "{linked}"
    );
    let volume_run = finished_run(&server, "volume").await;
    assert_eq!(volume_run["state"], "error");
    assert!(
        volume_run["description"]
            .as_str()
            .unwrap()
            .contains("a pull request from a fork gets no host volumes"),
        "{volume_run}"
    );
    for tag in [
        "context-root",
        "context-data",
        "dockerfile-key",
        "link-in-context",
    ] {
        let listed = docker_cli(&["image", "ls", "-q", &format!("evil/{tag}")]);
        assert!(listed.trim().is_empty(), "an image was built for {tag}");
    }

    // The same repository's own push: a volume through a link leading out of the allowed
    // directory, and one that does not exist.
    for (file, host) in [
        ("linked", format!("{allowed_str}/out")),
        ("missing", format!("{allowed_str}/nope")),
    ] {
        let pipeline = format!(
            "on: push\nsteps:\n  - name: mount\n    image: {IMAGE}\n    run: cat /x/secret.txt\n    volumes: [\"{host}:/x:ro\"]\n"
        );
        let before = repo.head("main");
        let after = repo
            .commit("main", file)
            .write(&format!(".pipewright/{file}.yml"), &pipeline)
            .push();
        assert_eq!(
            server
                .deliver(repo.push_event("main", &before, &after))
                .await,
            202
        );
        let run = finished_run(&server, file).await;
        assert_eq!(run["state"], "error", "{run}");
        let description = run["description"].as_str().unwrap();
        let expected = match file {
            "linked" => "which [[repos]] host_volumes does not allow",
            _ => "cannot be resolved on the host",
        };
        assert!(description.contains(expected), "{description}");
    }

    let mut statuses = repo.statuses(&head);
    statuses.extend(repo.statuses(&repo.head("main")));
    secrets.assert_absent(&everything(&server, &statuses).await);
    assert_serving(&server).await;
    server.stop().await;
}

/// The id of a local image, as the Docker CLI sees it; `None` when absent.
fn image_id(reference: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes local tags when the test ends, however it ends.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["image", "rm", tag]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_builds_under_its_run_name_and_replaces_no_local_tag() {
    let tag = format!("pipewright-test/trust-app:{}", std::process::id());
    let _cleanup = Tags(vec![tag.clone()]);
    // A tag that trusted runs use, which the pull request tries to replace.
    docker_cli(&["tag", IMAGE, &tag]);
    let original = image_id(&tag).unwrap();
    let gitea = pipewright_tests::fake_gitea::FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("Org", "App.Web");
    let pipeline = format!(
        "on: pull_request\nsteps:\n  - name: build\n    uses: image\n    with: {{ tags: [\"{tag}\"] }}\n"
    );
    repo.commit("main", "init").write("README.md", "x\n").push();
    repo.create_branch("change", "main");
    let head = repo
        .commit("change", "image")
        .write(".pipewright/image.yml", &pipeline)
        .write(
            "Dockerfile",
            "FROM pipewright-test/busybox:1\nRUN echo replaced > /replaced\n",
        )
        .push();
    let number = repo.open_pull("change", "main");
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    let run = finished_run(&server, "image").await;
    assert_eq!(run["state"], "success", "{run}");
    let id = run["id"].as_i64().unwrap();
    let local = format!("pipewright-pr/org-app-web/run-{id}:0");
    let log = server.log(id, 0).await;
    assert!(
        log.contains(&format!("pull request: built as {local}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Successfully tagged {local}")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("Successfully tagged {tag}")),
        "{log}"
    );
    assert_eq!(
        run["description"],
        format!("built {local} for {tag} (not pushed)")
    );
    let statuses = repo.statuses(&head);
    assert_eq!(statuses.last().unwrap().state, "success");
    assert_eq!(image_id(&tag).as_deref(), Some(original.as_str()));
    assert_eq!(image_id(&local), None, "removed when the run ended");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_run_refuses_an_image_retagged_since_its_first_use() {
    let tag = format!("pipewright-test/trust-pin:{}", std::process::id());
    let _cleanup = Tags(vec![tag.clone()]);
    docker_cli(&["tag", IMAGE, &tag]);
    let first = image_id(&tag).unwrap();
    let gitea = pipewright_tests::fake_gitea::FakeGitea::start().await;
    let server = Server::start(&gitea).await;
    let repo = gitea.create_repo("org", "pin");
    let pipeline =
        format!("on: push\nsteps:\n  - name: use\n    image: {tag}\n    run: echo ran\n");
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "ci")
        .write(".pipewright/pin.yml", &pipeline)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let run = finished_run(&server, "pin").await;
    assert_eq!(run["state"], "success", "{run}");

    // Someone (an untrusted build, a person) points the reference at another image.
    docker_cli(&["tag", "pipewright-test/tools:1", &tag]);
    let now = image_id(&tag).unwrap();
    assert_ne!(now, first);
    let c2 = repo
        .commit("main", "again")
        .write("README.md", "y\n")
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    let second = eventually(Duration::from_secs(120), "the second run", || async {
        let runs = server.runs().await;
        let run = runs.iter().find(|r| r["sha"] == c2.as_str())?;
        let run = server.api(&format!("/api/v1/runs/{}", run["id"])).await;
        (!matches!(run["state"].as_str(), Some("queued" | "running"))).then_some(run)
    })
    .await;
    assert_eq!(second["state"], "error", "{second}");
    let (a, b) = (
        &first["sha256:".len()..][..12],
        &now["sha256:".len()..][..12],
    );
    let refusal = format!("image {tag} changed since it was first used (id {a}, now {b})");
    assert_eq!(
        second["steps"][0]["description"],
        format!("failed to start: {refusal}")
    );
    assert!(
        second["description"]
            .as_str()
            .unwrap()
            .starts_with("step use: failed to start: image"),
        "{second}"
    );
    assert_eq!(server.log(second["id"].as_i64().unwrap(), 0).await, "");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_asking_more_than_the_ceilings_are_refused() {
    let gitea = pipewright_tests::fake_gitea::FakeGitea::start().await;
    let server = Server::start_with(
        &gitea,
        &[
            ("PIPEWRIGHT_DOCKER__MAX_MEMORY", "64m"),
            ("PIPEWRIGHT_DOCKER__MAX_PIDS", "100"),
            ("PIPEWRIGHT_DOCKER__MAX_TIMEOUT", "2h"),
            ("PIPEWRIGHT_DOCKER__MAX_LOG_BYTES", "2k"),
        ],
    )
    .await;
    let repo = gitea.create_repo("org", "limits");
    let with = |extra: &str| {
        format!("on: push\n{extra}steps:\n  - name: ask\n    image: {IMAGE}\n    run: echo ran\n")
    };
    let step_with = |key: &str| {
        format!(
            "on: push\nsteps:\n  - name: ask\n    image: {IMAGE}\n    run: echo ran\n    {key}\n"
        )
    };
    let noisy = format!(
        "on: push\nsteps:\n{}",
        step(
            "noisy",
            "i=0; while [ $i -lt 2000 ]; do echo \"line $i\"; i=$((i+1)); done"
        )
    );
    let c0 = repo.commit("main", "init").write("README.md", "x\n").push();
    let c1 = repo
        .commit("main", "ci")
        .write(".pipewright/memory.yml", &step_with("memory: 128m"))
        .write(".pipewright/pids.yml", &step_with("pids: 200"))
        .write(".pipewright/steptime.yml", &step_with("timeout: 3h"))
        .write(".pipewright/runtime.yml", &with("timeout: 4h\n"))
        .write(".pipewright/noisy.yml", &noisy)
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    for (pipeline, description) in [
        (
            "memory",
            "step ask: memory 128m is above [docker].max_memory (64m)",
        ),
        (
            "pids",
            "step ask: pids 200 is above [docker].max_pids (100)",
        ),
        (
            "steptime",
            "step ask: timeout 3h is above [docker].max_timeout (2h)",
        ),
        (
            "runtime",
            "the pipeline's timeout 4h is above [docker].max_timeout (2h)",
        ),
    ] {
        let run = finished_run(&server, pipeline).await;
        assert_eq!(
            (run["state"].as_str(), run["description"].as_str()),
            (Some("error"), Some(description)),
            "{run}"
        );
        let id = run["id"].as_i64().unwrap();
        assert_eq!(server.log(id, 0).await, "", "{pipeline}: nothing ran");
    }
    let run = finished_run(&server, "noisy").await;
    assert_eq!(run["state"], "success", "{run}");
    let log = server.log(run["id"].as_i64().unwrap(), 0).await;
    let lines: Vec<&str> = log.lines().collect();
    assert!(log.len() < 2048 + 200, "{} bytes kept", log.len());
    assert_eq!(lines[0], "line 0");
    assert!(
        lines.last().unwrap().contains("[docker].max_log_bytes"),
        "{log}"
    );
    assert!(!log.contains("line 1999"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_swap_a_volume_for_a_link_before_a_later_step_mounts_it() {
    let outside = tempfile::tempdir().unwrap();
    let allowed = outside.path().join("allowed");
    let secret_dir = outside.path().join("secret");
    std::fs::create_dir_all(allowed.join("sub")).unwrap();
    std::fs::create_dir_all(&secret_dir).unwrap();
    let host_marker = "host-file-content-4be2a9";
    std::fs::write(secret_dir.join("secret.txt"), host_marker).unwrap();
    let allowed_str = allowed.display().to_string();
    let gitea = pipewright_tests::fake_gitea::FakeGitea::start().await;
    let policy = format!("[[repos]]\nname = \"org/app\"\nhost_volumes = [\"{allowed_str}\"]\n");
    let server = Server::start_with_config(&gitea, &[], &policy).await;
    // A push (repository writers only), so host volumes are mounted: the first step may
    // write to the allowed directory, and puts a link where the second step's volume was.
    let swap = format!(
        "rm -r /a/sub && ln -s {} /a/sub && echo swapped",
        secret_dir.display()
    );
    let pipeline = format!(
        "on: push\nsteps:\n  - name: swap\n    image: {IMAGE}\n    run: {swap:?}\n    volumes: [\"{allowed_str}:/a\"]\n  - name: read\n    image: {IMAGE}\n    run: cat /b/secret.txt\n    volumes: [\"{allowed_str}/sub:/b:ro\"]\n"
    );
    let repo = gitea.create_repo("org", "app");
    let first = repo.commit("main", "init").write("README.md", "x\n").push();
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/swap.yml", &pipeline)
        .push();
    assert_eq!(
        server
            .deliver(repo.push_event("main", &first, &second))
            .await,
        202
    );
    let run = finished_run(&server, "swap").await;
    let id = run["id"].as_i64().unwrap();
    assert!(server.log(id, 0).await.contains("swapped"), "{run:#}");
    assert_eq!(run["state"], "error", "{run:#}");
    assert!(
        run["description"]
            .as_str()
            .unwrap()
            .contains("changed since the run started"),
        "{run:#}"
    );
    assert!(!server.log(id, 1).await.contains(host_marker));
    server.stop().await;
}

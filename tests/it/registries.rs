//! Private step images and kept images against a real registry (Debian's `docker-registry`
//! with htpasswd basic auth on loopback) and the real engine: a pipeline step pulls a
//! private image with `[[registries]]` credentials (its layer statuses in the step's log),
//! a refused password ends the run as `error` naming the registry and the image without
//! the password showing anywhere, and `[docker].pin_images` survive the engine's GC.

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use pipewright_containers::{
    BuildOutcome, BuildSpec, CancellationToken, Executor, LABEL_INSTANCE, LABEL_PIN, PushOutcome,
};
use pipewright_tests::{
    Collect, docker, docker_cli, error_chain, fake_gitea::FakeGitea, registry::Registry, test_image,
};
use serde_json::{Value, json};

use crate::{
    serve::{SECRET, Server, eventually, final_statuses, of_context},
    vault::{OpenBao, ROOT},
};

const USER: &str = "ci-bot";
const PASSWORD: &str = "registry-Pa55word-7f3c";
/// A label only this module's images carry (its value unique per image set), so that
/// `docker image prune -a --filter label=…` can touch nothing but them.
const TEST_LABEL: &str = "io.pipewright.test-registries";

/// Removes images by reference when a test ends, however it ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["image", "rm", "--force", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds the test image again as `reference`, labelled `TEST_LABEL=label` (and
/// `marker`, so that two images of one test differ), pushes it to `registry` with its
/// credentials, and removes the local copy unless `keep_local`.
async fn private_image(
    registry: &Registry,
    reference: &str,
    label: &str,
    marker: &str,
    keep_local: bool,
) {
    let executor = docker().await;
    let context = tempfile::tempdir().unwrap();
    fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {}\n", test_image()),
    )
    .unwrap();
    let spec = BuildSpec {
        context: context.path().to_path_buf(),
        dockerfile: "Dockerfile".into(),
        tags: vec![reference.to_owned()],
        labels: vec![
            (TEST_LABEL.to_owned(), label.to_owned()),
            (format!("{TEST_LABEL}.marker"), marker.to_owned()),
        ],
        ..BuildSpec::default()
    };
    let mut sink = Collect::default();
    let built = executor
        .build_image(&spec, &mut sink, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("build_image: {}", error_chain(&e)));
    assert!(
        matches!(built, BuildOutcome::Built { .. }),
        "{built:?}: {:?}",
        sink.stdout()
    );
    let mut sink = Collect::default();
    let pushed = executor
        .push_image(reference, registry.auth().as_ref(), &mut sink)
        .await
        .unwrap_or_else(|e| panic!("push_image: {}", error_chain(&e)));
    assert!(
        matches!(pushed, PushOutcome::Pushed { .. }),
        "{pushed:?}: {:?}",
        sink.stdout()
    );
    if !keep_local {
        docker_cli(&["image", "rm", reference]);
        assert!(!image_exists(reference), "{reference} is still local");
    }
}

/// A container's state and image, as the docker CLI sees them. Asked again for a moment
/// when the engine does not know the id yet (it lists a container being created before
/// it can inspect it).
fn inspect_container(id: &str) -> (String, String) {
    for _ in 0..100 {
        let output = Command::new("docker")
            .args(["inspect", "--format", "{{.State.Status}} {{.Image}}", id])
            .output()
            .expect("failed to run the docker CLI");
        if output.status.success() {
            let text = String::from_utf8_lossy(&output.stdout);
            let (state, image) = text.trim().split_once(' ').expect("state and image");
            return (state.to_owned(), image.to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the engine does not know container {id}");
}

/// Removes this test's keepers however it ends (they carry its unique tag).
struct Keepers(String);

impl Drop for Keepers {
    fn drop(&mut self) {
        let listed = Command::new("docker")
            .args(["ps", "--all", "--quiet", "--filter"])
            .arg(format!("label={LABEL_PIN}={}", self.0))
            .output();
        if let Ok(listed) = listed {
            for id in String::from_utf8_lossy(&listed.stdout).lines() {
                let _ = Command::new("docker")
                    .args(["rm", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A tag unique to one test run, short enough for descriptions clipped to 140 characters.
fn short_tag(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}

/// A `[[registries]]` entry for `registry` with `password` in a file of `dir`.
fn registries_toml(dir: &tempfile::TempDir, registry: &Registry, password: &str) -> String {
    let file = dir.path().join("registry-password");
    fs::write(&file, format!("{password}\n")).unwrap();
    format!(
        "[[registries]]\nhost = {:?}\nusername = {USER:?}\npassword_file = {:?}\n",
        registry.host(),
        file.display().to_string()
    )
}

/// Pushes a pipeline whose one step runs in `image`; the run's id and its commit.
async fn run_in(
    server: &Server,
    gitea: &FakeGitea,
    name: &str,
    image: &str,
) -> (i64, String, pipewright_tests::fake_gitea::Repo) {
    let repo = gitea.create_repo("lab", name);
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let pipeline = format!(
        "on:\n  push:\n    branches: [main]\nsteps:\n  - name: private\n    image: {image}\n    run: echo hello from the private image\n"
    );
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/ci.yml", &pipeline)
        .push();
    let (code, body) = repo
        .push_event("main", &first, &second)
        .deliver(&server.hook(), SECRET)
        .await;
    assert_eq!(code, 202, "{body}");
    final_statuses(&repo, &second, "pipewright/ci").await;
    let runs = server.runs().await;
    let run = runs
        .iter()
        .find(|r| r["repo"] == format!("lab/{name}"))
        .unwrap_or_else(|| panic!("no run of lab/{name}: {runs:#?}"));
    (run["id"].as_i64().unwrap(), second, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_pulls_a_private_image_with_the_registrys_credentials() {
    let registry = Registry::with_auth(USER, PASSWORD).await;
    let label = short_tag("private");
    let image = format!("{}/lab/private:{label}", registry.host());
    let _cleanup = Images(vec![image.clone()]);
    private_image(&registry, &image, &label, "step", false).await;

    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = registries_toml(&dir, &registry, PASSWORD);
    let server = Server::start_with_config(&gitea, &[], &toml).await;
    let (run_id, _, _) = run_in(&server, &gitea, "private", &image).await;
    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    let log = server.log(run_id, 0).await;
    assert_eq!(run["state"], "success", "{run:#?}\n{log}");
    // The pull is in the step's log: who pulled, the layer statuses, the result; then the
    // step's own output.
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        format!("pulling {image} from {} as \"{USER}\"", registry.host()),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Digest: sha256:")),
        "{log}"
    );
    assert!(
        lines.contains(&format!("Status: Downloaded newer image for {image}").as_str()),
        "{log}"
    );
    assert_eq!(lines.last(), Some(&"hello from the private image"), "{log}");
    assert!(!log.contains(PASSWORD));
    // The registry authorized the pull (htpasswd: only with the configured credentials).
    let pulled = registry.log().lines().any(|line| {
        line.contains("msg=\"authorized request\"")
            && line.contains("/manifests/")
            && !line.contains("http.request.method=PUT")
    });
    assert!(pulled, "{}", registry.log());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_ends_the_run_as_error_and_never_shows() {
    let registry = Registry::with_auth(USER, PASSWORD).await;
    let label = short_tag("refused");
    let image = format!("{}/lab/refused:{label}", registry.host());
    let _cleanup = Images(vec![image.clone()]);
    private_image(&registry, &image, &label, "refused", false).await;

    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-Pa55word-c0ffee";
    let toml = registries_toml(&dir, &registry, wrong);
    let server = Server::start_with_config(&gitea, &[], &toml).await;
    let (run_id, sha, repo) = run_in(&server, &gitea, "refused", &image).await;

    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    let log = server.log(run_id, 0).await;
    assert_eq!(run["state"], "error", "{run:#?}\n{log}");
    assert_eq!(run["steps"][0]["state"], "error", "{run:#?}");
    // The step's description names the image and the registry that refused; the run's
    // (clipped to 140 characters for Gitea) starts the same way.
    let step = run["steps"][0]["description"].as_str().unwrap_or_default();
    let expected = format!(
        "image {image} is not available: the registry {} refused the credentials of user \"{USER}\": ",
        registry.host()
    );
    assert!(step.starts_with(&expected), "{step:?}");
    let described = run["description"].as_str().unwrap_or_default();
    assert!(
        described.starts_with(&format!(
            "step private: image {image} is not available: the registry {}",
            registry.host()
        )),
        "{described:?}"
    );
    let statuses = of_context(&repo.statuses(&sha), "pipewright/ci");
    assert_eq!(statuses.last().map(|s| s.state.as_str()), Some("error"));
    // The password is nowhere: the step's log, the run and its list as JSON, the statuses.
    let runs: Value = server.api("/api/v1/runs?limit=500").await;
    let everything = format!("{log}\n{run}\n{runs}\n{:?}", repo.statuses(&sha));
    for password in [wrong, PASSWORD] {
        assert!(
            !everything.contains(password),
            "{password} shows in:\n{everything}"
        );
    }
    assert!(!image_exists(&image));
    server.stop().await;
}

/// The engine's GC (`docker image prune -a`) removes every image no container uses. The
/// engine is shared with other tests, whose images a global prune would delete, so the
/// prune here is limited to images carrying this test's own label: it would remove the
/// kept image too, were it not referenced by its keeper, and it does remove the control
/// image, labelled the same but not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_images_are_pulled_at_start_and_survive_the_engines_gc() {
    let registry = Registry::with_auth(USER, PASSWORD).await;
    let label = short_tag("kept");
    let kept = format!("{}/lab/kept:{label}", registry.host());
    let control = format!("{}/lab/control:{label}", registry.host());
    let _cleanup = Images(vec![kept.clone(), control.clone()]);
    let _keepers = Keepers(kept.clone());
    private_image(&registry, &kept, &label, "kept", false).await;
    private_image(&registry, &control, &label, "control", true).await;

    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[docker]\npin_images = [{kept:?}]\n{}",
        registries_toml(&dir, &registry, PASSWORD)
    );
    let server = Server::start_with_config(&gitea, &[], &toml).await;
    let instance = server.app.instance.clone();
    // This instance's keepers of the kept image, as the docker CLI sees them.
    let keepers = || {
        let pin = format!("label={LABEL_PIN}={kept}");
        let ours = format!("label={LABEL_INSTANCE}={instance}");
        let listed = docker_cli(&[
            "ps",
            "--all",
            "--quiet",
            "--no-trunc",
            "--filter",
            &pin,
            "--filter",
            &ours,
        ]);
        listed.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    // Pulled at start with the credentials, and kept by one stopped container.
    let keeper = eventually(
        Duration::from_secs(60),
        "a keeper of the kept image",
        || async {
            let found = keepers();
            (found.len() == 1 && image_exists(&kept)).then(|| found[0].clone())
        },
    )
    .await;
    let (state, image) = inspect_container(&keeper);
    assert_eq!(state, "created", "a keeper is never started");
    assert_eq!(
        image,
        docker_cli(&["image", "inspect", "--format", "{{.Id}}", &kept])
    );

    docker_cli(&[
        "image",
        "prune",
        "--all",
        "--force",
        "--filter",
        &format!("label={TEST_LABEL}={label}"),
    ]);
    assert!(image_exists(&kept), "the kept image survives the GC");
    assert!(
        !image_exists(&control),
        "the control image is removed by the GC"
    );

    // The leftover reaper leaves keepers alone (rejecting every container of this instance).
    let reaped = server
        .app
        .executor
        .reap(&|labels| {
            !labels
                .iter()
                .any(|(k, v)| k == LABEL_INSTANCE && *v == instance)
        })
        .await
        .unwrap();
    assert_eq!(reaped, 0);
    assert_eq!(keepers(), std::slice::from_ref(&keeper));

    // A keeper that goes missing is made again at the next start.
    let data = server.stop_keeping_data().await;
    docker_cli(&["rm", &keeper]);
    let server = Server::start_in(data, &gitea, &[], &toml).await;
    let again = eventually(Duration::from_secs(60), "the keeper made again", || async {
        let found = keepers();
        (found.len() == 1).then(|| found[0].clone())
    })
    .await;
    assert_ne!(again, keeper);

    // An image no longer listed is released at start, and then the GC's again.
    let data = server.stop_keeping_data().await;
    let unlisted = registries_toml(&dir, &registry, PASSWORD);
    let server = Server::start_in(data, &gitea, &[], &unlisted).await;
    eventually(Duration::from_secs(60), "the keeper released", || async {
        keepers().is_empty().then_some(())
    })
    .await;
    docker_cli(&[
        "image",
        "prune",
        "--all",
        "--force",
        "--filter",
        &format!("label={TEST_LABEL}={label}"),
    ]);
    assert!(!image_exists(&kept), "a released image is the GC's again");
    server.stop().await;
}

/// Tokens of OpenBao that carry `policy` and still exist.
async fn live_tokens(bao: &OpenBao, policy: &str) -> usize {
    let list = bao
        .call(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            "auth/token/accessors",
            None,
        )
        .await;
    let mut n = 0;
    for accessor in list["data"]["keys"].as_array().cloned().unwrap_or_default() {
        let info = crate::serve::client()
            .post(format!("{}/v1/auth/token/lookup-accessor", bao.addr))
            .header("X-Vault-Token", ROOT)
            .json(&json!({ "accessor": accessor }))
            .send()
            .await
            .unwrap();
        if info.status().is_success() {
            let v: Value = info.json().await.unwrap();
            n += usize::from(
                v["data"]["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == policy)),
            );
        }
    }
    n
}

/// `password_vault`: Pipewright logs in to Vault as itself (a JWT its issuer signs with
/// `sub` `pipewright:server`, accepted by a role bound to that subject alone), reads the
/// password, revokes its token, and pulls with it; a run's role, bound to a repository,
/// does not accept that token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_vault_is_read_with_pipewrights_own_login() {
    let registry = Registry::with_auth(USER, PASSWORD).await;
    let label = short_tag("vault");
    let image = format!("{}/lab/vault:{label}", registry.host());
    let _cleanup = Images(vec![image.clone()]);
    private_image(&registry, &image, &label, "vault", false).await;

    let bao = OpenBao::start().await;
    let gitea = FakeGitea::start().await;
    let toml = format!(
        "[vault]\naddress = {:?}\nserver_role = \"pipewright_server\"\n[[registries]]\nhost = {:?}\nusername = {USER:?}\npassword_vault = \"secret/ci/registry#password\"\n",
        bao.addr,
        registry.host()
    );
    let server = Server::start_with_config(&gitea, &[], &toml).await;
    bao.post("sys/auth/jwt", json!({ "type": "jwt" })).await;
    bao.post(
        "auth/jwt/config",
        json!({ "oidc_discovery_url": server.url, "bound_issuer": server.url }),
    )
    .await;
    bao.post(
        "secret/data/ci/registry",
        json!({ "data": { "password": PASSWORD } }),
    )
    .await;
    let policy = "path \"secret/data/ci/registry\" { capabilities = [\"read\"] }\n";
    bao.call(
        reqwest::Method::PUT,
        "sys/policies/acl/registry",
        Some(json!({ "policy": policy })),
    )
    .await;
    bao.post(
        "auth/jwt/role/pipewright_server",
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_subject": "pipewright:server",
            "bound_audiences": ["vault"],
            "token_policies": ["registry"],
            "token_ttl": "5m",
        }),
    )
    .await;

    let (run_id, _, _) = run_in(&server, &gitea, "vault", &image).await;
    let run = server.api(&format!("/api/v1/runs/{run_id}")).await;
    let log = server.log(run_id, 0).await;
    assert_eq!(run["state"], "success", "{run:#?}\n{log}");
    assert!(
        log.starts_with(&format!(
            "pulling {image} from {} as \"{USER}\"\n",
            registry.host()
        )),
        "{log}"
    );
    assert!(!log.contains(PASSWORD) && !run.to_string().contains(PASSWORD));
    assert_eq!(
        live_tokens(&bao, "registry").await,
        0,
        "Pipewright's own token is revoked once the password is read"
    );

    // A role bound to a repository's claims refuses Pipewright's own token.
    bao.post(
        "auth/jwt/role/repo_role",
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "bound_claims": { "repository": "lab/vault" },
            "token_policies": ["registry"],
        }),
    )
    .await;
    let jwt = server.app.issuer.mint_server().unwrap();
    let refused = crate::serve::client()
        .post(format!("{}/v1/auth/jwt/login", bao.addr))
        .json(&json!({ "role": "repo_role", "jwt": jwt }))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    server.stop().await;
}

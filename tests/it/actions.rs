//! The built-in actions end to end: `tofu` with a real Terraform engine (the local tools
//! image), `image` with a real registry, `postgres` with a real PostgreSQL server and
//! OpenBao's database secrets engine.

use std::time::Duration;

use pipewright_tests::{
    fake_gitea::{FakeGitea, PullAction, Repo},
    registry::Registry,
    services::Postgres,
};
use serde_json::json;

use crate::{
    serve::{Server, eventually, final_statuses, get_json},
    vault::OpenBao,
};

pub(crate) const TOOLS: &str = "pipewright-test/tools:1";

async fn last_status(repo: &Repo, sha: &str, context: &str) -> (String, String) {
    let list = final_statuses(repo, sha, context).await;
    let last = list.last().unwrap();
    (last.state.clone(), last.description.clone())
}

pub(crate) fn main_tf(resources: &[&str]) -> String {
    let mut tf = "terraform {\n  backend \"local\" {\n    path = \"/state/iac.tfstate\"\n  }\n}\n"
        .to_string();
    for r in resources {
        tf.push_str(&format!(
            "resource \"terraform_data\" \"{r}\" {{\n  input = \"{r}\"\n}}\n"
        ));
    }
    tf
}

pub(crate) fn state_resources(dir: &std::path::Path) -> Vec<String> {
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
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
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
    assert_eq!(server.deliver(repo.new_tag_event("drift-1")).await, 202);
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
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
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
        server
            .deliver(repo.pull_request_event(number, PullAction::Synchronized))
            .await,
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
        server.deliver(repo.push_event("main", &c1, &merged)).await,
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
        server
            .deliver(repo.push_event("main", &merged, &removal))
            .await,
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
    assert_eq!(server.deliver(repo.new_tag_event("drift-2")).await, 202);
    let (state_name, description) = last_status(&repo, &removal, "pipewright/drift").await;
    assert_eq!(state_name, "failure");
    assert!(description.contains("drift"), "{description}");

    let runs = get_json(&server.url, "/api/v1/runs").await;
    assert_eq!(runs.as_array().unwrap().len(), 7, "{runs:#}");
    server.stop().await;
}

/// OpenBao's jwt auth trusting `server`, with one role bound to `repo` (and to `git_ref`
/// when given).
pub(crate) async fn jwt_role(
    bao: &OpenBao,
    server: &Server,
    role: &str,
    repo: &str,
    git_ref: Option<&str>,
    policy: &str,
) {
    let mut bound = json!({ "repository": repo });
    if let Some(r) = git_ref {
        bound["ref"] = json!(r);
    }
    bao.post("sys/auth/jwt", json!({ "type": "jwt" })).await;
    bao.post(
        "auth/jwt/config",
        json!({ "oidc_discovery_url": server.url, "bound_issuer": server.url }),
    )
    .await;
    bao.call(
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{role}"),
        Some(json!({ "policy": policy })),
    )
    .await;
    bao.post(
        &format!("auth/jwt/role/{role}"),
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "bound_claims": bound,
            "token_policies": [role],
            "token_ttl": "5m",
        }),
    )
    .await;
}

/// OpenBao's database secrets engine on `pg`'s database `app`, with the role `app-migrate`:
/// a PostgreSQL role per lease (named `v-…`), dropped when the lease is revoked.
async fn database_engine(bao: &OpenBao, pg: &Postgres) {
    database_engine_at(bao, pg, "database").await;
}

/// [`database_engine`] mounted at `mount`.
async fn database_engine_at(bao: &OpenBao, pg: &Postgres, mount: &str) {
    bao.post(
        &format!("sys/mounts/{mount}"),
        json!({ "type": "database" }),
    )
    .await;
    bao.post(
        &format!("{mount}/config/app"),
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/app?sslmode=disable", pg.port()),
            "allowed_roles": ["app-migrate"],
            "username": Postgres::ADMIN_USER,
            "password": Postgres::ADMIN_PASSWORD,
        }),
    )
    .await;
    bao.post(
        &format!("{mount}/roles/app-migrate"),
        json!({
            "db_name": "app",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT ALL ON SCHEMA public TO \"{{name}}\"; GRANT ALL ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"],
            "revocation_statements": ["REASSIGN OWNED BY \"{{name}}\" TO admin; DROP OWNED BY \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "10m",
        }),
    )
    .await;
}

/// The `v-…` roles the database engine made that still exist.
fn dynamic_roles(pg: &Postgres) -> String {
    pg.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runs_sql_with_vault_database_credentials_and_revokes_them() {
    let pg = Postgres::start();
    pg.sql("CREATE DATABASE app");
    let bao = OpenBao::start().await;
    let gitea = FakeGitea::start().await;
    let server = Server::start_with(
        &gitea,
        &[
            ("PIPEWRIGHT_VAULT__ADDRESS", bao.addr.as_str()),
            ("PIPEWRIGHT_DOCKER__NETWORK", "host"),
        ],
    )
    .await;
    database_engine(&bao, &pg).await;
    let policy = "path \"database/creds/app-migrate\" { capabilities = [\"read\"] }\npath \"sys/leases/revoke\" { capabilities = [\"update\"] }\n";
    jwt_role(
        &bao,
        &server,
        "gitea_cicd_db",
        "org/db",
        Some("refs/heads/main"),
        policy,
    )
    .await;

    let repo = gitea.create_repo("org", "db");
    let pipeline = format!(
        "on: push\nvault:\n  role: gitea_cicd_db\nsteps:\n  - name: migrate\n    uses: postgres\n    with:\n      files: [\"sql/*.sql\"]\n      host: 127.0.0.1\n      port: {}\n      database: app\n      database_role: app-migrate\n      sslmode: disable\n      image: {TOOLS}\n",
        pg.port()
    );
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "db\n")
        .push();
    let c1 = repo
        .commit("main", "schema")
        .write(".pipewright/db.yml", &pipeline)
        .write(
            "sql/001_tables.sql",
            "CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, name text);\n",
        )
        .write(
            "sql/002_seed.sql",
            "INSERT INTO users VALUES (1, 'ada'), (2, 'grace')\n  ON CONFLICT DO NOTHING;\n",
        )
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    assert_eq!(
        last_status(&repo, &c1, "pipewright/db").await,
        ("success".into(), "ran 2 SQL files".into())
    );
    assert_eq!(pg.sql_in("app", "SELECT count(*) FROM users").trim(), "2");
    // The run's credentials are gone: the lease was revoked, the role dropped.
    assert_eq!(dynamic_roles(&pg), "0");

    // A failing file stops the run, names the file and line, and rolls its transaction back.
    let c2 = repo
        .commit("main", "bad")
        .write(
            "sql/003_more.sql",
            "INSERT INTO users VALUES (3, 'barbara');\nINSERT INTO nope VALUES (1);\n",
        )
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    let (state, description) = last_status(&repo, &c2, "pipewright/db").await;
    assert_eq!(state, "failure");
    assert!(
        description.contains("sql/003_more.sql:2: ERROR") && description.contains("nope"),
        "{description}"
    );
    assert_eq!(
        pg.sql_in("app", "SELECT count(*) FROM users").trim(),
        "2",
        "the failing file's transaction was rolled back"
    );
    assert_eq!(dynamic_roles(&pg), "0");
    server.stop().await;
}

/// Leases of the database engine's role that still exist.
async fn live_leases(bao: &OpenBao) -> usize {
    let resp = crate::serve::client()
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            format!(
                "{}/v1/sys/leases/lookup/database/creds/app-migrate/",
                bao.addr
            ),
        )
        .header("X-Vault-Token", crate::vault::ROOT)
        .send()
        .await
        .unwrap();
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return 0;
    }
    assert!(
        resp.status().is_success(),
        "listing leases: {}",
        resp.status()
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    v["data"]["keys"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_revokes_the_database_credentials_it_obtained() {
    let pg = Postgres::start();
    pg.sql("CREATE DATABASE app");
    let bao = OpenBao::start().await;
    database_engine(&bao, &pg).await;
    // A developer's token: it may read the role's credentials and make tokens of its own,
    // but not revoke leases (`sys/leases/revoke`) one by one.
    let policy = "path \"database/creds/app-migrate\" { capabilities = [\"read\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }\n";
    bao.call(
        reqwest::Method::PUT,
        "sys/policies/acl/developer",
        Some(json!({ "policy": policy })),
    )
    .await;
    let token = bao
        .post(
            "auth/token/create",
            json!({ "policies": ["developer"], "ttl": "1h" }),
        )
        .await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "on: push\nsteps:\n  - name: migrate\n    uses: postgres\n    with:\n      files: [\"sql/*.sql\"]\n      host: 127.0.0.1\n      port: {}\n      database: app\n      database_role: app-migrate\n      sslmode: disable\n      image: {TOOLS}\n",
        pg.port()
    );
    std::fs::create_dir_all(dir.path().join(".pipewright")).unwrap();
    std::fs::create_dir_all(dir.path().join("sql")).unwrap();
    std::fs::write(dir.path().join(".pipewright/db.yml"), pipeline).unwrap();
    std::fs::write(
        dir.path().join("sql/001_tables.sql"),
        "CREATE TABLE IF NOT EXISTS notes (id int PRIMARY KEY);\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::exec_cli::pipewright_bin())
        .arg("exec")
        .arg(dir.path())
        .args(["--vault-addr", &bao.addr, "--network", "host"])
        .env("VAULT_TOKEN", &token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("migrate | CREATE TABLE"), "{stdout}");
    // The run's token is gone, and the credentials with it; the caller's token is not.
    // Vault revokes a token's leases in the background: on a busy machine it takes a while.
    eventually(Duration::from_secs(120), "the lease revoked", || async {
        (live_leases(&bao).await == 0 && dynamic_roles(&pg) == "0").then_some(())
    })
    .await;
    let caller = crate::serve::client()
        .get(format!("{}/v1/auth/token/lookup-self", bao.addr))
        .header("X-Vault-Token", &token)
        .send()
        .await
        .unwrap();
    assert!(caller.status().is_success(), "{}", caller.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_and_pushes_from_main_and_only_builds_for_pull_requests() {
    let registry = Registry::with_auth("ci-bot", "registry-pw-42").await;
    let host = registry.host();
    let bao = OpenBao::start().await;
    let gitea = FakeGitea::start().await;
    let server =
        Server::start_with(&gitea, &[("PIPEWRIGHT_VAULT__ADDRESS", bao.addr.as_str())]).await;
    bao.post(
        "secret/data/app/registry",
        json!({ "data": { "password": "registry-pw-42" } }),
    )
    .await;
    // Pull requests of this repository may read the password too (they build, not push).
    jwt_role(
        &bao,
        &server,
        "gitea_cicd_img",
        "org/img",
        None,
        "path \"secret/data/app/*\" { capabilities = [\"read\"] }\n",
    )
    .await;

    let repo = gitea.create_repo("org", "img");
    let pipeline = format!(
        "on:\n  push:\n    branches: [main]\n  pull_request: {{}}\nvault:\n  role: gitea_cicd_img\n  secrets:\n    REGISTRY_PASSWORD: secret/app/registry#password\nsteps:\n  - name: build\n    uses: image\n    with:\n      tags: [\"{host}/org/img:${{{{ short_sha }}}}\", \"{host}/org/img:latest\"]\n      build_args: {{ GREETING: hello }}\n      registry: \"{host}\"\n      username: ci-bot\n      password_secret: REGISTRY_PASSWORD\n"
    );
    let dockerfile = "FROM pipewright-test/busybox:1\nARG GREETING\nCOPY app.txt /app.txt\nRUN echo \"$GREETING\" > /greeting\n";
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "img\n")
        .push();
    let c1 = repo
        .commit("main", "image")
        .write(".pipewright/image.yml", &pipeline)
        .write("Dockerfile", dockerfile)
        .write("app.txt", "the app\n")
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    let short = &c1[..8];
    let (state, description) = last_status(&repo, &c1, "pipewright/image").await;
    assert_eq!(state, "success", "{description}");
    let digest = description.rsplit('@').next().unwrap().to_string();
    assert!(
        description.starts_with(&format!("pushed {host}/org/img:{short}@sha256:")),
        "{description}"
    );
    assert_eq!(
        registry.manifest_digest("org/img", short).await.as_deref(),
        Some(digest.as_str())
    );
    let mut tags = registry.tags("org/img").await;
    tags.sort();
    let mut expected = vec!["latest".to_string(), short.to_string()];
    expected.sort();
    assert_eq!(tags, expected);
    // Pulled back by digest, it is the image that was built.
    let by_digest = format!("{host}/org/img@{digest}");
    // A throw-away client configuration, so logging in leaves nothing in ~/.docker.
    let client_config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .arg("--config")
            .arg(client_config.path())
            .args(args)
            .output()
            .unwrap()
    };
    let mut login = std::process::Command::new("docker")
        .arg("--config")
        .arg(client_config.path())
        .args(["login", "--username", "ci-bot", "--password-stdin", &host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        login
            .stdin
            .take()
            .unwrap()
            .write_all(b"registry-pw-42")
            .unwrap();
    }
    assert!(
        login.wait().unwrap().success(),
        "docker login to the test registry"
    );
    for tag in [
        format!("{host}/org/img:{short}"),
        format!("{host}/org/img:latest"),
    ] {
        docker(&["image", "rm", &tag]);
    }
    let pulled = docker(&["pull", &by_digest]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let ran = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &by_digest,
        "cat",
        "/app.txt",
        "/greeting",
    ]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "the app\nhello\n");
    docker(&["image", "rm", &by_digest]);

    // A pull request builds without pushing.
    repo.create_branch("change", "main");
    let p1 = repo
        .commit("change", "change")
        .write("app.txt", "changed\n")
        .push();
    let number = repo.open_pull("change", "main");
    assert_eq!(
        server
            .deliver(repo.pull_request_event(number, PullAction::Opened))
            .await,
        202
    );
    let (state, description) = last_status(&repo, &p1, "pipewright/image").await;
    assert_eq!(state, "success", "{description}");
    assert!(
        description.starts_with("built pipewright-pr/org-img/run-")
            && description.ends_with(&format!(" for {host}/org/img:{} (not pushed)", &p1[..8])),
        "{description}"
    );
    let mut after = registry.tags("org/img").await;
    after.sort();
    assert_eq!(after, tags, "nothing pushed from a pull request");
    docker(&["image", "rm", &format!("{host}/org/img:latest")]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_uses_a_database_engine_at_another_mount_and_names_missing_mounts() {
    let pg = Postgres::start();
    pg.sql("CREATE DATABASE app");
    let bao = OpenBao::start().await;
    let gitea = FakeGitea::start().await;
    let server = Server::start_with(
        &gitea,
        &[
            ("PIPEWRIGHT_VAULT__ADDRESS", bao.addr.as_str()),
            ("PIPEWRIGHT_DOCKER__NETWORK", "host"),
        ],
    )
    .await;
    database_engine_at(&bao, &pg, "postgres/lab").await;
    // The policy covers the paths of the missing mounts too: Vault then answers "no
    // handler" (404) for some and 403 for others, and neither may read as "denied".
    let policy = "path \"postgres/lab/creds/app-migrate\" { capabilities = [\"read\"] }\npath \"database/creds/*\" { capabilities = [\"read\"] }\npath \"nokv/*\" { capabilities = [\"read\"] }\npath \"sys/leases/revoke\" { capabilities = [\"update\"] }\n";
    jwt_role(
        &bao,
        &server,
        "gitea_cicd_db",
        "org/db",
        Some("refs/heads/main"),
        policy,
    )
    .await;
    let repo = gitea.create_repo("org", "db");
    let migrate = |mount: &str| {
        format!(
            "on: push\nvault:\n  role: gitea_cicd_db\nsteps:\n  - name: migrate\n    uses: postgres\n    with:\n      files: [\"sql/*.sql\"]\n      host: 127.0.0.1\n      port: {}\n      database: app\n      database_role: app-migrate\n{mount}      sslmode: disable\n      image: {TOOLS}\n",
            pg.port()
        )
    };
    let c0 = repo
        .commit("main", "init")
        .write("README.md", "db\n")
        .push();
    let c1 = repo
        .commit("main", "schema")
        .write(
            ".pipewright/db.yml",
            &migrate("      database_mount: postgres/lab\n"),
        )
        .write(
            "sql/001_tables.sql",
            "CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, name text);\n",
        )
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c0, &c1)).await, 202);
    assert_eq!(
        last_status(&repo, &c1, "pipewright/db").await,
        ("success".into(), "ran 1 SQL files".into())
    );
    assert_eq!(
        pg.sql_in(
            "app",
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'"
        )
        .trim(),
        "1"
    );
    assert_eq!(dynamic_roles(&pg), "0", "the lease was revoked");

    // The default mount `database` does not exist here.
    let c2 = repo
        .commit("main", "default mount")
        .write(".pipewright/db.yml", &migrate(""))
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c1, &c2)).await, 202);
    let (state, description) = last_status(&repo, &c2, "pipewright/db").await;
    assert_eq!(state, "error", "{description}");
    assert!(
        description.contains("Vault has no mount `database` (reading `database/creds/app-migrate`"),
        "{description}"
    );
    assert!(!description.contains("denies"), "{description}");

    // Neither does `elsewhere`, which no policy names (Vault answers 403).
    let c3 = repo
        .commit("main", "other mount")
        .write(
            ".pipewright/db.yml",
            &migrate("      database_mount: elsewhere\n"),
        )
        .push();
    assert_eq!(server.deliver(repo.push_event("main", &c2, &c3)).await, 202);
    let (state, description) = last_status(&repo, &c3, "pipewright/db").await;
    assert_eq!(state, "error", "{description}");
    assert!(
        description.contains("Vault has no mount `elsewhere`"),
        "{description}"
    );

    // A secrets path under no mount, covered by the policy or not.
    for (n, path, mount) in [(4, "nokv/app", "nokv"), (5, "nowhere/app", "nowhere")] {
        let pipeline = format!(
            "on: push\nvault:\n  role: gitea_cicd_db\n  secrets:\n    X: {path}#key\nsteps:\n  - name: use\n    image: {TOOLS}\n    run: echo should never run\n"
        );
        let before = repo.git(&["rev-parse", "main"]);
        let sha = repo
            .commit("main", &format!("secrets {n}"))
            .write(".pipewright/db.yml", &pipeline)
            .push();
        assert_eq!(
            server
                .deliver(repo.push_event("main", before.trim(), &sha))
                .await,
            202
        );
        let (state, description) = last_status(&repo, &sha, "pipewright/db").await;
        assert_eq!(state, "error", "{description}");
        assert!(
            description.contains(&format!("Vault has no mount `{mount}` (reading `{path}`")),
            "{description}"
        );
    }
    server.stop().await;
}

//! The test infrastructure of the `tofu` and `postgres` actions, proved for real: the tools
//! image runs Terraform's `init`/`plan`/`show -json`/`apply` with the CLI's flags and exit
//! codes, its `psql` reaches a [`Postgres`] service over loopback with a password, and the
//! service cleans up after itself.

use std::{
    net::TcpStream,
    path::Path,
    process::{Command, Output},
};

use pipewright_tests::services::{Postgres, tools_image};
use serde_json::Value;
use tempfile::TempDir;

/// Runs `args` in the tools image with `dir` as the working directory, as Pipewright runs a
/// step (`/workspace`).
fn in_image(dir: &Path, network: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .args(["run", "--rm", "--network", network, "-v"])
        .arg(format!("{}:/workspace", dir.display()))
        .args(["-w", "/workspace", tools_image()])
        .args(args)
        .output()
        .expect("failed to run the docker CLI; run scripts/test-env.sh")
}

/// `tofu ARGS` with no network at all: nothing it does may need one.
fn tofu(dir: &Path, args: &[&str]) -> Output {
    let mut command = vec!["tofu"];
    command.extend_from_slice(args);
    in_image(dir, "none", &command)
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `tofu ARGS`, which must exit with `code`.
fn tofu_exits(dir: &Path, args: &[&str], code: i32) -> Output {
    let output = tofu(dir, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "tofu {args:?}: {}",
        describe(&output)
    );
    output
}

/// `tofu show -json PLAN`, parsed.
fn show_json(dir: &Path, plan: &str) -> Value {
    let output = tofu_exits(dir, &["show", "-json", plan], 0);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("show -json is not JSON ({err}): {}", describe(&output)))
}

/// `(address, actions)` of every resource change of a plan.
fn changes(plan: &Value) -> Vec<(String, Vec<String>)> {
    plan["resource_changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no resource_changes in {plan}"))
        .iter()
        .map(|change| {
            let actions = change["change"]["actions"]
                .as_array()
                .unwrap_or_else(|| panic!("no actions in {change}"))
                .iter()
                .map(|action| action.as_str().unwrap_or_default().to_owned())
                .collect();
            (
                change["address"].as_str().unwrap_or_default().to_owned(),
                actions,
            )
        })
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// `(type.name, input value)` of every managed resource in a state file.
fn state_resources(state: &Value) -> Vec<(String, Value)> {
    state["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources in {state}"))
        .iter()
        .map(|resource| {
            (
                format!(
                    "{}.{}",
                    resource["type"].as_str().unwrap_or_default(),
                    resource["name"].as_str().unwrap_or_default()
                ),
                resource["instances"][0]["attributes"]["input"]["value"].clone(),
            )
        })
        .collect()
}

fn workspace(main_tf: &str) -> TempDir {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    std::fs::write(dir.path().join("main.tf"), main_tf).expect("failed to write main.tf");
    dir
}

#[test]
fn tofu_plans_shows_applies_and_destroys_terraform_data() {
    let dir = workspace("resource \"terraform_data\" \"edge\" { input = \"x\" }\n");
    let dir = dir.path();

    tofu_exits(dir, &["init", "-input=false"], 0);
    // -detailed-exitcode: 2 means the plan has changes, as the tofu action reads it.
    let plan = tofu_exits(
        dir,
        &[
            "plan",
            "-input=false",
            "-out=plan.tfplan",
            "-detailed-exitcode",
        ],
        2,
    );
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("1 to add, 0 to change, 0 to destroy"),
        "{}",
        describe(&plan)
    );
    assert_eq!(
        changes(&show_json(dir, "plan.tfplan")),
        [("terraform_data.edge".to_owned(), vec!["create".to_owned()])]
    );
    assert!(
        !dir.join("terraform.tfstate").exists(),
        "plan must not touch the state"
    );

    let apply = tofu_exits(dir, &["apply", "-input=false", "plan.tfplan"], 0);
    assert!(
        String::from_utf8_lossy(&apply.stdout).contains("Resources: 1 added"),
        "{}",
        describe(&apply)
    );
    assert_eq!(
        state_resources(&read_json(&dir.join("terraform.tfstate"))),
        [("terraform_data.edge".to_owned(), Value::from("x"))]
    );
    // Applied: nothing left to do, and -detailed-exitcode says so with 0.
    tofu_exits(
        dir,
        &[
            "plan",
            "-input=false",
            "-out=again.tfplan",
            "-detailed-exitcode",
        ],
        0,
    );

    // Removing the resource from the configuration plans its destruction.
    std::fs::write(dir.join("main.tf"), "# the edge is gone\n").expect("failed to write main.tf");
    tofu_exits(dir, &["plan", "-input=false", "-out=destroy.tfplan"], 0);
    assert_eq!(
        changes(&show_json(dir, "destroy.tfplan")),
        [("terraform_data.edge".to_owned(), vec!["delete".to_owned()])]
    );
    tofu_exits(
        dir,
        &["apply", "-input=false", "-auto-approve", "destroy.tfplan"],
        0,
    );
    assert_eq!(
        state_resources(&read_json(&dir.join("terraform.tfstate"))),
        []
    );
}

#[test]
fn tofu_takes_backend_config_and_var_files() {
    let dir = workspace(
        "terraform {\n  backend \"local\" {}\n}\n\
         variable \"name\" { type = string }\n\
         resource \"terraform_data\" \"edge\" { input = var.name }\n",
    );
    let dir = dir.path();
    std::fs::create_dir(dir.join("env")).expect("failed to create env/");
    std::fs::write(dir.join("backend.hcl"), "path = \"state/edge.tfstate\"\n")
        .expect("failed to write backend.hcl");
    std::fs::write(dir.join("env/prod.tfvars"), "name = \"prod-edge\"\n")
        .expect("failed to write prod.tfvars");

    // Both forms the action passes: a file, and KEY=VALUE.
    tofu_exits(
        dir,
        &[
            "init",
            "-input=false",
            "-backend-config=backend.hcl",
            "-backend-config=workspace_dir=workspaces",
        ],
        0,
    );
    tofu_exits(
        dir,
        &[
            "plan",
            "-input=false",
            "-out=plan.tfplan",
            "-var-file=env/prod.tfvars",
            "-detailed-exitcode",
        ],
        2,
    );
    tofu_exits(
        dir,
        &["apply", "-input=false", "-auto-approve", "plan.tfplan"],
        0,
    );
    assert!(
        !dir.join("terraform.tfstate").exists(),
        "the backend config moved the state elsewhere"
    );
    assert_eq!(
        state_resources(&read_json(&dir.join("state/edge.tfstate"))),
        [("terraform_data.edge".to_owned(), Value::from("prod-edge"))]
    );
}

#[test]
fn tofu_reports_its_version_and_fails_like_the_cli() {
    let dir = workspace("resource \"terraform_data\" \"edge\" {\n");
    let dir = dir.path();

    let version = tofu_exits(dir, &["version"], 0);
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("Terraform v1."),
        "{}",
        describe(&version)
    );

    // A configuration that does not parse: exit 1, the diagnostic on stderr, not stdout.
    let init = tofu_exits(dir, &["init", "-input=false"], 1);
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(
        stderr.contains("Error") && stderr.contains("main.tf"),
        "{}",
        describe(&init)
    );
    let unknown_flag = tofu_exits(dir, &["plan", "-no-such-flag"], 1);
    assert!(
        String::from_utf8_lossy(&unknown_flag.stderr).contains("-no-such-flag"),
        "{}",
        describe(&unknown_flag)
    );
    let no_plan = tofu_exits(dir, &["show", "-json", "missing.tfplan"], 1);
    assert!(no_plan.stdout.is_empty(), "{}", describe(&no_plan));
}

#[test]
fn psql_in_the_tools_image_reaches_postgres_on_loopback_with_a_password() {
    let postgres = Postgres::start();
    postgres.sql("CREATE ROLE app LOGIN PASSWORD 'app-pw'; CREATE DATABASE appdb OWNER app;");
    let port = postgres.port().to_string();
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");

    // The host network: the container's 127.0.0.1 is the host's, where the server listens.
    let ready = in_image(
        dir.path(),
        "host",
        &["pg_isready", "-h", "127.0.0.1", "-p", &port],
    );
    assert!(ready.status.success(), "pg_isready: {}", describe(&ready));

    let psql = |password: &str| {
        in_image(
            dir.path(),
            "host",
            &[
                "env",
                &format!("PGPASSWORD={password}"),
                "psql",
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "app",
                "-d",
                "appdb",
                "-c",
                "SELECT 1",
            ],
        )
    };
    let ok = psql("app-pw");
    assert!(ok.status.success(), "psql: {}", describe(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "1");

    // Password authentication is really on.
    let wrong = psql("not-the-password");
    assert!(!wrong.status.success(), "psql: {}", describe(&wrong));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
        "{}",
        describe(&wrong)
    );
}

#[test]
fn postgres_service_runs_sql_as_admin_and_leaves_nothing_behind() {
    let postgres = Postgres::start();
    assert_eq!(
        postgres.url(),
        format!(
            "postgres://{}:{}@127.0.0.1:{}/postgres",
            Postgres::ADMIN_USER,
            Postgres::ADMIN_PASSWORD,
            postgres.port()
        )
    );
    assert_eq!(
        postgres.sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"),
        "t"
    );
    postgres.sql("CREATE DATABASE scratch; CREATE ROLE reader LOGIN PASSWORD 'r';");
    postgres.sql_in(
        "scratch",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2);",
    );
    assert_eq!(
        postgres.sql_in("scratch", "SELECT n, n * 10 FROM t ORDER BY n"),
        "1|10\n2|20"
    );
    let err = postgres
        .try_sql("SELECT * FROM no_such_table")
        .expect_err("a query on a missing table must fail");
    assert!(err.contains("no_such_table"), "{err}");
    assert!(
        postgres.log().contains("no_such_table"),
        "{}",
        postgres.log()
    );

    let dir = postgres.dir().to_owned();
    let port = postgres.port();
    drop(postgres);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens on {port} after drop"
    );
    assert!(!dir.exists(), "{} is left after drop", dir.display());
}

//! `pipewright validate` and `pipewright exec` through the real binary, on the real engine.

use std::{fs, path::Path, process::Command};

use std::{path::PathBuf, sync::OnceLock};

const TEST_IMAGE: &str = "pipewright-test/busybox:1";

/// The `pipewright` binary, built once for this test process (cargo does not build a
/// binary for another package's integration tests).
pub fn pipewright_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "pipewright",
                "--bin",
                "pipewright",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("failed to run cargo build");
        assert!(status.success(), "cargo build -p pipewright failed");
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("pipewright");
        assert!(bin.is_file(), "no pipewright binary at {}", bin.display());
        bin
    })
    .clone()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn pipewright(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(pipewright_bin())
        .args(args)
        .arg(dir)
        .output()
        .expect("failed to start pipewright");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(root) {
        out.push((
            entry.strip_prefix(root).unwrap().display().to_string(),
            fs::read(&entry).unwrap(),
        ));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p))
        } else {
            files.push(p)
        }
    }
    files
}

#[test]
fn exec_runs_steps_in_order_sharing_the_workspace() {
    let repo = tempfile::tempdir().unwrap();
    write(repo.path(), "src/input.txt", "one\ntwo\nthree\n");
    write(
        repo.path(),
        ".pipewright/build.yml",
        &format!(
            r#"
on: push
env: {{ OUT: out }}
steps:
  - name: produce
    image: {TEST_IMAGE}
    run: |
      mkdir -p "$OUT"
      sort src/input.txt > "$OUT/sorted.txt"
      echo "produced by $PIPEWRIGHT_PIPELINE for $PIPEWRIGHT_EVENT"
  - name: consume
    image: {TEST_IMAGE}
    run: |
      echo "read: $(tr '\n' ' ' < out/sorted.txt)"
      echo "to stderr" >&2
  - name: pr-only
    image: {TEST_IMAGE}
    run: echo never
    when: {{ event: pull_request }}
"#
        ),
    );
    let before = snapshot(repo.path());
    let out = pipewright(&["exec"], repo.path());
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("produce | produced by build for push"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("consume | read: one three two "),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("consume | to stderr"), "{}", out.stderr);
    assert!(
        out.stdout.contains("<-- step produce: succeeded in"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("--- step pr-only: skipped"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("never"));
    assert!(out.stdout.contains("=== pipeline build: success"));
    // Steps ran on a copy: the user's checkout is as it was.
    assert_eq!(snapshot(repo.path()), before);
}

#[test]
fn exec_exit_status_is_the_runs_result() {
    let repo = tempfile::tempdir().unwrap();
    write(
        repo.path(),
        ".pipewright/check.yml",
        &format!(
            r#"
on: push
steps:
  - name: flaky
    image: {TEST_IMAGE}
    run: exit 4
    continue_on_error: true
  - name: test
    image: {TEST_IMAGE}
    run: |
      echo testing
      exit 3
  - name: after
    image: {TEST_IMAGE}
    run: echo should not run
"#
        ),
    );
    let out = pipewright(&["exec"], repo.path());
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("<-- step flaky: failed with exit code 4"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("<-- step test: failed with exit code 3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("--- step after: not run"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("=== pipeline check: failure: step test failed with exit code 3"),
        "{}",
        out.stdout
    );
}

#[test]
fn exec_says_what_is_missing_for_vault_and_images() {
    let repo = tempfile::tempdir().unwrap();
    write(
        repo.path(),
        ".pipewright/plan.yml",
        "on: push\nsteps:\n  - { name: tofu, uses: tofu, with: { path: iac, image: \"localhost:1/absent/tofu:0\" } }\n",
    );
    write(repo.path(), "iac/main.tf", "");
    write(
        repo.path(),
        ".pipewright/secret.yml",
        &format!(
            "on: push\nvault:\n  secrets: {{ TOKEN: kv/app#token }}\nsteps:\n  - {{ name: a, image: {TEST_IMAGE}, run: 'true' }}\n"
        ),
    );
    write(
        repo.path(),
        ".pipewright/missing.yml",
        "on: push\nsteps:\n  - { name: a, image: \"localhost:1/pipewright-test/absent:0\", run: 'true' }\n",
    );
    let out = pipewright(&["exec"], repo.path());
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("<-- step tofu: image localhost:1/absent/tofu:0 is not available"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("reads secrets from Vault (TOKEN): give --vault-addr"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("pipewright-test/absent:0"),
        "{}",
        out.stdout
    );
}

#[test]
fn exec_selects_by_event_and_changed_paths() {
    let repo = tempfile::tempdir().unwrap();
    let step = format!("steps:\n  - {{ name: a, image: {TEST_IMAGE}, run: 'echo ran' }}\n");
    write(
        repo.path(),
        ".pipewright/docs.yml",
        &format!("on:\n  push:\n    paths: ['docs/**']\n{step}"),
    );
    write(
        repo.path(),
        ".pipewright/code.yml",
        &format!(
            "on:\n  push:\n    paths: ['src/**']\n  dispatch:\n    inputs:\n      level: {{ type: number, required: true }}\n{step}"
        ),
    );
    let out = pipewright(&["exec", "--changed", "docs/guide.md"], repo.path());
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("=== pipeline docs: success") && !out.stdout.contains("pipeline code"),
        "{}",
        out.stdout
    );
    let out = pipewright(
        &["exec", "--event", "dispatch", "--input", "level=high"],
        repo.path(),
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("pipeline code: input `level`: expected a number, found `high`"),
        "{}",
        out.stderr
    );
    let out = pipewright(
        &["exec", "--event", "dispatch", "--input", "level=3"],
        repo.path(),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("=== pipeline code: success"),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_reports_every_problem_with_its_position() {
    let repo = tempfile::tempdir().unwrap();
    write(
        repo.path(),
        ".pipewright/good.yml",
        &format!("on: push\nsteps:\n  - {{ name: a, image: {TEST_IMAGE}, run: 'true' }}\n"),
    );
    write(
        repo.path(),
        ".pipewright/bad.yaml",
        "on: pus\nsteps:\n  - name: a\n    run: echo ${{ sha }}\n",
    );
    let out = pipewright(&["validate"], repo.path());
    assert_eq!(out.code, 1);
    expect_test::expect![[r#"
        .pipewright/bad.yaml:1:5: unknown event `pus`; did you mean `push`?
        .pipewright/bad.yaml:4:5: a `run` step needs `image`
        .pipewright/bad.yaml:4:15: `${{ }}` is not evaluated in `run`: event values reach the script only as environment variables, e.g. "$PIPEWRIGHT_SHA", "$PIPEWRIGHT_INPUT_<NAME>"
        .pipewright/good.yml: ok (good, 1 steps)
        1 of 2 pipeline files invalid
    "#]]
    .assert_eq(&out.stdout);
    let factory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/factory");
    let out = pipewright(&["validate"], &factory);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

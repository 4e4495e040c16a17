//! Image builds and pushes against the real engine and a real registry (Debian's
//! `docker-registry` on loopback): build with a `.dockerignore` and build args, tag, push
//! with basic auth, pull back by digest and run; failures, refusals and cancellation.

use std::{
    fs,
    io::Write,
    os::unix::fs::symlink,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pipewright_containers::{
    BuildOutcome, BuildSpec, CancellationToken, DockerExecutor, Executor, PushOutcome, RegistryAuth,
};
use pipewright_tests::{
    Collect, docker, docker_cli, error_chain, peak_rss_bytes, registry::Registry, test_image,
    unique_run, wait_for,
};

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

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

async fn build(
    executor: &DockerExecutor,
    spec: &BuildSpec,
    cancel: &CancellationToken,
) -> (BuildOutcome, Collect) {
    let mut sink = Collect::default();
    let outcome = executor
        .build_image(spec, &mut sink, cancel)
        .await
        .unwrap_or_else(|err| panic!("build_image failed: {}", error_chain(&err)));
    (outcome, sink)
}

async fn push(
    executor: &DockerExecutor,
    reference: &str,
    auth: Option<&RegistryAuth>,
) -> (PushOutcome, Collect) {
    let mut sink = Collect::default();
    let outcome = executor
        .push_image(reference, auth, &mut sink)
        .await
        .unwrap_or_else(|err| panic!("push_image failed: {}", error_chain(&err)));
    (outcome, sink)
}

/// Whether the engine has an image by this reference, as the docker CLI sees it.
fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("failed to run the docker CLI")
        .success()
}

/// Runs the docker CLI with its own configuration directory (so that a `login` stays in
/// the test), feeding `stdin`; panics when it fails.
fn docker_with_config(config: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run the docker CLI");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn build_push_and_pull_back_by_digest() {
    let registry = Registry::with_auth("ci-bot", "s3cret-Pw").await;
    let auth = registry.auth().unwrap();
    let host = registry.host();
    let executor = docker().await;
    let run = unique_run("image-build");

    let context = tempfile::tempdir().unwrap();
    let root = context.path();
    write(
        root,
        "docker/app.Dockerfile",
        &format!(
            "FROM {image}\n\
             ARG GREETING=unset\n\
             COPY . /app/\n\
             RUN echo \"greeting=$GREETING\" > /greeting && echo run-step-ran\n",
            image = test_image()
        ),
    );
    write(root, "hello.txt", "hello from the context\n");
    write(root, "secret.txt", "must not reach the image\n");
    write(root, "logs/debug.log", "ignored\n");
    write(root, "logs/keep.log", "kept by an exception\n");
    write(
        root,
        ".dockerignore",
        "# not for the image\nsecret.txt\nlogs\n!logs/keep.log\n",
    );
    symlink("hello.txt", root.join("hello-link")).unwrap();

    let first = format!("{host}/org/app:abc123");
    let second = format!("{host}/org/app:latest");
    let mut cleanup = Images(vec![first.clone(), second.clone()]);
    let spec = BuildSpec {
        context: root.to_path_buf(),
        dockerfile: "docker/app.Dockerfile".into(),
        tags: vec![first.clone(), second.clone()],
        build_args: vec![("GREETING".into(), "from-build-args".into())],
        labels: vec![("io.pipewright.test-run".into(), run.clone())],
        ..BuildSpec::default()
    };
    let (outcome, sink) = build(&executor, &spec, &CancellationToken::new()).await;
    let BuildOutcome::Built { image_id } = outcome else {
        panic!("build failed: {outcome:?}\n{:#?}", sink.lines);
    };
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let out = sink.stdout();
    assert!(out.contains(&"run-step-ran"), "{out:#?}");
    assert!(
        out.iter().any(|line| line.starts_with("Step 4/5 : RUN")),
        "{out:#?}"
    );
    assert!(
        out.contains(&format!("Successfully tagged {second}").as_str()),
        "{out:#?}"
    );
    assert!(sink.stderr().is_empty(), "{:#?}", sink.stderr());
    for tag in [&first, &second] {
        assert_eq!(
            docker_cli(&["image", "inspect", "--format", "{{.Id}}", tag]),
            image_id
        );
    }
    assert_eq!(
        docker_cli(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.pipewright.test-run\"}}",
            &first
        ]),
        run
    );

    let (outcome, push_log) = push(&executor, &first, Some(&auth)).await;
    let PushOutcome::Pushed { digest } = outcome else {
        panic!(
            "push failed: {outcome:?}\n{:#?}\nregistry log:\n{}",
            push_log.lines,
            registry.log()
        );
    };
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let closing = format!("abc123: digest: {digest} size: ");
    assert!(
        push_log
            .stdout()
            .iter()
            .any(|line| line.starts_with(&closing)),
        "{:#?}",
        push_log.lines
    );
    assert!(!format!("{:?}", push_log.lines).contains("s3cret-Pw"));
    let (outcome, _) = push(&executor, &second, Some(&auth)).await;
    assert_eq!(
        outcome,
        PushOutcome::Pushed {
            digest: digest.clone()
        },
        "the same image under another tag has the same manifest"
    );
    assert_eq!(registry.tags("org/app").await, ["abc123", "latest"]);
    assert_eq!(
        registry
            .manifest_digest("org/app", "abc123")
            .await
            .as_deref(),
        Some(digest.as_str())
    );

    for tag in [&first, &second] {
        assert!(executor.remove_image(tag).await.unwrap(), "{tag}");
        assert!(!image_exists(tag), "{tag} still there");
    }
    assert!(!executor.remove_image(&first).await.unwrap());

    let by_digest = format!("{host}/org/app@{digest}");
    cleanup.0.push(by_digest.clone());
    let config = tempfile::tempdir().unwrap();
    docker_with_config(
        config.path(),
        &["login", "--username", "ci-bot", "--password-stdin", &host],
        "s3cret-Pw",
    );
    docker_with_config(config.path(), &["pull", "--quiet", &by_digest], "");
    let seen = docker_cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        &by_digest,
        "/bin/sh",
        "-c",
        "cat /app/hello.txt /greeting; readlink /app/hello-link; ls -A /app /app/logs",
    ]);
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [
            "hello from the context",
            "greeting=from-build-args",
            "hello.txt",
            "/app:",
            ".dockerignore",
            "docker",
            "hello-link",
            "hello.txt",
            "logs",
            "",
            "/app/logs:",
            "keep.log",
        ]
    );
}

#[tokio::test]
async fn failing_run_step_is_a_failed_build_naming_the_command() {
    let executor = docker().await;
    let context = tempfile::tempdir().unwrap();
    write(
        context.path(),
        "Dockerfile",
        &format!("FROM {}\nRUN echo about-to-fail && exit 3\n", test_image()),
    );
    let tag = format!("pipewright-test/failing:{}", std::process::id());
    let _cleanup = Images(vec![tag.clone()]);
    let spec = BuildSpec {
        context: context.path().to_path_buf(),
        dockerfile: "Dockerfile".into(),
        tags: vec![tag.clone()],
        ..BuildSpec::default()
    };
    let (outcome, sink) = build(&executor, &spec, &CancellationToken::new()).await;
    let BuildOutcome::Failed { reason } = outcome else {
        panic!("expected a failed build, got {outcome:?}");
    };
    assert!(
        reason.contains("echo about-to-fail && exit 3") && reason.contains("non-zero code: 3"),
        "{reason}"
    );
    assert!(
        sink.stdout().contains(&"about-to-fail"),
        "{:#?}",
        sink.lines
    );
    assert!(!image_exists(&tag));
}

#[tokio::test]
async fn dockerfile_syntax_errors_are_failed_builds() {
    let executor = docker().await;
    let context = tempfile::tempdir().unwrap();
    write(
        context.path(),
        "Dockerfile",
        &format!("FROM {}\nNOTANINSTRUCTION x\n", test_image()),
    );
    let spec = BuildSpec {
        context: context.path().to_path_buf(),
        dockerfile: "Dockerfile".into(),
        ..BuildSpec::default()
    };
    let (outcome, _) = build(&executor, &spec, &CancellationToken::new()).await;
    let BuildOutcome::Failed { reason } = outcome else {
        panic!("expected a failed build, got {outcome:?}");
    };
    assert!(
        reason.to_lowercase().contains("notaninstruction"),
        "{reason}"
    );
}

#[tokio::test]
async fn invalid_tags_are_failed_builds() {
    let executor = docker().await;
    let context = tempfile::tempdir().unwrap();
    write(
        context.path(),
        "Dockerfile",
        &format!("FROM {}\n", test_image()),
    );
    let valid = format!("pipewright-test/tags:{}", std::process::id());
    let _cleanup = Images(vec![valid.clone()]);
    for (tags, expected) in [
        (
            vec!["Pipewright-Test/UPPER:1".to_owned()],
            "invalid reference format",
        ),
        (
            vec![format!("pipewright-test/x@sha256:{}", "0".repeat(64))],
            "names a digest",
        ),
        (
            vec![valid.clone(), "bad tag".to_owned()],
            "invalid image reference",
        ),
        (
            vec![valid.clone(), "Pipewright-Test/UPPER:2".to_owned()],
            "failed to tag the image",
        ),
    ] {
        let spec = BuildSpec {
            context: context.path().to_path_buf(),
            dockerfile: "Dockerfile".into(),
            tags: tags.clone(),
            ..BuildSpec::default()
        };
        let (outcome, _) = build(&executor, &spec, &CancellationToken::new()).await;
        assert!(
            matches!(&outcome, BuildOutcome::Failed { reason } if reason.contains(expected)),
            "{tags:?}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn contexts_breaking_the_rules_are_refused() {
    let executor = docker().await;
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("ctx");
    write(
        &root,
        "Dockerfile",
        &format!("FROM {}\nCOPY . /app/\n", test_image()),
    );
    write(outer.path(), "Dockerfile.outside", "FROM scratch\n");
    let tag = format!("pipewright-test/refused:{}", std::process::id());
    let _cleanup = Images(vec![tag.clone()]);
    let spec = |dockerfile: &str| BuildSpec {
        context: root.clone(),
        dockerfile: dockerfile.into(),
        tags: vec![tag.clone()],
        ..BuildSpec::default()
    };

    for dockerfile in [
        "../Dockerfile.outside",
        "/etc/passwd",
        "a/../../Dockerfile.outside",
    ] {
        let (outcome, _) = build(&executor, &spec(dockerfile), &CancellationToken::new()).await;
        let BuildOutcome::Failed { reason } = outcome else {
            panic!("{dockerfile}: expected a refusal, got {outcome:?}");
        };
        assert!(reason.contains("outside the build context"), "{reason}");
    }
    symlink("../Dockerfile.outside", root.join("Linked")).unwrap();
    let (outcome, _) = build(&executor, &spec("Linked"), &CancellationToken::new()).await;
    assert!(
        matches!(&outcome, BuildOutcome::Failed { reason } if reason.contains("symbolic link")),
        "{outcome:?}"
    );
    fs::remove_file(root.join("Linked")).unwrap();

    // Found while the archive is on its way (after the Dockerfile and a big file): the
    // engine must not build from the part it received.
    fs::write(root.join("big.bin"), vec![1u8; 1 << 20]).unwrap();
    symlink("/etc", root.join("zz-escape")).unwrap();
    let (outcome, _) = build(&executor, &spec("Dockerfile"), &CancellationToken::new()).await;
    let BuildOutcome::Failed { reason } = outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert!(
        reason.contains("symbolic link zz-escape") && reason.contains("outside"),
        "{reason}"
    );
    assert!(
        !image_exists(&tag),
        "an image was built from a cut-off context"
    );

    // Ignored, it is not sent, so it is no reason to refuse.
    write(&root, ".dockerignore", "zz-escape\n");
    let (outcome, sink) = build(&executor, &spec("Dockerfile"), &CancellationToken::new()).await;
    assert!(
        matches!(outcome, BuildOutcome::Built { .. }),
        "{outcome:?}\n{:#?}",
        sink.lines
    );
}

#[tokio::test]
async fn push_refusals_are_failed_pushes_with_the_registry_message() {
    let registry = Registry::with_auth("ci-bot", "right-password").await;
    let executor = docker().await;
    let reference = format!("{}/org/denied:1", registry.host());
    let _cleanup = Images(vec![reference.clone()]);
    docker_cli(&["tag", test_image(), &reference]);

    let wrong = RegistryAuth {
        password: "wrong-password".into(),
        ..registry.auth().unwrap()
    };
    let (outcome, sink) = push(&executor, &reference, Some(&wrong)).await;
    let PushOutcome::Failed { reason } = outcome else {
        panic!("expected a refused push, got {outcome:?}");
    };
    assert!(
        reason.contains("unauthorized") || reason.contains("authentication required"),
        "{reason}"
    );
    assert!(!format!("{reason} {:?}", sink.lines).contains("wrong-password"));

    // Without credentials the engine gives up at the registry's challenge.
    let (outcome, _) = push(&executor, &reference, None).await;
    assert!(
        matches!(&outcome, PushOutcome::Failed { reason } if reason.contains("no basic auth credentials")),
        "{outcome:?}"
    );
    assert_eq!(registry.manifest_digest("org/denied", "1").await, None);

    // No local image by that name: the engine refuses before any registry is asked.
    let (outcome, _) = push(
        &executor,
        &format!("{}/org/missing:1", registry.host()),
        registry.auth().as_ref(),
    )
    .await;
    assert!(
        matches!(&outcome, PushOutcome::Failed { reason } if reason.contains("does not exist")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn push_to_a_registry_that_is_down_is_a_failed_push() {
    let registry = Registry::start().await;
    let host = registry.host();
    drop(registry);
    let executor = docker().await;
    let reference = format!("{host}/org/app:down");
    let _cleanup = Images(vec![reference.clone()]);
    docker_cli(&["tag", test_image(), &reference]);
    let (outcome, _) = push(&executor, &reference, None).await;
    assert!(
        matches!(&outcome, PushOutcome::Failed { reason } if reason.contains("connection refused")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_cancelled_build_stops_its_run_step() {
    let executor = docker().await;
    let marker = unique_run("cancel-build");
    let context = tempfile::tempdir().unwrap();
    write(
        context.path(),
        "Dockerfile",
        &format!(
            "FROM {}\nRUN echo started-{marker} && sleep 120\n",
            test_image()
        ),
    );
    let spec = BuildSpec {
        context: context.path().to_path_buf(),
        dockerfile: "Dockerfile".into(),
        ..BuildSpec::default()
    };
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let started = format!("started-{marker}");
    let mut sink = Collect::with(move |_, line| {
        if line == started {
            token.cancel();
        }
        Ok(())
    });
    let begin = Instant::now();
    let outcome = executor
        .build_image(&spec, &mut sink, &cancel)
        .await
        .unwrap();
    assert_eq!(outcome, BuildOutcome::Cancelled, "{:#?}", sink.lines);
    assert!(begin.elapsed() < Duration::from_secs(60));
    // The engine kills the RUN container once it notices the request is gone.
    wait_for(
        "the cancelled build's RUN container to go away",
        Duration::from_secs(30),
        || {
            !docker_cli(&["ps", "--all", "--no-trunc", "--format", "{{.Command}}"])
                .contains(&marker)
        },
    )
    .await;
}

#[tokio::test]
async fn big_contexts_stream_without_being_held_in_memory() {
    const SIZE: u64 = 256 << 20;
    let executor = docker().await;
    let context = tempfile::tempdir().unwrap();
    write(
        context.path(),
        "Dockerfile",
        &format!("FROM {}\nRUN true\n", test_image()),
    );
    // Sparse: reads as zeros without taking disk space here.
    fs::File::create(context.path().join("big.bin"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let spec = BuildSpec {
        context: context.path().to_path_buf(),
        dockerfile: "Dockerfile".into(),
        ..BuildSpec::default()
    };
    let before = peak_rss_bytes();
    let (outcome, sink) = build(&executor, &spec, &CancellationToken::new()).await;
    let BuildOutcome::Built { image_id } = outcome else {
        panic!("build failed: {outcome:?}\n{:#?}", sink.lines);
    };
    let grown = peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "peak memory grew by {} MiB while sending a {} MiB context",
        grown >> 20,
        SIZE >> 20
    );
    executor.remove_image(&image_id).await.unwrap();
}

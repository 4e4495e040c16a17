//! The Docker executor against the real engine: outcomes, output streaming, limits, stop
//! and cleanup.

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use pipewright_containers::{
    CancellationToken, ExecError, Executor, LABEL_MANAGED, LABEL_RUN, MAX_LINE, Mount, Outcome,
    StartGate, StepSpec,
};
use pipewright_tests::{
    Collect, Count, containers_labelled, docker, docker_cli, error_chain, peak_rss_bytes,
    shell_step, test_image, unique_run, wait_for,
};

/// Runs `spec` to its end with a collecting sink, then checks that its container is gone.
async fn run_to_end(run: &str, spec: &StepSpec) -> (Outcome, Collect) {
    let mut sink = Collect::default();
    let outcome = run_step_with(run, spec, &mut sink, &CancellationToken::new()).await;
    (outcome, sink)
}

async fn run_step_with(
    run: &str,
    spec: &StepSpec,
    sink: &mut dyn pipewright_containers::LogSink,
    cancel: &CancellationToken,
) -> Outcome {
    let outcome = docker()
        .await
        .run_step(spec, sink, cancel)
        .await
        .unwrap_or_else(|err| panic!("run_step failed: {}", error_chain(&err)));
    assert_no_containers(run);
    outcome
}

fn assert_no_containers(run: &str) {
    let left = containers_labelled(LABEL_RUN, run);
    assert!(
        left.is_empty(),
        "containers of run {run} left behind: {left:?}"
    );
}

#[tokio::test]
async fn exit_code_zero_is_success() {
    let run = unique_run("success");
    let (outcome, sink) = run_to_end(&run, &shell_step(&run, "echo hello")).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(sink.stdout(), ["hello"]);
}

#[tokio::test]
async fn non_zero_exit_code_is_a_failure_with_that_code() {
    let run = unique_run("failure");
    let (outcome, sink) = run_to_end(&run, &shell_step(&run, "echo oops >&2; exit 3")).await;
    assert_eq!(outcome, Outcome::Failed { exit_code: 3 });
    assert_eq!(sink.stderr(), ["oops"]);
}

#[tokio::test]
async fn stdout_and_stderr_lines_arrive_complete_and_in_order() {
    let run = unique_run("streams");
    let script =
        r#"i=1; while [ $i -le 1000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done"#;
    let (outcome, sink) = run_to_end(&run, &shell_step(&run, script)).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let expected = |prefix: &str| {
        (1..=1000)
            .map(|i| format!("{prefix} {i}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(sink.stdout(), expected("out"));
    assert_eq!(sink.stderr(), expected("err"));
}

#[tokio::test]
async fn a_last_line_without_newline_is_delivered() {
    let run = unique_run("last-line");
    let script = r"printf 'first\r\nsecond\nlast'; printf 'e1\ne2' >&2";
    let (outcome, sink) = run_to_end(&run, &shell_step(&run, script)).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(sink.stdout(), ["first", "second", "last"]);
    assert_eq!(sink.stderr(), ["e1", "e2"]);
}

#[tokio::test]
async fn a_long_line_arrives_in_max_line_pieces() {
    let run = unique_run("long-line");
    let length = 3 * MAX_LINE + 5;
    let script = format!("head -c {length} /dev/zero | tr '\\0' x; echo; echo after");
    let (outcome, sink) = run_to_end(&run, &shell_step(&run, &script)).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let lengths: Vec<usize> = sink.stdout().iter().map(|line| line.len()).collect();
    assert_eq!(lengths, [MAX_LINE, MAX_LINE, MAX_LINE, 5, 5]);
    assert!(
        sink.stdout()[..4]
            .iter()
            .all(|piece| piece.bytes().all(|b| b == b'x'))
    );
    assert_eq!(sink.stdout()[4], "after");
}

/// DESIGN: "A step that prints 100 MB of logs: all of it stored, in order, with memory
/// bounded." This is a memory bound, not a timing assertion.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_megabytes_of_output_pass_with_bounded_memory() {
    let run = unique_run("100mb");
    let script = "head -c 100000000 /dev/zero | tr '\\0' x | fold -w 100";
    let spec = shell_step(&run, script);
    let before = peak_rss_bytes();
    let mut sink = Count::default();
    let outcome = run_step_with(&run, &spec, &mut sink, &CancellationToken::new()).await;
    let growth = peak_rss_bytes().saturating_sub(before);

    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!((sink.lines, sink.bytes), (1_000_000, 100_000_000));
    assert_eq!((sink.shortest, sink.longest), (Some(100), 100));
    assert_eq!(sink.stderr_lines, 0);
    assert!(
        growth < 64 * 1024 * 1024,
        "peak memory grew by {} MiB while streaming 100 MB",
        growth / (1024 * 1024)
    );
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_an_oom_kill() {
    let run = unique_run("oom");
    let spec = StepSpec {
        // tail keeps the whole newline-free input in memory.
        memory_bytes: Some(32 * 1024 * 1024),
        ..shell_step(&run, "head -c 200m /dev/zero | tail")
    };
    let (outcome, _) = run_to_end(&run, &spec).await;
    assert_eq!(outcome, Outcome::OomKilled);
}

#[tokio::test]
async fn a_step_past_its_timeout_is_stopped() {
    let run = unique_run("timeout");
    let spec = StepSpec {
        timeout: Some(Duration::from_secs(1)),
        ..shell_step(&run, "echo before; sleep 30")
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    assert_eq!(
        outcome,
        Outcome::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    assert_eq!(sink.stdout(), ["before"]);
}

#[tokio::test]
async fn a_step_that_ignores_sigterm_is_killed_after_the_grace() {
    let run = unique_run("ignore-term");
    let spec = StepSpec {
        timeout: Some(Duration::from_secs(1)),
        ..shell_step(&run, "trap '' TERM; echo ready; sleep 30; echo survived")
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    assert_eq!(
        outcome,
        Outcome::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    assert_eq!(sink.stdout(), ["ready"]);
}

#[tokio::test]
async fn a_step_that_closes_its_output_is_still_timed_out() {
    let run = unique_run("closed-output");
    let spec = StepSpec {
        timeout: Some(Duration::from_secs(1)),
        ..shell_step(&run, "echo closing; exec >&- 2>&-; sleep 30")
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    assert_eq!(
        outcome,
        Outcome::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    assert_eq!(sink.stdout(), ["closing"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_sends_sigterm_first() {
    let run = unique_run("cancel");
    let cancel = CancellationToken::new();
    let on_line = cancel.clone();
    let mut sink = Collect::with(move |_, line| {
        if line == "started" {
            on_line.cancel();
        }
        Ok(())
    });
    // `wait` (unlike a foreground command) lets the trap run as soon as the signal comes.
    let script = "trap 'echo got TERM; exit 143' TERM; echo started; sleep 30 & wait $!";
    let outcome = run_step_with(&run, &shell_step(&run, script), &mut sink, &cancel).await;
    assert_eq!(outcome, Outcome::Cancelled);
    assert_eq!(sink.stdout(), ["started", "got TERM"]);
}

/// Many steps at once, each stopped as soon as its first line arrives: every line arrives
/// once. (The attach once asked the engine to replay the log file as well, and a line
/// written while the engine replayed it also came through the live stream.)
#[tokio::test(flavor = "multi_thread")]
async fn lines_of_steps_stopped_right_after_they_print_arrive_once() {
    let steps: Vec<_> = (0..16)
        .map(|i| {
            let run = unique_run(&format!("stop-once-{i}"));
            tokio::spawn(async move {
                let cancel = CancellationToken::new();
                let on_line = cancel.clone();
                let mut sink = Collect::with(move |_, _| {
                    on_line.cancel();
                    Ok(())
                });
                let spec = shell_step(&run, "echo before; echo also >&2; sleep 30");
                let outcome = run_step_with(&run, &spec, &mut sink, &cancel).await;
                (outcome, sink.lines)
            })
        })
        .collect();
    for step in steps {
        let (outcome, lines) = step.await.expect("step task panicked");
        assert_eq!(outcome, Outcome::Cancelled);
        let count = |line: &str| lines.iter().filter(|(_, l)| l == line).count();
        assert_eq!((count("before"), count("also")), (1, 1), "{lines:?}");
    }
}

/// `echo a; echo b >&2; echo c`, many times over, in several steps at once: every line
/// arrives once, and each stream's lines in the order they were written. The order between
/// the two streams is the engine's: it reads a container's stdout and stderr from two pipes
/// (see the engine notes in `containers/src/docker/mod.rs`), so it is not asserted.
#[tokio::test(flavor = "multi_thread")]
async fn interleaved_stdout_and_stderr_arrive_once_in_order() {
    const ROUNDS: usize = 300;
    let script = format!(
        r#"i=1; while [ $i -le {ROUNDS} ]; do echo "a $i"; echo "b $i" >&2; echo "c $i"; i=$((i+1)); done"#
    );
    let steps: Vec<_> = (0..4)
        .map(|i| {
            let run = unique_run(&format!("interleaved-{i}"));
            let spec = shell_step(&run, &script);
            tokio::spawn(async move {
                let mut sink = Collect::default();
                let outcome =
                    run_step_with(&run, &spec, &mut sink, &CancellationToken::new()).await;
                (outcome, sink)
            })
        })
        .collect();
    let expected = |prefixes: &[&str]| {
        (1..=ROUNDS)
            .flat_map(|i| prefixes.iter().map(move |p| format!("{p} {i}")))
            .collect::<Vec<_>>()
    };
    for step in steps {
        let (outcome, sink) = step.await.expect("step task panicked");
        assert_eq!(outcome, Outcome::Succeeded);
        assert_eq!(sink.stdout(), expected(&["a", "c"]));
        assert_eq!(sink.stderr(), expected(&["b"]));
    }
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_unavailable() {
    let run = unique_run("no-image");
    // A registry that refuses connections: the pull fails at once, network or not.
    let image = "localhost:1/pipewright-test/missing";
    let spec = StepSpec {
        image: image.to_owned(),
        ..shell_step(&run, "true")
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    match outcome {
        Outcome::ImageUnavailable {
            image: named,
            reason,
        } => {
            assert_eq!(named, image);
            assert!(
                reason.starts_with("the pull from localhost:1 failed: "),
                "{reason}"
            );
        }
        other => panic!("expected ImageUnavailable, got {other:?}"),
    }
    // The attempt is in the step's log; nothing of a container ran.
    assert_eq!(sink.stdout(), [format!("pulling {image} from localhost:1")]);
    assert!(sink.stderr().is_empty());
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_start_failure() {
    let run = unique_run("no-start");
    for command in ["/nonexistent", "/etc/passwd", "/bin"] {
        let spec = StepSpec {
            command: vec![command.to_owned()],
            ..shell_step(&run, "")
        };
        let (outcome, _) = run_to_end(&run, &spec).await;
        assert!(
            matches!(&outcome, Outcome::StartFailed { reason } if reason.contains(command)),
            "{command}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_mount_is_a_start_failure() {
    let run = unique_run("bad-mount");
    let spec = StepSpec {
        mounts: vec![Mount {
            host: "relative/dir".into(),
            container: "/workspace".into(),
            read_only: false,
        }],
        ..shell_step(&run, "true")
    };
    let (outcome, _) = run_to_end(&run, &spec).await;
    assert!(
        matches!(outcome, Outcome::StartFailed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_workspace_carries_files_between_steps_and_to_the_host() {
    let run = unique_run("workspace");
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let step = |script: &str| StepSpec {
        mounts: vec![Mount {
            host: dir.path().to_owned(),
            container: "/workspace".into(),
            read_only: false,
        }],
        working_dir: "/workspace".into(),
        ..shell_step(&run, script)
    };

    let (outcome, _) = run_to_end(&run, &step("echo built > artifact; pwd")).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let on_host = std::fs::read_to_string(dir.path().join("artifact")).expect("no artifact");
    assert_eq!(on_host, "built\n");

    let (outcome, sink) = run_to_end(&run, &step("cat /workspace/artifact")).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(sink.stdout(), ["built"]);
}

#[tokio::test]
async fn a_read_only_mount_cannot_be_written() {
    let run = unique_run("read-only");
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    std::fs::write(dir.path().join("ca.pem"), "certificate\n").expect("failed to write");
    let spec = StepSpec {
        mounts: vec![Mount {
            host: dir.path().to_owned(),
            container: "/etc/pipewright-ca".into(),
            read_only: true,
        }],
        ..shell_step(
            &run,
            "cat /etc/pipewright-ca/ca.pem; echo changed > /etc/pipewright-ca/ca.pem",
        )
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(sink.stdout(), ["certificate"]);
    let content = std::fs::read_to_string(dir.path().join("ca.pem")).expect("failed to read");
    assert_eq!(content, "certificate\n");
}

#[tokio::test]
async fn environment_reaches_the_step_and_later_entries_win() {
    let run = unique_run("env");
    let spec = StepSpec {
        env: vec![
            ("GREETING".into(), "hello world".into()),
            ("CHOICE".into(), "first".into()),
            ("CHOICE".into(), "second".into()),
        ],
        ..shell_step(
            &run,
            r#"echo "$GREETING, $CHOICE"; env | grep -c '^CHOICE='"#,
        )
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(sink.stdout(), ["hello world, second", "1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_run_concurrently_on_one_executor() {
    let executor = docker().await;
    let runs: Vec<String> = (0..3)
        .map(|i| unique_run(&format!("concurrent-{i}")))
        .collect();
    let steps: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let executor = executor.clone();
            let spec = shell_step(run, &format!("echo step {i}; exit {i}"));
            tokio::spawn(async move {
                let mut sink = Collect::default();
                let outcome = executor
                    .run_step(&spec, &mut sink, &CancellationToken::new())
                    .await
                    .unwrap_or_else(|err| panic!("run_step failed: {}", error_chain(&err)));
                (outcome, sink.stdout().join("\n"))
            })
        })
        .collect();
    for (i, step) in steps.into_iter().enumerate() {
        let (outcome, output) = step.await.expect("step task panicked");
        let expected = match i {
            0 => Outcome::Succeeded,
            code => Outcome::Failed {
                exit_code: code as i64,
            },
        };
        assert_eq!(outcome, expected);
        assert_eq!(output, format!("step {i}"));
    }
    for run in &runs {
        assert_no_containers(run);
    }
}

#[tokio::test]
async fn a_sink_error_stops_the_step() {
    let run = unique_run("sink-error");
    let mut sink = Collect::with(|_, _| Err(io::Error::other("disk full")));
    let result = docker()
        .await
        .run_step(
            &shell_step(&run, "echo one; sleep 30"),
            &mut sink,
            &CancellationToken::new(),
        )
        .await;
    assert!(matches!(result, Err(ExecError::Sink(_))), "{result:?}");
    assert_no_containers(&run);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_step_future_still_removes_its_container() {
    let run = unique_run("dropped");
    let seen = Arc::new(Mutex::new(false));
    let seen_in_sink = Arc::clone(&seen);
    let spec = shell_step(&run, "echo running; sleep 30");
    let step = tokio::spawn(async move {
        let mut sink = Collect::with(move |_, _| {
            *seen_in_sink.lock().expect("poisoned") = true;
            Ok(())
        });
        docker()
            .await
            .run_step(&spec, &mut sink, &CancellationToken::new())
            .await
    });
    wait_for("the step's first line", Duration::from_secs(30), || {
        *seen.lock().expect("poisoned")
    })
    .await;
    assert_eq!(containers_labelled(LABEL_RUN, &run).len(), 1);
    step.abort();
    wait_for(
        "the dropped step's container to go",
        Duration::from_secs(30),
        || containers_labelled(LABEL_RUN, &run).is_empty(),
    )
    .await;
}

#[tokio::test]
async fn reap_removes_rejected_managed_containers_only() {
    let executor = docker().await;
    let dead = unique_run("reap-dead");
    let alive = unique_run("reap-alive");
    let managed = format!("{LABEL_MANAGED}=true");
    let container = |labels: &[String], start: bool| {
        let mut args = vec!["create".to_owned()];
        for label in labels {
            args.extend(["--label".to_owned(), label.clone()]);
        }
        args.extend([test_image().to_owned(), "sleep".to_owned(), "60".to_owned()]);
        let id = docker_cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if start {
            docker_cli(&["start", &id]);
        }
        id
    };
    let leftover_running = container(&[managed.clone(), format!("{LABEL_RUN}={dead}")], true);
    let leftover_created = container(&[managed.clone(), format!("{LABEL_RUN}={dead}")], false);
    let kept = container(&[managed.clone(), format!("{LABEL_RUN}={alive}")], false);
    let foreign = container(&[format!("{LABEL_RUN}={dead}")], false);

    // Other tests' containers are running too: reject nothing but this test's dead run.
    let keep = |labels: &[(String, String)]| {
        !labels
            .iter()
            .any(|(key, value)| key == LABEL_RUN && *value == dead)
    };
    let removed = executor.reap(&keep).await;
    let removed = removed.unwrap_or_else(|err| panic!("reap failed: {}", error_chain(&err)));
    let remaining_dead = containers_labelled(LABEL_RUN, &dead);
    let remaining_alive = containers_labelled(LABEL_RUN, &alive);
    let again = executor.reap(&keep).await.map_err(|err| error_chain(&err));
    docker_cli(&["rm", "--force", &kept, &foreign]);

    assert_eq!(removed, 2);
    assert_eq!(remaining_dead, [foreign], "only the unmanaged one survives");
    assert!(!remaining_dead.contains(&leftover_running));
    assert!(!remaining_dead.contains(&leftover_created));
    assert_eq!(remaining_alive, [kept]);
    assert_eq!(again, Ok(0), "reaping is idempotent");
}

#[tokio::test]
async fn connecting_to_a_missing_engine_is_an_engine_error() {
    let config = pipewright_containers::DockerConfig {
        host: Some("unix:///nonexistent/docker.sock".into()),
        ..Default::default()
    };
    let result = pipewright_containers::DockerExecutor::connect(config).await;
    assert!(matches!(result, Err(ExecError::Engine(_))), "{result:?}");
}

#[tokio::test]
async fn the_step_container_is_confined() {
    let run = unique_run("confined");
    let spec = StepSpec {
        pids_limit: Some(64),
        memory_bytes: Some(64 * 1024 * 1024),
        ..shell_step(
            &run,
            // cgroup v2 paths first, then v1.
            "grep -E '^(NoNewPrivs|CapBnd):' /proc/self/status; \\
             cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; \\
             cat /sys/fs/cgroup/memory.max 2>/dev/null \\
               || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \\
             ls /var/run/docker.sock /run/docker.sock 2>/dev/null; cat /proc/1/comm",
        )
    };
    let (outcome, sink) = run_to_end(&run, &spec).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let out = sink.stdout();
    assert!(out.contains(&"NoNewPrivs:\t1"), "{out:?}");
    // Docker's default set without NET_RAW (13), MKNOD (27) and AUDIT_WRITE (29).
    assert!(out.contains(&"CapBnd:\t00000000800405fb"), "{out:?}");
    assert!(out.contains(&"64"), "{out:?}");
    assert!(out.contains(&"67108864"), "{out:?}");
    assert!(
        !out.iter().any(|line| line.ends_with("docker.sock")),
        "{out:?}"
    );
    assert!(out.contains(&"docker-init"), "{out:?}");
}

/// The state of the run's one container, as the engine says (`created`, `running`, …).
fn container_state(run: &str) -> Option<String> {
    let ids = containers_labelled(LABEL_RUN, run);
    let id = ids.first()?;
    Some(docker_cli(&["inspect", "-f", "{{.State.Status}}", id]))
}

#[tokio::test]
async fn a_gated_step_is_created_at_once_and_started_when_the_gate_opens() {
    let run = unique_run("gate-open");
    let dir = tempfile::tempdir().unwrap();
    let (opener, gate) = StartGate::new();
    let spec = StepSpec {
        mounts: vec![Mount {
            host: dir.path().to_path_buf(),
            container: "/workspace".into(),
            read_only: false,
        }],
        start_gate: Some(gate),
        ..shell_step(&run, "cat /workspace/ready.txt")
    };
    let waiting = run.clone();
    let prepare = async move {
        // The container waits, created, while the "checkout" is not done.
        wait_for(
            "the gated container to be created",
            Duration::from_secs(60),
            || container_state(&waiting).as_deref() == Some("created"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(container_state(&waiting).as_deref(), Some("created"));
        std::fs::write(dir.path().join("ready.txt"), "written after create\n").unwrap();
        opener.open(Ok(()));
        dir
    };
    let (_dir, (outcome, sink)) = tokio::join!(prepare, run_to_end(&run, &spec));
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(sink.stdout(), ["written after create"]);
}

#[tokio::test]
async fn a_gate_that_fails_or_a_cancel_while_gated_never_starts_the_step() {
    let run = unique_run("gate-fail");
    let (opener, gate) = StartGate::new();
    let spec = StepSpec {
        start_gate: Some(gate),
        ..shell_step(&run, "echo must not run")
    };
    let failing = run.clone();
    let fail = async move {
        wait_for("the gated container", Duration::from_secs(60), || {
            container_state(&failing).is_some()
        })
        .await;
        opener.open(Err("checkout: the commit is gone".into()));
    };
    let (_, (outcome, sink)) = tokio::join!(fail, run_to_end(&run, &spec));
    assert_eq!(
        outcome,
        Outcome::StartFailed {
            reason: "checkout: the commit is gone".into()
        }
    );
    assert!(sink.stdout().is_empty());

    let run = unique_run("gate-cancel");
    let (_opener, gate) = StartGate::new();
    let spec = StepSpec {
        start_gate: Some(gate),
        ..shell_step(&run, "echo must not run")
    };
    let cancel = CancellationToken::new();
    let cancelling = (run.clone(), cancel.clone());
    let stop = async move {
        wait_for("the gated container", Duration::from_secs(60), || {
            container_state(&cancelling.0).is_some()
        })
        .await;
        cancelling.1.cancel();
    };
    let mut sink = Collect::default();
    let (_, outcome) = tokio::join!(stop, run_step_with(&run, &spec, &mut sink, &cancel));
    assert_eq!(outcome, Outcome::Cancelled);
    assert!(sink.stdout().is_empty());
}

/// Remembers the id `starting` gives, and the lines.
#[derive(Default)]
struct RecordStart {
    lines: Collect,
    container: Option<String>,
}

impl pipewright_containers::LogSink for RecordStart {
    fn line(&mut self, stream: pipewright_containers::Stream, line: &[u8]) -> io::Result<()> {
        self.lines.line(stream, line)
    }

    fn starting(&mut self, container: &str) -> io::Result<()> {
        self.container = Some(container.to_string());
        Ok(())
    }
}

#[tokio::test]
async fn a_left_container_keeps_its_exit_status_until_the_caller_removes_it() {
    let executor = docker().await;
    let run = unique_run("leave-exited");
    let spec = StepSpec {
        leave_exited: true,
        ..shell_step(&run, "echo done; exit 3")
    };
    let mut sink = RecordStart::default();
    let outcome = executor
        .run_step(&spec, &mut sink, &CancellationToken::new())
        .await
        .unwrap_or_else(|err| panic!("run_step failed: {}", error_chain(&err)));
    assert_eq!(outcome, Outcome::Failed { exit_code: 3 });
    assert_eq!(sink.lines.stdout(), ["done"]);
    let id = sink.container.expect("starting gives the container's id");
    assert_eq!(
        containers_labelled(LABEL_RUN, &run),
        std::slice::from_ref(&id)
    );
    // What a restarted process reads back from it: the exit status and the output.
    assert_eq!(
        docker_cli(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &id
        ]),
        "exited 3"
    );
    assert!(executor.remove_container(&id).await.unwrap());
    assert_no_containers(&run);

    // One that never started is removed all the same.
    let run = unique_run("leave-unstarted");
    let spec = StepSpec {
        leave_exited: true,
        ..shell_step(&run, "echo never")
    };
    let (opener, gate) = StartGate::new();
    opener.open(Err("checkout failed".into()));
    let spec = StepSpec {
        start_gate: Some(gate),
        ..spec
    };
    let mut sink = RecordStart::default();
    let outcome = executor
        .run_step(&spec, &mut sink, &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::StartFailed { .. }),
        "{outcome:?}"
    );
    assert_eq!(sink.container, None);
    assert_no_containers(&run);
}

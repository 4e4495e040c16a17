//! Helpers shared by the integration tests in `it/`: the Docker engine and test image, log
//! sinks that collect or count, unique labels, and looks at the engine from outside.

use std::{
    error::Error,
    io,
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use pipewright_containers::{
    BuildOutcome, BuildSpec, CancellationToken, DockerConfig, DockerExecutor, ExecError, Executor,
    LABEL_RUN, LABEL_STEP, LogSink, Outcome, PushOutcome, RegistryAuth, StepSpec, Stream,
};

/// The image every executor test runs: `FROM scratch` plus busybox, built by
/// `scripts/test-env.sh`.
pub fn test_image() -> &'static str {
    "pipewright-test/busybox:1"
}

/// Grace between SIGTERM and SIGKILL in tests: long enough for a trap to run, short enough
/// to keep a step that ignores SIGTERM from slowing the suite.
pub const TEST_STOP_GRACE: Duration = Duration::from_secs(2);

/// An executor on the local engine. Panics when the engine is unreachable: these tests
/// fail, they never skip.
pub async fn docker() -> DockerExecutor {
    let config = DockerConfig {
        stop_grace: TEST_STOP_GRACE,
        ..DockerConfig::default()
    };
    match DockerExecutor::connect(config).await {
        Ok(executor) => executor,
        Err(err) => panic!(
            "the Docker engine is not reachable; run scripts/test-env.sh first: {}",
            error_chain(&err)
        ),
    }
}

/// No container engine at all: for servers of tests that run no step (HTTP limits, tokens,
/// webhook answers), so that they need no Docker engine. Every call that would need an
/// engine fails as an unreachable engine does; there is nothing to reap.
#[derive(Debug)]
pub struct NoEngine;

fn no_engine() -> ExecError {
    ExecError::Engine("this test runs without a container engine".into())
}

impl Executor for NoEngine {
    async fn run_step(
        &self,
        _: &StepSpec,
        _: &mut dyn LogSink,
        _: &CancellationToken,
    ) -> Result<Outcome, ExecError> {
        Err(no_engine())
    }
    async fn reap(
        &self,
        _: &(dyn Fn(&[(String, String)]) -> bool + Sync),
    ) -> Result<usize, ExecError> {
        Ok(0)
    }
    async fn build_image(
        &self,
        _: &BuildSpec,
        _: &mut dyn LogSink,
        _: &CancellationToken,
    ) -> Result<BuildOutcome, ExecError> {
        Err(no_engine())
    }
    async fn push_image(
        &self,
        _: &str,
        _: Option<&RegistryAuth>,
        _: &mut dyn LogSink,
    ) -> Result<PushOutcome, ExecError> {
        Err(no_engine())
    }
    async fn remove_image(&self, _: &str) -> Result<bool, ExecError> {
        Err(no_engine())
    }
    async fn local_image_id(&self, _: &str) -> Result<Option<String>, ExecError> {
        Err(no_engine())
    }
    async fn ping(&self) -> Result<(), ExecError> {
        Err(no_engine())
    }
    async fn pull_image(
        &self,
        _: &str,
        _: Option<&RegistryAuth>,
        _: &mut dyn LogSink,
    ) -> Result<Result<(), String>, ExecError> {
        Err(no_engine())
    }
    async fn keep_image(&self, _: &str, _: &str) -> Result<Option<bool>, ExecError> {
        Err(no_engine())
    }
    async fn release_images(&self, _: &str, _: &[String]) -> Result<usize, ExecError> {
        Ok(0)
    }
}

/// An error and all its sources on one line.
pub fn error_chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// A value for [`LABEL_RUN`] no other test (or earlier run of this one) uses.
pub fn unique_run(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test-{test}-{}-{nanos}-{n}", std::process::id())
}

/// A step running `script` with the test image's `/bin/sh`, labelled with `run`.
pub fn shell_step(run: &str, script: &str) -> StepSpec {
    StepSpec {
        image: test_image().to_owned(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        labels: vec![
            (LABEL_RUN.to_owned(), run.to_owned()),
            (LABEL_STEP.to_owned(), "test".to_owned()),
        ],
        ..StepSpec::default()
    }
}

/// A reaction to each line; its error becomes the sink's error.
type OnLine = Box<dyn FnMut(Stream, &str) -> io::Result<()> + Send>;

/// Keeps every line (as UTF-8, lossily), and may react to each one.
#[derive(Default)]
pub struct Collect {
    pub lines: Vec<(Stream, String)>,
    on_line: Option<OnLine>,
}

impl std::fmt::Debug for Collect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collect")
            .field("lines", &self.lines.len())
            .finish_non_exhaustive()
    }
}

impl Collect {
    /// A sink that also calls `on_line` with each line; its error is the sink's error.
    pub fn with(on_line: impl FnMut(Stream, &str) -> io::Result<()> + Send + 'static) -> Self {
        Collect {
            lines: Vec::new(),
            on_line: Some(Box::new(on_line)),
        }
    }

    pub fn stdout(&self) -> Vec<&str> {
        self.of(Stream::Stdout)
    }

    pub fn stderr(&self) -> Vec<&str> {
        self.of(Stream::Stderr)
    }

    fn of(&self, stream: Stream) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, line)| line.as_str())
            .collect()
    }
}

impl LogSink for Collect {
    fn line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let line = String::from_utf8_lossy(line).into_owned();
        if let Some(on_line) = &mut self.on_line {
            on_line(stream, &line)?;
        }
        self.lines.push((stream, line));
        Ok(())
    }
}

/// Counts lines and bytes and remembers nothing else, for steps with huge output.
#[derive(Debug, Default)]
pub struct Count {
    pub lines: u64,
    pub bytes: u64,
    pub longest: usize,
    pub shortest: Option<usize>,
    pub stderr_lines: u64,
}

impl LogSink for Count {
    fn line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        if stream == Stream::Stderr {
            self.stderr_lines += 1;
            return Ok(());
        }
        self.lines += 1;
        self.bytes += line.len() as u64;
        self.longest = self.longest.max(line.len());
        self.shortest = Some(self.shortest.map_or(line.len(), |s| s.min(line.len())));
        Ok(())
    }
}

/// Ids of the containers (running or not) carrying `label=value`, as the docker CLI sees
/// them: an observer independent of the code under test.
pub fn containers_labelled(label: &str, value: &str) -> Vec<String> {
    containers_with_labels(&[(label, value)])
}

/// Ids of the containers (running or not) carrying every one of `labels`: for a run's
/// containers, its run id and its instance, since servers of tests running at once all
/// have a run 1.
pub fn containers_with_labels(labels: &[(&str, &str)]) -> Vec<String> {
    let mut ps = Command::new("docker");
    ps.args(["ps", "--all", "--quiet", "--no-trunc"]);
    for (label, value) in labels {
        ps.arg("--filter").arg(format!("label={label}={value}"));
    }
    let output = ps.output().expect("failed to run the docker CLI");
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the docker CLI and returns its trimmed stdout; panics when it fails.
pub fn docker_cli(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("failed to run the docker CLI");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process's peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("failed to read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("no VmHWM line in /proc/self/status")
}

pub mod browser;
pub mod fake_gitea;
pub mod registry;
pub mod services;

/// A queued push run of `repo`'s pipeline at `sha` on `main`, for tests that write runs to
/// the store directly; change what a test needs with `RunSpec { field, ..push_run(…) }`.
pub fn push_run(repo: &str, pipeline: &str, sha: &str) -> pipewright::store::RunSpec {
    use pipewright::store::{RunSpec, RunState};
    use pipewright_pipelines::{EventKind, GitRef};
    RunSpec {
        repo: repo.into(),
        repo_id: 1,
        owner_id: 2,
        default_branch: "main".into(),
        status_repo: repo.into(),
        pipeline: pipeline.into(),
        pipeline_file: format!(".pipewright/{pipeline}.yml"),
        event: EventKind::Push,
        git_ref: GitRef::Branch("main".into()),
        sha: sha.into(),
        pr: None,
        actor: "alice".into(),
        from_fork: false,
        attempt: 1,
        inputs: Vec::new(),
        input_types: Vec::new(),
        rerun_of: None,
        runs_on: Vec::new(),
        dedupe_key: format!("push:{repo}:{pipeline}:{sha}"),
        concurrency_group: format!("{repo}/{pipeline}"),
        cancel_in_progress: false,
        state: RunState::Queued,
        description: "queued".into(),
    }
}

/// What the benchmarks share: percentiles, milliseconds as printed, the load client's own
/// runtime, an open-loop load and its report line.
pub mod bench {
    use std::{sync::OnceLock, time::Duration};

    /// The `p` quantile (0 to 1) of sorted durations; zero for none.
    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[idx]
    }

    /// Milliseconds with two decimals.
    pub fn ms(d: Duration) -> String {
        format!("{:.2}", d.as_secs_f64() * 1000.0)
    }

    /// The client's runtime: one thread, never dropped (as a client in another process
    /// would be), so that the load's own scheduling is not the server's.
    pub fn client_runtime() -> &'static tokio::runtime::Runtime {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("bench-client")
                .enable_all()
                .build()
                .unwrap()
        })
    }

    /// Open-loop load from the client's runtime: one request every 1/rate s, latency measured
    /// from its scheduled time. The schedule is kept by a thread of its own sleeping to each
    /// instant (the kernel's high-resolution timer, ~0.05 ms late), not by the runtime's
    /// timer, which wakes on its next millisecond tick and so would count up to 1 ms of the
    /// client's own lateness in every figure.
    pub async fn load(
        rate: u32,
        seconds: u32,
        make: impl Fn(u64) -> reqwest::RequestBuilder + Send + 'static,
    ) -> (Vec<Duration>, usize) {
        client_runtime()
            .spawn(load_here(rate, seconds, make))
            .await
            .unwrap()
    }

    async fn load_here(
        rate: u32,
        seconds: u32,
        make: impl Fn(u64) -> reqwest::RequestBuilder,
    ) -> (Vec<Duration>, usize) {
        let total = u64::from(rate) * u64::from(seconds);
        let (tick, mut ticks) = tokio::sync::mpsc::unbounded_channel();
        let pacer = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || {
                for (i, at) in paced(rate, seconds) {
                    if tick.send((i, at)).is_err() {
                        return;
                    }
                }
            })
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((i, at)) = ticks.recv().await {
            let req = make(i);
            tasks.spawn(async move {
                let resp = req.send().await;
                let ok = resp.as_ref().is_ok_and(|r| r.status().is_success());
                (at.elapsed(), ok)
            });
        }
        pacer.join().unwrap();
        let mut latencies = Vec::with_capacity(total as usize);
        let mut failed = 0;
        while let Some(done) = tasks.join_next().await {
            let (latency, ok) = done.unwrap();
            latencies.push(latency);
            failed += usize::from(!ok);
        }
        latencies.sort();
        (latencies, failed)
    }

    /// A steady schedule, `rate` instants a second for `seconds` from 50 ms on: each item
    /// is given once its instant has come, the calling thread sleeping to it (the kernel's
    /// high-resolution timer, so ~0.05 ms late), with its number and the instant itself, from
    /// which a latency is measured.
    pub fn paced(rate: u32, seconds: u32) -> impl Iterator<Item = (u64, std::time::Instant)> {
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let start = std::time::Instant::now() + Duration::from_millis(50);
        (0..u64::from(rate) * u64::from(seconds)).map(move |i| {
            let at = start + interval * i as u32;
            if let Some(wait) = at.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            (i, at)
        })
    }

    pub fn report(name: &str, rate: u32, (lat, failed): &(Vec<Duration>, usize)) {
        println!(
            "{name:<40} {rate:>5}/s {:>6} req {:>4} failed   p50 {:>7} ms   p99 {:>7} ms   max {:>8} ms",
            lat.len(),
            failed,
            ms(percentile(lat, 0.50)),
            ms(percentile(lat, 0.99)),
            ms(*lat.last().unwrap_or(&Duration::ZERO)),
        );
    }
}

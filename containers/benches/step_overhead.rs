//! Measures the per-step overhead budget from DESIGN.md: a `true` step through
//! `DockerExecutor::run_step` against `docker run --rm IMAGE true` on the same engine.
//!
//! The two are interleaved so that a drift in the engine's speed hits both alike.
//! Iterations: `PIPEWRIGHT_BENCH_ITERS` (default 20), after a warm-up of each.

use std::{
    io,
    time::{Duration, Instant},
};

use bollard::Docker;
use pipewright_containers::{
    CancellationToken, DockerConfig, DockerExecutor, Executor, LogSink, Outcome, StepSpec, Stream,
};

const IMAGE: &str = "pipewright-test/busybox:1";
const WARM_UP: usize = 3;
const BUDGET: f64 = 1.2;

fn main() {
    let iterations = match std::env::var("PIPEWRIGHT_BENCH_ITERS") {
        Ok(value) => value
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("PIPEWRIGHT_BENCH_ITERS={value:?} is not a positive number")),
        Err(_) => 20,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("failed to build the tokio runtime");
    runtime.block_on(bench(iterations));
}

async fn bench(iterations: usize) {
    let executor = DockerExecutor::connect(DockerConfig::default())
        .await
        .unwrap_or_else(|err| {
            panic!("the Docker engine is not reachable ({err}); run scripts/test-env.sh")
        });
    let docker = Docker::connect_with_defaults().expect("failed to connect to the engine");
    if let Err(err) = docker.inspect_image(IMAGE).await {
        panic!("the test image {IMAGE} is missing ({err}); build it with scripts/test-env.sh");
    }

    let spec = StepSpec {
        image: IMAGE.to_owned(),
        command: vec!["true".to_owned()],
        ..StepSpec::default()
    };
    for _ in 0..WARM_UP {
        executor_step(&executor, &spec).await;
        docker_run().await;
    }

    let mut executor_times = Vec::with_capacity(iterations);
    let mut docker_run_times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        // Alternate which goes first, so neither always follows the other's cleanup.
        if i % 2 == 0 {
            executor_times.push(executor_step(&executor, &spec).await);
            docker_run_times.push(docker_run().await);
        } else {
            docker_run_times.push(docker_run().await);
            executor_times.push(executor_step(&executor, &spec).await);
        }
    }

    let executor_stats = Stats::of(&mut executor_times);
    let docker_run_stats = Stats::of(&mut docker_run_times);
    println!("step overhead, {iterations} interleaved runs each after {WARM_UP} warm-up runs (ms)");
    println!(
        "{:<46} {:>8} {:>8} {:>8} {:>8}",
        "", "min", "median", "mean", "max"
    );
    executor_stats.print("DockerExecutor::run_step(true)");
    docker_run_stats.print(&format!("docker run --rm {IMAGE} true"));
    let ratio = executor_stats.median / docker_run_stats.median;
    println!("ratio of medians (executor / docker run): {ratio:.2}");
    println!(
        "budget (DESIGN.md): at most {BUDGET}x -> {}",
        if ratio <= BUDGET { "within" } else { "OVER" }
    );
}

async fn executor_step(executor: &DockerExecutor, spec: &StepSpec) -> Duration {
    let started = Instant::now();
    let outcome = executor
        .run_step(spec, &mut Discard, &CancellationToken::new())
        .await
        .unwrap_or_else(|err| panic!("run_step failed: {err}"));
    let elapsed = started.elapsed();
    assert_eq!(outcome, Outcome::Succeeded);
    elapsed
}

async fn docker_run() -> Duration {
    let started = Instant::now();
    let status = tokio::process::Command::new("docker")
        .args(["run", "--rm", IMAGE, "true"])
        .status()
        .await
        .expect("failed to run the docker CLI");
    let elapsed = started.elapsed();
    assert!(status.success(), "docker run failed: {status}");
    elapsed
}

struct Discard;

impl LogSink for Discard {
    fn line(&mut self, _: Stream, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

struct Stats {
    min: f64,
    median: f64,
    mean: f64,
    max: f64,
}

impl Stats {
    fn of(times: &mut [Duration]) -> Stats {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let n = times.len();
        let median = if n % 2 == 1 {
            ms(times[n / 2])
        } else {
            (ms(times[n / 2 - 1]) + ms(times[n / 2])) / 2.0
        };
        Stats {
            min: ms(times[0]),
            median,
            mean: times.iter().copied().map(ms).sum::<f64>() / n as f64,
            max: ms(times[n - 1]),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<46} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            self.min, self.median, self.mean, self.max
        );
    }
}

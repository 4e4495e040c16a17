//! The server's Prometheus metrics: counters and histograms that the webhook receiver, the
//! worker and git bump as things happen (atomics only: no lock, nothing awaited), and the
//! values read at scrape time (the queues from the store, this process's memory and file
//! descriptors), encoded in the Prometheus text format 0.0.4 for `GET /metrics`.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text},
    metrics::{MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    git::FetchObserver,
    store::{QueueSizes, RunState, StepState},
};

/// The content type of the answer: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How the webhook receiver answered a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookResult {
    /// Stored as a new delivery (202).
    Accepted,
    /// Its delivery id was stored before (200).
    Duplicate,
    /// Gitea's test delivery (200).
    Ping,
    /// Signed and valid, but of an event or action Pipewright does not act on (202).
    Ignored,
    /// No webhook secret configured, or a missing or wrong signature (401).
    Refused,
    /// Signed, but its headers or payload are not a delivery Pipewright can read (400).
    Invalid,
    /// It could not be stored (503).
    Unavailable,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 7] = [
        WebhookResult::Accepted,
        WebhookResult::Duplicate,
        WebhookResult::Ping,
        WebhookResult::Ignored,
        WebhookResult::Refused,
        WebhookResult::Invalid,
        WebhookResult::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Ping => "ping",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Refused => "refused",
            WebhookResult::Invalid => "invalid",
            WebhookResult::Unavailable => "unavailable",
        }
    }
}

/// The step states a step that ran ends in (`result` of `pipewright_step_seconds`).
const STEP_RESULTS: [StepState; 4] = [
    StepState::Success,
    StepState::Failure,
    StepState::Cancelled,
    StepState::Error,
];

/// Webhook answers: 1 ms to 1 s (Gitea gives up after 5 s).
const ACK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
];
/// Steps: a second to a few hours.
const STEP_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0,
];
/// Fetches from Gitea: 10 ms to a few minutes.
const FETCH_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

type Label = [(&'static str, &'static str); 1];

/// The metrics of one server (one `App`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    webhooks: [Counter; WebhookResult::ALL.len()],
    webhook_ack: Histogram,
    steps: [Histogram; STEP_RESULTS.len()],
    fetch_ok: Histogram,
    fetch_failed: Histogram,
    /// The claim loop runs (and takes new runs).
    agent_live: AtomicBool,
    /// The claim loop waits for its runs to end before it stops.
    agent_draining: AtomicBool,
    started: SystemTime,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let webhooks_family = Family::<Label, Counter>::default();
        let webhooks = WebhookResult::ALL
            .map(|r| webhooks_family.get_or_create_owned(&[("result", r.as_str())]));
        registry.register(
            "pipewright_webhooks",
            "Webhook deliveries answered, by result (accepted, duplicate, ping, ignored, \
             refused, invalid, unavailable)",
            webhooks_family,
        );
        let webhook_ack = Histogram::new(ACK_BUCKETS);
        registry.register(
            "pipewright_webhook_ack_seconds",
            "Time from a webhook request's body to its answer",
            webhook_ack.clone(),
        );
        let steps_family =
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(STEP_BUCKETS)
            });
        let steps =
            STEP_RESULTS.map(|s| steps_family.get_or_create_owned(&[("result", s.as_str())]));
        registry.register(
            "pipewright_step_seconds",
            "Durations of the steps that ran, by result (success, failure, cancelled, error)",
            steps_family,
        );
        let fetch_family =
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(FETCH_BUCKETS)
            });
        let fetch_ok = fetch_family.get_or_create_owned(&[("result", "ok")]);
        let fetch_failed = fetch_family.get_or_create_owned(&[("result", "error")]);
        registry.register(
            "pipewright_git_fetch_seconds",
            "Durations of the fetches from Gitea into the mirrors, by result (ok, error)",
            fetch_family,
        );
        Metrics {
            registry,
            webhooks,
            webhook_ack,
            steps,
            fetch_ok,
            fetch_failed,
            agent_live: AtomicBool::new(false),
            agent_draining: AtomicBool::new(false),
            started: SystemTime::now(),
        }
    }

    /// A webhook delivery was answered with `result`, `elapsed` after its body was read.
    pub fn webhook(&self, result: WebhookResult, elapsed: Duration) {
        let i = WebhookResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or_default();
        self.webhooks[i].inc();
        self.webhook_ack.observe(elapsed);
    }

    /// A step that ran ended in `state` after `elapsed`. Steps that did not run (skipped,
    /// not run after a failure) are not observed.
    pub fn step(&self, state: StepState, elapsed: Duration) {
        if let Some(i) = STEP_RESULTS.iter().position(|s| *s == state) {
            self.steps[i].observe(elapsed);
        }
    }

    /// What git calls after each fetch.
    pub fn fetch_observer(self: &Arc<Self>) -> FetchObserver {
        let metrics = Arc::downgrade(self);
        FetchObserver(Arc::new(move |elapsed, ok| {
            if let Some(m) = metrics.upgrade() {
                if ok { &m.fetch_ok } else { &m.fetch_failed }.observe(elapsed);
            }
        }))
    }

    /// The claim loop started (`true`) or stopped (`false`).
    pub fn agent_live(&self, live: bool) {
        self.agent_live.store(live, Ordering::Relaxed);
        if live {
            self.agent_draining.store(false, Ordering::Relaxed);
        }
    }

    /// The claim loop takes no new runs and waits for its runs (`true`), or stopped.
    pub fn agent_draining(&self, draining: bool) {
        self.agent_draining.store(draining, Ordering::Relaxed);
    }

    /// The text of a scrape: what was counted, then what was read now (`queues`: `None`
    /// when the store could not be read, which `pipewright_store_up` says).
    pub fn encode(
        &self,
        run_ends: &[(RunState, u64)],
        queues: Option<QueueSizes>,
    ) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 << 10);
        prometheus_text::encode(&mut out, &self.registry)?;
        prometheus_text::encode(&mut out, &self.scraped(run_ends, queues))?;
        // `encode` ends each registry with nothing: the format needs no terminator.
        if !out.ends_with('\n') {
            out.write_char('\n')?;
        }
        Ok(out)
    }

    /// The values read at scrape time, as a registry of their own.
    fn scraped(&self, run_ends: &[(RunState, u64)], queues: Option<QueueSizes>) -> Registry {
        let mut r = Registry::default();
        let info = Family::<Label, Gauge>::default();
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        r.register(
            "pipewright_build_info",
            "Pipewright's version (always 1)",
            info,
        );

        let runs = Family::<Label, Counter>::default();
        for (state, n) in run_ends {
            runs.get_or_create(&[("state", state.as_str())]).inc_by(*n);
        }
        r.register(
            "pipewright_runs",
            "Runs ended since the server started, by final state (success, failure, error, \
             cancelled, superseded)",
            runs,
        );

        let up = Gauge::<i64>::default();
        up.set(i64::from(queues.is_some()));
        r.register(
            "pipewright_store_up",
            "Whether the database answered this scrape (0: the queue gauges are missing)",
            up,
        );
        if let Some(q) = queues {
            for (name, help, value) in [
                (
                    "pipewright_runs_queued",
                    "Runs waiting to be claimed",
                    q.runs_queued,
                ),
                (
                    "pipewright_runs_running",
                    "Runs being run (by any agent)",
                    q.runs_running,
                ),
                (
                    "pipewright_status_outbox_pending",
                    "Commit statuses not sent to Gitea yet",
                    q.statuses_pending,
                ),
                (
                    "pipewright_deliveries_pending",
                    "Deliveries stored and not processed yet",
                    q.deliveries_pending,
                ),
            ] {
                let g = Gauge::<i64>::default();
                g.set(value);
                r.register(name, help, g);
            }
        }

        let agents = Family::<Label, Gauge>::default();
        let live = self.agent_live.load(Ordering::Relaxed);
        let draining = self.agent_draining.load(Ordering::Relaxed);
        let (others_live, others_draining) =
            queues.map_or((0, 0), |q| (q.other_agents_live, q.other_agents_draining));
        agents
            .get_or_create(&[("state", "live")])
            .set(i64::from(live && !draining) + others_live);
        agents
            .get_or_create(&[("state", "draining")])
            .set(i64::from(draining) + others_draining);
        r.register(
            "pipewright_agents",
            "Agents by state: live (claiming runs), draining (waiting for their runs before \
             they stop); this process's own, and the other processes' with a heartbeat in \
             the last 15 s",
            agents,
        );

        let start = Gauge::<f64, AtomicU64>::default();
        start.set(
            self.started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        r.register(
            "process_start_time_seconds",
            "When the server started, in seconds since the epoch",
            start,
        );
        if let Some(rss) = resident_bytes() {
            let g = Gauge::<i64>::default();
            g.set(rss);
            r.register(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                g,
            );
        }
        if let Some(fds) = open_fds() {
            let g = Gauge::<i64>::default();
            g.set(fds);
            r.register("process_open_fds", "Open file descriptors", g);
        }
        r
    }
}

/// `VmRSS` of `/proc/self/status` (kB), in bytes; `None` where there is no procfs.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The entries of `/proc/self/fd`, less the one `read_dir` itself holds open.
fn open_fds() -> Option<i64> {
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(count.saturating_sub(1) as i64)
}

/// A histogram of fixed buckets made of atomics: observing takes no lock.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound, then the `+Inf` bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = self.0.bounds.partition_point(|b| *b < secs);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder makes the buckets cumulative: it takes each bucket's own count.
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.counts.iter())
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_le() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let mut registry = Registry::default();
        registry.register("t_seconds", "test", h);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("t_seconds_bucket{le=\"0.001\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"0.01\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("t_seconds_count 4\n"), "{text}");
        assert!(text.contains("t_seconds_sum 2.0065"), "{text}");
    }

    #[test]
    fn a_scrape_names_every_metric_once() {
        let m = Metrics::new();
        m.webhook(WebhookResult::Refused, Duration::from_millis(3));
        m.step(StepState::Skipped, Duration::from_secs(1));
        let queues = QueueSizes {
            runs_queued: 3,
            other_agents_live: 2,
            ..QueueSizes::default()
        };
        let text = m.encode(&[(RunState::Success, 2)], Some(queues)).unwrap();
        let mut types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let count = types.len();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), count, "{text}");
        for line in [
            "pipewright_webhooks_total{result=\"refused\"} 1\n",
            "pipewright_webhooks_total{result=\"accepted\"} 0\n",
            "pipewright_webhook_ack_seconds_count 1\n",
            "pipewright_step_seconds_count{result=\"success\"} 0\n",
            "pipewright_runs_total{state=\"success\"} 2\n",
            "pipewright_runs_queued 3\n",
            "pipewright_agents{state=\"live\"} 2\n",
            "pipewright_store_up 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("result=\"skipped\""), "{text}");
        let down = m.encode(&[], None).unwrap();
        assert!(down.contains("pipewright_store_up 0\n"), "{down}");
        assert!(!down.contains("pipewright_runs_queued"), "{down}");
    }
}

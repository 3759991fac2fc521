//! Open-loop load generation with coordinated-omission-corrected latency.
//!
//! A scheduler thread emits one timestamp every `1/rate` seconds, computed
//! from the start time (not from the previous tick, so timer jitter never
//! accumulates into a lower rate). The timestamps go into a FIFO queue served by a fixed
//! pool of connections, each doing one request at a time. When every
//! connection is busy, requests wait in the queue, and because latency is
//! measured from the *scheduled* time, that wait shows up in the numbers
//! instead of silently lowering the request rate (which is what a
//! closed-loop tool does, hiding exactly the stalls we want to see).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::header::HeaderName;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::{Connection, Exchange, TransportError};
use crate::report::{
    new_histogram, ErrorCounts, HeaderTally, LatencySummary, LoadReport, StatusCounts,
};
use crate::target::Target;

/// Upper bound on `--rate`: far above what one process on a small machine can
/// drive, low enough that a typo cannot queue billions of timestamps.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Upper bound on `--connections`, to keep a typo from exhausting sockets.
pub const MAX_CONNECTIONS: usize = 10_000;
/// How many distinct transport error messages a report keeps.
const MAX_ERROR_SAMPLES: usize = 8;

/// Why a load plan cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--rate must be a number in (0, {MAX_RATE}], got {0}")]
    Rate(f64),
    #[error("--connections must be between 1 and {MAX_CONNECTIONS}, got {0}")]
    Connections(usize),
    #[error("--duration must be more than zero")]
    Duration,
    #[error("--timeout must be more than zero")]
    Timeout,
    #[error("invalid --count-header name {0:?}")]
    CountHeader(String),
}

/// One open-loop run: what to send, how fast, for how long.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub target: Arc<Target>,
    /// Arrival rate in requests per second.
    pub rate: f64,
    /// Requests are scheduled in `[0, duration)` after the start.
    pub duration: Duration,
    /// Stop scheduling after this many requests, even if time remains.
    pub max_requests: Option<u64>,
    pub connections: usize,
    /// Budget per request, counted from its scheduled time.
    pub timeout: Duration,
    /// Response header whose values are tallied.
    pub count_header: Option<HeaderName>,
}

impl LoadPlan {
    /// Validates user-supplied numbers so that `run` cannot misbehave.
    pub fn new(
        target: Target,
        rate: f64,
        duration: Duration,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self, PlanError> {
        if !(rate > 0.0 && rate <= MAX_RATE) {
            return Err(PlanError::Rate(rate));
        }
        if connections == 0 || connections > MAX_CONNECTIONS {
            return Err(PlanError::Connections(connections));
        }
        if duration.is_zero() {
            return Err(PlanError::Duration);
        }
        if timeout.is_zero() {
            return Err(PlanError::Timeout);
        }
        Ok(Self {
            target: Arc::new(target),
            rate,
            duration,
            max_requests: None,
            connections,
            timeout,
            count_header: None,
        })
    }

    pub fn with_max_requests(mut self, max_requests: Option<u64>) -> Self {
        self.max_requests = max_requests;
        self
    }

    pub fn with_count_header(mut self, name: Option<&str>) -> Result<Self, PlanError> {
        self.count_header = name
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| PlanError::CountHeader(n.into()))
            })
            .transpose()?;
        Ok(self)
    }

    /// The same plan with another schedule length (used by reload-storm to
    /// run its two phases).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }
}

/// Runs the plan to completion and reports. Never fails: every problem
/// with the target is counted, not returned. Bounded in time: scheduling
/// stops after `duration`, and every request is abandoned `timeout` after
/// its scheduled time, so the run ends by `duration + timeout` (plus a
/// connect that the OS may still be finishing).
pub async fn run(plan: &LoadPlan) -> LoadReport {
    let plan = Arc::new(plan.clone());
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    let queue = Arc::new(Mutex::new(queue_rx));
    let workers: Vec<_> = (0..plan.connections)
        .map(|_| tokio::spawn(work(Arc::clone(&plan), Arc::clone(&queue))))
        .collect();

    // If this future is dropped (Ctrl-C, a cancelled reload storm), tell the
    // scheduler thread to stop instead of feeding a queue nobody reports on.
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let start = std::time::Instant::now();
    let scheduler = {
        let (plan, cancelled) = (Arc::clone(&plan), Arc::clone(&cancel.0));
        tokio::task::spawn_blocking(move || schedule(&plan, start, queue_tx, &cancelled))
    };

    let mut total = Tally::new();
    for worker in workers {
        match worker.await {
            Ok(tally) => total.merge(tally),
            // A panicking worker is a bug in this tool; say so rather than
            // quietly reporting fewer requests.
            Err(e) => eprintln!("loadtest: worker task failed: {e}"),
        }
    }
    // Workers only finish once the scheduler has dropped the queue sender,
    // so this does not wait.
    let schedule = scheduler.await.unwrap_or_else(|e| {
        eprintln!("loadtest: scheduler failed: {e}");
        ScheduleStats::new()
    });
    total.into_report(&plan, &schedule, start.elapsed())
}

/// Sets the flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the scheduler did: how many requests it issued and how late it was
/// issuing them (its own error, which ends up inside measured latency).
struct ScheduleStats {
    scheduled: u64,
    lag: Histogram<u64>,
}

impl ScheduleStats {
    fn new() -> Self {
        Self {
            scheduled: 0,
            lag: new_histogram(),
        }
    }
}

/// Longest single sleep of the scheduler, so a cancelled run at a low rate
/// still notices quickly.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// Offset of request number `n` from the start. Computed from the start
/// (not from the previous tick) so timer jitter never accumulates into a
/// lower rate, and rounded to whole nanoseconds so that e.g. 1000/s gives
/// exact millisecond ticks rather than float noise.
fn offset(n: u64, rate: f64) -> Duration {
    Duration::from_nanos((n as f64 * 1e9 / rate).round() as u64)
}

/// Emits scheduled send times into the queue at the plan's rate.
///
/// Runs on its own OS thread with `std::thread::sleep`: tokio's timer has
/// millisecond granularity and would wake up to a millisecond late, and
/// since latency is measured from the scheduled time, that lateness would
/// be added to every measurement. A plain thread wakes within tens of
/// microseconds. Dropping `queue` at the end lets workers finish once the
/// backlog is drained.
fn schedule(
    plan: &LoadPlan,
    start: std::time::Instant,
    queue: UnboundedSender<Instant>,
    cancelled: &AtomicBool,
) -> ScheduleStats {
    let mut stats = ScheduleStats::new();
    loop {
        if plan.max_requests.is_some_and(|max| stats.scheduled >= max) {
            break;
        }
        let at_offset = offset(stats.scheduled, plan.rate);
        if at_offset >= plan.duration {
            break;
        }
        let at = start + at_offset;
        if !sleep_until(at, cancelled) {
            break;
        }
        let lag = std::time::Instant::now().saturating_duration_since(at);
        stats.lag.saturating_record(micros(lag));
        if queue.send(Instant::from_std(at)).is_err() {
            break;
        }
        stats.scheduled += 1;
    }
    stats
}

/// Sleeps until `at` in slices of at most `MAX_SLEEP`. Returns false if the
/// run was cancelled meanwhile.
fn sleep_until(at: std::time::Instant, cancelled: &AtomicBool) -> bool {
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return false;
        }
        let left = at.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(MAX_SLEEP));
    }
}

/// One pool slot: takes scheduled times off the shared queue, one at a
/// time, and serves each on its own connection.
async fn work(plan: Arc<LoadPlan>, queue: Arc<Mutex<UnboundedReceiver<Instant>>>) -> Tally {
    let mut connection = Connection::new(Arc::clone(&plan.target));
    let mut tally = Tally::new();
    loop {
        // The tokio mutex is fair, so idle workers take turns and requests
        // leave the queue in scheduled order.
        let next = queue.lock().await.recv().await;
        let Some(scheduled) = next else { break };
        serve_one(&plan, &mut connection, scheduled, &mut tally).await;
    }
    tally
}

/// Sends one scheduled request and records its outcome.
async fn serve_one(
    plan: &LoadPlan,
    connection: &mut Connection,
    scheduled: Instant,
    tally: &mut Tally,
) {
    let deadline = scheduled + plan.timeout;
    // A request that already used its whole budget waiting for a connection
    // is a timeout from the user's point of view; sending it now would only
    // add load for an answer nobody is waiting for.
    if Instant::now() >= deadline {
        tally.errors.timeout += 1;
        return;
    }
    let mut sent_at = None;
    let outcome = tokio::time::timeout_at(
        deadline,
        connection.exchange(plan.count_header.as_ref(), &mut sent_at),
    )
    .await;
    if sent_at.is_some() {
        tally.sent += 1;
    }
    match outcome {
        Ok(Ok(exchange)) => tally.record_response(scheduled, exchange, plan),
        Ok(Err(error)) => tally.record_error(&error),
        Err(_elapsed) => {
            connection.reset();
            tally.errors.timeout += 1;
        }
    }
}

/// Per-worker counters, merged at the end so workers never share a lock on
/// the hot path.
struct Tally {
    sent: u64,
    status: StatusCounts,
    errors: ErrorCounts,
    latency: Histogram<u64>,
    service: Histogram<u64>,
    header_values: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            sent: 0,
            status: StatusCounts::default(),
            errors: ErrorCounts::default(),
            latency: new_histogram(),
            service: new_histogram(),
            header_values: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        }
    }

    fn record_response(&mut self, scheduled: Instant, exchange: Exchange, plan: &LoadPlan) {
        let now = Instant::now();
        self.latency.saturating_record(micros(now - scheduled));
        self.service
            .saturating_record(micros(now - exchange.sent_at));
        self.status.record(exchange.status.as_u16());
        if plan.count_header.is_some() {
            let value = exchange
                .counted_header
                .unwrap_or_else(|| "(none)".to_string());
            *self.header_values.entry(value).or_default() += 1;
        }
    }

    fn record_error(&mut self, error: &TransportError) {
        match error {
            TransportError::Connect(_) => self.errors.connect += 1,
            TransportError::Io(_) => self.errors.io += 1,
        }
        add_sample(&mut self.error_samples, error.to_string(), 1);
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.status.merge(&other.status);
        self.errors.merge(&other.errors);
        // Every histogram comes from `new_histogram`, so the bounds match and
        // `add` cannot fail.
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.service
            .add(&other.service)
            .expect("histograms share bounds");
        for (value, count) in other.header_values {
            *self.header_values.entry(value).or_default() += count;
        }
        for (message, count) in other.error_samples {
            add_sample(&mut self.error_samples, message, count);
        }
    }

    fn into_report(
        self,
        plan: &LoadPlan,
        schedule: &ScheduleStats,
        elapsed: Duration,
    ) -> LoadReport {
        let responses = self.latency.len();
        // The run lasts at least as long as its schedule; measuring from the
        // first to the last response alone would credit a healthy run with a
        // rate slightly above the target.
        let scheduled_span = schedule.scheduled as f64 / plan.rate;
        let elapsed_s = elapsed.as_secs_f64().max(scheduled_span);
        let achieved_rate = if elapsed_s > 0.0 {
            responses as f64 / elapsed_s
        } else {
            0.0
        };
        LoadReport {
            url: plan.target.url().to_string(),
            method: plan.target.method().to_string(),
            target_rate: plan.rate,
            duration_s: plan.duration.as_secs_f64(),
            connections: plan.connections,
            timeout_s: plan.timeout.as_secs_f64(),
            scheduled: schedule.scheduled,
            scheduler_lag_us: LatencySummary::from_histogram(&schedule.lag),
            sent: self.sent,
            responses,
            elapsed_s: round3(elapsed_s),
            achieved_rate: round3(achieved_rate),
            failures: self.errors.total() + self.status.s5xx,
            status: self.status,
            errors: self.errors,
            latency_us: LatencySummary::from_histogram(&self.latency),
            service_time_us: LatencySummary::from_histogram(&self.service),
            count_header: plan.count_header.as_ref().map(|name| HeaderTally {
                name: name.to_string(),
                values: self.header_values,
            }),
            error_samples: self.error_samples,
        }
    }
}

/// Counts an error message, keeping at most `MAX_ERROR_SAMPLES` distinct
/// ones so a flood of unique messages cannot grow memory.
fn add_sample(samples: &mut BTreeMap<String, u64>, message: String, count: u64) {
    if let Some(existing) = samples.get_mut(&message) {
        *existing += count;
    } else if samples.len() < MAX_ERROR_SAMPLES {
        samples.insert(message, count);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::parse("http://127.0.0.1:9/", "GET", &[]).expect("valid target")
    }

    #[test]
    fn plan_validation() {
        let ok = |rate, connections, duration, timeout| {
            LoadPlan::new(target(), rate, duration, connections, timeout).is_ok()
        };
        let second = Duration::from_secs(1);
        assert!(ok(100.0, 4, second, second));
        assert!(!ok(0.0, 4, second, second));
        assert!(!ok(f64::NAN, 4, second, second));
        assert!(!ok(MAX_RATE * 2.0, 4, second, second));
        assert!(!ok(100.0, 0, second, second));
        assert!(!ok(100.0, 4, Duration::ZERO, second));
        assert!(!ok(100.0, 4, second, Duration::ZERO));
    }

    #[test]
    fn offsets_are_exact() {
        assert_eq!(offset(0, 1000.0), Duration::ZERO);
        assert_eq!(offset(3, 1000.0), Duration::from_millis(3));
        assert_eq!(offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(offset(300, 3.0), Duration::from_secs(100));
    }

    #[test]
    fn schedule_is_on_time_and_bounded() {
        let plan = LoadPlan::new(
            target(),
            1000.0,
            Duration::from_millis(50),
            1,
            Duration::from_secs(1),
        )
        .expect("valid plan");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = std::time::Instant::now();
        let stats = schedule(&plan, start, tx, &AtomicBool::new(false));
        assert_eq!(stats.scheduled, 50);
        let mut expected = 0u64;
        while let Ok(at) = rx.try_recv() {
            assert_eq!(at.into_std() - start, Duration::from_millis(expected));
            expected += 1;
        }
        assert_eq!(expected, 50);
        // Generous bound: a loaded CI machine can be late, but not by a lot.
        assert!(stats.lag.value_at_quantile(0.5) < 5_000);

        let capped = plan.clone().with_max_requests(Some(7));
        let (tx, _rx) = mpsc::unbounded_channel();
        let stats = schedule(
            &capped,
            std::time::Instant::now(),
            tx,
            &AtomicBool::new(false),
        );
        assert_eq!(stats.scheduled, 7);

        let (tx, _rx) = mpsc::unbounded_channel();
        let stats = schedule(&plan, std::time::Instant::now(), tx, &AtomicBool::new(true));
        assert_eq!(stats.scheduled, 0, "a cancelled run schedules nothing");
    }

    #[test]
    fn error_samples_are_capped() {
        let mut samples = BTreeMap::new();
        for i in 0..100 {
            add_sample(&mut samples, format!("error {i}"), 1);
        }
        add_sample(&mut samples, "error 0".into(), 5);
        assert_eq!(samples.len(), MAX_ERROR_SAMPLES);
        assert_eq!(samples["error 0"], 6);
    }
}

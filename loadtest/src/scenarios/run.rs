//! One scenario run: scripted OLD and NEW pools, the real binary in front of
//! them, open-loop load through it; once the rollout holds NEW at 25% with a
//! few passing checks, the fault begins, and the decision log says what the
//! proxy made of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::history::{self, Record};
use super::proxy::{config_yaml, Proxy, RolloutConfig, TempDir};
use super::{Fault, Scenario, Schedule};
use crate::backend::{Backend, BackendConfig, BackendControl};
use crate::load::{self, LoadPlan};
use crate::target::Target;

/// NEW's weight while the fault is injected.
const WEIGHT: f64 = 25.0;
/// Passing checks at 25% before the fault begins.
const HEALTHY_CHECKS: usize = 2;
/// How often the decision log is read.
const POLL: Duration = Duration::from_millis(50);

/// What one run saw.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// A rollback with no fault yet (or none at all).
    pub false_rollback: bool,
    /// From the fault's start to the rollback record (NEW's weight 0).
    pub detected_after: Option<Duration>,
    /// Checks from the fault to the first failed one; 0 when a trip came first.
    pub checks_to_detect: Option<u32>,
    /// Checks the proxy recorded after the fault began (or during the
    /// observation, with no fault).
    pub checks_observed: usize,
}

/// The pools of one run. Dropping them stops every backend.
struct Pools {
    old: Vec<Backend>,
    new: Vec<Backend>,
}

impl Pools {
    async fn start(noise: f64, lifetime: Duration) -> Result<Pools, String> {
        let start = |name: &str| {
            Backend::start(BackendConfig {
                name: name.to_string(),
                fail_rate: noise,
                fail_status: 500,
                lifetime,
                ..BackendConfig::default()
            })
        };
        let mut pools = Pools {
            old: Vec::new(),
            new: Vec::new(),
        };
        for i in 0..2 {
            pools.old.push(
                start(&format!("old-{i}"))
                    .await
                    .map_err(|e| e.to_string())?,
            );
            pools.new.push(
                start(&format!("new-{i}"))
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(pools)
    }

    fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
        backends.iter().map(Backend::addr).collect()
    }

    fn new_controls(&self) -> Vec<BackendControl> {
        self.new.iter().map(Backend::control).collect()
    }
}

/// Runs `scenario` once with `method` and reports what the proxy decided.
pub async fn run(
    binary: &Path,
    scenario: &Scenario,
    method: &'static str,
    schedule: &Schedule,
) -> Result<Outcome, String> {
    let dir =
        TempDir::new(method).map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let (window, warmup_limit) = (schedule.window, schedule.warmup_limit);
    let limit = warmup_limit + schedule.observe + Duration::from_secs(30);
    let mut pools = Pools::start(scenario.noise, limit).await?;
    let rollout = RolloutConfig {
        method,
        interval: schedule.interval,
        window,
        min_requests: schedule.min_requests,
        failure_threshold: schedule.failure_threshold,
    };
    let config = config_yaml(
        &Pools::addrs(&pools.old),
        &Pools::addrs(&pools.new),
        &rollout,
    );
    let mut proxy = Proxy::start(binary, dir.path(), &config, Duration::from_secs(20)).await?;
    let load = start_load(proxy.listener, scenario.rate, limit)?;
    let _load = AbortOnDrop(load);

    // Warm-up: NEW at 25%, judged healthy a few times (low traffic is never
    // conclusive: a few checks of any outcome then).
    let started = Instant::now();
    let warm_until = started + warmup_limit;
    let before_fault = loop {
        let records = history::read(&proxy.history)?;
        if records.iter().any(Record::is_rollback) {
            keep_log(&proxy.history, scenario, method, schedule)?;
            return Ok(Outcome {
                false_rollback: true,
                ..Outcome::default()
            });
        }
        // The statistical method needs more requests than a short window
        // holds to pass with 0.5% noise (docs/evidence.md, "Cost of
        // confidence"): there, and with low traffic, checks that did not
        // fail are the healthy state.
        let ready = if scenario.conclusive && (method == "threshold" || scenario.noise == 0.0) {
            history::passing_checks_at(&records, WEIGHT) >= HEALTHY_CHECKS
        } else {
            history::unfailed_checks_at(&records, WEIGHT) >= HEALTHY_CHECKS
        };
        let filled = !schedule.fill_window || started.elapsed() >= window;
        if ready && filled {
            break records.len();
        }
        if !proxy.alive() {
            return Err(format!("cutover died:\n{}", proxy.log_text()));
        }
        if Instant::now() >= warm_until {
            return Err(format!(
                "{} / {method}: no {HEALTHY_CHECKS} healthy checks at 25% within {:?}; decisions: {records:?}",
                scenario.name, warmup_limit
            ));
        }
        tokio::time::sleep(POLL).await;
    };

    let fault_at = Instant::now();
    let _flapping = inject(scenario.fault, &mut pools, scenario.noise)?;
    let observe_until = fault_at + schedule.observe;
    let mut outcome = Outcome::default();
    loop {
        let records = history::read(&proxy.history)?;
        let after = records.get(before_fault..).unwrap_or_default();
        outcome.checks_observed = after
            .iter()
            .filter(|r| matches!(r, Record::Check { .. }))
            .count();
        if after.iter().any(Record::is_rollback) {
            keep_log(&proxy.history, scenario, method, schedule)?;
            if matches!(scenario.fault, Fault::None) {
                outcome.false_rollback = true;
            } else {
                outcome.detected_after = Some(fault_at.elapsed());
                outcome.checks_to_detect = history::checks_to_detect(after);
            }
            return Ok(outcome);
        }
        if !proxy.alive() {
            return Err(format!("cutover died:\n{}", proxy.log_text()));
        }
        if Instant::now() >= observe_until {
            keep_log(&proxy.history, scenario, method, schedule)?;
            return Ok(outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Copies a run's decision log into `schedule.keep_logs`, if set, as
/// `<scenario>-<method>-<n>.jsonl`, and says where on stderr.
fn keep_log(
    history: &Path,
    scenario: &Scenario,
    method: &str,
    schedule: &Schedule,
) -> Result<(), String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Some(dir) = &schedule.keep_logs else {
        return Ok(());
    };
    let slug: String = scenario
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let target = dir.join(format!("{slug}-{method}-{n}.jsonl"));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::copy(history, &target))
        .map_err(|e| format!("cannot keep the log as {}: {e}", target.display()))?;
    eprintln!(
        "loadtest scenarios: {} / {method}: its decision log: {}",
        scenario.name,
        target.display()
    );
    Ok(())
}

/// Aborts the task (and so cancels its load) when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_load(
    listener: SocketAddr,
    rate: f64,
    limit: Duration,
) -> Result<JoinHandle<crate::report::LoadReport>, String> {
    let target =
        Target::parse(&format!("http://{listener}/"), "GET", &[]).map_err(|e| e.to_string())?;
    let plan = LoadPlan::new(target, rate, limit, 16, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move { load::run(&plan).await }))
}

/// Starts the fault on NEW's backends; a flapping fault runs in a task that
/// stops when the returned guard is dropped.
fn inject(fault: Fault, pools: &mut Pools, noise: f64) -> Result<Option<AbortOnDrop<()>>, String> {
    let controls = pools.new_controls();
    let set_rate = |rate: f64| -> Result<(), String> {
        for control in &controls {
            control.set_fail_rate(rate).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    match fault {
        Fault::None => {}
        Fault::Errors(extra) => set_rate((noise + extra).min(1.0))?,
        // Connections refused: the backends are gone.
        Fault::Down => pools.new.clear(),
        Fault::Latency(delay) => {
            for control in &controls {
                control.set_delay(delay).map_err(|e| e.to_string())?;
            }
        }
        Fault::Flapping(period) => {
            set_rate(1.0)?;
            let task = tokio::spawn(async move {
                let mut bad = true;
                loop {
                    tokio::time::sleep(period).await;
                    bad = !bad;
                    for control in &controls {
                        let _ = control.set_fail_rate(if bad { 1.0 } else { noise });
                    }
                }
            });
            return Ok(Some(AbortOnDrop(task)));
        }
    }
    Ok(None)
}

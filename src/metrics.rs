//! The metrics of SPEC §6, in OpenMetrics text via prometheus-client.
//!
//! Design note: the request path's numbers (requests, durations, upstream errors) live in
//! the atomics of `stats::PoolStats`, which the analysis reads too. They are encoded at
//! scrape time by a collector that walks the current routing snapshot, so the request
//! path never touches a metric family (a lookup there takes a lock and hashes labels) and
//! there is a single source for what `/metrics` shows and what the analysis decides on.
//! The controller's metrics (rollout state, checks, hooks, reloads) are ordinary
//! prometheus-client families: they change a few times a second at most.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::hooks::HookResult;
use crate::proxy::ListenerState;
use crate::rollout::machine::RollbackReason;
use crate::routing::SharedSnapshot;
use crate::stats::{CodeClass, PoolCounts, UpstreamErrorKind, LATENCY_EDGES_US};
use crate::upstream::{now_millis, Pool};

/// The `le` bounds exposed for request durations: edges of the stats buckets.
const DURATION_BOUNDS_US: [u64; 15] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The states `cutover_rollout_state` reports (one is 1, the others 0).
pub const ROLLOUT_STATES: [&str; 7] = [
    "pending",
    "progressing",
    "waiting",
    "paused",
    "promoted",
    "rolled_back",
    "static",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    service: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    service: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    service: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookResultLabels {
    service: String,
    hook: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// Every metric cutover exposes.
pub struct Metrics {
    registry: Registry,
    rollout_weight: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    rollout_step: Family<ServiceLabels, Gauge>,
    rollout_state: Family<StateLabels, Gauge>,
    rollbacks: Family<ReasonLabels, Counter>,
    checks: Family<ResultLabels, Counter>,
    hook_runs: Family<HookResultLabels, Counter>,
    hook_duration: Family<HookLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    shadow: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(
        snapshot: SharedSnapshot,
        listeners: Arc<Mutex<Vec<Arc<ListenerState>>>>,
    ) -> Metrics {
        let mut registry = Registry::default();
        let rollout_weight = Family::<ServiceLabels, Gauge<f64, AtomicU64>>::default();
        let rollout_step = Family::<ServiceLabels, Gauge>::default();
        let rollout_state = Family::<StateLabels, Gauge>::default();
        let rollbacks = Family::<ReasonLabels, Counter>::default();
        let checks = Family::<ResultLabels, Counter>::default();
        let hook_runs = Family::<HookResultLabels, Counter>::default();
        let hook_duration = Family::<HookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0])
        });
        let reloads = Family::<ReloadLabels, Counter>::default();
        let shadow = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cutover_rollout_weight",
            "NEW's share of the service's traffic, 0..100",
            rollout_weight.clone(),
        );
        registry.register(
            "cutover_rollout_step",
            "The current rollout step, 1-based (0 before the first)",
            rollout_step.clone(),
        );
        registry.register(
            "cutover_rollout_state",
            "1 for the rollout's current state",
            rollout_state.clone(),
        );
        registry.register(
            "cutover_rollbacks",
            "Rollbacks, by reason",
            rollbacks.clone(),
        );
        registry.register(
            "cutover_analysis_checks",
            "Analysis checks, by result",
            checks.clone(),
        );
        registry.register(
            "cutover_hook_runs",
            "Hook runs, by result",
            hook_runs.clone(),
        );
        registry.register(
            "cutover_hook_duration_seconds",
            "How long hook runs took",
            hook_duration.clone(),
        );
        registry.register(
            "cutover_config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "cutover_shadow_requests",
            "Mirrored requests, by comparison result (shadow steps are not available yet)",
            shadow.clone(),
        );
        registry.register_collector(Box::new(DataPlane {
            snapshot,
            listeners,
        }));
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        Metrics {
            registry,
            rollout_weight,
            rollout_step,
            rollout_state,
            rollbacks,
            checks,
            hook_runs,
            hook_duration,
            reloads,
            shadow,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            let _ = writeln!(text, "# encoding failed: {err}");
        }
        text
    }

    /// Sets the rollout gauges of a service.
    pub fn rollout(&self, service: &str, weight_percent: f64, step: usize, state: &str) {
        let labels = ServiceLabels {
            service: service.to_string(),
        };
        self.rollout_weight
            .get_or_create(&labels)
            .set(weight_percent);
        self.rollout_step.get_or_create(&labels).set(step as i64);
        for candidate in ROLLOUT_STATES {
            let value = i64::from(candidate == state);
            self.rollout_state
                .get_or_create(&StateLabels {
                    service: service.to_string(),
                    state: candidate,
                })
                .set(value);
        }
    }

    /// Makes the rollback, check and hook series of a service exist from the start at 0,
    /// so that `increase()` sees even the first one.
    pub fn register_service(&self, service: &str, hooks: &[String]) {
        for hook in hooks {
            for result in HookResult::ALL {
                let _ = self.hook_runs.get_or_create(&HookResultLabels {
                    service: service.to_string(),
                    hook: hook.clone(),
                    result: result.label(),
                });
            }
        }
        for reason in RollbackReason::ALL {
            let _ = self.rollbacks.get_or_create(&ReasonLabels {
                service: service.to_string(),
                reason: reason.label(),
            });
        }
        for result in ["pass", "fail", "inconclusive"] {
            let _ = self.checks.get_or_create(&ResultLabels {
                service: service.to_string(),
                result,
            });
        }
        for result in ["match", "mismatch", "error"] {
            let _ = self.shadow.get_or_create(&ResultLabels {
                service: service.to_string(),
                result,
            });
        }
    }

    pub fn rollback(&self, service: &str, reason: RollbackReason) {
        self.rollbacks
            .get_or_create(&ReasonLabels {
                service: service.to_string(),
                reason: reason.label(),
            })
            .inc();
    }

    pub fn check(&self, service: &str, result: &'static str) {
        self.checks
            .get_or_create(&ResultLabels {
                service: service.to_string(),
                result,
            })
            .inc();
    }

    pub fn hook_run(&self, service: &str, hook: &str, result: HookResult, seconds: f64) {
        self.hook_runs
            .get_or_create(&HookResultLabels {
                service: service.to_string(),
                hook: hook.to_string(),
                result: result.label(),
            })
            .inc();
        self.hook_duration
            .get_or_create(&HookLabels {
                service: service.to_string(),
                hook: hook.to_string(),
            })
            .observe(seconds);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }
}

/// Encodes the request path's counters from the current snapshot at scrape time.
struct DataPlane {
    snapshot: SharedSnapshot,
    listeners: Arc<Mutex<Vec<Arc<ListenerState>>>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane").finish_non_exhaustive()
    }
}

/// (service, pool kind, the pool, its counts) for every pool of the snapshot.
type PoolRow<'a> = (&'a str, &'static str, &'a Pool, PoolCounts);

impl Collector for DataPlane {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.load_full();
        let rows: Vec<PoolRow<'_>> = snapshot
            .routes
            .iter()
            .flat_map(|route| {
                let service = &*route.service.name;
                [&route.service.old, &route.service.new]
                    .map(|pool| (service, pool.kind.label(), pool, pool.stats.counts()))
            })
            .collect();

        let mut requests = encoder.encode_descriptor(
            "cutover_requests",
            "Requests answered, by pool and response class (error: no answer from the backend)",
            None,
            MetricType::Counter,
        )?;
        for (service, pool, _, counts) in &rows {
            for class in CodeClass::ALL {
                let labels = [
                    ("service", *service),
                    ("pool", *pool),
                    ("code", class.label()),
                ];
                requests
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(
                        &counts.responses[class as usize],
                        None,
                    )?;
            }
        }

        let mut durations = encoder.encode_descriptor(
            "cutover_request_duration_seconds",
            "Time from receiving a request to the backend's response head",
            None,
            MetricType::Histogram,
        )?;
        for (service, pool, _, counts) in &rows {
            let (buckets, count) = duration_buckets(counts);
            let sum = counts.latency_sum_us as f64 / 1e6;
            let labels = [("service", *service), ("pool", *pool)];
            durations
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut upstream = encoder.encode_descriptor(
            "cutover_upstream_errors",
            "Failures talking to backends, by kind",
            None,
            MetricType::Counter,
        )?;
        for (service, pool, _, counts) in &rows {
            for kind in UpstreamErrorKind::ALL {
                let labels = [
                    ("service", *service),
                    ("pool", *pool),
                    ("kind", kind.label()),
                ];
                upstream
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(
                        &counts.upstream_errors[kind as usize],
                        None,
                    )?;
            }
        }

        let now_ms = now_millis();
        let mut up = encoder.encode_descriptor(
            "cutover_backend_up",
            "1 when the backend takes traffic: healthy and not ejected",
            None,
            MetricType::Gauge,
        )?;
        for (service, pool_label, pool, _) in &rows {
            for backend in &pool.backends {
                let labels = [
                    ("service", *service),
                    ("pool", *pool_label),
                    ("backend", &*backend.addr),
                ];
                let value = i64::from(backend.is_available(now_ms));
                up.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }

        let mut connections = encoder.encode_descriptor(
            "cutover_connections_active",
            "Open client connections, by listener",
            None,
            MetricType::Gauge,
        )?;
        let listeners = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        for listener in listeners {
            let labels = [("listener", listener.name.as_str())];
            let value = listener.active.load(std::sync::atomic::Ordering::Relaxed);
            connections.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }
}

/// Cumulative counts at each exposed bound, and the total.
fn duration_buckets(counts: &PoolCounts) -> (Vec<(f64, u64)>, u64) {
    let mut buckets = Vec::with_capacity(DURATION_BOUNDS_US.len() + 1);
    let mut cumulative = 0u64;
    let mut next = 0usize;
    for bound in DURATION_BOUNDS_US {
        while next < LATENCY_EDGES_US.len() && LATENCY_EDGES_US[next] <= bound {
            cumulative += counts.latency[next];
            next += 1;
        }
        buckets.push((bound as f64 / 1e6, cumulative));
    }
    let total: u64 = counts.latency.iter().sum();
    buckets.push((f64::INFINITY, total));
    (buckets, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PoolStats;
    use std::time::Duration;

    #[test]
    fn duration_buckets_are_cumulative_at_exact_edges() {
        let stats = PoolStats::default();
        stats.record(CodeClass::Success, Duration::from_micros(900));
        stats.record(CodeClass::Success, Duration::from_micros(1_000));
        stats.record(CodeClass::Success, Duration::from_micros(1_001));
        stats.record(CodeClass::Success, Duration::from_secs(90));
        let (buckets, total) = duration_buckets(&stats.counts());
        assert_eq!(total, 4);
        assert_eq!(buckets[0], (0.001, 2), "le=1ms holds 0.9ms and exactly 1ms");
        assert_eq!(buckets[1], (0.0025, 3));
        assert_eq!(buckets[14], (60.0, 3));
        assert_eq!(buckets[15].1, 4, "+Inf holds everything");
    }

    #[test]
    fn the_exposition_has_every_family_with_spec_names() {
        let snapshot: SharedSnapshot = Arc::default();
        let metrics = Metrics::new(snapshot, Arc::default());
        metrics.register_service("api", &["alert".to_string(), "gate".to_string()]);
        metrics.rollout("api", 25.0, 2, "progressing");
        metrics.rollback("api", RollbackReason::Trip);
        metrics.hook_run("api", "alert", HookResult::Timeout, 5.0);
        metrics.reload(false);
        let text = metrics.encode();
        for needle in [
            "cutover_rollout_weight{service=\"api\"} 25.0",
            "cutover_rollout_step{service=\"api\"} 2",
            "cutover_rollout_state{service=\"api\",state=\"progressing\"} 1",
            "cutover_rollout_state{service=\"api\",state=\"paused\"} 0",
            "cutover_rollbacks_total{service=\"api\",reason=\"trip\"} 1",
            "cutover_analysis_checks_total{service=\"api\",result=\"pass\"} 0",
            "cutover_hook_runs_total{service=\"api\",hook=\"alert\",result=\"timeout\"} 1",
            "cutover_hook_runs_total{service=\"api\",hook=\"gate\",result=\"failed\"} 0",
            "cutover_hook_duration_seconds_count{service=\"api\",hook=\"alert\"} 1",
            "cutover_config_reloads_total{result=\"error\"} 1",
            "# TYPE cutover_requests counter",
            "# TYPE cutover_request_duration_seconds histogram",
            "# TYPE cutover_shadow_requests counter",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}

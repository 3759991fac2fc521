//! The controller's metrics (SPEC §6): rollout weight, step and state, rollbacks, checks,
//! hook runs, config reloads. They change a few times a second at most, so they are
//! ordinary prometheus-client families, registered in the registry `/metrics` encodes.
//!
//! Every label value comes from a closed enum; each series a dashboard's `increase()`
//! needs exists at 0 from the moment its service is registered.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::hooks::HookResult;
use crate::rollout::analysis::Verdict;
use crate::rollout::machine::{RollbackReason, ServiceState};

/// Results of a shadow copy.
const SHADOW_RESULTS: [&str; 5] = crate::shadow::RESULTS;

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

/// Handles on the controller's families; clones share the series.
#[derive(Clone, Debug)]
pub(crate) struct RolloutMetrics {
    rollout_weight: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    rollout_step: Family<ServiceLabels, Gauge>,
    rollout_state: Family<StateLabels, Gauge>,
    rollbacks: Family<ReasonLabels, Counter>,
    checks: Family<ResultLabels, Counter>,
    hook_runs: Family<HookResultLabels, Counter>,
    hook_duration: Family<HookLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    shadow: Family<ResultLabels, Counter>,
    history_errors: Family<ServiceLabels, Counter>,
}

impl RolloutMetrics {
    /// Creates the families and registers them in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> RolloutMetrics {
        let metrics = RolloutMetrics {
            rollout_weight: Family::default(),
            rollout_step: Family::default(),
            rollout_state: Family::default(),
            rollbacks: Family::default(),
            checks: Family::default(),
            hook_runs: Family::default(),
            hook_duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0])
            }),
            reloads: Family::default(),
            shadow: Family::default(),
            history_errors: Family::default(),
        };
        let m = metrics.clone();
        registry.register(
            "cutover_rollout_weight",
            "NEW's share of the service's traffic, 0..100",
            m.rollout_weight,
        );
        registry.register(
            "cutover_rollout_step",
            "The current rollout step, 1-based (0 before the first)",
            m.rollout_step,
        );
        registry.register(
            "cutover_rollout_state",
            "1 for the rollout's current state",
            m.rollout_state,
        );
        registry.register("cutover_rollbacks", "Rollbacks, by reason", m.rollbacks);
        registry.register(
            "cutover_analysis_checks",
            "Analysis checks, by result",
            m.checks,
        );
        registry.register("cutover_hook_runs", "Hook runs, by result", m.hook_runs);
        registry.register(
            "cutover_hook_duration_seconds",
            "How long hook runs took",
            m.hook_duration,
        );
        registry.register(
            "cutover_config_reloads",
            "Config reloads, by result",
            m.reloads,
        );
        registry.register(
            "cutover_shadow_requests",
            "Requests copied to NEW by a shadow step, by comparison result",
            m.shadow,
        );
        registry.register(
            "cutover_history_write_errors",
            "Decision-log records that could not be written (SPEC §10)",
            m.history_errors,
        );
        for result in ["ok", "error"] {
            let _ = metrics.reloads.get_or_create(&ReloadLabels { result });
        }
        metrics
    }

    /// A decision-log record of `service` was lost.
    pub(crate) fn history_error(&self, service: &str) {
        self.history_errors
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .inc();
    }

    #[cfg(test)]
    pub(crate) fn history_errors_of(&self, service: &str) -> u64 {
        self.history_errors
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .get()
    }

    /// Sets the rollout gauges of a service.
    pub(crate) fn rollout(
        &self,
        service: &str,
        weight_percent: f64,
        step: usize,
        state: ServiceState,
    ) {
        let labels = ServiceLabels {
            service: service.to_string(),
        };
        self.rollout_weight
            .get_or_create(&labels)
            .set(weight_percent);
        self.rollout_step.get_or_create(&labels).set(step as i64);
        for candidate in ServiceState::ALL {
            let labels = StateLabels {
                service: service.to_string(),
                state: candidate.as_str(),
            };
            let value = i64::from(candidate == state);
            self.rollout_state.get_or_create(&labels).set(value);
        }
    }

    /// Drops the rollout gauges of a service a reload removed: its last weight, step and
    /// state would otherwise be exported, and alerted on, until a restart. Its counters stay
    /// (a count that vanishes reads as a reset).
    pub(crate) fn forget_service(&self, service: &str) {
        let labels = ServiceLabels {
            service: service.to_string(),
        };
        self.rollout_weight.remove(&labels);
        self.rollout_step.remove(&labels);
        for state in ServiceState::ALL {
            self.rollout_state.remove(&StateLabels {
                service: service.to_string(),
                state: state.as_str(),
            });
        }
    }

    /// Makes the rollback, check and hook series of a service exist from the start at 0,
    /// so that `increase()` sees even the first one.
    pub(crate) fn register_service(&self, service: &str, hooks: &[String]) {
        let _ = self.history_errors.get_or_create(&ServiceLabels {
            service: service.to_string(),
        });
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
            let _ = self
                .rollbacks
                .get_or_create(&reason_labels(service, reason));
        }
        for verdict in Verdict::ALL {
            let _ = self
                .checks
                .get_or_create(&result_labels(service, verdict.label()));
        }
        for result in SHADOW_RESULTS {
            let _ = self.shadow.get_or_create(&result_labels(service, result));
        }
    }

    /// The counters a shadow copier increments, in the order of `shadow::RESULTS`.
    pub(crate) fn shadow_counters(&self, service: &str) -> [Counter; 5] {
        SHADOW_RESULTS.map(|result| {
            self.shadow
                .get_or_create(&result_labels(service, result))
                .clone()
        })
    }

    pub(crate) fn rollback(&self, service: &str, reason: RollbackReason) {
        self.rollbacks
            .get_or_create(&reason_labels(service, reason))
            .inc();
    }

    pub(crate) fn check(&self, service: &str, verdict: Verdict) {
        self.checks
            .get_or_create(&result_labels(service, verdict.label()))
            .inc();
    }

    pub(crate) fn hook_run(&self, service: &str, hook: &str, result: HookResult, seconds: f64) {
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

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }
}

fn reason_labels(service: &str, reason: RollbackReason) -> ReasonLabels {
    ReasonLabels {
        service: service.to_string(),
        reason: reason.label(),
    }
}

fn result_labels(service: &str, result: &'static str) -> ResultLabels {
    ResultLabels {
        service: service.to_string(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: impl FnOnce(&RolloutMetrics)) -> String {
        let mut registry = Registry::default();
        let rollout = RolloutMetrics::register(&mut registry);
        metrics(&rollout);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn the_exposition_has_every_family_with_spec_names() {
        let text = exposition(|metrics| {
            metrics.register_service("api", &["alert".to_string(), "gate".to_string()]);
            metrics.rollout("api", 25.0, 2, ServiceState::Progressing);
            metrics.rollback("api", RollbackReason::Trip);
            metrics.hook_run("api", "alert", HookResult::Timeout, 5.0);
            metrics.reload(false);
        });
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
            "# TYPE cutover_shadow_requests counter",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    #[test]
    fn state_labels_are_the_serde_spelling() {
        let text = exposition(|metrics| metrics.rollout("api", 0.0, 0, ServiceState::RolledBack));
        for state in ServiceState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
            assert!(text.contains(&format!("state={json}")), "{state}: {text}");
        }
    }

    #[test]
    fn hook_durations_are_cumulative_and_end_at_plus_inf() {
        let text = exposition(|metrics| {
            for seconds in [0.005, 0.05, 0.05, 2.0, 7200.0] {
                metrics.hook_run("api", "gate", HookResult::Ok, seconds);
            }
        });
        let series = |le: &str| {
            format!(
                "cutover_hook_duration_seconds_bucket{{le=\"{le}\",service=\"api\",hook=\"gate\"}}"
            )
        };
        for (le, count) in [
            ("0.01", 1),
            ("0.1", 3),
            ("1.0", 3),
            ("5.0", 4),
            ("3600.0", 4),
            ("+Inf", 5),
        ] {
            let line = format!("{} {count}", series(le));
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }
}

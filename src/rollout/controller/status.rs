//! What `GET /status` returns (SPEC §5), and its projection from the controller's state.
//!
//! States, causes, reasons and verdicts are the rollout's own enums: they serialize with
//! the spelling of the state file, the hook payloads and the metric labels.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{RolloutRun, ServiceRun};
use crate::rollout::analysis::{Check, PoolMeasure, Verdict};
use crate::rollout::machine::{PauseCause, Phase, RollbackReason, ServiceState};
use crate::upstream::now_millis;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub config: ConfigStatus,
    /// Fleet mode only (SPEC §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// The `fleet` block: who leads, whether this instance reaches etcd, and every member.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The etcd key prefix the fleet shares (`fleet.prefix`).
    pub prefix: String,
    /// This instance's id.
    pub instance: String,
    /// The instance that holds the leader lease, as this one last saw it.
    pub leader: Option<String>,
    /// This instance's etcd session is up.
    pub connected: bool,
    /// Why the leader does not advance, when it does not.
    pub blocked: Option<String>,
    /// The instances whose published records this one has seen.
    pub instances: Vec<FleetMember>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetMember {
    pub id: String,
    /// When its last record was published (RFC 3339).
    pub last_seen: String,
    /// Seconds since this instance received its last record.
    pub age_s: f64,
    pub config_hash: String,
    pub version: String,
    /// Its numbers are too old to judge traffic on.
    pub stale: bool,
    /// It runs the config this instance runs (same hash).
    #[serde(default)]
    pub config_agrees: bool,
    /// NEW's share (percent) it routes at, by service, as it last reported.
    #[serde(default)]
    pub weights: std::collections::BTreeMap<String, f64>,
    /// Services it tripped to 0% on its own while cut off from etcd, until the leader acts.
    #[serde(default)]
    pub local_trips: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    /// 1-based; 0 before the first step and for static services.
    pub step: usize,
    pub steps: usize,
    pub step_description: Option<String>,
    /// NEW's share, in percent.
    pub weight: f64,
    pub hold_remaining_s: Option<f64>,
    pub next_weight: Option<f64>,
    pub last_check: Option<CheckStatus>,
    pub consecutive_failures: u32,
    pub failure_threshold: Option<u32>,
    pub reason: Option<String>,
    pub rollback_reason: Option<RollbackReason>,
    pub pause_cause: Option<PauseCause>,
    pub point_of_no_return_passed: bool,
    pub run_id: Option<String>,
    pub hooks: Vec<HookStatus>,
    pub backends: Vec<BackendStatus>,
    /// The last shadow step's comparisons (SPEC §9); also `GET /services/{name}/shadow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Counts the service's checks since the process started: two checks with the same
    /// numbers are still two checks.
    pub seq: u64,
    /// When it was made (RFC 3339).
    pub at: String,
    /// `result` is `pass`.
    pub passed: bool,
    pub result: Verdict,
    /// What each pool did over the check's window.
    pub new: PoolMeasure,
    pub old: PoolMeasure,
    /// The rules NEW broke, each with its numbers.
    pub breaches: Vec<String>,
    /// Why the check was inconclusive, or what its numbers cover.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookStatus {
    pub name: String,
    pub runs: u64,
    pub running: bool,
    /// The event (or `gate` / `run`) of the last run.
    pub last_event: Option<String>,
    /// ok, failed or timeout.
    pub last_result: Option<String>,
    pub last_detail: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub last_at: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStatus {
    pub pool: String,
    pub addr: String,
    /// Takes traffic: healthy and not ejected.
    pub up: bool,
    pub healthy: bool,
    pub ejected: bool,
    pub in_flight: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    pub loaded_at: String,
    pub version: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// RFC 3339 time, to the second.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

pub(super) fn check_status(seq: u64, at: SystemTime, check: &Check) -> CheckStatus {
    CheckStatus {
        seq,
        at: timestamp(at),
        passed: check.verdict == Verdict::Pass,
        result: check.verdict,
        new: check.new,
        old: check.old,
        breaches: check.breaches.iter().map(|b| b.text.clone()).collect(),
        note: check.note.clone(),
    }
}

/// The status of one service as it is now.
pub(super) fn service_status(service: &ServiceRun) -> ServiceStatus {
    let static_status = ServiceStatus {
        name: service.config.name.clone(),
        state: ServiceState::Static,
        step: 0,
        steps: 0,
        step_description: None,
        weight: service.config.weight.percent(),
        hold_remaining_s: None,
        next_weight: None,
        last_check: None,
        consecutive_failures: 0,
        failure_threshold: None,
        reason: None,
        rollback_reason: None,
        pause_cause: None,
        point_of_no_return_passed: false,
        run_id: None,
        hooks: service.hooks.values().cloned().collect(),
        backends: backends(service),
        shadow: service.shadow.as_ref().map(|c| c.report()),
    };
    match &service.rollout {
        None => static_status,
        Some(run) => rollout_status(run, static_status),
    }
}

fn rollout_status(run: &RolloutRun, base: ServiceStatus) -> ServiceStatus {
    let state = &run.state;
    let plan = &run.plan;
    let started = state.phase != Phase::Pending;
    // Only a rollout that is going somewhere has a next weight and a hold; a rolled back
    // or promoted one has neither, whatever step it stopped at.
    let moving = matches!(
        state.phase,
        Phase::Pending | Phase::Progressing | Phase::Paused
    );
    // After a rollback, a check that did not fail is history that contradicts the state;
    // the failing check that caused it is the explanation and stays.
    let last_check = run
        .last_check
        .as_ref()
        .filter(|(_, check)| state.phase != Phase::RolledBack || check.verdict == Verdict::Fail)
        .map(|(at, check)| check_status(run.checks, *at, check));
    ServiceStatus {
        state: state.shown_state(plan),
        step: if started {
            (state.step + 1).min(plan.steps.len())
        } else {
            0
        },
        steps: plan.steps.len(),
        step_description: plan
            .steps
            .get(state.step)
            .filter(|_| started)
            .map(|s| s.describe()),
        weight: state.weight.percent(),
        hold_remaining_s: state
            .hold_remaining(plan)
            .filter(|_| moving)
            .map(|d| d.as_secs_f64()),
        next_weight: plan
            .next_weight(state.step, state.weight)
            .filter(|_| moving)
            .map(|w| w.percent()),
        last_check,
        consecutive_failures: state.consecutive_failures,
        failure_threshold: plan.analysis.as_ref().map(|a| a.failure_threshold),
        reason: state.reason.clone(),
        rollback_reason: state.rollback_reason,
        pause_cause: state.pause_cause,
        point_of_no_return_passed: state.point_of_no_return_passed,
        run_id: Some(state.run_id.clone()).filter(|id| !id.is_empty()),
        ..base
    }
}

fn backends(service: &ServiceRun) -> Vec<BackendStatus> {
    let now_ms = now_millis();
    [&service.route.old, &service.route.new]
        .into_iter()
        .flat_map(|pool| {
            pool.backends.iter().map(move |b| BackendStatus {
                pool: pool.kind.label().to_string(),
                addr: b.addr.to_string(),
                up: b.is_available(now_ms),
                healthy: b.is_healthy(),
                ejected: b.is_ejected(now_ms),
                in_flight: b.in_flight(),
            })
        })
        .collect()
}

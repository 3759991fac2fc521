//! The decision log's records: one JSON object a line, the format `cutover history` and
//! `cutover report` read.
//!
//! This is a file format that outlives the process that wrote it, so it is its own set of
//! types (states and verdicts as plain strings and small enums) rather than the controller's
//! internal ones: those may change shape, old history files must still read. Unknown
//! fields are ignored on reading for the same reason, and every entry carries `v`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The format version written in every entry.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// One line of the history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub v: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub service: String,
    /// NEW's share when the decision was taken, in percent.
    pub weight: f64,
    /// The step index (0-based) the rollout was on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    #[serde(flatten)]
    pub decision: Decision,
}

impl Entry {
    pub(crate) fn new(
        at: OffsetDateTime,
        service: &str,
        weight: f64,
        step: Option<usize>,
        decision: Decision,
    ) -> Entry {
        Entry {
            v: FORMAT_VERSION,
            at,
            service: service.to_string(),
            weight,
            step,
            decision,
        }
    }
}

/// Who or what took a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub(crate) enum DecidedBy {
    /// The schedule: a hold ran out and the last check passed.
    Schedule,
    /// The analysis: checks or the trip.
    Analysis,
    /// An operator, through the admin API.
    Operator { client: String },
    /// A hook's result.
    Hook { hook: String },
    /// A configuration change.
    Config,
    /// The proxy starting (a resumed rollout, `start: auto`).
    Startup,
}

impl DecidedBy {
    /// `operator 10.0.0.7:51234`, `hook switch-writes`, `analysis`.
    pub(crate) fn describe(&self) -> String {
        match self {
            DecidedBy::Schedule => "schedule".to_string(),
            DecidedBy::Analysis => "analysis".to_string(),
            DecidedBy::Operator { client } => format!("operator {client}"),
            DecidedBy::Hook { hook } => format!("hook {hook}"),
            DecidedBy::Config => "config change".to_string(),
            DecidedBy::Startup => "startup".to_string(),
        }
    }
}

/// Every kind of decision SPEC §10 lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Decision {
    Check(CheckRecord),
    Trip(TripRecord),
    /// The rollout moved to another step or weight.
    Step(StepRecord),
    /// The rollout's state changed (paused, resumed, promoted, rolled back, …).
    State(StateRecord),
    Operator(OperatorRecord),
    Hook(HookRecord),
    Verify(ProbeRecord),
    Shadow(ProbeRecord),
    Reload(ReloadRecord),
}

impl Decision {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Decision::Check(_) => "check",
            Decision::Trip(_) => "trip",
            Decision::Step(_) => "step",
            Decision::State(_) => "state",
            Decision::Operator(_) => "operator",
            Decision::Hook(_) => "hook",
            Decision::Verify(_) => "verify",
            Decision::Shadow(_) => "shadow",
            Decision::Reload(_) => "reload",
        }
    }
}

/// The analysis method a check used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Method {
    Threshold,
    Statistical,
}

/// The verdict of a check or of one rule in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Pass,
    Fail,
    Inconclusive,
    /// The rule could not be applied (OLD has too little traffic to compare with).
    Skipped,
}

names! {
    Outcome: pub(crate) fn label {
        Pass => "pass",
        Fail => "fail",
        Inconclusive => "inconclusive",
        Skipped => "skipped",
    }
}

/// One pool's side of a check: what the analysis judged, `/status` shows and the decision
/// log keeps (measured by `rollout::analysis`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolMeasure {
    pub requests: u64,
    pub errors: u64,
    /// `errors / requests`, as a fraction; 0 without requests.
    pub error_rate: f64,
    /// `None`: no latency samples.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

/// The rules a check applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rule {
    /// NEW's error rate against `max_error_rate` (a fraction).
    MaxErrorRate,
    /// NEW's error rate minus OLD's against `max_error_rate_increase` (a fraction).
    MaxErrorRateIncrease,
    /// NEW's p99 against `max_p99_latency` (milliseconds).
    MaxP99Latency,
    /// NEW's p99 over OLD's against `max_p99_latency_ratio` (statistical: bounds on both).
    MaxP99LatencyRatio,
    /// Statistical method: the probability that a NEW request is slower than an OLD one
    /// scaled by `max_p99_latency_ratio` (Mann-Whitney U); the bound is 0.5.
    LatencyVsOld,
}

names! {
    Rule: pub(crate) fn label {
        MaxErrorRate => "max_error_rate",
        MaxErrorRateIncrease => "max_error_rate_increase",
        MaxP99Latency => "max_p99_latency",
        MaxP99LatencyRatio => "max_p99_latency_ratio",
        LatencyVsOld => "latency_vs_old",
    }
}

impl Rule {
    /// Whether the rule compares NEW with OLD (and so needs OLD's traffic).
    pub(crate) fn compares_with_old(self) -> bool {
        matches!(
            self,
            Rule::MaxErrorRateIncrease | Rule::MaxP99LatencyRatio | Rule::LatencyVsOld
        )
    }
}

/// A confidence as a percentage, with decimals only where it has them (99, 99.5): the
/// newest-requests judgement runs at 99.5% when the checks run at 99%, and a rounded
/// "100%" would say what no check can.
pub(crate) fn confidence_percent(confidence: f64) -> String {
    // Hundredths of a percent: `confidence: 99.9%` judges the newest requests at 99.95%.
    let text = format!("{:.2}", confidence * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A one-sided confidence statement: with `confidence`, the true value is at least
/// `lower` and (separately) at most `upper`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bound {
    pub confidence: f64,
    pub lower: f64,
    pub upper: f64,
}

/// One rule's judgement with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleRecord {
    pub rule: Rule,
    pub outcome: Outcome,
    /// The point estimate (units: see [`Rule`]); `None` when there was nothing to measure.
    #[serde(default)]
    pub measured: Option<f64>,
    pub threshold: f64,
    pub new_requests: u64,
    pub old_requests: u64,
    /// Statistical method only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Bound>,
    /// Statistical method, latency: the one-sided p-value of the test that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckRecord {
    pub method: Method,
    pub outcome: Outcome,
    /// The window the check looked at, in seconds.
    pub window_s: f64,
    pub new: PoolMeasure,
    pub old: PoolMeasure,
    pub rules: Vec<RuleRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Failed checks in a row, this one included.
    #[serde(default)]
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TripRecord {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub threshold: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepRecord {
    #[serde(default)]
    pub from_step: Option<usize>,
    pub to_step: usize,
    /// `weight 25%`, `gate replication-caught-up`, `pause`, …
    pub description: String,
    pub from_weight: f64,
    pub to_weight: f64,
    #[serde(flatten)]
    pub by: DecidedBy,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub by: DecidedBy,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OperatorRecord {
    /// `pause`, `resume`, `promote --full`, `set-weight 30%`, `rollback`, `retry`, …
    pub command: String,
    pub client: String,
    /// Whether the command was accepted, and why not.
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HookRecord {
    pub hook: String,
    /// The event (`rollback`, `promoted`, …) or the step kind (`gate`, `run`).
    pub event: String,
    pub ok: bool,
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    #[serde(default)]
    pub attempt: u32,
    /// The last bytes of the hook's output (or an HTTP hook's status and body).
    #[serde(default)]
    pub output_tail: String,
}

/// A `verify` or `shadow` step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProbeRecord {
    pub name: String,
    pub passed: bool,
    pub total: u64,
    pub failed: u64,
    /// What failed, in a few lines.
    #[serde(default)]
    pub detail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReloadRecord {
    pub ok: bool,
    /// What changed (`steps`, `analysis`, `backends new`, …), or the errors.
    pub changes: Vec<String>,
    #[serde(flatten)]
    pub by: DecidedBy,
}

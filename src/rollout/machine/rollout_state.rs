//! What a rollout is, persisted and shown: its state (`RolloutState`, the state file's
//! content) and the enums it is described with. Each enum's `as_str` is its serde
//! spelling, so the state file, /status, hook payloads, metric labels and the CLI agree.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Weight;
use crate::rollout::schedule::{Plan, PlannedKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Pending,
    Progressing,
    Paused,
    Promoted,
    RolledBack,
}

impl Phase {
    pub(crate) fn label(self) -> &'static str {
        self.shown().as_str()
    }

    /// The state people see for this phase, away from a gate.
    fn shown(self) -> ServiceState {
        match self {
            Phase::Pending => ServiceState::Pending,
            Phase::Progressing => ServiceState::Progressing,
            Phase::Paused => ServiceState::Paused,
            Phase::Promoted => ServiceState::Promoted,
            Phase::RolledBack => ServiceState::RolledBack,
        }
    }
}

/// What a service is doing, as /status, hook payloads, metrics and the CLI show it: the
/// phase, `waiting` for a progressing rollout at a gate, `static` without a rollout.
/// `as_str` is the serde spelling (a test holds them together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Pending,
    Progressing,
    Waiting,
    Paused,
    Promoted,
    RolledBack,
    Static,
}

names! {
    ServiceState: pub fn as_str, pub const ALL {
        Pending => "pending",
        Progressing => "progressing",
        Waiting => "waiting",
        Paused => "paused",
        Promoted => "promoted",
        RolledBack => "rolled_back",
        Static => "static",
    }
}

impl ServiceState {
    /// Whether the rollout is over, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(self, ServiceState::Promoted | ServiceState::RolledBack)
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for ServiceState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a rollout is paused; decides what `resume` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseCause {
    Manual,
    PauseStep,
    SetWeight,
    GateDeadline,
    Analysis,
    Trip,
    Hook,
    /// The checks of a step stayed inconclusive for `max_wait` (SPEC §10).
    NotEnoughEvidence,
}

names! {
    PauseCause: pub fn as_str {
        Manual => "manual",
        PauseStep => "pause_step",
        SetWeight => "set_weight",
        GateDeadline => "gate_deadline",
        Analysis => "analysis",
        Trip => "trip",
        Hook => "hook",
        NotEnoughEvidence => "not_enough_evidence",
    }
}

/// `cutover_rollbacks_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    Analysis,
    Trip,
    Manual,
    Hook,
    Gate,
    /// A `verify` step's smoke request failed.
    Verify,
    /// A `shadow` step's mismatch rate was too high.
    Shadow,
}

names! {
    RollbackReason: pub fn label, pub const ALL {
        Analysis => "analysis",
        Trip => "trip",
        Manual => "manual",
        Hook => "hook",
        Gate => "gate",
        Verify => "verify",
        Shadow => "shadow",
    }
}

/// The outcome of a step's hook, kept with the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepHookRecord {
    pub ok: bool,
    pub attempts: u32,
}

/// Everything about a rollout that must survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RolloutState {
    pub phase: Phase,
    /// 0-based index of the current step.
    pub step: usize,
    /// NEW's weight, in basis points.
    pub weight: Weight,
    pub hold_observed_ms: u64,
    /// `hold_observed_ms` when the step's checks were last conclusive (or it began, or it
    /// resumed from "not enough evidence"): inconclusive since then. `None` in a state
    /// saved before it was kept: the wait then counts from the next inconclusive check,
    /// not from the step's start (which would pause a long realignment at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecided_from_ms: Option<u64>,
    pub gate_elapsed_ms: u64,
    pub gate_wait_ms: u64,
    pub run_attempts: u32,
    pub consecutive_failures: u32,
    /// Whether the last check of the current step passed.
    pub last_check_passed: bool,
    pub point_of_no_return_passed: bool,
    pub pause_cause: Option<PauseCause>,
    pub rollback_reason: Option<RollbackReason>,
    /// What the last transition was about, for people.
    pub reason: Option<String>,
    pub run_id: String,
    pub steps_fingerprint: String,
    /// Step hooks' outcomes, by `step:hook`.
    pub hooks: BTreeMap<String, StepHookRecord>,
    /// The steps changed (or the weight was set by hand): continue from the first step
    /// above the current weight after the next passing check.
    pub realign: bool,
    /// A step hook is running; not persisted, so a restart runs it again.
    #[serde(skip)]
    pub hook_in_flight: bool,
    /// The rollback's `rollback` hooks have not all finished: saved with the rollback, so
    /// that a process that stops or crashes before they end leaves them to the next one,
    /// which runs them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_hooks_pending: bool,
}

impl RolloutState {
    pub(crate) fn new(plan: &Plan, initial: Weight) -> RolloutState {
        RolloutState {
            phase: Phase::Pending,
            step: 0,
            weight: initial,
            hold_observed_ms: 0,
            undecided_from_ms: Some(0),
            gate_elapsed_ms: 0,
            gate_wait_ms: 0,
            run_attempts: 0,
            consecutive_failures: 0,
            last_check_passed: false,
            point_of_no_return_passed: false,
            pause_cause: None,
            rollback_reason: None,
            reason: None,
            run_id: String::new(),
            steps_fingerprint: plan.fingerprint.clone(),
            hooks: BTreeMap::new(),
            realign: false,
            hook_in_flight: false,
            rollback_hooks_pending: false,
        }
    }

    /// Whether checks and the trip run: NEW gets traffic and the outcome can change things.
    pub(crate) fn is_watched(&self) -> bool {
        matches!(self.phase, Phase::Progressing | Phase::Paused) && self.weight > Weight::ZERO
    }

    /// `progressing` at a gate is shown as `waiting`.
    pub(crate) fn shown_state(&self, plan: &Plan) -> ServiceState {
        let at_gate = matches!(
            plan.steps.get(self.step).map(|s| &s.kind),
            Some(PlannedKind::Gate { .. })
        );
        if self.phase == Phase::Progressing && at_gate && !self.realign {
            ServiceState::Waiting
        } else {
            self.phase.shown()
        }
    }

    /// What is left of the current weight step's hold; none while realigning (the step
    /// it will go on to is not known until a check passes).
    pub(crate) fn hold_remaining(&self, plan: &Plan) -> Option<Duration> {
        match plan.steps.get(self.step).map(|s| &s.kind) {
            Some(PlannedKind::Weight { hold, .. })
                if (self.phase == Phase::Progressing || self.phase == Phase::Paused)
                    && !self.realign =>
            {
                Some(hold.saturating_sub(Duration::from_millis(self.hold_observed_ms)))
            }
            _ => None,
        }
    }
}

impl RolloutState {
    /// How much more running time until time alone changes something: a hold ends, a gate
    /// is polled again or reaches its deadline. `None` while only an input can (a check, a
    /// hook's result, an operator).
    pub(crate) fn running_time_until_due(&self, plan: &Plan) -> Option<Duration> {
        if self.phase != Phase::Progressing || self.realign {
            return None;
        }
        let millis = Duration::from_millis;
        let due = match &plan.steps.get(self.step)?.kind {
            PlannedKind::Weight { hold, .. } => hold.saturating_sub(millis(self.hold_observed_ms)),
            PlannedKind::Gate { .. } if self.hook_in_flight => return None,
            PlannedKind::Gate { deadline, .. } => {
                let poll = millis(self.gate_wait_ms);
                deadline.map_or(poll, |d| {
                    d.saturating_sub(millis(self.gate_elapsed_ms)).min(poll)
                })
            }
            _ => return None,
        };
        // A hold that is over waits for a passing check, not for time.
        (!due.is_zero() || matches!(plan.steps[self.step].kind, PlannedKind::Gate { .. }))
            .then_some(due)
    }
}

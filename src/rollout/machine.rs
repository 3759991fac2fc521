//! The rollout state machine: state + input → new state + effects (SPEC §3).
//!
//! Pure: no clock (time arrives as `Tick`s of observed running time), no I/O (hooks and
//! routing changes leave as `Effect`s for the controller to carry out), no randomness
//! (run ids come with the inputs that start a run).
//!
//! States: `pending` → `progressing` ⇄ `paused` → `promoted`; any active state →
//! `rolled_back`, latched until `retry` or a change to the steps.
//!
//! Rules worth knowing when reading the code:
//! - A weight step completes when its hold has been observed while running AND the last
//!   check of this step passed (with no analysis configured, or at weight 0, the hold
//!   alone). Inconclusive checks extend the step; they never fail it.
//! - `failure_threshold` failed checks in a row roll back; a passing check resets the
//!   count. A trip rolls back at once. After a passed point of no return both pause
//!   instead.
//! - Pausing freezes the hold clock and the gate deadline; checks keep running, so a
//!   paused rollout still rolls back if NEW breaks.
//! - A `run` hook that succeeded is recorded and never run again for this run id, even
//!   after a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::analysis::Verdict;
use super::schedule::{Plan, PlannedKind};
use crate::config::{HookEvent, OnDeadline, Weight};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Progressing,
    Paused,
    Promoted,
    RolledBack,
}

impl Phase {
    pub fn label(self) -> &'static str {
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

impl ServiceState {
    pub const ALL: [ServiceState; 7] = [
        ServiceState::Pending,
        ServiceState::Progressing,
        ServiceState::Waiting,
        ServiceState::Paused,
        ServiceState::Promoted,
        ServiceState::RolledBack,
        ServiceState::Static,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::Progressing => "progressing",
            ServiceState::Waiting => "waiting",
            ServiceState::Paused => "paused",
            ServiceState::Promoted => "promoted",
            ServiceState::RolledBack => "rolled_back",
            ServiceState::Static => "static",
        }
    }

    /// Whether the rollout is over, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(self, ServiceState::Promoted | ServiceState::RolledBack)
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
}

impl PauseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseCause::Manual => "manual",
            PauseCause::PauseStep => "pause_step",
            PauseCause::SetWeight => "set_weight",
            PauseCause::GateDeadline => "gate_deadline",
            PauseCause::Analysis => "analysis",
            PauseCause::Trip => "trip",
            PauseCause::Hook => "hook",
        }
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
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 5] = [
        RollbackReason::Analysis,
        RollbackReason::Trip,
        RollbackReason::Manual,
        RollbackReason::Hook,
        RollbackReason::Gate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RollbackReason::Analysis => "analysis",
            RollbackReason::Trip => "trip",
            RollbackReason::Manual => "manual",
            RollbackReason::Hook => "hook",
            RollbackReason::Gate => "gate",
        }
    }
}

/// The outcome of a step's hook, kept with the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepHookRecord {
    pub ok: bool,
    pub attempts: u32,
}

/// Everything about a rollout that must survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// 0-based index of the current step.
    pub step: usize,
    /// NEW's weight, in basis points.
    pub weight: Weight,
    pub hold_observed_ms: u64,
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
}

impl RolloutState {
    pub fn new(plan: &Plan, initial: Weight) -> RolloutState {
        RolloutState {
            phase: Phase::Pending,
            step: 0,
            weight: initial,
            hold_observed_ms: 0,
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
        }
    }

    /// Whether checks and the trip run: NEW gets traffic and the outcome can change things.
    pub fn is_watched(&self) -> bool {
        matches!(self.phase, Phase::Progressing | Phase::Paused) && self.weight > Weight::ZERO
    }

    /// `progressing` at a gate is shown as `waiting`.
    pub fn shown_state(&self, plan: &Plan) -> ServiceState {
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

    /// What is left of the current weight step's hold.
    pub fn hold_remaining(&self, plan: &Plan) -> Option<Duration> {
        match plan.steps.get(self.step).map(|s| &s.kind) {
            Some(PlannedKind::Weight { hold, .. })
                if self.phase == Phase::Progressing || self.phase == Phase::Paused =>
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
    pub fn running_time_until_due(&self, plan: &Plan) -> Option<Duration> {
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

/// What can happen to a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start {
        run_id: String,
    },
    Pause,
    Resume,
    Promote {
        full: bool,
    },
    Rollback,
    Retry {
        run_id: String,
    },
    SetWeight(Weight),
    /// Running time observed since the last tick.
    Tick(Duration),
    Check {
        verdict: Verdict,
        summary: String,
    },
    Trip {
        reason: String,
    },
    HookFinished {
        step: usize,
        hook: String,
        ok: bool,
        detail: String,
    },
    /// The plan's steps are not those the state was made with.
    StepsChanged {
        run_id: String,
    },
    /// The state was just read from disk: carry on where it was.
    Restored,
}

/// What the controller must do after a transition (the state is persisted first).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Route NEW's share at this weight.
    Publish(Weight),
    RunStepHook {
        step: usize,
        hook: String,
        attempt: u32,
    },
    /// `step` (1-based), `weight` and `state` are as they were when the event happened:
    /// one input can move through several steps, and each event's hooks must see its own.
    Event {
        event: HookEvent,
        reason: String,
        step: usize,
        weight: Weight,
        state: ServiceState,
    },
    /// Counted in `cutover_rollbacks_total`.
    RolledBack(RollbackReason),
}

/// A transition that makes no sense now (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

/// Applies `input`. On success the state has changed and the effects are to be carried
/// out; a refusal leaves the state exactly as it was.
pub fn apply(plan: &Plan, state: &mut RolloutState, input: Input) -> Result<Vec<Effect>, Refusal> {
    let mut next = state.clone();
    let mut machine = Machine {
        plan,
        state: &mut next,
        effects: Vec::new(),
    };
    machine.apply(input)?;
    let effects = machine.effects;
    *state = next;
    Ok(effects)
}

struct Machine<'a> {
    plan: &'a Plan,
    state: &'a mut RolloutState,
    effects: Vec<Effect>,
}

impl Machine<'_> {
    fn apply(&mut self, input: Input) -> Result<(), Refusal> {
        match input {
            Input::Start { run_id } => self.start(run_id),
            Input::Pause => self.pause_manually(),
            Input::Resume => self.resume(),
            Input::Promote { full } => self.promote(full),
            Input::Rollback => self.rollback_manually(),
            Input::Retry { run_id } => self.retry(run_id),
            Input::SetWeight(weight) => self.set_weight(weight),
            Input::Tick(elapsed) => {
                self.tick(elapsed);
                Ok(())
            }
            Input::Check { verdict, summary } => {
                self.check(verdict, summary);
                Ok(())
            }
            Input::Trip { reason } => {
                self.trip(reason);
                Ok(())
            }
            Input::HookFinished {
                step,
                hook,
                ok,
                detail,
            } => {
                self.hook_finished(step, &hook, ok, detail);
                Ok(())
            }
            Input::StepsChanged { run_id } => {
                self.steps_changed(run_id);
                Ok(())
            }
            Input::Restored => {
                self.restored();
                Ok(())
            }
        }
    }

    fn event(&mut self, event: HookEvent, reason: impl Into<String>) {
        let reason = reason.into();
        self.state.reason = Some(reason.clone());
        self.effects.push(Effect::Event {
            event,
            reason,
            step: (self.state.step + 1).min(self.plan.steps.len()),
            weight: self.state.weight,
            state: self.state.shown_state(self.plan),
        });
    }

    fn publish(&mut self, weight: Weight) {
        self.state.weight = weight;
        self.effects.push(Effect::Publish(weight));
    }

    fn current(&self) -> Option<&PlannedKind> {
        self.plan.steps.get(self.state.step).map(|s| &s.kind)
    }

    fn record_key(&self, step: usize, hook: &str) -> String {
        format!("{step}:{hook}")
    }

    fn hook_succeeded(&self, step: usize) -> bool {
        let Some(hook) = self.plan.steps.get(step).and_then(|s| s.hook()) else {
            return false;
        };
        self.state
            .hooks
            .get(&self.record_key(step, hook))
            .is_some_and(|r| r.ok)
    }

    fn start(&mut self, run_id: String) -> Result<(), Refusal> {
        if self.state.phase != Phase::Pending {
            return refuse(format!(
                "the rollout is {}, not pending",
                self.state.phase.label()
            ));
        }
        self.begin(run_id, "rollout started");
        Ok(())
    }

    /// A fresh run from step 0.
    fn begin(&mut self, run_id: String, reason: &str) {
        let weight = self.state.weight;
        *self.state = RolloutState::new(self.plan, weight);
        self.state.run_id = run_id;
        self.state.phase = Phase::Progressing;
        self.event(HookEvent::Started, reason);
        self.enter_step(0);
    }

    fn enter_step(&mut self, index: usize) {
        let state = &mut *self.state;
        state.step = index;
        state.hold_observed_ms = 0;
        state.gate_elapsed_ms = 0;
        state.gate_wait_ms = 0;
        state.run_attempts = 0;
        state.last_check_passed = false;
        state.hook_in_flight = false;
        state.realign = false;
        let Some(step) = self.plan.steps.get(index) else {
            self.state.phase = Phase::Promoted;
            self.state.pause_cause = None;
            let weight = self.state.weight;
            self.event(HookEvent::Promoted, format!("promoted at {weight}"));
            return;
        };
        if let PlannedKind::Weight { weight, .. } = &step.kind {
            let weight = *weight;
            self.publish(weight);
        }
        self.event(
            HookEvent::StepStarted,
            format!(
                "step {}/{}: {}",
                index + 1,
                self.plan.steps.len(),
                step.describe()
            ),
        );
        match &step.kind {
            PlannedKind::Weight { .. } => self.maybe_complete(),
            PlannedKind::Pause => {
                self.state.phase = Phase::Paused;
                self.state.pause_cause = Some(PauseCause::PauseStep);
                self.event(
                    HookEvent::Paused,
                    format!("step {} is a pause: `cutover promote` continues", index + 1),
                );
            }
            PlannedKind::Gate { .. } | PlannedKind::Run { .. } => {
                if self.hook_succeeded(index) {
                    self.complete_step();
                } else {
                    self.run_step_hook();
                }
            }
        }
    }

    fn run_step_hook(&mut self) {
        let Some(hook) = self.plan.steps.get(self.state.step).and_then(|s| s.hook()) else {
            return;
        };
        self.state.run_attempts += 1;
        self.state.hook_in_flight = true;
        self.effects.push(Effect::RunStepHook {
            step: self.state.step,
            hook: hook.to_string(),
            attempt: self.state.run_attempts,
        });
    }

    fn complete_step(&mut self) {
        let index = self.state.step;
        if let Some(step) = self.plan.steps.get(index) {
            if step.point_of_no_return {
                self.state.point_of_no_return_passed = true;
            }
            self.event(
                HookEvent::StepCompleted,
                format!(
                    "step {}/{} done: {}",
                    index + 1,
                    self.plan.steps.len(),
                    step.describe()
                ),
            );
        }
        self.enter_step(index + 1);
    }

    /// Completes a weight step whose hold is over and whose last check passed.
    fn maybe_complete(&mut self) {
        if self.state.phase != Phase::Progressing || self.state.realign {
            return;
        }
        let Some(PlannedKind::Weight { weight, hold }) = self.current() else {
            return;
        };
        let held = Duration::from_millis(self.state.hold_observed_ms) >= *hold;
        let checked =
            self.plan.analysis.is_none() || *weight == Weight::ZERO || self.state.last_check_passed;
        if held && checked {
            self.complete_step();
        }
    }

    fn tick(&mut self, elapsed: Duration) {
        if self.state.phase != Phase::Progressing || self.state.realign {
            return;
        }
        let elapsed_ms = elapsed.as_millis() as u64;
        match self.current().cloned() {
            Some(PlannedKind::Weight { .. }) => {
                self.state.hold_observed_ms += elapsed_ms;
                self.maybe_complete();
            }
            Some(PlannedKind::Gate { deadline, .. }) => {
                self.state.gate_elapsed_ms += elapsed_ms;
                if self.state.hook_in_flight {
                    return;
                }
                if deadline.is_some_and(|d| self.state.gate_elapsed_ms >= d.as_millis() as u64) {
                    self.gate_deadline();
                    return;
                }
                self.state.gate_wait_ms = self.state.gate_wait_ms.saturating_sub(elapsed_ms);
                if self.state.gate_wait_ms == 0 {
                    self.run_step_hook();
                }
            }
            _ => {}
        }
    }

    fn gate_deadline(&mut self) {
        let Some(PlannedKind::Gate {
            hook,
            deadline,
            on_deadline,
            ..
        }) = self.current().cloned()
        else {
            return;
        };
        let waited = humantime::format_duration(deadline.unwrap_or_default());
        let reason = format!("gate {hook} did not pass within {waited}");
        match on_deadline {
            OnDeadline::Pause => self.pause(PauseCause::GateDeadline, reason),
            OnDeadline::Rollback => self.rollback(RollbackReason::Gate, reason),
        }
    }

    fn check(&mut self, verdict: Verdict, summary: String) {
        if !self.state.is_watched() {
            return;
        }
        match verdict {
            Verdict::Pass => {
                self.state.consecutive_failures = 0;
                self.state.last_check_passed = true;
                if self.state.realign && self.state.phase == Phase::Progressing {
                    self.realign();
                } else {
                    self.maybe_complete();
                }
            }
            Verdict::Inconclusive => self.state.last_check_passed = false,
            Verdict::Fail => {
                self.state.consecutive_failures += 1;
                self.state.last_check_passed = false;
                if matches!(
                    self.state.pause_cause,
                    Some(PauseCause::Analysis | PauseCause::Trip)
                ) {
                    // Already paused for this: the operator was told once; status keeps
                    // showing the count and the latest check.
                    return;
                }
                let failures = self.state.consecutive_failures;
                let threshold = self
                    .plan
                    .analysis
                    .as_ref()
                    .map_or(1, |a| a.failure_threshold);
                self.event(
                    HookEvent::CheckFailed,
                    format!("check failed ({failures}/{threshold}): {summary}"),
                );
                if failures >= threshold {
                    let reason = format!("{failures} failed checks in a row: {summary}");
                    self.regression(RollbackReason::Analysis, PauseCause::Analysis, reason);
                }
            }
        }
    }

    fn trip(&mut self, reason: String) {
        if self.state.is_watched() {
            self.regression(RollbackReason::Trip, PauseCause::Trip, reason);
        }
    }

    /// NEW misbehaves: roll back, or pause after a point of no return.
    fn regression(&mut self, rollback: RollbackReason, pause: PauseCause, reason: String) {
        if !self.state.point_of_no_return_passed {
            self.rollback(rollback, reason);
        } else if self.state.phase != Phase::Paused {
            self.pause(
                pause,
                format!("past the point of no return, pausing instead of rolling back: {reason}"),
            );
        }
    }

    fn rollback(&mut self, reason: RollbackReason, text: String) {
        let text = format!("rolled back from {}: {text}", self.state.weight);
        self.state.phase = Phase::RolledBack;
        self.state.rollback_reason = Some(reason);
        self.state.pause_cause = None;
        self.state.hook_in_flight = false;
        self.state.realign = false;
        self.publish(Weight::ZERO);
        self.effects.push(Effect::RolledBack(reason));
        self.event(HookEvent::Rollback, text);
    }

    fn pause(&mut self, cause: PauseCause, reason: String) {
        self.state.phase = Phase::Paused;
        self.state.pause_cause = Some(cause);
        self.event(HookEvent::Paused, reason);
    }

    fn hook_finished(&mut self, step: usize, hook: &str, ok: bool, detail: String) {
        let active = matches!(self.state.phase, Phase::Progressing | Phase::Paused);
        if !active || step != self.state.step || !self.state.hook_in_flight || self.state.realign {
            return;
        }
        if self.plan.steps.get(step).and_then(|s| s.hook()) != Some(hook) {
            return;
        }
        self.state.hook_in_flight = false;
        let key = self.record_key(step, hook);
        let attempts = self.state.run_attempts;
        self.state
            .hooks
            .insert(key, StepHookRecord { ok, attempts });
        if self.state.phase == Phase::Paused {
            // Taken into account on resume.
            return;
        }
        match self.current().cloned() {
            Some(PlannedKind::Gate {
                every, deadline, ..
            }) => {
                if ok {
                    self.complete_step();
                } else if deadline
                    .is_some_and(|d| self.state.gate_elapsed_ms >= d.as_millis() as u64)
                {
                    self.gate_deadline();
                } else {
                    self.state.gate_wait_ms = every.as_millis() as u64;
                }
            }
            Some(PlannedKind::Run { retries, .. }) => {
                if ok {
                    self.complete_step();
                } else if self.state.run_attempts <= retries {
                    self.run_step_hook();
                } else {
                    let reason = format!(
                        "step {} hook {hook} failed after {attempts} attempt(s): {detail}",
                        step + 1
                    );
                    self.regression(RollbackReason::Hook, PauseCause::Hook, reason);
                }
            }
            _ => {}
        }
    }

    fn pause_manually(&mut self) -> Result<(), Refusal> {
        if self.state.phase != Phase::Progressing {
            return refuse(format!(
                "only a progressing rollout can pause; this one is {}",
                self.state.phase.label()
            ));
        }
        self.pause(PauseCause::Manual, "paused by an operator".into());
        Ok(())
    }

    fn resume(&mut self) -> Result<(), Refusal> {
        if self.state.phase != Phase::Paused {
            return refuse(format!(
                "only a paused rollout can resume; this one is {}",
                self.state.phase.label()
            ));
        }
        if self.state.pause_cause == Some(PauseCause::PauseStep) && !self.state.realign {
            return refuse(format!(
                "step {} is a pause step: `cutover promote` continues",
                self.state.step + 1
            ));
        }
        let cause = self.state.pause_cause.take();
        self.state.phase = Phase::Progressing;
        self.state.consecutive_failures = 0;
        self.event(HookEvent::Resumed, "resumed by an operator");
        if cause == Some(PauseCause::SetWeight) {
            self.state.realign = true;
        }
        if self.state.realign {
            if self.plan.analysis.is_none() || self.state.weight == Weight::ZERO {
                self.realign();
            }
            return Ok(());
        }
        match self.current().cloned() {
            Some(PlannedKind::Gate { .. } | PlannedKind::Run { .. }) => {
                if self.hook_succeeded(self.state.step) {
                    self.complete_step();
                } else if !self.state.hook_in_flight {
                    if cause == Some(PauseCause::GateDeadline) {
                        self.state.gate_elapsed_ms = 0;
                    }
                    self.state.run_attempts = 0;
                    self.run_step_hook();
                }
            }
            Some(PlannedKind::Weight { .. }) => self.maybe_complete(),
            _ => {}
        }
        Ok(())
    }

    fn promote(&mut self, full: bool) -> Result<(), Refusal> {
        match self.state.phase {
            Phase::Pending => return refuse("the rollout has not started: `cutover start` first"),
            Phase::Promoted => return refuse("the rollout is already promoted"),
            Phase::RolledBack => {
                return refuse("the rollout was rolled back: `cutover retry` starts it again")
            }
            Phase::Progressing | Phase::Paused => {}
        }
        let was_paused = self.state.phase == Phase::Paused;
        self.state.phase = Phase::Progressing;
        self.state.pause_cause = None;
        self.state.hook_in_flight = false;
        if was_paused {
            self.event(HookEvent::Resumed, "promoted by an operator");
        }
        if self.state.realign {
            self.realign();
            return Ok(());
        }
        if !full {
            self.complete_step();
            return Ok(());
        }
        let last = self.plan.steps.len().saturating_sub(1);
        let skipped_runs: Vec<String> = (self.state.step + 1..last)
            .filter(|&i| {
                matches!(self.plan.steps[i].kind, PlannedKind::Run { .. })
                    && !self.hook_succeeded(i)
            })
            .map(|i| format!("step {} ({})", i + 1, self.plan.steps[i].describe()))
            .collect();
        if !skipped_runs.is_empty() {
            if was_paused {
                self.state.phase = Phase::Paused;
            }
            return refuse(format!(
                "promote --full would skip {}: promote step by step so those hooks run",
                skipped_runs.join(", ")
            ));
        }
        if self.plan.steps[self.state.step..last]
            .iter()
            .any(|s| s.point_of_no_return)
        {
            self.state.point_of_no_return_passed = true;
        }
        self.enter_step(last);
        Ok(())
    }

    fn rollback_manually(&mut self) -> Result<(), Refusal> {
        match self.state.phase {
            Phase::Pending => refuse("the rollout has not started: nothing to roll back"),
            Phase::RolledBack => refuse("the rollout is already rolled back"),
            _ => {
                self.rollback(RollbackReason::Manual, "rolled back by an operator".into());
                Ok(())
            }
        }
    }

    fn retry(&mut self, run_id: String) -> Result<(), Refusal> {
        if self.state.phase != Phase::RolledBack {
            return refuse(format!(
                "only a rolled back rollout can be retried; this one is {}",
                self.state.phase.label()
            ));
        }
        self.state.weight = Weight::ZERO;
        self.begin(run_id, "rollout retried from step 1");
        Ok(())
    }

    fn set_weight(&mut self, weight: Weight) -> Result<(), Refusal> {
        match self.state.phase {
            Phase::RolledBack => {
                return refuse(
                    "the rollout was rolled back: `cutover retry` before setting a weight",
                )
            }
            Phase::Pending => return refuse("the rollout has not started: `cutover start` first"),
            _ => {}
        }
        self.state.hook_in_flight = false;
        self.publish(weight);
        self.pause(
            PauseCause::SetWeight,
            format!("weight set to {weight} by an operator"),
        );
        Ok(())
    }

    fn realign(&mut self) {
        let target = self.plan.realign_target(self.state.weight);
        self.state.realign = false;
        self.enter_step(target);
    }

    fn steps_changed(&mut self, run_id: String) {
        self.state.steps_fingerprint = self.plan.fingerprint.clone();
        match self.state.phase {
            Phase::RolledBack => self.begin(run_id, "the steps changed: rollout started again"),
            Phase::Progressing | Phase::Paused => {
                self.state.realign = true;
                self.state.hook_in_flight = false;
                self.state.reason = Some(format!(
                    "the steps changed: continuing from the first step above {}",
                    self.state.weight
                ));
                if self.state.pause_cause == Some(PauseCause::PauseStep) {
                    self.state.phase = Phase::Progressing;
                    self.state.pause_cause = None;
                }
                if self.state.phase == Phase::Progressing
                    && (self.plan.analysis.is_none() || self.state.weight == Weight::ZERO)
                {
                    self.realign();
                }
            }
            Phase::Pending | Phase::Promoted => {}
        }
    }

    fn restored(&mut self) {
        let weight = self.state.weight;
        self.effects.push(Effect::Publish(weight));
        if self.state.phase != Phase::Progressing || self.state.realign {
            return;
        }
        match self.current() {
            Some(PlannedKind::Gate { .. } | PlannedKind::Run { .. }) => {
                if self.hook_succeeded(self.state.step) {
                    self.complete_step();
                } else {
                    // It was running when the process stopped: run it again.
                    self.state.run_attempts = self.state.run_attempts.saturating_sub(1);
                    self.run_step_hook();
                }
            }
            Some(PlannedKind::Weight { .. }) => self.maybe_complete(),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

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
//!
//! Files: `rollout_state.rs` holds what is persisted and shown (the state and its enums);
//! this file the inputs, the effects and the rules time and checks drive; `step_hooks.rs`
//! what step hooks and probes report; `operator.rs` the operator's verbs and what a
//! restart or a change of steps does.

mod operator;
mod rollout_state;
mod step_hooks;

use std::time::Duration;

pub(crate) use self::rollout_state::{
    PauseCause, Phase, RollbackReason, RolloutState, ServiceState, StepHookRecord,
};
use super::analysis::{max_wait, Verdict};
use super::schedule::{Plan, PlannedKind};
use crate::config::{AnalysisMethod, HookEvent, Weight};

/// What can happen to a rollout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
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
    SetWeight {
        weight: Weight,
        force: bool,
    },
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
    /// A `shadow` step's hold is over and it still has too few comparisons.
    ProbeShort {
        step: usize,
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
pub(crate) enum Effect {
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
pub(crate) struct Refusal(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

/// Applies `input`. On success the state has changed and the effects are to be carried
/// out; a refusal leaves the state exactly as it was.
pub(crate) fn apply(
    plan: &Plan,
    state: &mut RolloutState,
    input: Input,
) -> Result<Vec<Effect>, Refusal> {
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
            Input::SetWeight { weight, force } => self.set_weight(weight, force),
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
            Input::ProbeShort { step, detail } => {
                self.probe_short(step, &detail);
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
        // Already started: nothing to do (the controller says "already").
        if matches!(self.state.phase, Phase::Progressing | Phase::Paused) {
            return Ok(());
        }
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
        state.undecided_from_ms = Some(0);
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
            PlannedKind::Gate { .. }
            | PlannedKind::Run { .. }
            | PlannedKind::Verify { .. }
            | PlannedKind::Shadow(_) => {
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
        if self.state.phase != Phase::Progressing {
            return;
        }
        let elapsed_ms = elapsed.as_millis() as u64;
        if self.state.realign {
            // Waiting for a passing check at the weight it was left at: counted, so that
            // `max_wait` ends this wait too ([`Machine::waited_for_evidence`]).
            self.state.hold_observed_ms += elapsed_ms;
            return;
        }
        match self.current().cloned() {
            Some(PlannedKind::Weight { .. }) => {
                self.state.hold_observed_ms += elapsed_ms;
                self.maybe_complete();
            }
            Some(PlannedKind::Shadow(_)) if self.state.hook_in_flight => {
                // Running time, for the wait past the hold (`probe_short`).
                self.state.hold_observed_ms += elapsed_ms;
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

    fn check(&mut self, verdict: Verdict, summary: String) {
        if !self.state.is_watched() {
            return;
        }
        match verdict {
            Verdict::Pass => {
                self.state.undecided_from_ms = Some(self.state.hold_observed_ms);
                self.state.consecutive_failures = 0;
                self.state.last_check_passed = true;
                if self.state.realign && self.state.phase == Phase::Progressing {
                    self.realign();
                } else {
                    self.maybe_complete();
                }
            }
            Verdict::Inconclusive => {
                self.state.last_check_passed = false;
                self.waited_for_evidence(&summary);
            }
            Verdict::Fail => {
                self.state.undecided_from_ms = Some(self.state.hold_observed_ms);
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

    /// Pauses a weight step, or a realignment waiting for a passing check, whose checks
    /// have been inconclusive for `max_wait` of running time: waiting on forever would
    /// neither promote nor protect anyone. A realignment's `max_wait` follows the hold of
    /// the step it will go on to.
    fn waited_for_evidence(&mut self, summary: &str) {
        if self.state.phase != Phase::Progressing {
            return;
        }
        let (weight, hold) = if self.state.realign {
            let target = self.plan.realign_target(self.state.weight);
            let hold = match self.plan.steps.get(target).map(|s| &s.kind) {
                Some(PlannedKind::Weight { hold, .. }) => *hold,
                _ => Duration::ZERO,
            };
            (self.state.weight, hold)
        } else {
            let Some(PlannedKind::Weight { weight, hold }) = self.current().cloned() else {
                return;
            };
            (weight, hold)
        };
        let Some(analysis) = self.plan.analysis.as_ref() else {
            return;
        };
        // The threshold method waits as it always did unless `max_wait` is set.
        let applies = analysis.max_wait.is_some()
            || matches!(analysis.method, AnalysisMethod::Statistical { .. });
        if weight == Weight::ZERO || !applies {
            return;
        }
        let limit = max_wait(analysis.max_wait, hold);
        let observed = self.state.hold_observed_ms;
        let from = *self.state.undecided_from_ms.get_or_insert(observed);
        let undecided = observed.saturating_sub(from);
        if Duration::from_millis(undecided) < limit {
            return;
        }
        let waited = humantime::format_duration(limit);
        self.pause(
            PauseCause::NotEnoughEvidence,
            format!("not enough evidence: checks at {weight} inconclusive for {waited}: {summary}"),
        );
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
        self.state.rollback_hooks_pending = true;
        self.publish(Weight::ZERO);
        self.effects.push(Effect::RolledBack(reason));
        self.event(HookEvent::Rollback, text);
    }

    fn pause(&mut self, cause: PauseCause, reason: String) {
        self.state.phase = Phase::Paused;
        self.state.pause_cause = Some(cause);
        self.event(HookEvent::Paused, reason);
    }
}

#[cfg(test)]
mod tests;

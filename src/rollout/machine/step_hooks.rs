//! What step hooks and probes report: a gate's, a `run` hook's, a `verify` or `shadow`
//! step's outcome, a gate that reached its deadline, and a shadow step still short of the
//! comparisons it needs.

use super::{Machine, PauseCause, Phase, RollbackReason, StepHookRecord};
use crate::config::OnDeadline;
use crate::rollout::analysis::max_wait;
use crate::rollout::schedule::PlannedKind;

impl Machine<'_> {
    pub(super) fn gate_deadline(&mut self) {
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

    pub(super) fn hook_finished(&mut self, step: usize, hook: &str, ok: bool, detail: String) {
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
            Some(PlannedKind::Verify { .. }) => {
                if ok {
                    self.complete_step();
                } else {
                    let reason = format!("step {} verify failed: {detail}", step + 1);
                    self.regression(RollbackReason::Verify, PauseCause::Hook, reason);
                }
            }
            Some(PlannedKind::Shadow(_)) => {
                if ok {
                    self.complete_step();
                } else {
                    let reason = format!("step {} shadow failed: {detail}", step + 1);
                    self.regression(RollbackReason::Shadow, PauseCause::Hook, reason);
                }
            }
            _ => {}
        }
    }

    /// A shadow step's hold is over with fewer comparisons than it needs (`detail` says how
    /// many). It waits for more, as the step's checks would, until `max_wait` of running
    /// time since the step started (or since an operator resumed it) has passed; then it
    /// pauses for "not enough evidence": never passing on too few, never waiting silently
    /// forever.
    pub(super) fn probe_short(&mut self, step: usize, detail: &str) {
        if self.state.phase != Phase::Progressing
            || step != self.state.step
            || !self.state.hook_in_flight
            || self.state.realign
        {
            return;
        }
        let Some(PlannedKind::Shadow(spec)) = self.current() else {
            return;
        };
        let limit = max_wait(spec.max_wait, spec.hold);
        let observed = self.state.hold_observed_ms;
        let from = *self.state.undecided_from_ms.get_or_insert(observed);
        if std::time::Duration::from_millis(observed.saturating_sub(from)) < limit {
            return;
        }
        let waited = humantime::format_duration(limit);
        self.pause(
            PauseCause::NotEnoughEvidence,
            format!(
                "not enough evidence: step {} shadow waited {waited}: {detail}",
                step + 1
            ),
        );
    }
}

//! The operator's verbs (pause, resume, promote, rollback, retry, set a weight), and what
//! a restart or a change of the steps does to a rollout.
//!
//! A verb asking for what already holds (pause a paused rollout, resume a progressing one,
//! roll back a rolled back one, promote a promoted one) succeeds and changes nothing, so
//! that scripts and nervous operators can repeat it; the controller tells them "already".
//! Verbs that make no sense in the current state are refused with the reason.

use super::{refuse, Machine, Refusal};
use super::{Effect, PauseCause, Phase, RollbackReason};
use crate::config::{HookEvent, Weight};
use crate::rollout::schedule::PlannedKind;

impl Machine<'_> {
    /// Refuses a verb outside the one phase it applies in, naming the phase it found.
    fn only(&self, phase: Phase, what: &str) -> Result<(), Refusal> {
        if self.state.phase == phase {
            return Ok(());
        }
        refuse(format!(
            "only a {what}; this one is {}",
            self.state.phase.label()
        ))
    }

    pub(super) fn pause_manually(&mut self) -> Result<(), Refusal> {
        if self.state.phase == Phase::Paused {
            return Ok(());
        }
        self.only(Phase::Progressing, "progressing rollout can pause")?;
        self.pause(PauseCause::Manual, "paused by an operator".into());
        Ok(())
    }

    pub(super) fn resume(&mut self) -> Result<(), Refusal> {
        if self.state.phase == Phase::Progressing {
            return Ok(());
        }
        self.only(Phase::Paused, "paused rollout can resume")?;
        if self.state.pause_cause == Some(PauseCause::PauseStep) && !self.state.realign {
            return refuse(format!(
                "step {} is a pause step: `cutover promote` continues",
                self.state.step + 1
            ));
        }
        if self.state.pause_cause == Some(PauseCause::SetWeight) && self.state.hook_in_flight {
            // Resuming realigns the steps, which would start the hook again.
            return refuse(format!(
                "step {}'s hook is still running: resume once it has finished",
                self.state.step + 1
            ));
        }
        let cause = self.state.pause_cause.take();
        self.state.phase = Phase::Progressing;
        self.state.consecutive_failures = 0;
        self.event(HookEvent::Resumed, "resumed by an operator");
        if cause == Some(PauseCause::SetWeight) {
            self.state.realign = true;
            self.state.undecided_from_ms = Some(self.state.hold_observed_ms);
        }
        if cause == Some(PauseCause::NotEnoughEvidence) {
            // The operator chose to wait longer: another `max_wait` from now.
            self.state.undecided_from_ms = Some(self.state.hold_observed_ms);
        }
        if self.state.realign {
            if self.plan.analysis.is_none() || self.state.weight == Weight::ZERO {
                self.realign();
            }
            return Ok(());
        }
        // A verify or shadow verdict that arrived while paused for another cause is
        // evidence about NEW: a failure rolls back now, as it would have then, rather than
        // running the step again until a quieter hour passes it. One that caused this
        // pause (past a point of no return) was acted on: resuming runs the step again.
        if cause != Some(PauseCause::Hook) && !self.state.hook_in_flight {
            if let Some((reason, what)) = self.failed_probe(self.state.step) {
                let text = format!("step {} {what} failed while paused", self.state.step + 1);
                self.regression(reason, PauseCause::Hook, text);
                return Ok(());
            }
        }
        self.pick_up(|machine| {
            if machine.state.hook_in_flight {
                return;
            }
            if cause == Some(PauseCause::GateDeadline) {
                machine.state.gate_elapsed_ms = 0;
            }
            machine.state.run_attempts = 0;
            machine.run_step_hook();
        });
        Ok(())
    }

    pub(super) fn promote(&mut self, full: bool) -> Result<(), Refusal> {
        match self.state.phase {
            Phase::Pending => return refuse("the rollout has not started: `cutover start` first"),
            Phase::Promoted => return Ok(()),
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

    pub(super) fn rollback_manually(&mut self) -> Result<(), Refusal> {
        match self.state.phase {
            Phase::Pending => refuse("the rollout has not started: nothing to roll back"),
            Phase::RolledBack => Ok(()),
            _ => {
                self.rollback(RollbackReason::Manual, "rolled back by an operator".into());
                Ok(())
            }
        }
    }

    pub(super) fn retry(&mut self, run_id: String) -> Result<(), Refusal> {
        self.only(Phase::RolledBack, "rolled back rollout can be retried")?;
        self.state.weight = Weight::ZERO;
        self.begin(run_id, "rollout retried from step 1");
        Ok(())
    }

    /// Lowering NEW's weight moves sticky users from NEW back to OLD, the one thing the
    /// monotone rule otherwise never does: it takes `force`.
    pub(super) fn set_weight(&mut self, weight: Weight, force: bool) -> Result<(), Refusal> {
        match self.state.phase {
            Phase::RolledBack => {
                return refuse(
                    "the rollout was rolled back: `cutover retry` before setting a weight",
                )
            }
            Phase::Pending => return refuse("the rollout has not started: `cutover start` first"),
            _ => {}
        }
        if weight < self.state.weight && !force {
            return refuse(format!(
                "lowering NEW's weight from {} to {weight} sends sticky users who are on NEW back to OLD; \
                 repeat with --force (admin API: \"force\": true) if that is what you want, \
                 or `cutover rollback` to send everyone back",
                self.state.weight
            ));
        }
        if weight == self.state.weight
            && self.state.phase == Phase::Paused
            && self.state.pause_cause == Some(PauseCause::SetWeight)
        {
            return Ok(());
        }
        // A step hook in flight goes on, as through any pause: its result is recorded for
        // the step the rollout realigns onto when it resumes.
        self.publish(weight);
        self.pause(
            PauseCause::SetWeight,
            format!("weight set to {weight} by an operator"),
        );
        Ok(())
    }

    pub(super) fn realign(&mut self) {
        let target = self.plan.realign_target(self.state.weight);
        self.state.realign = false;
        self.enter_step(target);
    }

    pub(super) fn steps_changed(&mut self, run_id: String) {
        self.state.steps_fingerprint = self.plan.fingerprint.clone();
        match self.state.phase {
            Phase::RolledBack => self.begin(run_id, "the steps changed: rollout started again"),
            Phase::Progressing | Phase::Paused => {
                self.state.realign = true;
                self.state.undecided_from_ms = Some(self.state.hold_observed_ms);
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

    pub(super) fn restored(&mut self) {
        let weight = self.state.weight;
        self.effects.push(Effect::Publish(weight));
        if self.state.phase != Phase::Progressing || self.state.realign {
            return;
        }
        self.pick_up(|machine| {
            // It was running when the process stopped: run it again.
            machine.state.run_attempts = machine.state.run_attempts.saturating_sub(1);
            machine.run_step_hook();
        });
    }

    /// A verify or shadow step whose recorded verdict is a failure: why to roll back.
    fn failed_probe(&self, index: usize) -> Option<(RollbackReason, &'static str)> {
        let step = self.plan.steps.get(index)?;
        let (cause, what) = match step.kind {
            PlannedKind::Verify { .. } => (RollbackReason::Verify, "verify"),
            PlannedKind::Shadow(_) => (RollbackReason::Shadow, "shadow"),
            _ => return None,
        };
        let record = self
            .state
            .hooks
            .get(&self.record_key(index, step.hook()?))?;
        (!record.ok).then_some((cause, what))
    }

    /// Takes the current step up again after a pause or a restart: a weight step completes
    /// if its hold is over, a hook step whose hook succeeded completes, and one whose hook
    /// has not succeeded is handed to `unfinished`.
    fn pick_up(&mut self, unfinished: impl FnOnce(&mut Self)) {
        let index = self.state.step;
        let plan = self.plan;
        match plan.steps.get(index) {
            Some(step) if step.hook().is_some() => {
                if self.hook_succeeded(index) {
                    self.complete_step();
                } else {
                    unfinished(self);
                }
            }
            Some(step) if matches!(step.kind, PlannedKind::Weight { .. }) => self.maybe_complete(),
            _ => {}
        }
    }
}

//! The decision log, written by the controller (SPEC §10): every check, trip, step and
//! state change, operator command, hook run and reload goes to
//! `state_dir/<service>.history.jsonl` before it takes effect.
//!
//! The files are opened lazily and kept open; appends fsync on the controller's thread
//! (a few hundred microseconds, at most a few times a second: cheaper and simpler than a
//! round trip through `spawn_blocking`, and it keeps the order of records the order of
//! decisions).
//!
//! When an append fails, the failure is logged at ERROR and counted in
//! `cutover_history_write_errors`. What happens to the decision then depends on which way
//! it moves traffic (`Controller::apply`): a decision that gives NEW more traffic
//! (a higher weight, a promotion) is not taken, as when the state cannot be saved, and is
//! tried again at the next tick; one that protects users (a rollback, a pause, a check's
//! verdict, an operator's command) is taken anyway: losing its record is bad, not acting
//! on a regression is worse.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use super::{ControlError, Controller, Op, ReloadSource};
use crate::config::{TripSpec, Weight};
use crate::evidence::log::HistoryLog;
use crate::evidence::record::{
    DecidedBy, Decision, Entry, HookRecord, OperatorRecord, ReloadRecord, StateRecord, StepRecord,
    TripRecord,
};
use crate::hooks::HookOutcome;
use crate::rollout::analysis::{Check, Verdict, Windows};
use crate::rollout::machine::{Input, Phase, RolloutState};
use crate::rollout::schedule::Plan;

/// How much of a hook's output the log keeps.
const OUTPUT_TAIL: usize = 2048;

/// The open history files, by service.
pub(super) struct History {
    dir: PathBuf,
    logs: BTreeMap<String, HistoryLog>,
}

impl History {
    pub(super) fn new(dir: PathBuf) -> History {
        History {
            dir,
            logs: BTreeMap::new(),
        }
    }

    /// Follows `state_dir` through a reload.
    pub(super) fn set_dir(&mut self, dir: PathBuf) {
        if dir != self.dir {
            self.dir = dir;
            self.logs.clear();
        }
    }

    fn append(&mut self, entry: &Entry) -> Result<(), String> {
        let log = match self.logs.get_mut(&entry.service) {
            Some(log) => log,
            None => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| format!("{}: {e}", self.dir.display()))?;
                let log = HistoryLog::open(&self.dir, &entry.service).map_err(|e| e.to_string())?;
                self.logs.entry(entry.service.clone()).or_insert(log)
            }
        };
        let result = log.append(entry).map_err(|e| e.to_string());
        if result.is_err() {
            // Reopen next time: the file may have been replaced or its disk remounted.
            self.logs.remove(&entry.service);
        }
        result
    }
}

/// Who decided, from the input that made the decision.
pub(super) fn decided_by(input: &Input, client: Option<&str>) -> DecidedBy {
    let operator = || match client {
        Some(client) => DecidedBy::Operator {
            client: client.to_string(),
        },
        None => DecidedBy::Startup,
    };
    match input {
        Input::Start { .. }
        | Input::Pause
        | Input::Resume
        | Input::Promote { .. }
        | Input::Rollback
        | Input::Retry { .. }
        | Input::SetWeight { .. } => operator(),
        Input::Tick(_)
        | Input::Check {
            verdict: Verdict::Pass,
            ..
        } => DecidedBy::Schedule,
        Input::Check { .. } | Input::Trip { .. } => DecidedBy::Analysis,
        Input::HookFinished { hook, .. } => DecidedBy::Hook { hook: hook.clone() },
        Input::ProbeShort { .. } => DecidedBy::Hook {
            hook: crate::rollout::schedule::SHADOW_RECORD.to_string(),
        },
        Input::StepsChanged { .. } => DecidedBy::Config,
        Input::Restored => DecidedBy::Startup,
    }
}

/// `pause`, `promote --full`, `set-weight 30% --force`.
pub(super) fn describe_op(op: &Op) -> String {
    match op {
        Op::Promote { full: true } => "promote --full".into(),
        Op::SetWeight { weight, force } => {
            let force = if *force { " --force" } else { "" };
            format!("set-weight {weight}{force}")
        }
        _ => op.verb().into(),
    }
}

/// The records of one transition: the step or weight change, then the state change.
fn transition(
    plan: &Plan,
    before: &RolloutState,
    after: &RolloutState,
    by: &DecidedBy,
) -> Vec<Decision> {
    let mut decisions = Vec::new();
    let reason = after.reason.clone().unwrap_or_default();
    if after.step != before.step || after.weight != before.weight {
        let description = plan
            .steps
            .get(after.step)
            .map_or_else(|| "promoted".to_string(), |s| s.describe());
        decisions.push(Decision::Step(StepRecord {
            from_step: Some(before.step),
            to_step: after.step,
            description,
            from_weight: before.weight.percent(),
            to_weight: after.weight.percent(),
            by: by.clone(),
            reason: reason.clone(),
        }));
    }
    let shown = |s: &RolloutState| match s.pause_cause {
        Some(cause) if s.phase == Phase::Paused => format!("paused ({})", cause.as_str()),
        _ => s.phase.label().to_string(),
    };
    if after.phase != before.phase || after.pause_cause != before.pause_cause {
        decisions.push(Decision::State(StateRecord {
            from: shown(before),
            to: shown(after),
            by: by.clone(),
            reason,
        }));
    }
    decisions
}

/// Whether a transition gives NEW more of the traffic than it had.
fn exposes_more(before: &RolloutState, after: &RolloutState) -> bool {
    after.weight > before.weight
        || (after.phase == Phase::Promoted && before.phase != Phase::Promoted)
}

pub(super) fn trip_record(spec: &TripSpec, windows: &Windows, reason: &str) -> TripRecord {
    let recent = windows.recent_new(spec.min_requests, spec.window);
    let (requests, errors, error_rate) =
        recent.map_or((0, 0, 0.0), |c| (c.requests(), c.errors(), c.error_rate()));
    TripRecord {
        requests,
        errors,
        error_rate,
        threshold: spec.error_rate,
        reason: reason.to_string(),
    }
}

pub(super) fn hook_record(
    hook: &str,
    event: &str,
    attempt: u32,
    outcome: &HookOutcome,
) -> HookRecord {
    let mut tail = String::new();
    for (name, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let text = HookOutcome::tail(text, OUTPUT_TAIL / 2).trim_end();
        if !text.is_empty() {
            tail.push_str(&format!("{name}: {text}\n"));
        }
    }
    if tail.is_empty() {
        tail = outcome.detail.clone();
    }
    HookRecord {
        hook: hook.to_string(),
        event: event.to_string(),
        ok: outcome.ok(),
        exit_code: outcome
            .detail
            .strip_prefix("exit ")
            .and_then(|code| code.trim().parse().ok()),
        duration_ms: outcome.duration.as_millis() as u64,
        attempt,
        output_tail: tail,
    }
}

pub(super) fn reload_record(ok: bool, changes: Vec<String>, by: DecidedBy) -> Decision {
    Decision::Reload(ReloadRecord { ok, changes, by })
}

fn operator_record(op: &Op, client: &str, accepted: bool, detail: Option<String>) -> Decision {
    Decision::Operator(OperatorRecord {
        command: describe_op(op),
        client: client.to_string(),
        accepted,
        detail,
    })
}

/// The next `consecutive_failures` after a check with this verdict.
pub(super) fn failures_after(state: &RolloutState, verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Pass => 0,
        Verdict::Fail => state.consecutive_failures + 1,
        Verdict::Inconclusive => state.consecutive_failures,
    }
}

pub(super) fn check_decision(check: &Check, window: Duration, failures: u32) -> Decision {
    Decision::Check(check.record(window, failures))
}

impl Controller {
    /// Writes the records of a transition the machine just computed, the operator's
    /// command first (accepted or refused). A transition that gives NEW more traffic and
    /// whose records could not all be written is undone (`Err`); any other goes ahead.
    pub(super) fn log_transition(
        &mut self,
        index: usize,
        before: &RolloutState,
        by: &DecidedBy,
        asked: Option<&Op>,
        refusal: Option<&str>,
    ) -> Result<(), ControlError> {
        let Some(run) = self.services[index].rollout.as_ref() else {
            return Ok(());
        };
        let after = run.state.clone();
        let decisions = transition(&run.plan, before, &after, by);
        if let Some(op) = asked {
            let (accepted, detail) = match refusal {
                Some(refusal) => (false, Some(refusal.to_string())),
                None if after == *before => (true, Some("nothing to change".to_string())),
                None => (true, None),
            };
            let client = self.client.clone().unwrap_or_else(|| "local".to_string());
            let record = operator_record(op, &client, accepted, detail);
            let _ = self.record_at(index, before.weight, Some(before.step), record);
        }
        let mut lost = false;
        for decision in decisions {
            lost |= self
                .record_at(index, after.weight, Some(after.step), decision)
                .is_err();
        }
        if lost && exposes_more(before, &after) {
            if let Some(run) = self.services[index].rollout.as_mut() {
                run.state = before.clone();
            }
            return Err(ControlError::Persist(
                "the decision log could not be written".to_string(),
            ));
        }
        Ok(())
    }

    /// Appends a decision of service `index`, at its current weight and step. `Err`
    /// when it could not be written (already logged and counted).
    pub(super) fn record(&mut self, index: usize, decision: Decision) -> Result<(), ()> {
        let service = &self.services[index];
        let (weight, step) = match &service.rollout {
            Some(run) => (run.state.weight, Some(run.state.step)),
            None => (service.config.weight, None),
        };
        self.record_at(index, weight, step, decision)
    }

    pub(super) fn record_at(
        &mut self,
        index: usize,
        weight: Weight,
        step: Option<usize>,
        decision: Decision,
    ) -> Result<(), ()> {
        let name = &self.services[index].config.name;
        let kind = decision.kind();
        let entry = Entry::new(
            OffsetDateTime::now_utc(),
            name,
            weight.percent(),
            step,
            decision,
        );
        match self.history.append(&entry) {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(service = %name, kind, %error, "the decision log could not be written: this {kind} record is lost");
                self.metrics.history_error(name);
                Err(())
            }
        }
    }

    /// A reload, in every service's log: the new version, or the errors.
    pub(super) fn record_reload(
        &mut self,
        source: ReloadSource,
        result: &Result<String, Vec<String>>,
    ) {
        self.history.set_dir(self.config.state_dir.clone());
        let client = self.client.clone();
        for index in 0..self.services.len() {
            let (ok, changes) = match result {
                Ok(version) => (true, vec![format!("config {version} ({})", source.label())]),
                Err(errors) => (false, errors.clone()),
            };
            let by = match (source, &client) {
                (ReloadSource::Api, Some(client)) => DecidedBy::Operator {
                    client: client.clone(),
                },
                _ => DecidedBy::Config,
            };
            let _ = self.record(index, reload_record(ok, changes, by));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_recorded_as_the_operator_would_type_it() {
        let weight = Weight::from_percent(30.0).unwrap();
        let ops = [
            (Op::Start, "start"),
            (Op::Pause, "pause"),
            (Op::Resume, "resume"),
            (Op::Promote { full: false }, "promote"),
            (Op::Promote { full: true }, "promote --full"),
            (Op::Rollback, "rollback"),
            (Op::Retry, "retry"),
            (
                Op::SetWeight {
                    weight,
                    force: false,
                },
                "set-weight 30%",
            ),
            (
                Op::SetWeight {
                    weight,
                    force: true,
                },
                "set-weight 30% --force",
            ),
        ];
        for (op, text) in ops {
            assert_eq!(describe_op(&op), text);
        }
    }
}

//! The controller's side of hooks: which hooks an effect starts, the payload each one gets
//! (SPEC §4), and what a finished run changes (its status, metrics, a step hook's input to
//! the state machine). Running them is `crate::hooks`'s job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use super::status::{check_status, timestamp, HookStatus};
use super::{evidence, Controller};
use crate::config::{HookEvent, Service, Weight};
use crate::evidence::record::Decision;
use crate::hooks::{self, HookInput, HookOutcome};
use crate::rollout::machine::{Input, Phase, ServiceState};
use crate::rollout::schedule::PlannedKind;

/// Output shown per stream in `/status` (the log and the hook keep more).
const STATUS_TAIL: usize = 4 * 1024;
/// Output logged per stream when a hook fails.
const LOG_TAIL: usize = 512;

/// The JSON document every hook receives (SPEC §4).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Payload {
    pub service: String,
    /// An event name, or `gate` / `run` for the hook of a step.
    pub event: String,
    /// 1-based step number; 0 before the first step.
    pub step: usize,
    pub weight: Weight,
    pub state: ServiceState,
    pub reason: String,
    pub run_id: String,
    pub timestamp: String,
    pub analysis: serde_json::Value,
}

impl Payload {
    fn input(&self) -> HookInput {
        HookInput {
            json: Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
            env: vec![
                ("CUTOVER_SERVICE", self.service.clone()),
                ("CUTOVER_EVENT", self.event.clone()),
                ("CUTOVER_STEP", self.step.to_string()),
                ("CUTOVER_WEIGHT", self.weight.percent().to_string()),
                ("CUTOVER_REASON", self.reason.clone()),
                ("CUTOVER_RUN_ID", self.run_id.clone()),
            ],
        }
    }
}

/// Where a rollout was when an event happened.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventAt {
    pub step: usize,
    pub weight: Weight,
    pub state: ServiceState,
}

/// A hook run that finished.
pub(super) enum HookDone {
    Step {
        service: String,
        step: usize,
        hook: String,
        outcome: HookOutcome,
    },
    Event {
        service: String,
        hook: String,
        event: HookEvent,
        outcome: HookOutcome,
    },
    /// A `verify` or `shadow` step finished (`verify.rs`, `shadow.rs`); `record` is
    /// the name its outcome is kept under.
    Probe {
        service: String,
        step: usize,
        record: &'static str,
        ok: bool,
        detail: String,
    },
    /// A `shadow` step's hold is over and it is still short of comparisons (sent every
    /// second while it is).
    ProbeShort {
        service: String,
        step: usize,
        detail: String,
    },
    /// The last copy of a retired shadow copier finished: its counts are final, so the
    /// status (and `GET /services/{name}/shadow`) is published once more.
    ShadowDrained,
}

impl HookDone {
    fn parts(&self) -> Option<(&str, &str, &str, &HookOutcome)> {
        Some(match self {
            HookDone::Step {
                service,
                hook,
                outcome,
                ..
            } => (service, hook, "step", outcome),
            HookDone::Event {
                service,
                hook,
                event,
                outcome,
            } => (service, hook, event.as_str(), outcome),
            HookDone::Probe { .. } | HookDone::ProbeShort { .. } | HookDone::ShadowDrained => {
                return None
            }
        })
    }
}

pub(super) fn hook_names(service: &Service) -> Vec<String> {
    service.hooks.iter().map(|h| h.name.clone()).collect()
}

/// Hook statuses for every hook of the service, keeping what is known of existing ones.
pub(super) fn hook_statuses(
    service: &Service,
    mut known: BTreeMap<String, HookStatus>,
) -> BTreeMap<String, HookStatus> {
    service
        .hooks
        .iter()
        .map(|hook| {
            let status = known.remove(&hook.name).unwrap_or_else(|| HookStatus {
                name: hook.name.clone(),
                ..HookStatus::default()
            });
            (hook.name.clone(), status)
        })
        .collect()
}

impl Controller {
    /// The hook payload; `at` overrides step, weight and state with an event's own.
    fn payload(&self, index: usize, event: &str, reason: &str, at: Option<EventAt>) -> Payload {
        let service = &self.services[index];
        let (state, step, weight, run_id, analysis) = match &service.rollout {
            Some(run) => (
                at.map_or_else(|| run.state.shown_state(&run.plan), |a| a.state),
                at.map_or((run.state.step + 1).min(run.plan.steps.len()), |a| a.step),
                at.map_or(run.state.weight, |a| a.weight),
                run.state.run_id.clone(),
                run.last_check
                    .as_ref()
                    .and_then(|(at, check)| {
                        serde_json::to_value(check_status(run.checks, *at, check)).ok()
                    })
                    .unwrap_or(serde_json::Value::Null),
            ),
            None => (
                ServiceState::Static,
                0,
                service.config.weight,
                String::new(),
                serde_json::Value::Null,
            ),
        };
        Payload {
            service: service.config.name.clone(),
            event: event.to_string(),
            step,
            weight,
            state,
            reason: reason.to_string(),
            run_id,
            timestamp: timestamp(SystemTime::now()),
            analysis,
        }
    }

    fn runner(&self) -> hooks::Runner {
        hooks::Runner {
            dir: Arc::from(self.config.origin.dir.as_path()),
        }
    }

    pub(super) fn spawn_step_hook(&mut self, index: usize, step: usize, hook_name: &str) {
        let service = &self.services[index];
        let planned = service
            .rollout
            .as_ref()
            .and_then(|r| r.plan.steps.get(step));
        match planned.map(|p| &p.kind) {
            Some(PlannedKind::Verify { .. }) => return self.spawn_verify(index, step),
            Some(PlannedKind::Shadow(spec)) => return self.spawn_shadow(index, step, spec.clone()),
            _ => {}
        }
        let Some(hook) = service.config.hook(hook_name).cloned() else {
            return;
        };
        let planned = service
            .rollout
            .as_ref()
            .and_then(|r| r.plan.steps.get(step));
        let kind = match planned.map(|p| &p.kind) {
            Some(PlannedKind::Gate { .. }) => "gate",
            _ => "run",
        };
        let reason = format!("step {}: {kind} {hook_name}", step + 1);
        let payload = self.payload(index, kind, &reason, None);
        let name = service.config.name.clone();
        self.mark_running(index, hook_name, kind);
        self.services[index].step_hook = Some(hook_name.to_string());
        let hook_name = hook_name.to_string();
        self.runner().spawn(
            hook,
            payload.input(),
            self.hook_tx.clone(),
            move |outcome| HookDone::Step {
                service: name,
                step,
                hook: hook_name,
                outcome,
            },
        );
    }

    pub(super) fn spawn_event_hooks(
        &mut self,
        index: usize,
        event: HookEvent,
        reason: &str,
        at: Option<EventAt>,
    ) {
        let subscribed: Vec<_> = self.services[index]
            .config
            .hooks
            .iter()
            .filter(|h| h.on.contains(&event))
            .cloned()
            .collect();
        if event == HookEvent::Rollback && !subscribed.is_empty() {
            if let Some(running) = &self.services[index].step_hook {
                // A rollback hook undoes what the steps did: it waits for the step hook
                // still running (switching writes, say) to end, within its timeout, rather
                // than run beside it. NEW's weight is 0 already.
                tracing::warn!(service = %self.services[index].config.name, hook = %running, "the rollback hooks wait for the step hook still running");
                self.services[index]
                    .deferred
                    .push((event, reason.to_string(), at));
                return;
            }
        }
        if event == HookEvent::Rollback {
            self.services[index].rollback_hooks_running += subscribed.len();
            if subscribed.is_empty() {
                self.rollback_hooks_ended(index);
            }
        }
        for hook in subscribed {
            let payload = self.payload(index, event.as_str(), reason, at);
            let service = self.services[index].config.name.clone();
            let hook_name = hook.name.clone();
            self.mark_running(index, &hook_name, event.as_str());
            self.runner().spawn(
                hook,
                payload.input(),
                self.hook_tx.clone(),
                move |outcome| HookDone::Event {
                    service,
                    hook: hook_name,
                    event,
                    outcome,
                },
            );
        }
    }

    /// Every `rollback` hook of the last rollback has ended (or there is none): the next
    /// process has none to run again.
    fn rollback_hooks_ended(&mut self, index: usize) {
        let name = self.services[index].config.name.clone();
        let Some(run) = self.services[index].rollout.as_mut() else {
            return;
        };
        if !run.state.rollback_hooks_pending {
            return;
        }
        run.state.rollback_hooks_pending = false;
        if self.store.save(&name, &run.state).is_err() {
            run.unsaved = true;
        }
    }

    /// The `rollback` hooks a stopped process did not see end: run again by this one.
    pub(super) fn resume_rollback_hooks(&mut self, index: usize) {
        let Some(run) = self.services[index].rollout.as_ref() else {
            return;
        };
        let service = &self.services[index];
        let pending = run.state.phase == Phase::RolledBack
            && run.state.rollback_hooks_pending
            && service.rollback_hooks_running == 0
            && service.deferred.is_empty();
        if pending {
            let reason = "the rollback hooks had not ended when the last process stopped";
            tracing::warn!(service = %service.config.name, "{reason}: running them again");
            self.spawn_event_hooks(index, HookEvent::Rollback, reason, None);
        }
    }

    fn mark_running(&mut self, index: usize, hook: &str, event: &str) {
        let status = self.services[index]
            .hooks
            .entry(hook.to_string())
            .or_default();
        status.name = hook.to_string();
        status.running = true;
        status.last_event = Some(event.to_string());
    }

    pub(super) fn hook_done(&mut self, done: HookDone) {
        if let HookDone::Probe {
            service,
            step,
            record,
            ok,
            detail,
        } = done
        {
            self.probe_done(&service, step, record, ok, detail);
            return;
        }
        if let HookDone::ProbeShort {
            service,
            step,
            detail,
        } = done
        {
            if let Some(index) = self.index_of(&service) {
                self.apply_logged(index, Input::ProbeShort { step, detail });
            }
            return;
        }
        if let HookDone::ShadowDrained = done {
            self.publish_status();
            return;
        }
        let Some((service, hook, label, outcome)) = done.parts() else {
            return;
        };
        self.metrics.hook_run(
            service,
            hook,
            outcome.result,
            outcome.duration.as_secs_f64(),
        );
        log_outcome(service, hook, label, outcome);
        let Some(index) = self.index_of(service) else {
            return;
        };
        let attempt = match &done {
            HookDone::Step { .. } => self.services[index]
                .rollout
                .as_ref()
                .map_or(1, |run| run.state.run_attempts),
            _ => 1,
        };
        let record = evidence::hook_record(hook, label, attempt, outcome);
        let _ = self.record(index, Decision::Hook(record));
        record_outcome(&mut self.services[index].hooks, hook, outcome);
        if let HookDone::Event {
            event: HookEvent::Rollback,
            ..
        } = &done
        {
            let service = &mut self.services[index];
            service.rollback_hooks_running = service.rollback_hooks_running.saturating_sub(1);
            if service.rollback_hooks_running == 0 {
                self.rollback_hooks_ended(index);
            }
        }
        if let HookDone::Step {
            step,
            hook,
            outcome,
            ..
        } = done
        {
            self.services[index].step_hook = None;
            let input = Input::HookFinished {
                step,
                hook,
                ok: outcome.ok(),
                detail: outcome.detail,
            };
            self.apply_logged(index, input);
            for (event, reason, at) in std::mem::take(&mut self.services[index].deferred) {
                self.spawn_event_hooks(index, event, &reason, at);
            }
        }
        self.publish_status();
    }
}

fn log_outcome(service: &str, hook: &str, on: &str, outcome: &HookOutcome) {
    let tail = |text: &str| HookOutcome::tail(text, LOG_TAIL).trim_end().to_string();
    if outcome.ok() {
        tracing::info!(service, hook, on, detail = %outcome.detail, duration = ?outcome.duration, "hook succeeded");
    } else {
        tracing::warn!(
            service, hook, on, detail = %outcome.detail, duration = ?outcome.duration,
            stdout = %tail(&outcome.stdout), stderr = %tail(&outcome.stderr), "hook failed"
        );
    }
}

fn record_outcome(statuses: &mut BTreeMap<String, HookStatus>, hook: &str, outcome: &HookOutcome) {
    let status = statuses.entry(hook.to_string()).or_default();
    status.name = hook.to_string();
    status.runs += 1;
    status.running = false;
    status.last_result = Some(outcome.result.label().to_string());
    status.last_detail = Some(outcome.detail.clone());
    status.last_duration_ms = Some(outcome.duration.as_millis() as u64);
    status.last_at = Some(timestamp(outcome.finished_at));
    status.stdout_tail = HookOutcome::tail(&outcome.stdout, STATUS_TAIL).to_string();
    status.stderr_tail = HookOutcome::tail(&outcome.stderr, STATUS_TAIL).to_string();
}

//! The controller's side of a `verify` step (SPEC §9): start the smoke requests on their
//! own task, against every NEW backend, and turn the outcome into the state machine's
//! input. Sending and judging them is `crate::shadow`'s job.

use std::sync::Arc;

use super::hooks::HookDone;
use super::Controller;
use crate::config::{StepKind, VerifySpec};
use crate::evidence::record::{Decision, ProbeRecord};
use crate::rollout::machine::Input;
use crate::rollout::schedule::{SHADOW_RECORD, VERIFY_RECORD};
use crate::shadow::{run_benchmark, run_smoke};

impl Controller {
    pub(super) fn spawn_verify(&mut self, index: usize, step: usize) {
        let service = &self.services[index].config;
        let spec = service
            .rollout
            .as_ref()
            .and_then(|r| r.steps.get(step))
            .and_then(|s| match &s.kind {
                StepKind::Verify(spec) => Some(spec.clone()),
                _ => None,
            })
            .unwrap_or(VerifySpec::SMOKE);
        let requests = Arc::new(if spec.smoke {
            service.smoke.clone()
        } else {
            Vec::new()
        });
        let addrs = |pool: &crate::config::PoolSpec| -> Vec<String> {
            pool.backends.iter().map(|b| b.addr.clone()).collect()
        };
        let (old, new) = (addrs(&service.old), addrs(&service.new));
        let timeouts = service.timeouts;
        let name = service.name.clone();
        let done = self.hook_tx.clone();
        tracing::info!(service = %name, step = step + 1, requests = requests.len(), backends = new.len(), benchmark = spec.benchmark.is_some(), "verify: checking NEW before it takes traffic");
        tokio::spawn(async move {
            let mut details = Vec::new();
            if spec.smoke {
                let outcome = run_smoke(&requests, &new, timeouts).await;
                match outcome.failure {
                    None => details.push(format!(
                        "{} smoke request(s) passed on {} NEW backend(s)",
                        outcome.passed,
                        new.len()
                    )),
                    Some(failure) => {
                        let _ = done.send(probe(name, step, false, failure));
                        return;
                    }
                }
            }
            let mut ok = true;
            if let Some(benchmark) = &spec.benchmark {
                let outcome = run_benchmark(benchmark, &old, &new, timeouts).await;
                ok = outcome.failure.is_none();
                details.push(outcome.summary);
            }
            let _ = done.send(probe(name, step, ok, details.join("; ")));
        });
    }

    /// A verify or shadow step's outcome: into the state machine like a step hook's.
    pub(super) fn probe_done(
        &mut self,
        service: &str,
        step: usize,
        record: &'static str,
        ok: bool,
        detail: String,
    ) {
        if ok {
            tracing::info!(service, step = step + 1, "{record} passed: {detail}");
        } else {
            tracing::warn!(service, step = step + 1, "{record} failed: {detail}");
        }
        let Some(index) = self.index_of(service) else {
            return;
        };
        // The verdict goes to the decision log before it moves the rollout (SPEC §10). The
        // record counts the step (1 run, 0 or 1 failed); the request counts are in `detail`.
        let probe = ProbeRecord {
            name: record.to_string(),
            passed: ok,
            total: 1,
            failed: u64::from(!ok),
            detail: vec![detail.clone()],
        };
        let decision = if record == SHADOW_RECORD {
            Decision::Shadow(probe)
        } else {
            Decision::Verify(probe)
        };
        let _ = self.record(index, decision);
        let input = Input::HookFinished {
            step,
            hook: record.to_string(),
            ok,
            detail,
        };
        self.apply_logged(index, input);
        self.sync_shadow(index);
        self.publish_status();
    }
}

fn probe(service: String, step: usize, ok: bool, detail: String) -> HookDone {
    HookDone::Probe {
        service,
        step,
        record: VERIFY_RECORD,
        ok,
        detail,
    }
}

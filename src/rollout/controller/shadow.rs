//! The controller's side of a `shadow` step (SPEC §9): put a copier in the route, wait
//! for the hold and for `min_requests` comparisons, then judge the mismatch rate. The
//! copying and comparing are `crate::shadow`'s.
//!
//! The hold runs on the controller's clock from the step's start (a pause does not stop
//! it; copies go on while paused); the verdict waits for enough comparisons, never
//! passing on too few, and the rollout pauses for "not enough evidence" when they have
//! not come `max_wait` of running time after the step started.

use std::sync::Arc;
use std::time::Duration;

use super::hooks::HookDone;
use super::Controller;
use crate::config::{PoolSpec, ShadowSpec};
use crate::rollout::machine::Phase;
use crate::rollout::schedule::{PlannedKind, SHADOW_RECORD};
use crate::shadow::Copier;

/// A pool's backend addresses, as the copier sends to them.
pub(super) fn addrs(pool: &PoolSpec) -> Vec<String> {
    pool.backends.iter().map(|b| b.addr.clone()).collect()
}

/// How often a held shadow step looks again for enough comparisons.
const RECHECK: Duration = Duration::from_secs(1);

impl Controller {
    pub(super) fn spawn_shadow(&mut self, index: usize, step: usize, spec: ShadowSpec) {
        let service = &self.services[index].config;
        let name = service.name.clone();
        let copier = Arc::new(
            Copier::new(
                spec.clone(),
                addrs(&service.old),
                addrs(&service.new),
                service.timeouts.connect,
                self.metrics.shadow_counters(&name),
            )
            .on_drained({
                let done = self.hook_tx.clone();
                move || {
                    let _ = done.send(HookDone::ShadowDrained);
                }
            }),
        );
        if let Some(previous) = self.services[index].shadow.replace(copier.clone()) {
            previous.retire();
        }
        self.publish_snapshot();
        tracing::info!(service = %name, step = step + 1, "shadow: copying {}% of OLD's requests to NEW", spec.percent * 100.0);
        let done = self.hook_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(spec.hold).await;
            let mut said = false;
            let (comparisons, bad) = loop {
                if !copier.is_active() {
                    return; // the step ended some other way
                }
                let (comparisons, bad) = copier.tally();
                if comparisons >= spec.min_requests {
                    break (comparisons, bad);
                }
                let detail = format!(
                    "{comparisons} of the {} comparisons it needs (copies OLD failed and dropped copies are no comparison: `cutover diff`)",
                    spec.min_requests
                );
                if !said {
                    said = true;
                    tracing::warn!(service = %name, step = step + 1, "shadow: the hold is over with {detail}; it waits for more");
                }
                // The rollout pauses once this has gone on for `max_wait` (`ProbeShort`).
                let short = HookDone::ProbeShort {
                    service: name.clone(),
                    step,
                    detail,
                };
                if done.send(short).is_err() {
                    return;
                }
                tokio::time::sleep(RECHECK).await;
            };
            let rate = bad as f64 / comparisons as f64;
            let ok = rate <= spec.max_mismatch;
            let detail = format!(
                "mismatch rate {:.2}% ({bad} of {comparisons} comparisons), {} the limit of {}%",
                rate * 100.0,
                if ok { "within" } else { "above" },
                spec.max_mismatch * 100.0
            );
            let _ = done.send(HookDone::Probe {
                service: name,
                step,
                record: SHADOW_RECORD,
                ok,
                detail,
            });
        });
    }

    /// Stops the copier of a shadow step that is no longer running (it completed, was
    /// promoted past, rolled back) and takes it out of the route.
    pub(super) fn sync_shadow(&mut self, index: usize) {
        let service = &self.services[index];
        let Some(copier) = service.shadow.as_ref().filter(|c| c.is_active()) else {
            return;
        };
        let running = service.rollout.as_ref().is_some_and(|run| {
            matches!(run.state.phase, Phase::Progressing | Phase::Paused)
                && run.state.hook_in_flight
                && matches!(
                    run.plan.steps.get(run.state.step).map(|s| &s.kind),
                    Some(PlannedKind::Shadow(_))
                )
        });
        if !running {
            copier.retire();
            self.publish_snapshot();
        }
    }
}

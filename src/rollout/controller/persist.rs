//! Writing a rollout's state: on every transition before it takes effect, its time-only
//! progress every second, and everything on a clean stop.

use std::time::Duration;

use tokio::time::Instant;

use super::{ControlError, Controller, RolloutRun};
use crate::rollout::machine::{Effect, RolloutState};
use crate::rollout::state::StateStore;

/// Only time counters changed: such a state is written at most this often, so that a crash
/// loses about a second of a hold at most (SPEC §3); a clean stop writes it exactly. An
/// active rollout ticks every second (`tick::SAMPLE_EVERY`): just under a second writes at
/// each tick despite jitter, one small fsynced file a second per rollout.
const PERSIST_PROGRESS_EVERY: Duration = Duration::from_millis(900);

/// Saves a changed state. A state whose only change is elapsed time is written at most
/// every `PERSIST_PROGRESS_EVERY`. A failed save undoes the transition (it did not
/// happen), except a rollback, which goes ahead: NEW is failing and routing away from it
/// must not wait for a disk.
pub(super) fn persist(
    store: &dyn StateStore,
    name: &str,
    run: &mut RolloutRun,
    before: &RolloutState,
    effects: &[Effect],
    now: Instant,
) -> Result<(), ControlError> {
    let progress_only = same_but_progress(before, &run.state);
    let due = now.duration_since(run.persisted_at) >= PERSIST_PROGRESS_EVERY;
    if progress_only && !due {
        return Ok(());
    }
    match store.save(name, &run.state) {
        Ok(()) => {
            run.persisted_at = now;
            run.unsaved = false;
        }
        Err(err) => {
            let rolling_back = effects.iter().any(|e| matches!(e, Effect::RolledBack(_)));
            tracing::error!(service = %name, error = %err, "cannot save the rollout state");
            if !rolling_back && !progress_only {
                run.state = before.clone();
                return Err(ControlError::Persist(err.to_string()));
            }
            run.unsaved |= rolling_back;
        }
    }
    Ok(())
}

/// How often a rollback whose save failed is saved again.
pub(super) const RETRY_SAVE_EVERY: Duration = Duration::from_secs(1);

/// True when only the counters of elapsed time differ.
fn same_but_progress(a: &RolloutState, b: &RolloutState) -> bool {
    let mut a = a.clone();
    a.hold_observed_ms = b.hold_observed_ms;
    a.gate_elapsed_ms = b.gate_elapsed_ms;
    a.gate_wait_ms = b.gate_wait_ms;
    a == *b
}

impl Controller {
    /// At a clean stop, once the drain is over: saves the state to hand over.
    pub(super) fn hand_over(&mut self) {
        // Hook results that came in meanwhile are part of it: a `run` hook that succeeded
        // is not run again by the next process.
        while let Ok(done) = self.hook_rx.try_recv() {
            self.hook_done(done);
        }
        // The hold ran until now: keep every millisecond of it. Only the process that
        // decides does: a follower's state is the leader's.
        if self.leading {
            self.on_wake();
            self.save_progress();
        }
    }

    /// Saves again the rollbacks whose save failed.
    pub(super) fn retry_unsaved(&mut self) {
        for service in &mut self.services {
            let Some(run) = service.rollout.as_mut().filter(|run| run.unsaved) else {
                continue;
            };
            if self.store.save(&service.config.name, &run.state).is_ok() {
                tracing::info!(service = %service.config.name, "the rollback's state is saved");
                run.persisted_at = Instant::now();
                run.unsaved = false;
            }
        }
    }

    /// Writes every rollout's state as it is now, the time counters included.
    pub(super) fn save_progress(&mut self) {
        let now = Instant::now();
        for service in &mut self.services {
            let Some(run) = service.rollout.as_mut() else {
                continue;
            };
            match self.store.save(&service.config.name, &run.state) {
                Ok(()) => {
                    run.persisted_at = now;
                    run.unsaved = false;
                }
                Err(err) => {
                    tracing::error!(service = %service.config.name, error = %err, "cannot save the rollout state")
                }
            }
        }
    }
}

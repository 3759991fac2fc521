//! The controller's role in a fleet (SPEC §11): the one that leads decides; the others
//! adopt what it commits. A single process always leads.
//!
//! Taking over reads every rollout from the store again (the leader's last commit) and
//! resumes it exactly as a restart would (`Input::Restored`): the same step, the hold
//! already served, a `run` hook that succeeded not run again. A leader that may not
//! advance (another config on some instance) hands out no running time and judges nothing
//! until that is resolved; it then starts its analysis on fresh numbers.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::tick::Clock;
use super::traffic::{LocalTraffic, TrafficSource};
use super::{load_rollout, Controller, RolloutRun, Startup};
use crate::config::Weight;
use crate::rollout::analysis;
use crate::rollout::machine::Input;
use crate::rollout::schedule::Plan;

/// How often a process that does not decide refreshes what it shows.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

impl Controller {
    /// The next wake-up: the rollouts' deadlines when deciding, a status refresh otherwise.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        if self.leading && self.blocked.is_none() {
            self.next_deadline()
        } else {
            Some(Instant::now() + FOLLOW_EVERY)
        }
    }

    /// Does what is due, in whatever role the store gives this process now.
    pub(super) fn wake(&mut self) {
        let leads = self.store.leads();
        if leads && !self.leading {
            self.take_over();
        }
        if !leads && self.leading {
            tracing::warn!("no longer leading the fleet: deciding nothing and running no hook until this instance leads again");
            // The windows hold the fleet's sums; a local guard must start on its own.
            self.fresh_runs(Vec::new());
        }
        self.leading = leads;
        if !leads {
            self.blocked = None;
            self.adopt();
            if self.store.isolated() {
                self.guard_locally();
            }
            return;
        }
        // Trips come first, blocked or not: they only ever route away from NEW.
        self.act_on_reported_trips();
        match self.store.blocked() {
            Some(why) => {
                if self.blocked.as_deref() != Some(why.as_str()) {
                    tracing::warn!("not advancing any rollout: {why}");
                }
                self.blocked = Some(why);
                self.on_wake_blocked();
            }
            None => {
                if self.blocked.take().is_some() {
                    tracing::info!("advancing rollouts again");
                    self.fresh_runs(Vec::new());
                }
                self.on_wake();
            }
        }
    }

    /// Becomes the one that decides: every rollout as the store has it, resumed.
    fn take_over(&mut self) {
        tracing::info!("taking over the rollouts");
        let now = Instant::now();
        let mut startups = Vec::new();
        for service in &mut self.services {
            let Some(plan) = Plan::of(&service.config) else {
                continue;
            };
            match load_rollout(self.store.as_ref(), &service.config, plan, now) {
                Ok((run, startup)) => {
                    service.rollout = Some(run);
                    startups.push((service.config.name.clone(), startup));
                }
                Err(err) => {
                    tracing::error!(service = %service.config.name, error = %err, "cannot read the rollout state to take it over");
                }
            }
        }
        self.fresh_runs(startups);
    }

    /// Restarts the clock and the analysis windows, then carries out `startups`.
    fn fresh_runs(&mut self, startups: Vec<(String, Startup)>) {
        let now = Instant::now();
        for service in &mut self.services {
            if let Some(run) = service.rollout.take() {
                service.rollout = Some(RolloutRun::new(run.plan, run.state, now));
            }
        }
        self.clock = Clock::new(now);
        self.publish_snapshot();
        for (service, startup) in startups {
            self.restore(&service, startup);
        }
    }

    /// Takes on the states the leader committed; routes at their weights.
    fn adopt(&mut self) {
        let mut reroute = false;
        for (name, state) in self.store.committed() {
            let Some(index) = self.index_of(&name) else {
                continue;
            };
            let Some(run) = self.services[index].rollout.as_mut() else {
                continue;
            };
            let mut state = state;
            if let Some(tripped_in) = self.store.local_trip(&name) {
                if state.run_id != tripped_in {
                    // The fleet has moved on to another run: the trip was of one that ended.
                    tracing::info!(service = %name, "this instance's local trip was of an earlier run");
                    self.store.set_local_trip(&name, None);
                } else if state.weight == Weight::ZERO || !state.is_watched() {
                    tracing::info!(service = %name, "the fleet's leader acted on this instance's local trip");
                    self.store.set_local_trip(&name, None);
                } else {
                    // Held at 0 until the leader has acted on the trip.
                    state.weight = Weight::ZERO;
                    state.reason.clone_from(&run.state.reason);
                }
            }
            if run.state != state {
                if run.state.weight != state.weight {
                    tracing::info!(service = %name, weight = %state.weight, "the fleet's leader set NEW's weight to {}", state.weight);
                    reroute = true;
                }
                run.state = state;
                // What a restart without etcd starts from: the state followed last.
                self.store.remember(&name, &run.state);
            }
        }
        if reroute {
            self.publish_snapshot();
        }
    }
}

impl Controller {
    /// Cut off from etcd: this process decides nothing, but its own traffic may still
    /// trip NEW to weight 0 here (the safe direction, SPEC §11); it reports the trip in its
    /// member record once etcd is back, and holds NEW at 0 until the leader has acted.
    fn guard_locally(&mut self) {
        let now = Instant::now();
        let at = self.clock.since_origin(now);
        let mut reroute = false;
        for service in &mut self.services {
            let name = service.config.name.to_string();
            let Some(run) = service.rollout.as_mut() else {
                continue;
            };
            let Some(trip) = run.plan.analysis.as_ref().and_then(|a| a.trip.as_ref()) else {
                continue;
            };
            if !run.state.is_watched() || self.store.local_trip(&name).is_some() {
                continue;
            }
            // This process's own counters: all it can see, and all it changes.
            let sample = LocalTraffic.sample(&service.route);
            run.windows.record(at, sample.old, sample.new);
            if let Some(reason) = analysis::trip(trip, &run.windows) {
                tracing::warn!(service = %name, "etcd is unreachable; NEW tripped to 0% on this instance alone: {reason}");
                self.store.set_local_trip(&name, Some(&run.state.run_id));
                run.state.weight = Weight::ZERO;
                run.state.reason = Some(format!(
                    "NEW at 0% on this instance alone (etcd unreachable), until the leader acts: {reason}"
                ));
                reroute = true;
            }
        }
        if reroute {
            self.publish_snapshot();
        }
    }

    /// The leader treats a trip any member made on its own as a trip of the fleet.
    fn act_on_reported_trips(&mut self) {
        for trip in self.store.reported_trips() {
            let (instance, name) = (trip.instance, trip.service);
            let Some(index) = self.index_of(&name) else {
                continue;
            };
            let Some(run) = self.services[index].rollout.as_ref() else {
                continue;
            };
            if !run.state.is_watched() {
                // Acted on; if the trip was this instance's own, it is resolved.
                self.store.set_local_trip(&name, None);
                continue;
            }
            if let Some(tripped_in) = trip.run.filter(|r| *r != run.state.run_id) {
                // Made in an earlier run, which has ended: a follower clears it when it
                // sees the run the fleet is in now; this instance, leading, clears its own.
                if self.store.local_trip(&name).as_ref() == Some(&tripped_in) {
                    self.store.set_local_trip(&name, None);
                    tracing::info!(service = %name, "this instance's trip of run {tripped_in} ended with that run");
                } else {
                    tracing::debug!(service = %name, "instance `{instance}`'s trip of run {tripped_in} ended with that run");
                }
                continue;
            }
            let reason = format!(
                "trip: instance `{instance}` tripped NEW to 0% on its own while it could not reach etcd"
            );
            tracing::warn!(service = %name, "{reason}");
            self.apply_logged(index, Input::Trip { reason });
        }
    }
}

/// Waits for the store's next change; forever when it has none.
pub(super) async fn changed(changes: &mut Option<watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *changes = None;
            }
        }
        None => std::future::pending().await,
    }
}

//! Time in the controller: when it must wake next, and what is due when it does.
//!
//! Design note: there is no fixed tick. After every wake-up the controller computes the
//! earliest deadline over its rollouts and sleeps until then (`sleep_until`); commands and
//! hook results still wake it at once. The deadlines are:
//! - the next analysis check, every `analysis.interval`;
//! - the end of a weight step's hold, a gate's next poll and its deadline (the state
//!   machine says how much running time is left: `running_time_until_due`);
//! - the next sample of an active rollout's counters, every second: the trip's
//!   evaluation (it judges whole seconds of NEW's traffic) and the refresh of /status.
//!
//! Every wake-up first hands the running time since the previous one to each progressing
//! rollout (`Input::Tick`), in whole milliseconds, keeping the remainder for the next, so
//! an interval is honoured to the millisecond and nothing drifts.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{evidence, Controller, RolloutRun};
use crate::evidence::record::Decision;
use crate::rollout::analysis::{self, Verdict};
use crate::rollout::machine::{Input, Phase};

/// How often an active rollout's counters are sampled.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The controller's time: an origin for the windows, and how far running time was handed
/// out.
pub(super) struct Clock {
    origin: Instant,
    last_tick: Instant,
}

impl Clock {
    pub(super) fn new(now: Instant) -> Clock {
        Clock {
            origin: now,
            last_tick: now,
        }
    }

    /// The running time since the last call, in whole milliseconds.
    fn advance(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last_tick);
        let whole = Duration::from_millis(elapsed.as_millis() as u64);
        self.last_tick += whole;
        whole
    }

    pub(super) fn since_origin(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }
}

impl RolloutRun {
    /// When something is next due for this rollout, if anything is.
    fn next_due(&self, clock: &Clock) -> Option<Instant> {
        let state = &self.state;
        let active = matches!(state.phase, Phase::Progressing | Phase::Paused);
        let sample = active.then(|| clock.origin + self.next_sample);
        let check = self
            .plan
            .analysis
            .as_ref()
            .filter(|_| state.is_watched())
            .map(|_| clock.origin + self.next_check);
        // Running time is handed out in whole milliseconds: round up, or a sub-millisecond
        // remainder would wake the controller again and again without progress.
        let running = state.running_time_until_due(&self.plan).map(|left| {
            clock.last_tick + Duration::from_millis(left.as_nanos().div_ceil(1_000_000) as u64)
        });
        let retry = self
            .unsaved
            .then(|| Instant::now() + super::persist::RETRY_SAVE_EVERY);
        [sample, check, running, retry].into_iter().flatten().min()
    }
}

impl Controller {
    /// The earliest deadline of every rollout; `None` when only a command can change things.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| s.rollout.as_ref())
            .filter_map(|run| run.next_due(&self.clock))
            .min()
    }

    /// Hands out the running time and does whatever has come due.
    pub(super) fn on_wake(&mut self) {
        self.retry_unsaved();
        let now = Instant::now();
        let elapsed = self.clock.advance(now);
        let at = self.clock.since_origin(now);
        for index in 0..self.services.len() {
            self.service_due(index, at, elapsed);
        }
    }

    /// A leader that may not advance (`blocked`) hands out no running time and judges no
    /// checks, but still samples and trips: a trip only ever routes away from NEW.
    pub(super) fn on_wake_blocked(&mut self) {
        self.retry_unsaved();
        let at = self.clock.since_origin(Instant::now());
        for index in 0..self.services.len() {
            let service = &mut self.services[index];
            let Some(run) = service.rollout.as_mut() else {
                continue;
            };
            if !run.state.is_watched() || at < run.next_sample {
                continue;
            }
            let sample = self.traffic.sample(&service.route);
            run.windows.record(at, sample.old, sample.new);
            run.complete = sample.complete;
            run.next_sample = at + SAMPLE_EVERY;
            self.trip(index);
        }
    }

    fn service_due(&mut self, index: usize, at: Duration, elapsed: Duration) {
        let Some(run) = self.services[index].rollout.as_ref() else {
            return;
        };
        // Even with no time elapsed: a gate due now is polled by this tick.
        if run.state.phase == Phase::Progressing {
            self.apply_logged(index, Input::Tick(elapsed));
        }
        let service = &mut self.services[index];
        let Some(run) = service.rollout.as_mut() else {
            return;
        };
        let analysis = run.plan.analysis.clone();
        let check_due = analysis.is_some() && run.state.is_watched() && at >= run.next_check;
        let sample_due = at >= run.next_sample;
        if sample_due || check_due {
            let sample = self.traffic.sample(&service.route);
            run.windows.record(at, sample.old, sample.new);
            run.complete = sample.complete;
            run.next_sample = at + SAMPLE_EVERY;
        }
        let Some(analysis) = analysis else {
            return;
        };
        if !run.state.is_watched() {
            run.next_check = at + analysis.interval;
            return;
        }
        // Incomplete numbers trip too: the errors a trip sees are real errors of the
        // members it has numbers from, and a trip only ever routes away from NEW.
        if sample_due {
            self.trip(index);
        }
        if check_due {
            self.check(index, at);
        }
    }

    fn trip(&mut self, index: usize) {
        let Some(run) = self.services[index].rollout.as_ref() else {
            return;
        };
        let trip = run.plan.analysis.as_ref().and_then(|a| a.trip.as_ref());
        let tripped = trip.and_then(|t| {
            let reason = analysis::trip(t, &run.windows)?;
            Some((evidence::trip_record(t, &run.windows, &reason), reason))
        });
        if let Some((record, reason)) = tripped {
            tracing::warn!(service = %self.services[index].config.name, "{reason}");
            // A trip acts whether or not its record could be written (`evidence`).
            let _ = self.record(index, Decision::Trip(record));
            self.apply_logged(index, Input::Trip { reason });
        }
    }

    fn check(&mut self, index: usize, at: Duration) {
        let Some(run) = self.services[index].rollout.as_mut() else {
            return;
        };
        let Some(analysis) = run.plan.analysis.as_ref() else {
            return;
        };
        if !run.state.is_watched() {
            return;
        }
        // On time, the next check is one interval after this one was due; after a long
        // stall, half an interval from now rather than a burst of catch-up checks.
        run.next_check = (run.next_check + analysis.interval).max(at + analysis.interval / 2);
        let weight = run.state.weight;
        let check = analysis::judge(
            analysis.method,
            analysis,
            &run.windows,
            run.complete,
            weight,
        );
        let failures = evidence::failures_after(&run.state, check.verdict);
        let span = check.span.unwrap_or(analysis.window);
        let decision = evidence::check_decision(&check, span, failures);
        run.last_check = Some((SystemTime::now(), check.clone()));
        run.checks += 1;
        let name = self.services[index].config.name.clone();
        self.metrics.check(&name, check.verdict);
        let summary = check.summary();
        match check.verdict {
            Verdict::Fail => tracing::warn!(service = %name, "check {summary}"),
            _ => tracing::info!(service = %name, "check {summary}"),
        }
        let verdict = check.verdict;
        let _ = self.record(index, decision);
        self.apply_logged(index, Input::Check { verdict, summary });
    }
}

//! The analysis: sliding windows over the data path's counters, and the checks run on them.
//!
//! Pure: the controller samples the cumulative counters every second and at every check,
//! and passes them in with the time; nothing here reads a clock or touches I/O.
//!
//! - A regular check looks at the last `window` and evaluates every enabled rule. Fewer
//!   than `min_requests` NEW requests make it inconclusive: it neither passes nor fails.
//!   Comparisons with OLD (`max_error_rate_increase`, `max_p99_latency_ratio`) are only
//!   made when OLD has `min_requests` too.
//! - The trip looks at the most recent NEW requests: the shortest stretch of whole seconds,
//!   going back at most `trip.window`, that holds at least `trip.min_requests` of them. A
//!   hard outage is seen in the first second that has enough traffic, instead of being
//!   diluted by the healthy traffic that came before it.
//! - The p99 ratio rule does not fire on differences under 5 ms: 2 ms against 1 ms is a
//!   ratio of 2 and no regression anyone would roll back for.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AnalysisSpec, TripSpec};
use crate::stats::PoolCounts;

/// How far a sample may be from the start of a window and still open it.
const SAMPLE_TOLERANCE: Duration = Duration::from_millis(500);

/// Below this difference, a p99 ratio is noise.
const RATIO_FLOOR: Duration = Duration::from_millis(5);

/// Cumulative counts of both pools, sampled every second and at every check, kept for the
/// longest window.
#[derive(Debug)]
pub(crate) struct Windows {
    samples: VecDeque<Sample>,
    keep: Duration,
}

#[derive(Debug)]
struct Sample {
    at: Duration,
    old: PoolCounts,
    new: PoolCounts,
}

/// What one window holds for both pools.
#[derive(Debug, Clone, Default)]
pub(crate) struct WindowCounts {
    pub old: PoolCounts,
    pub new: PoolCounts,
}

impl Windows {
    /// Keeps enough samples to answer for windows up to `keep`.
    pub(crate) fn new(keep: Duration) -> Windows {
        Windows {
            samples: VecDeque::new(),
            keep,
        }
    }

    /// Adds the cumulative counts at time `at` (any monotonic origin).
    pub(crate) fn record(&mut self, at: Duration, old: PoolCounts, new: PoolCounts) {
        self.samples.push_back(Sample { at, old, new });
        while self.samples.len() > 2 && at.saturating_sub(self.samples[1].at) >= self.keep {
            self.samples.pop_front();
        }
    }

    /// What happened over the last `span` (or since the first sample, if shorter).
    pub(crate) fn over(&self, span: Duration) -> WindowCounts {
        let Some(latest) = self.samples.back() else {
            return WindowCounts::default();
        };
        // The sample nearest the start of the window: ticks jitter by a few milliseconds,
        // and "at or before" would then take a whole extra second.
        let since = latest.at.saturating_sub(span);
        let base = self
            .samples
            .iter()
            .find(|s| s.at + SAMPLE_TOLERANCE >= since)
            .unwrap_or(latest);
        WindowCounts {
            old: latest.old.minus(&base.old),
            new: latest.new.minus(&base.new),
        }
    }

    /// NEW's most recent requests: the shortest run of trailing samples holding at least
    /// `min_requests`, no longer than `max_span`. `None` while there are too few.
    pub(crate) fn recent_new(&self, min_requests: u64, max_span: Duration) -> Option<PoolCounts> {
        let latest = self.samples.back()?;
        for earlier in self.samples.iter().rev().skip(1) {
            if latest.at.saturating_sub(earlier.at) > max_span {
                break;
            }
            let counts = latest.new.minus(&earlier.new);
            if counts.requests() >= min_requests {
                return Some(counts);
            }
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// Keeps history for windows up to `keep` from now on.
    pub(crate) fn set_span(&mut self, keep: Duration) {
        self.keep = keep;
    }
}

/// One pool's side of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolMeasure {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
}

impl fmt::Display for PoolMeasure {
    /// `1234 req, 0.10% errors, p99 45.0ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} req, {:.2}% errors, p99 ",
            self.requests,
            self.error_rate * 100.0
        )?;
        match self.p99_ms {
            Some(p99) => write!(f, "{p99:.1}ms"),
            None => f.write_str("-"),
        }
    }
}

impl PoolMeasure {
    pub fn of(counts: &PoolCounts) -> PoolMeasure {
        PoolMeasure {
            requests: counts.requests(),
            errors: counts.errors(),
            error_rate: counts.error_rate(),
            p99_ms: counts
                .latency_quantile(0.99)
                .map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive];

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// A rule that was broken, with what was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Breach {
    pub rule: &'static str,
    pub measured: f64,
    pub limit: f64,
    pub text: String,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The result of one check: the verdict and everything it was based on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Check {
    pub verdict: Verdict,
    pub new: PoolMeasure,
    pub old: PoolMeasure,
    pub breaches: Vec<Breach>,
    /// Why a check was inconclusive.
    pub note: Option<String>,
}

impl Check {
    /// One line for logs and hooks.
    pub(crate) fn summary(&self) -> String {
        let mut text = format!(
            "{}: new {} | old {}",
            self.verdict.label(),
            self.new,
            self.old
        );
        if !self.breaches.is_empty() {
            let breaches: Vec<String> = self.breaches.iter().map(|b| b.text.clone()).collect();
            text.push_str(&format!(" | {}", breaches.join("; ")));
        }
        if let Some(note) = &self.note {
            text.push_str(&format!(" | {note}"));
        }
        text
    }
}

/// A check on numbers known to miss part of the traffic: inconclusive, whatever they say.
pub(crate) fn incomplete(window: &WindowCounts) -> Check {
    Check {
        verdict: Verdict::Inconclusive,
        new: PoolMeasure::of(&window.new),
        old: PoolMeasure::of(&window.old),
        breaches: Vec::new(),
        note: Some("the traffic numbers are incomplete".to_string()),
    }
}

/// Evaluates every enabled rule on one window.
pub(crate) fn evaluate(spec: &AnalysisSpec, window: &WindowCounts) -> Check {
    let new = PoolMeasure::of(&window.new);
    let old = PoolMeasure::of(&window.old);
    if new.requests < spec.min_requests {
        return Check {
            verdict: Verdict::Inconclusive,
            new,
            old,
            breaches: Vec::new(),
            note: Some(format!(
                "{} NEW requests in the window, {} needed",
                new.requests, spec.min_requests
            )),
        };
    }
    let old_comparable = old.requests >= spec.min_requests;
    let mut breaches = Vec::new();
    if let Some(limit) = spec.max_error_rate {
        if new.error_rate > limit {
            breaches.push(Breach {
                rule: "max_error_rate",
                measured: new.error_rate,
                limit,
                text: format!(
                    "NEW error rate {:.2}% > {:.2}%",
                    new.error_rate * 100.0,
                    limit * 100.0
                ),
            });
        }
    }
    if let (Some(limit), true) = (spec.max_error_rate_increase, old_comparable) {
        let increase = new.error_rate - old.error_rate;
        if increase > limit {
            breaches.push(Breach {
                rule: "max_error_rate_increase",
                measured: increase,
                limit,
                text: format!(
                    "NEW error rate {:.2}% is {:.2} points above OLD's {:.2}% (max {:.2})",
                    new.error_rate * 100.0,
                    increase * 100.0,
                    old.error_rate * 100.0,
                    limit * 100.0
                ),
            });
        }
    }
    let new_p99 = window.new.latency_quantile(0.99);
    if let (Some(limit), Some(p99)) = (spec.max_p99_latency, new_p99) {
        if p99 > limit {
            breaches.push(Breach {
                rule: "max_p99_latency",
                measured: p99.as_secs_f64(),
                limit: limit.as_secs_f64(),
                text: format!("NEW p99 {p99:.1?} > {limit:?}"),
            });
        }
    }
    let old_p99 = window.old.latency_quantile(0.99);
    if let (Some(ratio), Some(new_p99), Some(old_p99), true) =
        (spec.max_p99_latency_ratio, new_p99, old_p99, old_comparable)
    {
        let measured = new_p99.as_secs_f64() / old_p99.as_secs_f64().max(1e-9);
        if measured > ratio && new_p99.saturating_sub(old_p99) >= RATIO_FLOOR {
            breaches.push(Breach {
                rule: "max_p99_latency_ratio",
                measured,
                limit: ratio,
                text: format!(
                    "NEW p99 {new_p99:.1?} is {measured:.2}x OLD's {old_p99:.1?} (max {ratio}x)"
                ),
            });
        }
    }
    Check {
        verdict: if breaches.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        new,
        old,
        breaches,
        note: None,
    }
}

/// The trip: `Some(reason)` when NEW's most recent requests fail too often.
pub(crate) fn trip(spec: &TripSpec, windows: &Windows) -> Option<String> {
    let recent = windows.recent_new(spec.min_requests, spec.window)?;
    let rate = recent.error_rate();
    (rate >= spec.error_rate).then(|| {
        format!(
            "trip: {} of NEW's last {} requests failed ({:.1}% >= {:.1}%)",
            recent.errors(),
            recent.requests(),
            rate * 100.0,
            spec.error_rate * 100.0
        )
    })
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;

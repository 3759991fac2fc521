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

use crate::config::{AnalysisSpec, TripSpec, Weight};
use crate::evidence::record::{CheckRecord, Method, Outcome, Rule, RuleRecord};
use crate::stats::PoolCounts;

mod intervals;
#[cfg(test)]
mod scenarios;
mod statistical;

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

#[cfg(test)]
impl Windows {
    /// Windows whose last `span` holds exactly `window`.
    pub(crate) fn holding(window: &WindowCounts, span: Duration) -> Windows {
        let mut windows = Windows::new(span);
        windows.record(Duration::ZERO, PoolCounts::default(), PoolCounts::default());
        windows.record(span, window.old.clone(), window.new.clone());
        windows
    }
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
        self.newest(min_requests, max_span)
            .map(|(_, counts)| counts.new)
    }

    /// Both pools over the shortest trailing span in which NEW has at least
    /// `min_requests`, no longer than `max_span`, and that span; `None` while there is none.
    pub(crate) fn newest(
        &self,
        min_requests: u64,
        max_span: Duration,
    ) -> Option<(Duration, WindowCounts)> {
        let latest = self.samples.back()?;
        for earlier in self.samples.iter().rev().skip(1) {
            let span = latest.at.saturating_sub(earlier.at);
            if span > max_span {
                break;
            }
            let new = latest.new.minus(&earlier.new);
            if new.requests() >= min_requests {
                let old = latest.old.minus(&earlier.old);
                return Some((span, WindowCounts { old, new }));
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

pub(crate) use crate::evidence::record::PoolMeasure;

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

names! {
    Verdict: pub fn label, pub const ALL {
        Pass => "pass",
        Fail => "fail",
        Inconclusive => "inconclusive",
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

/// How checks judge (`analysis.method`, SPEC §10): defined with the config it comes from.
pub(crate) use crate::config::AnalysisMethod;

/// The default `confidence` of the statistical method.
#[cfg(test)]
pub(crate) const DEFAULT_CONFIDENCE: f64 = crate::config::defaults::ANALYSIS_CONFIDENCE;

/// How long a step may stay inconclusive before it pauses for "not enough evidence":
/// the configured `max_wait`, else 3 × the step's hold and at least 10 minutes.
pub(crate) fn max_wait(configured: Option<Duration>, hold: Duration) -> Duration {
    configured.unwrap_or_else(|| (hold * 3).max(Duration::from_secs(600)))
}

/// The result of one check: the verdict and everything it was based on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Check {
    pub verdict: Verdict,
    pub method: Method,
    pub new: PoolMeasure,
    pub old: PoolMeasure,
    pub breaches: Vec<Breach>,
    /// Every enabled rule with its numbers, for the decision log.
    pub rules: Vec<RuleRecord>,
    /// Why a check was inconclusive, or what its numbers cover when not the whole window.
    pub note: Option<String>,
    /// Judged on NEW's newest requests, over this span, rather than on the whole window.
    pub span: Option<Duration>,
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

    /// The check as the decision log keeps it.
    pub(crate) fn record(&self, window: Duration, consecutive_failures: u32) -> CheckRecord {
        CheckRecord {
            method: self.method,
            outcome: match self.verdict {
                Verdict::Pass => Outcome::Pass,
                Verdict::Fail => Outcome::Fail,
                Verdict::Inconclusive => Outcome::Inconclusive,
            },
            window_s: window.as_secs_f64(),
            new: self.new,
            old: self.old,
            rules: self.rules.clone(),
            note: self.note.clone(),
            consecutive_failures,
        }
    }
}

/// A check on numbers known to miss part of the traffic: inconclusive, whatever they say.
pub(crate) fn incomplete(window: &WindowCounts) -> Check {
    Check {
        verdict: Verdict::Inconclusive,
        method: Method::Threshold,
        new: PoolMeasure::of(&window.new),
        old: PoolMeasure::of(&window.old),
        breaches: Vec::new(),
        rules: Vec::new(),
        note: Some("the traffic numbers are incomplete".to_string()),
        span: None,
    }
}

/// Runs a check with the configured method over the last `spec.window`; `complete` is
/// false when the numbers are known to miss part of the traffic.
///
/// The statistical method also judges NEW's newest requests (the shortest trailing span
/// with `min_requests` of them, at most a quarter of the window): a regression that began
/// a few seconds ago is a small part of a long window but most of its newest span. That
/// judgement can only fail a check, never pass it, and it is made at half the risk
/// (α/2), so a check fails on noise with a chance of at most 1.5 α.
///
/// `weight` is NEW's share now: at 100% OLD has none, so comparisons with it cannot judge
/// by design rather than for want of traffic ([`without_old`]).
pub(crate) fn judge(
    method: AnalysisMethod,
    spec: &AnalysisSpec,
    windows: &Windows,
    complete: bool,
    weight: Weight,
) -> Check {
    let window = &windows.over(spec.window);
    let mut check = match (complete, method) {
        (false, _) => incomplete(window),
        (true, AnalysisMethod::Threshold) => evaluate(spec, window),
        (true, AnalysisMethod::Statistical { confidence }) => {
            let whole = statistical::evaluate(spec, confidence, window);
            let newest = windows.newest(spec.min_requests, spec.window / 4);
            match newest {
                Some((span, counts)) if whole.verdict != Verdict::Fail => {
                    let half_risk = 1.0 - (1.0 - confidence) / 2.0;
                    let recent = statistical::evaluate(spec, half_risk, &counts);
                    if recent.verdict == Verdict::Fail {
                        newest_failed(recent, span)
                    } else {
                        whole
                    }
                }
                _ => whole,
            }
        }
    };
    if let AnalysisMethod::Statistical { .. } = method {
        check.method = Method::Statistical;
    }
    if weight == Weight::FULL {
        without_old(spec, &mut check);
    }
    check
}

/// At 100% OLD takes no traffic, so once its last requests leave the window the
/// comparisons with it cannot judge by design. A check whose only rules are such
/// comparisons, skipped because OLD has too few requests, then rests on NEW's
/// `min_requests` alone and says so; below 100% the same check is inconclusive and the
/// step waits for OLD's traffic ([`nothing_judged`]). Skipped for any other reason (NEW
/// has no latencies: every request failed over to OLD), the check stays inconclusive.
fn without_old(spec: &AnalysisSpec, check: &mut Check) {
    let only_comparisons = check.old.requests < spec.min_requests
        && !check.rules.is_empty()
        && check
            .rules
            .iter()
            .all(|r| r.outcome == Outcome::Skipped && r.rule.compares_with_old());
    if check.verdict == Verdict::Inconclusive && only_comparisons {
        check.verdict = Verdict::Pass;
        check.note =
            Some("OLD takes no traffic at 100%: the comparisons with OLD do not apply".to_string());
    }
}

/// A check failed on NEW's newest requests: it says so and over what span.
fn newest_failed(mut check: Check, span: Duration) -> Check {
    check.note = Some(format!(
        "judged on NEW's newest {} requests (the last {}), at half the risk",
        check.new.requests,
        humantime::format_duration(Duration::from_millis(span.as_millis() as u64)),
    ));
    check.span = Some(span);
    check
}

/// Too few NEW requests: inconclusive, whatever the method.
fn too_few(spec: &AnalysisSpec, new: PoolMeasure, old: PoolMeasure, method: Method) -> Check {
    Check {
        verdict: Verdict::Inconclusive,
        method,
        new,
        old,
        breaches: Vec::new(),
        rules: Vec::new(),
        note: Some(format!(
            "{} NEW requests in the window, {} needed",
            new.requests, spec.min_requests
        )),
        span: None,
    }
}

/// A rule's record before its outcome and numbers are known.
fn rule_record(rule: Rule, threshold: f64, new: &PoolMeasure, old: &PoolMeasure) -> RuleRecord {
    RuleRecord {
        rule,
        outcome: Outcome::Skipped,
        measured: None,
        threshold,
        new_requests: new.requests,
        old_requests: old.requests,
        bound: None,
        p_value: None,
        note: None,
    }
}

/// Evaluates every enabled rule on one window with point estimates (`method: threshold`).
pub(crate) fn evaluate(spec: &AnalysisSpec, window: &WindowCounts) -> Check {
    let new = PoolMeasure::of(&window.new);
    let old = PoolMeasure::of(&window.old);
    if new.requests < spec.min_requests {
        return too_few(spec, new, old, Method::Threshold);
    }
    let old_comparable = old.requests >= spec.min_requests;
    let mut breaches = Vec::new();
    let mut rules = Vec::new();
    let mut judge = |mut record: RuleRecord, measured: Option<f64>, breach: Option<String>| {
        record.measured = measured;
        record.outcome = match (measured, &breach) {
            (_, Some(_)) => Outcome::Fail,
            (Some(_), None) => Outcome::Pass,
            (None, None) => Outcome::Skipped,
        };
        if let (Some(text), Some(measured)) = (breach, measured) {
            breaches.push(Breach {
                rule: record.rule.label(),
                measured,
                limit: record.threshold,
                text,
            });
        }
        rules.push(record);
    };
    if let Some(limit) = spec.rules.max_error_rate {
        let record = rule_record(Rule::MaxErrorRate, limit, &new, &old);
        let breach = (new.error_rate > limit).then(|| {
            format!(
                "NEW error rate {:.2}% > {:.2}%",
                new.error_rate * 100.0,
                limit * 100.0
            )
        });
        judge(record, Some(new.error_rate), breach);
    }
    if let Some(limit) = spec.rules.max_error_rate_increase {
        let mut record = rule_record(Rule::MaxErrorRateIncrease, limit, &new, &old);
        let increase = new.error_rate - old.error_rate;
        if old_comparable {
            let breach = (increase > limit).then(|| {
                format!(
                    "NEW error rate {:.2}% is {:.2} points above OLD's {:.2}% (max {:.2})",
                    new.error_rate * 100.0,
                    increase * 100.0,
                    old.error_rate * 100.0,
                    limit * 100.0
                )
            });
            judge(record, Some(increase), breach);
        } else {
            record.note = Some(old_too_few(spec));
            judge(record, None, None);
        }
    }
    let new_p99 = window.new.latency_quantile(0.99);
    if let Some(limit) = spec.rules.max_p99_latency {
        let record = rule_record(Rule::MaxP99Latency, millis(limit), &new, &old);
        let breach = new_p99
            .filter(|p99| *p99 > limit)
            .map(|p99| format!("NEW p99 {p99:.1?} > {limit:?}"));
        judge(record, new_p99.map(millis), breach);
    }
    let old_p99 = window.old.latency_quantile(0.99);
    if let Some(ratio) = spec.rules.max_p99_latency_ratio {
        let mut record = rule_record(Rule::MaxP99LatencyRatio, ratio, &new, &old);
        match (new_p99, old_p99, old_comparable) {
            (Some(new_p99), Some(old_p99), true) => {
                let measured = new_p99.as_secs_f64() / old_p99.as_secs_f64().max(1e-9);
                let breach = (measured > ratio && new_p99.saturating_sub(old_p99) >= RATIO_FLOOR)
                    .then(|| {
                        format!(
                            "NEW p99 {new_p99:.1?} is {measured:.2}x OLD's {old_p99:.1?} (max {ratio}x)"
                        )
                    });
                judge(record, Some(measured), breach);
            }
            _ => {
                record.note = Some(if old_comparable {
                    "no latency samples to compare".to_string()
                } else {
                    old_too_few(spec)
                });
                judge(record, None, None);
            }
        }
    }
    let unjudged = nothing_judged(&rules);
    Check {
        verdict: if !breaches.is_empty() {
            Verdict::Fail
        } else if unjudged.is_some() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        },
        method: Method::Threshold,
        new,
        old,
        breaches,
        rules,
        note: unjudged,
        span: None,
    }
}

/// Why no rule could judge, when every enabled rule was skipped (relative rules while OLD
/// has too few requests, a latency rule without latencies): such a check is
/// inconclusive, never a pass on nothing.
fn nothing_judged(rules: &[RuleRecord]) -> Option<String> {
    let skipped = !rules.is_empty() && rules.iter().all(|r| r.outcome == Outcome::Skipped);
    skipped.then(|| {
        let why: Vec<String> = rules
            .iter()
            .map(|r| r.note.clone().unwrap_or_else(|| r.rule.label().to_string()))
            .collect();
        format!("no rule could judge: {}", why.join("; "))
    })
}

fn old_too_few(spec: &AnalysisSpec) -> String {
    format!(
        "OLD has fewer than {} requests: nothing to compare with",
        spec.min_requests
    )
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
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
mod tests;

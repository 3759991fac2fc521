//! `analysis.method: statistical` (SPEC §10): every rule is judged with a confidence
//! bound instead of a point estimate. A rule FAILS only when NEW is worse than its limit
//! with the configured confidence, PASSES only when it is within the limit with that
//! confidence, and is INCONCLUSIVE otherwise; the check fails when a rule fails and passes
//! when every applicable rule passes.
//!
//! - `max_error_rate`: one-sided Wilson score bounds on NEW's error rate.
//! - `max_error_rate_increase`: Newcombe's score bounds on NEW's rate minus OLD's.
//! - `max_p99_latency`: distribution-free bounds on NEW's p99 from the exact binomial
//!   distribution of the count of requests above it (`p99_bounds`), taken at the bucket
//!   edge that favours the other outcome (the upper edge to pass, the lower edge to fail).
//! - `max_p99_latency_ratio`: the same bounds on both pools' p99 (each at half the error
//!   allowed): fails when NEW's lower bound is above `max(ratio × OLD's upper, OLD's
//!   upper + 5 ms)`, passes when NEW's upper bound is within the same of OLD's lower.
//!   It sees a tail regression as soon as about 1.5% of NEW's window is slow, where the
//!   Mann-Whitney rule below needs half of it.
//! - `latency_vs_old` (with `max_p99_latency_ratio`): Mann-Whitney U of NEW's latencies
//!   against OLD's, each OLD value stretched to `max(ratio × v, v + 5 ms)`, so NEW fails
//!   only when it is slower than that with the confidence, and passes only when faster.
//!   Buckets stand for their midpoints; NEW values in one bucket are ties.
//!
//! Under equal traffic on both pools the OLD comparisons have a margin to cross
//! (`max_error_rate_increase`, the ratio), so noise fails a check far less often than
//! `1 - confidence` (`statistical_tests.rs` counts it).

use std::time::Duration;

use super::intervals::{mann_whitney, newcombe_difference, tail_counts, wilson, z_for, Interval};
use super::{
    millis, old_too_few, rule_record, too_few, Breach, Check, PoolMeasure, Verdict, WindowCounts,
    RATIO_FLOOR,
};
use crate::config::{AnalysisRules, AnalysisSpec};
use crate::evidence::record::{confidence_percent, Bound, Method, Outcome, Rule, RuleRecord};
use crate::stats::{PoolCounts, LATENCY_EDGES_US};

/// Evaluates every enabled rule on one window with `confidence` (a fraction, 0.5..1).
pub(crate) fn evaluate(spec: &AnalysisSpec, confidence: f64, window: &WindowCounts) -> Check {
    let new = PoolMeasure::of(&window.new);
    let old = PoolMeasure::of(&window.old);
    if new.requests < spec.min_requests {
        return too_few(spec, new, old, Method::Statistical);
    }
    let judge = Judge {
        spec,
        confidence,
        z: z_for(confidence),
        window,
        new,
        old,
        old_comparable: old.requests >= spec.min_requests,
    };
    // Destructured so that a new rule does not compile until it is judged here.
    let AnalysisRules {
        max_error_rate,
        max_error_rate_increase,
        max_p99_latency,
        max_p99_latency_ratio,
    } = spec.rules;
    let rules: Vec<RuleRecord> = [
        max_error_rate.map(|limit| judge.error_rate(limit)),
        max_error_rate_increase.map(|limit| judge.error_rate_increase(limit)),
        max_p99_latency.map(|limit| judge.p99(limit)),
        max_p99_latency_ratio.map(|ratio| judge.p99_ratio(ratio)),
        max_p99_latency_ratio.map(|ratio| judge.latency_vs_old(ratio)),
    ]
    .into_iter()
    .flatten()
    .collect();
    summarize(new, old, rules)
}

/// The check's verdict from its rules, with a breach line for each failed rule.
fn summarize(new: PoolMeasure, old: PoolMeasure, rules: Vec<RuleRecord>) -> Check {
    let breaches: Vec<Breach> = rules
        .iter()
        .filter(|r| r.outcome == Outcome::Fail)
        .map(|r| Breach {
            rule: r.rule.label(),
            measured: r.measured.unwrap_or(f64::NAN),
            limit: r.threshold,
            text: r.note.clone().unwrap_or_default(),
        })
        .collect();
    let waiting: Vec<String> = rules
        .iter()
        .filter(|r| r.outcome == Outcome::Inconclusive)
        .map(|r| r.note.clone().unwrap_or_else(|| r.rule.label().to_string()))
        .collect();
    let unjudged = super::nothing_judged(&rules);
    let verdict = if !breaches.is_empty() {
        Verdict::Fail
    } else if !waiting.is_empty() || unjudged.is_some() {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let note = if waiting.is_empty() {
        unjudged
    } else {
        Some(format!("not enough evidence: {}", waiting.join("; ")))
    };
    Check {
        verdict,
        method: Method::Statistical,
        new,
        old,
        breaches,
        rules,
        note: note.filter(|_| verdict == Verdict::Inconclusive),
        span: None,
    }
}

struct Judge<'a> {
    spec: &'a AnalysisSpec,
    confidence: f64,
    z: f64,
    window: &'a WindowCounts,
    new: PoolMeasure,
    old: PoolMeasure,
    old_comparable: bool,
}

impl Judge<'_> {
    fn record(&self, rule: Rule, threshold: f64) -> RuleRecord {
        rule_record(rule, threshold, &self.new, &self.old)
    }

    /// Fails when the lower bound is above `limit`, passes when the upper bound is at or
    /// below it; the note says which and by how much.
    fn decide(&self, record: &mut RuleRecord, measured: f64, bounds: Interval, what: &str) {
        let Interval { lower, upper } = bounds;
        let percent = confidence_percent(self.confidence);
        record.measured = Some(measured);
        record.bound = Some(Bound {
            confidence: self.confidence,
            lower,
            upper: finite(upper),
        });
        let limit = record.threshold;
        let (outcome, text) = if lower > limit {
            (
                Outcome::Fail,
                format!("{what}: at least {lower:.4} with {percent}% confidence > {limit}"),
            )
        } else if upper <= limit {
            (
                Outcome::Pass,
                format!("{what}: at most {upper:.4} with {percent}% confidence <= {limit}"),
            )
        } else {
            (
                Outcome::Inconclusive,
                format!(
                    "{what}: between {lower:.4} and {}, limit {limit}",
                    shown(upper)
                ),
            )
        };
        record.outcome = outcome;
        record.note = Some(text);
    }

    /// A rule that compares NEW with OLD: `judge` decides it, unless OLD has too few
    /// requests to compare with.
    fn against_old(
        &self,
        rule: Rule,
        threshold: f64,
        judge: impl FnOnce(&mut RuleRecord),
    ) -> RuleRecord {
        let mut record = self.record(rule, threshold);
        if self.old_comparable {
            judge(&mut record);
        } else {
            record.note = Some(old_too_few(self.spec));
        }
        record
    }

    fn error_rate(&self, limit: f64) -> RuleRecord {
        let mut record = self.record(Rule::MaxErrorRate, limit);
        let bounds = wilson(self.new.errors, self.new.requests, self.z);
        let what = format!("NEW error rate {}/{}", self.new.errors, self.new.requests);
        self.decide(&mut record, self.new.error_rate, bounds, &what);
        record
    }

    fn error_rate_increase(&self, limit: f64) -> RuleRecord {
        self.against_old(Rule::MaxErrorRateIncrease, limit, |record| {
            let bounds = newcombe_difference(
                self.new.errors,
                self.new.requests,
                self.old.errors,
                self.old.requests,
                self.z,
            );
            let what = format!(
                "NEW error rate {}/{} minus OLD's {}/{}",
                self.new.errors, self.new.requests, self.old.errors, self.old.requests
            );
            let measured = self.new.error_rate - self.old.error_rate;
            self.decide(record, measured, bounds, &what);
        })
    }

    fn p99(&self, limit: Duration) -> RuleRecord {
        let mut record = self.record(Rule::MaxP99Latency, millis(limit));
        let alpha = 1.0 - self.confidence;
        let (Some(measured), Some(bounds)) = (self.new.p99_ms, p99_bounds(&self.window.new, alpha))
        else {
            record.note = Some("NEW has no latency samples".to_string());
            return record;
        };
        self.decide(&mut record, measured, bounds, "NEW p99 (ms)");
        record
    }

    /// NEW's p99 against `ratio` × OLD's (and at least 5 ms more, as with the threshold
    /// method), each pool's p99 bounded at half the error allowed (Bonferroni), so that
    /// the comparison as a whole holds with the confidence.
    fn p99_ratio(&self, ratio: f64) -> RuleRecord {
        self.against_old(Rule::MaxP99LatencyRatio, ratio, |record| {
            let alpha = (1.0 - self.confidence) / 2.0;
            let bounds = (
                p99_bounds(&self.window.new, alpha),
                p99_bounds(&self.window.old, alpha),
                self.new.p99_ms.zip(self.old.p99_ms),
            );
            let (Some(new), Some(old), Some((new_p99, old_p99))) = bounds else {
                record.note = Some("no latency samples to compare".to_string());
                return;
            };
            let floor = millis(RATIO_FLOOR);
            let allowed = |old_p99: f64| (old_p99 * ratio).max(old_p99 + floor);
            // Fails only if NEW's p99 is surely above what even OLD's highest plausible p99
            // allows; passes only if it is surely within what OLD's lowest plausible allows.
            let (fail_above, pass_within) = (allowed(old.upper), allowed(old.lower));
            let percent = confidence_percent(self.confidence);
            let what = format!("NEW p99 (ms) against {ratio}x OLD's (at least +{floor} ms)");
            let (outcome, text) = if new.lower > fail_above {
                (
                    Outcome::Fail,
                    format!(
                        "{what}: NEW at least {:.1} > {fail_above:.1} (OLD at most {:.1}) with {percent}% confidence",
                        new.lower, old.upper
                    ),
                )
            } else if new.upper <= pass_within {
                (
                    Outcome::Pass,
                    format!(
                        "{what}: NEW at most {:.1} <= {pass_within:.1} (OLD at least {:.1}) with {percent}% confidence",
                        new.upper, old.lower
                    ),
                )
            } else {
                (
                    Outcome::Inconclusive,
                    format!(
                        "{what}: NEW between {:.1} and {}, OLD between {:.1} and {}",
                        new.lower,
                        shown(new.upper),
                        old.lower,
                        shown(old.upper)
                    ),
                )
            };
            record.measured = Some(new_p99 / old_p99.max(1e-6));
            record.bound = Some(Bound {
                confidence: self.confidence,
                lower: new.lower / old.upper.max(1e-6),
                upper: finite(new.upper / old.lower.max(1e-6)),
            });
            record.outcome = outcome;
            record.note = Some(text);
        })
    }

    fn latency_vs_old(&self, ratio: f64) -> RuleRecord {
        self.against_old(Rule::LatencyVsOld, 0.5, |record| {
            let floor = millis(RATIO_FLOOR);
            let new = bucket_values(&self.window.new, |ms| ms);
            let old = bucket_values(&self.window.old, |ms| (ms * ratio).max(ms + floor));
            let Some(test) = mann_whitney(&new, &old) else {
                record.note = Some("no latency samples to compare".to_string());
                return;
            };
            let bounds = test.superiority_bounds(self.z);
            let what = format!("P(NEW slower than {ratio}x OLD)");
            self.decide(record, test.superiority, bounds, &what);
            record.p_value = Some(match record.outcome {
                Outcome::Pass => test.p_less,
                _ => test.p_greater,
            });
        })
    }
}

/// Each non-empty latency bucket as (its midpoint in ms, mapped by `map`; its count).
fn bucket_values(counts: &PoolCounts, map: impl Fn(f64) -> f64) -> Vec<(f64, u64)> {
    counts
        .latency
        .iter()
        .enumerate()
        .filter(|(_, count)| **count > 0)
        .map(|(index, &count)| {
            let (lower, upper) = bucket_edges_ms(index);
            (map((lower + upper) / 2.0), count)
        })
        .collect()
}

/// Distribution-free one-sided bounds (ms) on a pool's p99 from its histogram, each
/// holding with 1 - `alpha`; `None` without samples.
///
/// With n samples and X ~ Binomial(n, 1%): if the p99 were at most x, the count above x
/// would be at most X, so `too_many` samples above x (P(X >= k) < alpha) show it is
/// above x: the lower bound is the lower edge of the bucket of the `too_many`-th largest
/// sample (0 when no count is enough). If the p99 were above x, the count would be at
/// least X, so at most `few_enough` above x (P(X <= k) < alpha) show it is at or below
/// x: the upper bound is the upper edge of the bucket of the (`few_enough` + 1)-th
/// largest sample (infinite when even none above would not be enough).
fn p99_bounds(counts: &PoolCounts, alpha: f64) -> Option<Interval> {
    let total: u64 = counts.latency.iter().sum();
    if total == 0 {
        return None;
    }
    let tails = tail_counts(total, 0.01, alpha);
    Some(Interval {
        lower: tails
            .too_many
            .map_or(0.0, |k| bucket_edges_ms(bucket_of_largest(counts, k)).0),
        upper: tails.few_enough.map_or(f64::INFINITY, |k| {
            bucket_edges_ms(bucket_of_largest(counts, k + 1)).1
        }),
    })
}

/// The bucket holding the `k`-th largest sample (k >= 1); the lowest bucket if there are
/// fewer than `k`.
fn bucket_of_largest(counts: &PoolCounts, k: u64) -> usize {
    let mut seen = 0u64;
    for (index, &count) in counts.latency.iter().enumerate().rev() {
        seen += count;
        if seen >= k {
            return index;
        }
    }
    0
}

/// A bound as the decision log can keep it: JSON has no infinity (serde_json would write
/// `null`, which no longer reads back as a number), so "no bound" is the largest float.
fn finite(value: f64) -> f64 {
    if value.is_finite() {
        value
    } else {
        f64::MAX
    }
}

/// A bound for a note: "unbounded" rather than a 309-digit number.
fn shown(value: f64) -> String {
    if value.is_finite() && value < f64::MAX {
        format!("{value:.4}")
    } else {
        "unbounded".to_string()
    }
}

/// Bucket `index` as milliseconds; the last one (above 100 s) is taken as exactly 100 s
/// on its lower side and unbounded above.
fn bucket_edges_ms(index: usize) -> (f64, f64) {
    let lower = match index {
        0 => 0,
        i => LATENCY_EDGES_US[(i - 1).min(LATENCY_EDGES_US.len() - 1)],
    };
    let upper = LATENCY_EDGES_US
        .get(index)
        .map_or(f64::INFINITY, |&edge| edge as f64 / 1000.0);
    (lower as f64 / 1000.0, upper)
}

#[cfg(test)]
#[path = "statistical_tests.rs"]
mod tests;

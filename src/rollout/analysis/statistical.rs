//! `analysis.method: statistical` (SPEC §10): every rule is judged with a confidence
//! bound instead of a point estimate. A rule FAILS only when NEW is worse than its limit
//! with the configured confidence, PASSES only when it is within the limit with that
//! confidence, and is INCONCLUSIVE otherwise; the check fails when a rule fails and passes
//! when every applicable rule passes.
//!
//! - `max_error_rate`: one-sided Wilson score bounds on NEW's error rate.
//! - `max_error_rate_increase`: Newcombe's score bounds on NEW's rate minus OLD's.
//! - `max_p99_latency`: distribution-free bounds on NEW's p99: the latencies at the ranks
//!   Wilson bounds give for the 99% quantile, taken at the bucket edge that favours the
//!   other outcome (the upper edge to pass, the lower edge to fail).
//! - `latency_vs_old` (with `max_p99_latency_ratio`): Mann-Whitney U of NEW's latencies
//!   against OLD's, each OLD value stretched to `max(ratio × v, v + 5 ms)`, so NEW fails
//!   only when it is slower than that with the confidence, and passes only when faster.
//!   Buckets stand for their midpoints; NEW values in one bucket are ties.
//!
//! Under equal traffic on both pools the OLD comparisons have a margin to cross
//! (`max_error_rate_increase`, the ratio), so noise fails a check far less often than
//! `1 - confidence` (`simulation_tests.rs` counts it).

use std::time::Duration;

use super::intervals::{mann_whitney, newcombe_difference, wilson, z_for};
use super::{
    millis, old_too_few, rule_record, too_few, Breach, Check, PoolMeasure, Verdict, WindowCounts,
    RATIO_FLOOR,
};
use crate::config::AnalysisSpec;
use crate::evidence::record::{Bound, Method, Outcome, Rule, RuleRecord};
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
    let rules: Vec<RuleRecord> = [
        spec.max_error_rate.map(|limit| judge.error_rate(limit)),
        spec.max_error_rate_increase
            .map(|limit| judge.error_rate_increase(limit)),
        spec.max_p99_latency.map(|limit| judge.p99(limit)),
        spec.max_p99_latency_ratio
            .map(|ratio| judge.latency_vs_old(ratio)),
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
    let verdict = if !breaches.is_empty() {
        Verdict::Fail
    } else if !waiting.is_empty() {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    Check {
        verdict,
        method: Method::Statistical,
        new,
        old,
        breaches,
        rules,
        note: (verdict == Verdict::Inconclusive)
            .then(|| format!("not enough evidence: {}", waiting.join("; "))),
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
    fn decide(&self, record: &mut RuleRecord, measured: f64, lower: f64, upper: f64, what: &str) {
        let percent = (self.confidence * 100.0).round();
        record.measured = Some(measured);
        record.bound = Some(Bound {
            confidence: self.confidence,
            lower,
            upper,
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
                format!("{what}: between {lower:.4} and {upper:.4}, limit {limit}"),
            )
        };
        record.outcome = outcome;
        record.note = Some(text);
    }

    fn error_rate(&self, limit: f64) -> RuleRecord {
        let mut record = self.record(Rule::MaxErrorRate, limit);
        let bounds = wilson(self.new.errors, self.new.requests, self.z);
        let what = format!("NEW error rate {}/{}", self.new.errors, self.new.requests);
        self.decide(
            &mut record,
            self.new.error_rate,
            bounds.lower,
            bounds.upper,
            &what,
        );
        record
    }

    fn error_rate_increase(&self, limit: f64) -> RuleRecord {
        let mut record = self.record(Rule::MaxErrorRateIncrease, limit);
        if !self.old_comparable {
            record.note = Some(old_too_few(self.spec));
            return record;
        }
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
        self.decide(&mut record, measured, bounds.lower, bounds.upper, &what);
        record
    }

    fn p99(&self, limit: Duration) -> RuleRecord {
        let mut record = self.record(Rule::MaxP99Latency, millis(limit));
        let counts = &self.window.new;
        let total: u64 = counts.latency.iter().sum();
        let (Some(measured), true) = (self.new.p99_ms, total > 0) else {
            record.note = Some("NEW has no latency samples".to_string());
            return record;
        };
        // Ranks of the 99% quantile's bounds: Wilson bounds on the share below it.
        let rank = (0.99 * total as f64).round() as u64;
        let quantiles = wilson(rank, total, self.z);
        let lower = bucket_at(counts, quantiles.lower, total).0;
        let upper = bucket_at(counts, quantiles.upper, total).1;
        self.decide(&mut record, measured, lower, upper, "NEW p99 (ms)");
        record
    }

    fn latency_vs_old(&self, ratio: f64) -> RuleRecord {
        let mut record = self.record(Rule::LatencyVsOld, 0.5);
        if !self.old_comparable {
            record.note = Some(old_too_few(self.spec));
            return record;
        }
        let floor = millis(RATIO_FLOOR);
        let new = bucket_values(&self.window.new, |ms| ms);
        let old = bucket_values(&self.window.old, |ms| (ms * ratio).max(ms + floor));
        let Some(test) = mann_whitney(&new, &old) else {
            record.note = Some("no latency samples to compare".to_string());
            return record;
        };
        let bounds = test.superiority_bounds(self.z);
        let what = format!("P(NEW slower than {ratio}x OLD)");
        self.decide(
            &mut record,
            test.superiority,
            bounds.lower,
            bounds.upper,
            &what,
        );
        record.p_value = Some(match record.outcome {
            Outcome::Pass => test.p_less,
            _ => test.p_greater,
        });
        record
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

/// The edges (ms) of the bucket holding the `share` quantile of `total` samples.
fn bucket_at(counts: &PoolCounts, share: f64, total: u64) -> (f64, f64) {
    let rank = (share * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (index, &count) in counts.latency.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return bucket_edges_ms(index);
        }
    }
    bucket_edges_ms(counts.latency.len() - 1)
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

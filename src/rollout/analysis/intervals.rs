//! The statistics behind `analysis.method: statistical`: one-sided score intervals for a
//! proportion (Wilson) and for a difference of two (Newcombe's hybrid score), exact
//! binomial tail counts for a quantile's distribution-free bounds, and the Mann-Whitney U
//! test on two weighted samples (histogram buckets) with tie correction.
//!
//! The distributions come from `statrs`; what is written here is only the textbook
//! arithmetic on top of them. Every function is checked against SciPy/statsmodels in
//! `intervals_tests.rs`.

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

/// The standard normal quantile for a one-sided `confidence` (0.99 → 2.326).
pub(crate) fn z_for(confidence: f64) -> f64 {
    // Normal::new(0, 1) cannot fail; the fallback is the 99% quantile, never reached.
    match Normal::new(0.0, 1.0) {
        Ok(normal) => normal.inverse_cdf(confidence.clamp(0.5, 0.999_999)),
        Err(_) => 2.326_347_874_040_841,
    }
}

/// P(Z > z) for a standard normal Z.
pub(crate) fn normal_sf(z: f64) -> f64 {
    match Normal::new(0.0, 1.0) {
        Ok(normal) => normal.sf(z),
        Err(_) => f64::NAN,
    }
}

/// A lower and an upper one-sided bound, each holding with the confidence `z` stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// Wilson score bounds for `successes` out of `trials`; (0, 1) without trials.
pub(crate) fn wilson(successes: u64, trials: u64, z: f64) -> Interval {
    if trials == 0 {
        return Interval {
            lower: 0.0,
            upper: 1.0,
        };
    }
    let n = trials as f64;
    let x = successes.min(trials) as f64;
    let z2 = z * z;
    let center = (x + z2 / 2.0) / (n + z2);
    let half = z / (n + z2) * (x * (n - x) / n + z2 / 4.0).sqrt();
    Interval {
        lower: (center - half).max(0.0),
        upper: (center + half).min(1.0),
    }
}

/// Newcombe's hybrid score bounds for `p1 - p0` (method 10 in Newcombe 1998), built from
/// the two Wilson intervals.
pub(crate) fn newcombe_difference(x1: u64, n1: u64, x0: u64, n0: u64, z: f64) -> Interval {
    let p1 = proportion(x1, n1);
    let p0 = proportion(x0, n0);
    let w1 = wilson(x1, n1, z);
    let w0 = wilson(x0, n0, z);
    let difference = p1 - p0;
    Interval {
        lower: difference - ((p1 - w1.lower).powi(2) + (w0.upper - p0).powi(2)).sqrt(),
        upper: difference + ((w1.upper - p1).powi(2) + (p0 - w0.lower).powi(2)).sqrt(),
    }
}

fn proportion(x: u64, n: u64) -> f64 {
    match n {
        0 => 0.0,
        n => x.min(n) as f64 / n as f64,
    }
}

/// How many of `n` samples above a value are evidence about the quantile with `tail` of
/// the values above it (0.01 for p99), by the exact binomial distribution: if the quantile
/// were at most the value, the count above it would be at most Binomial(`n`, `tail`); if
/// it were above, at least that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TailCounts {
    /// The smallest k with P(X >= k) < `alpha`: this many samples above a value show,
    /// with confidence 1 - `alpha`, that the quantile is above it. `None`: no count can.
    pub too_many: Option<u64>,
    /// The largest k with P(X <= k) < `alpha`: at most this many samples above a value
    /// show that the quantile is at or below it. `None`: not even 0 can (too few samples).
    pub few_enough: Option<u64>,
}

/// The [`TailCounts`] of `n` samples for a quantile with `tail` above it, at `alpha`.
pub(crate) fn tail_counts(n: u64, tail: f64, alpha: f64) -> TailCounts {
    let none = TailCounts {
        too_many: None,
        few_enough: None,
    };
    let Ok(binomial) = Binomial::new(tail, n) else {
        return none;
    };
    if n == 0 {
        return none;
    }
    // P(X >= k) falls as k grows, P(X <= k) rises: bisect on each.
    let at_least = |k: u64| if k == 0 { 1.0 } else { binomial.sf(k - 1) };
    let too_many = (at_least(n) < alpha).then(|| first(1, n, |k| at_least(k) < alpha));
    let few_enough = (binomial.cdf(0) < alpha)
        .then(|| first(0, n, |k| binomial.cdf(k) >= alpha).saturating_sub(1));
    TailCounts {
        too_many,
        few_enough,
    }
}

/// The smallest k in `low..=high` where `holds` (monotone: false, then true); `high` when
/// it only holds there, `high + 1` when it never does.
fn first(mut low: u64, mut high: u64, holds: impl Fn(u64) -> bool) -> u64 {
    if !holds(high) {
        return high + 1;
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if holds(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

/// The Mann-Whitney U test of sample A against sample B, normal approximation with tie
/// and continuity corrections (as SciPy's `mannwhitneyu(method="asymptotic")`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MannWhitney {
    /// U of sample A: pairs where A is larger, ties counting half.
    pub u: f64,
    /// `u / (n_a × n_b)`: the probability that an A value exceeds a B value (ties half).
    pub superiority: f64,
    /// One-sided p-value for "A tends to be larger".
    pub p_greater: f64,
    /// One-sided p-value for "A tends to be smaller".
    pub p_less: f64,
    /// The standard deviation of U under the null hypothesis, ties corrected.
    pub sigma: f64,
    pub n_a: u64,
    pub n_b: u64,
}

impl MannWhitney {
    /// One-sided bounds on `superiority`, consistent with the p-values: the lower bound
    /// exceeds 0.5 exactly when `p_greater < 1 - confidence`.
    pub(crate) fn superiority_bounds(&self, z: f64) -> Interval {
        let pairs = (self.n_a * self.n_b) as f64;
        if pairs == 0.0 {
            return Interval {
                lower: 0.0,
                upper: 1.0,
            };
        }
        Interval {
            lower: ((self.u - 0.5 - z * self.sigma) / pairs).max(0.0),
            upper: ((self.u + 0.5 + z * self.sigma) / pairs).min(1.0),
        }
    }
}

/// Runs the test on two weighted samples: `(value, how many times)`, in any order.
/// `None` when either sample is empty or every value is the same (no variance).
pub(crate) fn mann_whitney(a: &[(f64, u64)], b: &[(f64, u64)]) -> Option<MannWhitney> {
    let mut merged: Vec<(f64, u64, u64)> = a
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|&(value, count)| (value, count, 0))
        .chain(
            b.iter()
                .filter(|(_, count)| *count > 0)
                .map(|&(value, count)| (value, 0, count)),
        )
        .collect();
    merged.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n_a: u64 = merged.iter().map(|m| m.1).sum();
    let n_b: u64 = merged.iter().map(|m| m.2).sum();
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut below = 0u64;
    let mut index = 0;
    while index < merged.len() {
        let value = merged[index].0;
        let (mut tied_a, mut tied_b) = (0u64, 0u64);
        while index < merged.len() && merged[index].0 == value {
            tied_a += merged[index].1;
            tied_b += merged[index].2;
            index += 1;
        }
        let tied = (tied_a + tied_b) as f64;
        // Ranks below+1 ..= below+tied share their mean.
        let mid_rank = below as f64 + (tied + 1.0) / 2.0;
        rank_sum_a += tied_a as f64 * mid_rank;
        tie_term += tied * tied * tied - tied;
        below += tied_a + tied_b;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let total = na + nb;
    let u = rank_sum_a - na * (na + 1.0) / 2.0;
    let mean = na * nb / 2.0;
    let variance = na * nb / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return None;
    }
    let sigma = variance.sqrt();
    Some(MannWhitney {
        u,
        superiority: u / (na * nb),
        p_greater: normal_sf((u - mean - 0.5) / sigma),
        p_less: normal_sf((mean - u - 0.5) / sigma),
        sigma,
        n_a,
        n_b,
    })
}

#[cfg(test)]
#[path = "intervals_tests.rs"]
mod tests;

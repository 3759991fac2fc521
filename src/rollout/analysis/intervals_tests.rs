//! Reference values from SciPy 1.x / statsmodels 0.15, produced by (one-sided 99% is a
//! two-sided 98% interval):
//!
//! ```python
//! import numpy as np
//! from scipy.stats import binomtest, mannwhitneyu, norm
//! from statsmodels.stats.proportion import confint_proportions_2indep
//! c = 0.99
//! print(norm.ppf(c))
//! for k, n in [(6, 1200), (0, 1200), (30, 1200), (1, 3), (50, 100)]:
//!     ci = binomtest(k, n).proportion_ci(confidence_level=2*c-1, method='wilson')
//!     print(k, n, ci.low, ci.high)
//! for x1, n1, x0, n0 in [(30, 1200, 90, 22800), (6, 1200, 114, 22800), (0, 200, 5, 1000)]:
//!     print(confint_proportions_2indep(x1, n1, x0, n0, method='newcomb',
//!                                      compare='diff', alpha=2*(1-c)))
//! a = np.repeat([1.0, 2.0, 3.0, 5.0], [10, 20, 5, 1])
//! b = np.repeat([1.0, 2.0, 3.0, 4.0], [15, 10, 10, 2])
//! for alt in ['greater', 'less']:
//!     print(mannwhitneyu(a, b, alternative=alt, method='asymptotic', use_continuity=True))
//! ```

use super::*;

const Z99: f64 = 2.3263478740408408;

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} is not {expected}"
    );
}

#[test]
fn z_matches_scipy() {
    close(z_for(0.99), Z99);
}

#[test]
fn wilson_matches_scipy() {
    let cases = [
        (6, 1200, 0.0019998299279161526, 0.012444937467773622),
        (0, 1200, 0.0, 0.004489664036050278),
        (30, 1200, 0.016456284746811975, 0.03780889608743578),
        (1, 3, 0.04753745732546977, 0.8335832571347257),
        (50, 100, 0.38670784097761807, 0.6132921590223819),
    ];
    for (successes, trials, lower, upper) in cases {
        let interval = wilson(successes, trials, Z99);
        close(interval.lower, lower);
        close(interval.upper, upper);
    }
}

#[test]
fn wilson_without_trials_knows_nothing() {
    assert_eq!(
        wilson(0, 0, Z99),
        Interval {
            lower: 0.0,
            upper: 1.0
        }
    );
}

#[test]
fn newcombe_matches_statsmodels() {
    let cases = [
        (
            30,
            1200,
            90,
            22800,
            0.012439564463227852,
            0.03389005647567464,
        ),
        (
            6,
            1200,
            114,
            22800,
            -0.0032351165413356604,
            0.007508564359740777,
        ),
        (0, 200, 5, 1000, -0.013485003780076794, 0.021534908716377164),
    ];
    for (x1, n1, x0, n0, lower, upper) in cases {
        let interval = newcombe_difference(x1, n1, x0, n0, Z99);
        close(interval.lower, lower);
        close(interval.upper, upper);
    }
}

#[test]
fn mann_whitney_with_ties_matches_scipy() {
    let a = [(1.0, 10), (2.0, 20), (3.0, 5), (5.0, 1)];
    let b = [(4.0, 2), (3.0, 10), (2.0, 10), (1.0, 15)];
    let test = mann_whitney(&a, &b).unwrap();
    close(test.u, 662.0);
    close(test.p_greater, 0.5210830937279081);
    close(test.p_less, 0.4835990205760676);
    close(test.superiority, 662.0 / (36.0 * 37.0));
}

#[test]
fn mann_whitney_bounds_agree_with_the_p_values() {
    // A clearly larger: the lower bound on superiority passes 0.5 exactly when the
    // one-sided p-value drops under 1%.
    for shift in 0..6u32 {
        let a = [(1.0 + f64::from(shift) * 0.2, 40), (2.0, 40)];
        let b = [(1.0, 50), (1.5, 30)];
        let test = mann_whitney(&a, &b).unwrap();
        let bounds = test.superiority_bounds(Z99);
        assert_eq!(bounds.lower > 0.5, test.p_greater < 0.01, "{test:?}");
        assert_eq!(bounds.upper < 0.5, test.p_less < 0.01, "{test:?}");
    }
}

#[test]
fn mann_whitney_needs_two_samples_and_some_spread() {
    assert!(mann_whitney(&[(1.0, 5)], &[]).is_none());
    assert!(mann_whitney(&[(1.0, 5)], &[(1.0, 0)]).is_none());
    assert!(mann_whitney(&[(1.0, 5)], &[(1.0, 7)]).is_none());
}

/// Reference values from SciPy 1.17 (`binom.sf(k - 1, n, 0.01)` is P(X >= k)):
///
/// ```python
/// from scipy.stats import binom
/// for n, a in [(3000, .01), (3000, .005), (9000, .005), (100, .01), (458, .01), (459, .01), (1, .01)]:
///     too_many = next((k for k in range(1, n + 1) if binom.sf(k - 1, n, .01) < a), None)
///     few = [k for k in range(0, n + 1) if binom.cdf(k, n, .01) < a]
///     print(n, a, too_many, max(few) if few else None)
/// n = 10**6; k = int(binom.isf(.01, n, .01)) + 1   # 10233: P(X >= k) < .01 <= P(X >= k - 1)
/// ```
#[test]
fn tail_counts_match_scipy() {
    let cases = [
        (3000, 0.01, Some(44), Some(17)),
        (3000, 0.005, Some(46), Some(16)),
        (9000, 0.005, Some(116), Some(66)),
        // Too few samples to show that the p99 is low: even 0 above could happen by chance.
        (100, 0.01, Some(5), None),
        (458, 0.01, Some(11), None),
        (459, 0.01, Some(11), Some(0)),
        (1, 0.01, None, None),
        (0, 0.01, None, None),
    ];
    for (n, alpha, too_many, few_enough) in cases {
        let counts = tail_counts(n, 0.01, alpha);
        assert_eq!(
            (counts.too_many, counts.few_enough),
            (too_many, few_enough),
            "n {n}, alpha {alpha}"
        );
    }
    assert_eq!(tail_counts(1_000_000, 0.01, 0.01).too_many, Some(10233));
}

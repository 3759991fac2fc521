//! The statistical method on hand-made windows, and on simulated traffic (seeded RNG):
//! noise never fails, a real regression is caught within two checks, low traffic waits.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::config::Weight;
use crate::rollout::analysis::{judge, max_wait, AnalysisMethod, Windows, DEFAULT_CONFIDENCE};
use crate::stats::{latency_bucket, CodeClass};

fn spec() -> AnalysisSpec {
    AnalysisSpec::example()
}

/// A weight that leaves OLD a share.
fn half() -> Weight {
    Weight::from_percent(50.0).unwrap()
}

fn pool(ok: u64, errors: u64, latency_ms: u64) -> PoolCounts {
    let mut counts = PoolCounts::default();
    counts.responses[CodeClass::Success as usize] = ok;
    counts.responses[CodeClass::ServerError as usize] = errors;
    counts.latency[latency_bucket(latency_ms * 1000)] = ok + errors;
    counts
}

/// One statistical check (confidence 0.99) of a window with these two pools.
fn check_of(new: PoolCounts, old: PoolCounts) -> Check {
    evaluate(&spec(), 0.99, &WindowCounts { new, old })
}

fn rule(check: &Check, rule: Rule) -> &RuleRecord {
    check.rules.iter().find(|r| r.rule == rule).unwrap()
}

#[test]
fn too_few_requests_are_inconclusive() {
    let check = check_of(pool(60, 30, 10), pool(1000, 0, 10));
    assert_eq!(check.verdict, Verdict::Inconclusive);
    assert!(check.rules.is_empty());
}

#[test]
fn a_clear_error_regression_fails_with_its_bound() {
    // 30 of 1200 (2.5%): Wilson's 99% lower bound is 1.65% (SciPy, intervals_tests.rs).
    let check = check_of(pool(1170, 30, 10), pool(22800 - 90, 90, 10));
    assert_eq!(check.verdict, Verdict::Fail);
    let absolute = rule(&check, Rule::MaxErrorRate);
    assert_eq!(absolute.outcome, Outcome::Fail);
    assert_eq!(absolute.measured, Some(0.025));
    assert_eq!(
        (absolute.new_requests, absolute.old_requests),
        (1200, 22800)
    );
    let bound = absolute.bound.unwrap();
    assert!((bound.lower - 0.016456284746811975).abs() < 1e-12);
    assert_eq!(bound.confidence, 0.99);
    let increase = rule(&check, Rule::MaxErrorRateIncrease);
    assert_eq!(increase.outcome, Outcome::Fail);
    assert!((increase.bound.unwrap().lower - 0.012439564463227852).abs() < 1e-12);
    assert_eq!(check.breaches.len(), 2);
}

#[test]
fn a_rate_above_the_limit_without_confidence_is_inconclusive_not_failed() {
    // 2 of 150 is 1.3% > 1%, which the threshold method fails; here it is not enough.
    let window = WindowCounts {
        new: pool(148, 2, 10),
        old: pool(5000, 25, 10),
    };
    assert_eq!(evaluate_threshold(&window), Verdict::Fail);
    let check = evaluate(&spec(), 0.99, &window);
    assert_eq!(check.verdict, Verdict::Inconclusive);
    assert_eq!(
        rule(&check, Rule::MaxErrorRate).outcome,
        Outcome::Inconclusive
    );
    assert!(check.note.unwrap().starts_with("not enough evidence"));
}

fn evaluate_threshold(window: &WindowCounts) -> Verdict {
    super::super::evaluate(&spec(), window).verdict
}

#[test]
fn healthy_traffic_with_plenty_of_requests_passes_every_rule() {
    let check = check_of(pool(6000, 0, 10), pool(18000, 20, 10));
    assert_eq!(check.verdict, Verdict::Pass, "{}", check.summary());
    assert_eq!(check.rules.len(), 5);
    assert!(check.rules.iter().all(|r| r.outcome == Outcome::Pass));
}

#[test]
fn slow_new_fails_the_latency_rules() {
    let check = check_of(pool(3000, 0, 700), pool(9000, 0, 10));
    assert_eq!(check.verdict, Verdict::Fail);
    assert_eq!(rule(&check, Rule::LatencyVsOld).outcome, Outcome::Fail);
    assert!(rule(&check, Rule::LatencyVsOld).p_value.unwrap() < 0.01);
    let p99 = rule(&check, Rule::MaxP99Latency);
    assert_eq!(p99.outcome, Outcome::Fail);
    // 700 ms falls in the (600, 700] bucket: the lower bound is that bucket's lower edge.
    assert_eq!(p99.bound.unwrap().lower, 600.0);
}

/// `counts` with `slow` of its requests moved from `from_ms` to `to_ms`.
fn with_slow(mut counts: PoolCounts, slow: u64, from_ms: u64, to_ms: u64) -> PoolCounts {
    counts.latency[latency_bucket(from_ms * 1000)] -= slow;
    counts.latency[latency_bucket(to_ms * 1000)] += slow;
    counts
}

#[test]
fn the_p99_ratio_fails_on_the_count_the_binomial_calls_too_many() {
    // 3000 NEW requests, each pool's p99 bounded at 0.5%: 46 or more above a value show
    // NEW's p99 is above it (SciPy: intervals_tests.rs, tail_counts_match_scipy). OLD
    // (9000 at 1 ms) allows at most max(1.5 x 1 ms, 1 ms + 5 ms) = 6 ms.
    let old = pool(9000, 0, 1);
    let judged = |slow| {
        let check = check_of(with_slow(pool(3000, 0, 1), slow, 1, 40), old.clone());
        rule(&check, Rule::MaxP99LatencyRatio).clone()
    };
    let caught = judged(46);
    assert_eq!(caught.outcome, Outcome::Fail, "{caught:?}");
    // The lower bound is the lower edge of the 40 ms bucket, (30, 40].
    assert_eq!(caught.bound.unwrap().lower, 30.0);
    assert!(caught.note.unwrap().contains("at least 30.0 > 6.0"));
    // 45 slow (1.5%) is above 1% but could be chance: not a failure, not a pass either.
    assert_eq!(judged(45).outcome, Outcome::Inconclusive);
    // At most 16 above (P(X <= 16) < 0.5% for 3000) shows NEW's p99 is within.
    assert_eq!(judged(16).outcome, Outcome::Pass);
    assert_eq!(judged(17).outcome, Outcome::Inconclusive);
    // The point estimate puts the p99 in the 40 ms bucket from 31 slow on: the threshold
    // method fails there, on a count 1% slow traffic reaches by chance (SciPy:
    // binom.sf(30, 3000, .01) = 0.45).
    let window = WindowCounts {
        new: with_slow(pool(3000, 0, 1), 31, 1, 40),
        old,
    };
    assert_eq!(evaluate_threshold(&window), Verdict::Fail);
}

#[test]
fn the_absolute_p99_uses_the_same_exact_counts() {
    // limit 500 ms; 3000 NEW at 10 ms, some at 700 ms: 44 above is too many at 1%.
    let judged = |slow| {
        let check = check_of(
            with_slow(pool(3000, 0, 10), slow, 10, 700),
            pool(9000, 0, 10),
        );
        rule(&check, Rule::MaxP99Latency).clone()
    };
    assert_eq!(judged(44).outcome, Outcome::Fail);
    assert_eq!(judged(43).outcome, Outcome::Inconclusive);
    assert_eq!(judged(17).outcome, Outcome::Pass);
    assert_eq!(judged(18).outcome, Outcome::Inconclusive);
}

#[test]
fn without_enough_requests_no_p99_upper_bound_and_the_record_still_reads_back() {
    // 200 NEW requests: even none above a value could happen with a p99 above it.
    let check = check_of(pool(200, 0, 10), pool(9000, 0, 10));
    let p99 = rule(&check, Rule::MaxP99Latency);
    assert_eq!(p99.outcome, Outcome::Inconclusive);
    assert_eq!(p99.bound.unwrap().upper, f64::MAX);
    assert!(
        p99.note.as_deref().unwrap().contains("unbounded"),
        "{p99:?}"
    );
    // Requests slower than the last edge (100 s) have no upper edge: the bound must still
    // be a number JSON can hold, or the decision log stops reading back.
    let stuck = check_of(pool(3000, 0, 150_000), pool(9000, 0, 10));
    for check in [check, stuck] {
        let record = check.record(Duration::from_secs(60), 0);
        let line = serde_json::to_string(&record).unwrap();
        let back: crate::evidence::record::CheckRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back.rules.len(), record.rules.len(), "{line}");
    }
}

#[test]
fn without_old_traffic_the_comparisons_are_skipped() {
    let window = WindowCounts {
        new: pool(6000, 0, 10),
        old: pool(10, 0, 10),
    };
    let check = evaluate(&spec(), 0.99, &window);
    assert_eq!(rule(&check, Rule::LatencyVsOld).outcome, Outcome::Skipped);
    assert_eq!(
        rule(&check, Rule::MaxP99LatencyRatio).outcome,
        Outcome::Skipped
    );
    assert_eq!(
        rule(&check, Rule::MaxErrorRateIncrease).outcome,
        Outcome::Skipped
    );
    // The absolute rules judged: a pass.
    assert_eq!(check.verdict, Verdict::Pass);
    // With only the comparisons, nothing judged: inconclusive, never a pass on nothing.
    let mut relative = spec();
    relative.rules.max_error_rate = None;
    relative.rules.max_p99_latency = None;
    let check = evaluate(&relative, 0.99, &window);
    assert!(check.rules.iter().all(|r| r.outcome == Outcome::Skipped));
    assert_eq!(check.verdict, Verdict::Inconclusive);
    let note = check.note.unwrap_or_default();
    assert!(note.contains("no rule could judge"), "{note}");
}

/// Seeded traffic, one second at a time, judged every `interval` over the last `window`.
struct Simulation {
    rng: StdRng,
    seconds: VecDeque<WindowCounts>,
    /// Seconds in the window.
    keep: usize,
    /// One request's latency (µs), the same for both pools.
    latency: fn(&mut StdRng) -> f64,
    /// Added to every NEW request's latency (µs).
    new_delay: f64,
}

/// Log-normal-ish latency around 20 ms: 5..80 ms.
fn spread_latency(rng: &mut StdRng) -> f64 {
    20_000.0 * 4f64.powf(rng.random_range(-1.0..1.0))
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        Simulation {
            rng: StdRng::seed_from_u64(seed),
            seconds: VecDeque::new(),
            keep: 120,
            latency: spread_latency,
            new_delay: 0.0,
        }
    }

    fn second(&mut self, requests: f64, new_share: f64, new_errors: f64, old_errors: f64) {
        let mut second = WindowCounts::default();
        let arrivals = requests.floor() as u64 + u64::from(self.rng.random_bool(requests.fract()));
        for _ in 0..arrivals {
            let is_new = self.rng.random_bool(new_share);
            let (pool, error_rate) = if is_new {
                (&mut second.new, new_errors)
            } else {
                (&mut second.old, old_errors)
            };
            let class = if self.rng.random_bool(error_rate) {
                CodeClass::ServerError
            } else {
                CodeClass::Success
            };
            pool.responses[class as usize] += 1;
            let delay = if is_new { self.new_delay } else { 0.0 };
            let micros = (self.latency)(&mut self.rng) + delay;
            pool.latency[latency_bucket(micros as u64)] += 1;
        }
        self.seconds.push_back(second);
        if self.seconds.len() > self.keep {
            self.seconds.pop_front();
        }
    }

    fn window(&self) -> WindowCounts {
        let mut window = WindowCounts::default();
        for second in &self.seconds {
            window.new.add(&second.new);
            window.old.add(&second.old);
        }
        window
    }
}

#[test]
fn equal_noise_never_fails_over_200_checks() {
    let mut failures = 0;
    let mut threshold_failures = 0;
    let mut checks = 0;
    for (seed, share) in [(1, 0.05), (2, 0.25), (3, 0.5), (4, 1.0)] {
        let mut simulation = Simulation::new(seed);
        for second in 1..=(50 * 30 + 90) {
            simulation.second(200.0, share, 0.005, 0.005);
            if second >= 120 && second % 30 == 0 {
                checks += 1;
                let window = simulation.window();
                let check = evaluate(&spec(), 0.99, &window);
                failures += usize::from(check.verdict == Verdict::Fail);
                threshold_failures += usize::from(evaluate_threshold(&window) == Verdict::Fail);
            }
        }
    }
    assert!(checks >= 200, "{checks}");
    // For comparison (not asserted): point estimates on the same traffic.
    println!("{checks} checks: statistical {failures} failed, threshold {threshold_failures}");
    assert_eq!(failures, 0, "false failures in {checks} checks");
}

#[test]
fn eight_points_more_errors_are_caught_within_two_checks() {
    for (seed, share) in [(5, 0.05), (6, 0.25), (7, 1.0)] {
        let mut simulation = Simulation::new(seed);
        for _ in 0..120 {
            simulation.second(200.0, share, 0.005, 0.005);
        }
        let mut checks_to_detect = None;
        for check in 1..=4 {
            for _ in 0..30 {
                simulation.second(200.0, share, 0.085, 0.005);
            }
            let verdict = evaluate(&spec(), 0.99, &simulation.window()).verdict;
            if verdict == Verdict::Fail {
                checks_to_detect = Some(check);
                break;
            }
        }
        let checks = checks_to_detect.expect("never detected");
        assert!(checks <= 2, "share {share}: {checks} checks");
    }
}

/// A fast service on a busy machine, the same for both pools: 0.3..0.9 ms, with 2% of
/// requests 1..5 ms later, 0.5% 5..30 ms and 0.1% 30..200 ms (scheduling stalls).
fn busy_machine_latency(rng: &mut StdRng) -> f64 {
    let base = rng.random_range(300.0..900.0);
    let stall = rng.random_range(0.0..1.0);
    base + match stall {
        x if x < 0.001 => rng.random_range(30_000.0..200_000.0),
        x if x < 0.006 => rng.random_range(5_000.0..30_000.0),
        x if x < 0.026 => rng.random_range(1_000.0..5_000.0),
        _ => 0.0,
    }
}

/// The schedule of `loadtest scenarios`: a check every 2 s over the last 60 s.
fn scenario_simulation(seed: u64) -> Simulation {
    Simulation {
        keep: 60,
        latency: busy_machine_latency,
        ..Simulation::new(seed)
    }
}

#[test]
fn equal_latency_noise_never_fails_over_200_checks() {
    let (mut checks, mut failures, mut passes) = (0, 0, 0);
    for (seed, share) in [(11, 0.05), (12, 0.25), (13, 0.5)] {
        let mut simulation = scenario_simulation(seed);
        for second in 1..=(60 + 2 * 80) {
            simulation.second(200.0, share, 0.005, 0.005);
            if second >= 60 && second % 2 == 0 {
                checks += 1;
                let check = evaluate(&spec(), 0.99, &simulation.window());
                failures += usize::from(check.verdict == Verdict::Fail);
                let ratio = rule(&check, Rule::MaxP99LatencyRatio).outcome;
                passes += usize::from(ratio == Outcome::Pass);
            }
        }
    }
    assert!(checks >= 200, "{checks}");
    println!(
        "{checks} checks of equal latency noise: {failures} failed, p99 ratio passed {passes}"
    );
    assert_eq!(failures, 0, "false failures in {checks} checks");
    // Not stuck: at 25% and 50% the ratio rule has the evidence to pass.
    assert!(passes >= checks / 2, "{passes} of {checks}");
}

#[test]
fn forty_ms_more_on_new_is_caught_within_two_checks() {
    for seed in 21..27 {
        let mut simulation = scenario_simulation(seed);
        for _ in 0..60 {
            simulation.second(200.0, 0.25, 0.005, 0.005);
        }
        assert_ne!(
            evaluate(&spec(), 0.99, &simulation.window()).verdict,
            Verdict::Fail
        );
        simulation.new_delay = 40_000.0;
        let mut caught = None;
        for check in 1..=5 {
            for _ in 0..2 {
                simulation.second(200.0, 0.25, 0.005, 0.005);
            }
            let check_result = evaluate(&spec(), 0.99, &simulation.window());
            if check_result.verdict == Verdict::Fail {
                assert_eq!(
                    rule(&check_result, Rule::MaxP99LatencyRatio).outcome,
                    Outcome::Fail
                );
                caught = Some(check);
                break;
            }
        }
        let checks = caught.expect("never detected");
        assert!(checks <= 2, "seed {seed}: {checks} checks");
    }
}

#[test]
fn low_traffic_never_fails() {
    let mut verdicts = Vec::new();
    let mut threshold_failures = 0;
    for share in [0.05, 0.5, 1.0] {
        let mut simulation = Simulation::new(8);
        for second in 1..=(60 * 30) {
            simulation.second(3.0, share, 0.005, 0.005);
            if second >= 120 && second % 30 == 0 {
                let window = simulation.window();
                verdicts.push(evaluate(&spec(), 0.99, &window).verdict);
                threshold_failures += usize::from(evaluate_threshold(&window) == Verdict::Fail);
            }
        }
    }
    assert!(verdicts.len() > 150);
    // For comparison (not asserted): point estimates on the same traffic.
    println!(
        "{} checks: threshold {threshold_failures} failed",
        verdicts.len()
    );
    assert!(!verdicts.contains(&Verdict::Fail), "{verdicts:?}");
}

/// `Windows` holding exactly `window` over the spec's window.
fn windows_of(window: &WindowCounts) -> Windows {
    Windows::holding(window, spec().window)
}

#[test]
fn judge_dispatches_and_the_record_keeps_every_number() {
    let window = WindowCounts {
        new: pool(1170, 30, 10),
        old: pool(22800 - 90, 90, 10),
    };
    let statistical = AnalysisMethod::Statistical {
        confidence: DEFAULT_CONFIDENCE,
    };
    let windows = &windows_of(&window);
    let check = judge(statistical, &spec(), windows, true, half());
    assert_eq!(check.span, None);
    assert_eq!(check.method, Method::Statistical);
    let record = check.record(Duration::from_secs(120), 2);
    assert_eq!(record.outcome, Outcome::Fail);
    assert_eq!(record.window_s, 120.0);
    assert_eq!(record.consecutive_failures, 2);
    assert_eq!(record.new.errors, 30);
    assert_eq!(record.rules, check.rules);
    let threshold = judge(AnalysisMethod::Threshold, &spec(), windows, true, half());
    assert_eq!(threshold.method, Method::Threshold);
    assert_eq!(threshold.rules.len(), 4);
    assert_eq!(threshold.rules[0].measured, Some(0.025));
    let incomplete = judge(statistical, &spec(), windows, false, half());
    assert_eq!(incomplete.verdict, Verdict::Inconclusive);
    assert_eq!(incomplete.method, Method::Statistical);
}

#[test]
fn max_wait_defaults_to_three_holds_and_at_least_ten_minutes() {
    let minute = Duration::from_secs(60);
    assert_eq!(max_wait(None, minute), 10 * minute);
    assert_eq!(max_wait(None, 30 * minute), 90 * minute);
    assert_eq!(max_wait(Some(2 * minute), 30 * minute), 2 * minute);
}

/// Cumulative counts of a pool after `seconds` at `rate` requests per second with
/// `errors_per_mille` of them failing, all taking `latency_ms`.
fn steady(seconds: u64, rate: u64, errors_per_mille: u64, latency_ms: u64) -> PoolCounts {
    let requests = seconds * rate;
    pool(
        requests - requests * errors_per_mille / 1000,
        requests * errors_per_mille / 1000,
        latency_ms,
    )
}

#[test]
fn a_regression_of_the_last_seconds_fails_on_the_newest_requests() {
    // 120 s of both pools at 0.5% errors (NEW 50/s, OLD 150/s), then 2 s of NEW at 8.5%.
    let spec = AnalysisSpec {
        window: Duration::from_secs(120),
        ..spec()
    };
    let statistical = AnalysisMethod::Statistical {
        confidence: DEFAULT_CONFIDENCE,
    };
    let mut windows = Windows::new(spec.window);
    for second in 0..=120 {
        windows.record(
            Duration::from_secs(second),
            steady(second, 150, 5, 10),
            steady(second, 50, 5, 10),
        );
    }
    let before = judge(statistical, &spec, &windows, true, half());
    assert_ne!(before.verdict, Verdict::Fail, "{}", before.summary());
    let mut new = steady(120, 50, 5, 10);
    for second in 121..=122 {
        add(&mut new, &pool(46, 4, 10));
        windows.record(
            Duration::from_secs(second),
            steady(second, 150, 5, 10),
            new.clone(),
        );
    }
    // The whole window barely moved: 6,100 NEW requests, 38 errors (0.62%).
    let whole = evaluate(&spec, DEFAULT_CONFIDENCE, &windows.over(spec.window));
    assert_ne!(whole.verdict, Verdict::Fail, "{}", whole.summary());
    let check = judge(statistical, &spec, &windows, true, half());
    assert_eq!(check.verdict, Verdict::Fail, "{}", check.summary());
    assert_eq!(check.span, Some(Duration::from_secs(2)));
    assert_eq!(check.new.requests, 100);
    assert!(
        check.summary().contains("newest 100 requests"),
        "{}",
        check.summary()
    );
    let record = check.record(check.span.unwrap(), 1);
    assert_eq!(record.window_s, 2.0);
    // The threshold method judges the window only.
    let threshold = judge(AnalysisMethod::Threshold, &spec, &windows, true, half());
    assert_eq!(threshold.span, None);
}

fn add(total: &mut PoolCounts, more: &PoolCounts) {
    for (a, b) in total.responses.iter_mut().zip(&more.responses) {
        *a += b;
    }
    for (a, b) in total.latency.iter_mut().zip(&more.latency) {
        *a += b;
    }
}

#[test]
fn confidences_are_shown_with_their_decimal() {
    assert_eq!(confidence_percent(0.99), "99");
    assert_eq!(confidence_percent(0.995), "99.5");
    assert_eq!(confidence_percent(0.95), "95");
    assert_eq!(confidence_percent(0.9995), "99.95");
    assert_eq!(confidence_percent(1.0), "100");
}

//! The statistical method on hand-made windows, and on simulated traffic (seeded RNG):
//! noise never fails, a real regression is caught within two checks, low traffic waits.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::rollout::analysis::{judge, max_wait, AnalysisMethod, DEFAULT_CONFIDENCE};
use crate::stats::{latency_bucket, CodeClass};

fn spec() -> AnalysisSpec {
    AnalysisSpec::example()
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
    assert_eq!(check.rules.len(), 4);
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

#[test]
fn without_old_traffic_the_comparisons_are_skipped() {
    let window = WindowCounts {
        new: pool(6000, 0, 10),
        old: pool(10, 0, 10),
    };
    let check = evaluate(&spec(), 0.99, &window);
    assert_eq!(rule(&check, Rule::LatencyVsOld).outcome, Outcome::Skipped);
    assert_eq!(
        rule(&check, Rule::MaxErrorRateIncrease).outcome,
        Outcome::Skipped
    );
    assert_eq!(check.verdict, Verdict::Pass);
}

/// Seeded traffic, one second at a time, judged every `interval` over the last `window`.
struct Simulation {
    rng: StdRng,
    seconds: VecDeque<WindowCounts>,
}

impl Simulation {
    fn new(seed: u64) -> Simulation {
        Simulation {
            rng: StdRng::seed_from_u64(seed),
            seconds: VecDeque::new(),
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
            // Log-normal-ish latency around 20 ms: 5..80 ms.
            let micros = 20_000.0 * 4f64.powf(self.rng.random_range(-1.0..1.0));
            pool.latency[latency_bucket(micros as u64)] += 1;
        }
        self.seconds.push_back(second);
        if self.seconds.len() > 120 {
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

#[test]
fn judge_dispatches_and_the_record_keeps_every_number() {
    let window = WindowCounts {
        new: pool(1170, 30, 10),
        old: pool(22800 - 90, 90, 10),
    };
    let statistical = AnalysisMethod::Statistical {
        confidence: DEFAULT_CONFIDENCE,
    };
    let check = judge(statistical, &spec(), &window, true);
    assert_eq!(check.method, Method::Statistical);
    let record = check.record(Duration::from_secs(120), 2);
    assert_eq!(record.outcome, Outcome::Fail);
    assert_eq!(record.window_s, 120.0);
    assert_eq!(record.consecutive_failures, 2);
    assert_eq!(record.new.errors, 30);
    assert_eq!(record.rules, check.rules);
    let threshold = judge(AnalysisMethod::Threshold, &spec(), &window, true);
    assert_eq!(threshold.method, Method::Threshold);
    assert_eq!(threshold.rules.len(), 4);
    assert_eq!(threshold.rules[0].measured, Some(0.025));
    let incomplete = judge(statistical, &spec(), &window, false);
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

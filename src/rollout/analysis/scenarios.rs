//! The scenario matrix of issue 11, run against the analysis core: a simulated clock, one
//! second of seeded traffic at a time, the trip every second and a check every interval,
//! `failure_threshold` failed checks in a row (or a trip) rolling back. This is what the
//! controller does with the same functions; the real binary will run the same matrix
//! (`loadtest scenarios`) once `analysis.method` reaches the config.
//!
//! `cargo test --lib scenario_matrix -- --nocapture` prints the table.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{judge, trip, AnalysisMethod, Verdict, Windows};
use crate::config::{AnalysisSpec, Weight};
use crate::stats::{latency_bucket, CodeClass, PoolCounts};

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Errors(f64),
    Down,
    Latency(u64),
    Flapping,
}

#[derive(Debug)]
struct Scenario {
    name: &'static str,
    rate: f64,
    old_errors: f64,
    new_errors: f64,
    fault: Fault,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario {
        name: "healthy",
        rate: 200.0,
        old_errors: 0.0,
        new_errors: 0.0,
        fault: Fault::None,
    },
    Scenario {
        name: "equal 0.5% noise",
        rate: 200.0,
        old_errors: 0.005,
        new_errors: 0.005,
        fault: Fault::None,
    },
    Scenario {
        name: "low traffic (3 req/s)",
        rate: 3.0,
        old_errors: 0.005,
        new_errors: 0.005,
        fault: Fault::None,
    },
    Scenario {
        name: "NEW +8% errors",
        rate: 200.0,
        old_errors: 0.005,
        new_errors: 0.005,
        fault: Fault::Errors(0.08),
    },
    Scenario {
        name: "NEW hard down",
        rate: 200.0,
        old_errors: 0.005,
        new_errors: 0.005,
        fault: Fault::Down,
    },
    Scenario {
        name: "NEW +40 ms latency",
        rate: 200.0,
        old_errors: 0.005,
        new_errors: 0.005,
        fault: Fault::Latency(40),
    },
    Scenario {
        name: "flapping NEW (1 s bad, 1 s good)",
        rate: 200.0,
        old_errors: 0.005,
        new_errors: 0.005,
        fault: Fault::Flapping,
    },
];

/// NEW's share during the runs, the fault's start and the run's length, in seconds.
const NEW_SHARE: f64 = 0.25;
const FAULT_AT: u64 = 480;
const RUN: u64 = 1200;
const SEEDS: u64 = 3;

fn spec() -> AnalysisSpec {
    AnalysisSpec {
        trip: Some(AnalysisSpec::example_trip()),
        ..AnalysisSpec::example()
    }
}

/// What one run saw.
#[derive(Debug, Default)]
struct Outcome {
    /// The second of the rollback, if any.
    rolled_back: Option<u64>,
    /// Checks from the fault to the first failed one (a trip before any: 0).
    checks_to_detect: Option<u32>,
}

fn run(scenario: &Scenario, method: AnalysisMethod, seed: u64) -> Outcome {
    let spec = spec();
    let weight = Weight::from_percent(NEW_SHARE * 100.0).expect("a percentage");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut windows = Windows::new(spec.window + Duration::from_secs(10));
    let (mut old, mut new) = (PoolCounts::default(), PoolCounts::default());
    windows.record(Duration::ZERO, old.clone(), new.clone());
    let mut outcome = Outcome::default();
    let (mut failures_in_a_row, mut checks_since_fault) = (0, 0);
    for second in 1..=RUN {
        let faulty = !matches!(scenario.fault, Fault::None) && second > FAULT_AT;
        let (extra_errors, extra_ms) = match (faulty, scenario.fault) {
            (false, _) | (_, Fault::None) => (0.0, 0),
            (true, Fault::Errors(rate)) => (rate, 0),
            (true, Fault::Down) => (1.0, 0),
            (true, Fault::Latency(ms)) => (0.0, ms),
            (true, Fault::Flapping) => (if second % 2 == 0 { 1.0 } else { 0.0 }, 0),
        };
        let arrivals =
            scenario.rate.floor() as u64 + u64::from(rng.random_bool(scenario.rate.fract()));
        for _ in 0..arrivals {
            let to_new = rng.random_bool(NEW_SHARE);
            let (pool, errors, extra) = if to_new {
                (
                    &mut new,
                    (scenario.new_errors + extra_errors).min(1.0),
                    extra_ms,
                )
            } else {
                (&mut old, scenario.old_errors, 0)
            };
            let class = if rng.random_bool(errors) {
                CodeClass::ServerError
            } else {
                CodeClass::Success
            };
            pool.responses[class as usize] += 1;
            let micros = 20_000.0 * 4f64.powf(rng.random_range(-1.0..1.0)) + extra as f64 * 1000.0;
            pool.latency[latency_bucket(micros as u64)] += 1;
        }
        windows.record(Duration::from_secs(second), old.clone(), new.clone());
        let tripped = spec.trip.as_ref().and_then(|t| trip(t, &windows)).is_some();
        let mut failed = false;
        if second % spec.interval.as_secs() == 0 {
            let check = judge(method, &spec, &windows, true, weight);
            failed = check.verdict == Verdict::Fail;
            failures_in_a_row = if failed { failures_in_a_row + 1 } else { 0 };
            if faulty {
                checks_since_fault += 1;
            }
        }
        if faulty && outcome.checks_to_detect.is_none() && (failed || tripped) {
            outcome.checks_to_detect = Some(if failed { checks_since_fault } else { 0 });
        }
        if tripped || failures_in_a_row >= spec.failure_threshold {
            outcome.rolled_back = Some(second);
            return outcome;
        }
    }
    outcome
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    scenario: &'static str,
    method: &'static str,
    false_rollbacks: u64,
    caught: Option<(u64, u64)>,
    median_detection_s: Option<u64>,
    median_checks: Option<u32>,
}

fn median<T: Copy + Ord>(mut values: Vec<T>) -> Option<T> {
    values.sort();
    values.get(values.len().saturating_sub(1) / 2).copied()
}

fn matrix() -> Vec<Row> {
    let methods = [
        ("threshold", AnalysisMethod::Threshold),
        (
            "statistical",
            AnalysisMethod::Statistical { confidence: 0.99 },
        ),
    ];
    let mut rows = Vec::new();
    for scenario in &SCENARIOS {
        for (label, method) in methods {
            let outcomes: Vec<Outcome> =
                (0..SEEDS).map(|seed| run(scenario, method, seed)).collect();
            let has_fault = !matches!(scenario.fault, Fault::None);
            let false_rollbacks = outcomes
                .iter()
                .filter(|o| o.rolled_back.is_some_and(|s| !has_fault || s <= FAULT_AT))
                .count() as u64;
            let detections: Vec<u64> = outcomes
                .iter()
                .filter_map(|o| {
                    o.rolled_back
                        .filter(|s| *s > FAULT_AT)
                        .map(|s| s - FAULT_AT)
                })
                .collect();
            rows.push(Row {
                scenario: scenario.name,
                method: label,
                false_rollbacks,
                caught: has_fault.then_some((detections.len() as u64, SEEDS)),
                median_detection_s: median(detections),
                median_checks: median(outcomes.iter().filter_map(|o| o.checks_to_detect).collect()),
            });
        }
    }
    rows
}

fn markdown(rows: &[Row]) -> String {
    let mut text = String::from(
        "| scenario | method | false rollbacks | caught | fault → weight 0 (median) | checks to detect (median) |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let dash = || "-".to_string();
        text.push_str(&format!(
            "| {} | {} | {}/{SEEDS} | {} | {} | {} |\n",
            row.scenario,
            row.method,
            row.false_rollbacks,
            row.caught
                .map_or_else(dash, |(caught, runs)| format!("{caught}/{runs}")),
            row.median_detection_s
                .map_or_else(dash, |s| format!("{s} s")),
            row.median_checks.map_or_else(dash, |c| c.to_string()),
        ));
    }
    text
}

/// The goals of issue 11 hold for the statistical method: no false rollback, every
/// fault caught, within two checks; a trip within 2 s. The threshold method is shown for
/// comparison: it rolls back on low traffic now and then (a 2% error rate from 2 errors in
/// 100 requests), which is the reason the statistical method exists.
#[test]
fn scenario_matrix() {
    let rows = matrix();
    println!("{}", markdown(&rows));
    for row in &rows {
        let Some((caught, runs)) = row.caught else {
            if row.method == "statistical" {
                assert_eq!(row.false_rollbacks, 0, "{row:?}");
            }
            continue;
        };
        assert_eq!(row.false_rollbacks, 0, "{row:?}");
        assert_eq!(caught, runs, "{row:?}");
        if row.method == "statistical" {
            assert!(row.median_checks.is_some_and(|c| c <= 2), "{row:?}");
        }
        if row.median_checks == Some(0) {
            assert!(row.median_detection_s.is_some_and(|s| s <= 2), "{row:?}");
        }
    }
}

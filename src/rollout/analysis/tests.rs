use super::*;
use crate::stats::{CodeClass, PoolStats};

fn spec() -> AnalysisSpec {
    AnalysisSpec::example()
}

fn counts(ok: u64, errors: u64, latency: Duration) -> PoolCounts {
    let stats = PoolStats::default();
    for _ in 0..ok {
        stats.record(CodeClass::Success, latency);
    }
    for _ in 0..errors {
        stats.record(CodeClass::ServerError, latency);
    }
    stats.counts()
}

fn window(new: PoolCounts, old: PoolCounts) -> WindowCounts {
    WindowCounts { old, new }
}

#[test]
fn no_samples_must_never_fail() {
    let check = evaluate(&spec(), &WindowCounts::default());
    assert_eq!(check.verdict, Verdict::Inconclusive);
    assert!(check.note.unwrap().contains("0 NEW requests"));
}

#[test]
fn too_little_traffic_is_inconclusive_even_if_all_fail() {
    let check = evaluate(
        &spec(),
        &window(
            counts(0, 99, Duration::from_secs(9)),
            counts(0, 0, Duration::ZERO),
        ),
    );
    assert_eq!(check.verdict, Verdict::Inconclusive);
    assert!(check.breaches.is_empty());
}

#[test]
fn a_healthy_window_passes() {
    let ms = Duration::from_millis(20);
    let check = evaluate(
        &spec(),
        &window(counts(1000, 5, ms), counts(10_000, 40, ms)),
    );
    assert_eq!(check.verdict, Verdict::Pass, "{}", check.summary());
    assert_eq!(check.new.requests, 1005);
    assert!(check.new.p99_ms.unwrap() > 15.0 && check.new.p99_ms.unwrap() <= 20.0);
}

#[test]
fn each_rule_breaches_with_its_numbers() {
    let ms = Duration::from_millis(20);
    let check = evaluate(&spec(), &window(counts(95, 5, ms), counts(10_000, 0, ms)));
    assert_eq!(check.verdict, Verdict::Fail);
    let rules: Vec<&str> = check.breaches.iter().map(|b| b.rule).collect();
    assert_eq!(rules, vec!["max_error_rate", "max_error_rate_increase"]);
    assert!((check.breaches[0].measured - 0.05).abs() < 1e-9);
    assert_contains!(check.summary(), "NEW error rate 5.00% > 1.00%");

    let slow = evaluate(
        &spec(),
        &window(
            counts(1000, 0, Duration::from_millis(900)),
            counts(1000, 0, Duration::from_millis(100)),
        ),
    );
    let rules: Vec<&str> = slow.breaches.iter().map(|b| b.rule).collect();
    assert_eq!(rules, vec!["max_p99_latency", "max_p99_latency_ratio"]);
}

#[test]
fn comparisons_with_old_need_old_traffic() {
    let ms = Duration::from_millis(20);
    let mut only_increase = spec();
    only_increase.rules.max_error_rate = None;
    only_increase.rules.max_p99_latency = None;
    let check = evaluate(
        &only_increase,
        &window(
            counts(980, 20, Duration::from_millis(400)),
            counts(50, 0, ms),
        ),
    );
    // OLD has 50 < 100 requests: no comparison, and with no other rule nothing judged,
    // which is not a pass (it once was).
    assert_eq!(check.verdict, Verdict::Inconclusive);
    let note = check.note.unwrap_or_default();
    assert!(
        note.contains("no rule could judge") && note.contains("OLD has fewer than 100"),
        "{note}"
    );
    assert!(check.breaches.is_empty());
}

#[test]
fn tiny_latency_ratios_are_noise() {
    let mut ratio_only = spec();
    ratio_only.rules.max_p99_latency = None;
    let check = evaluate(
        &ratio_only,
        &window(
            counts(1000, 0, Duration::from_micros(2_000)),
            counts(1000, 0, Duration::from_micros(800)),
        ),
    );
    assert_eq!(check.verdict, Verdict::Pass, "{}", check.summary());
}

/// Both pools' live counters, sampled into windows second by second as the controller does.
struct Traffic {
    windows: Windows,
    new: PoolStats,
    old: PoolStats,
}

impl Traffic {
    /// Windows that keep `history` of samples; no requests yet.
    fn new(history: Duration) -> Traffic {
        Traffic {
            windows: Windows::new(history),
            new: PoolStats::default(),
            old: PoolStats::default(),
        }
    }

    /// `n` requests of `class` answered in 5 ms by `pool` (`new` or `old`).
    fn answer(pool: &PoolStats, class: CodeClass, n: u64) {
        for _ in 0..n {
            pool.record(class, Duration::from_millis(5));
        }
    }

    /// Both pools' counters as they are at `second`.
    fn sample(&mut self, second: u64) {
        let (old, new) = (self.old.counts(), self.new.counts());
        self.windows.record(Duration::from_secs(second), old, new);
    }
}

#[test]
fn windows_subtract_the_sample_at_the_window_start() {
    let mut traffic = Traffic::new(Duration::from_secs(120));
    for second in 0..=300u64 {
        let errors = if second > 240 { 1 } else { 0 };
        Traffic::answer(&traffic.new, CodeClass::Success, 10 - errors);
        Traffic::answer(&traffic.new, CodeClass::ServerError, errors);
        Traffic::answer(&traffic.old, CodeClass::Success, 1);
        traffic.sample(second);
    }
    let windows = &traffic.windows;
    let last = windows.over(Duration::from_secs(120));
    assert_eq!(last.new.requests(), 1200);
    assert_eq!(last.new.errors(), 60);
    assert_eq!(last.old.requests(), 120);
    assert!(
        windows.samples.len() <= 122,
        "old samples are dropped: {}",
        windows.samples.len()
    );
    let short = windows.over(Duration::from_secs(10));
    assert_eq!(short.new.errors(), 10);
}

/// Trips at 25% errors over at least 20 requests in 10 s.
fn quarter_of_twenty_in_ten_seconds() -> TripSpec {
    TripSpec {
        error_rate: 0.25,
        min_requests: 20,
        window: Duration::from_secs(10),
    }
}

#[test]
fn the_trip_sees_an_outage_in_its_first_second() {
    let trip_spec = quarter_of_twenty_in_ten_seconds();
    let mut traffic = Traffic::new(Duration::from_secs(120));
    for second in 0..60u64 {
        Traffic::answer(&traffic.new, CodeClass::Success, 25);
        traffic.sample(second);
        assert_eq!(trip(&trip_spec, &traffic.windows), None);
    }
    Traffic::answer(&traffic.new, CodeClass::Error, 25);
    traffic.sample(60);
    let reason = trip(&trip_spec, &traffic.windows).expect("one bad second trips");
    assert!(reason.contains("25 of NEW's last 25"), "{reason}");
}

#[test]
fn the_trip_waits_for_enough_requests_within_its_window() {
    let trip_spec = quarter_of_twenty_in_ten_seconds();
    let mut traffic = Traffic::new(Duration::from_secs(60));
    traffic.sample(0);
    // One failing request a second: 20 requests take 20 s, beyond the 10 s window.
    for second in 1..=30u64 {
        Traffic::answer(&traffic.new, CodeClass::Error, 1);
        traffic.sample(second);
        assert_eq!(trip(&trip_spec, &traffic.windows), None, "second {second}");
    }
}

const TEN_MS: Duration = Duration::from_millis(10);

/// A weight that leaves OLD a share.
fn half_weight() -> Weight {
    Weight::from_percent(50.0).unwrap()
}

/// `Windows` holding exactly `window` over the spec's window.
fn windows_of(window: &WindowCounts) -> Windows {
    Windows::holding(window, spec().window)
}

#[test]
fn at_full_weight_the_comparisons_do_not_apply() {
    let mut relative = spec();
    relative.rules.max_error_rate = None;
    relative.rules.max_p99_latency = None;
    let windows = &windows_of(&WindowCounts {
        new: counts(6000, 0, TEN_MS),
        old: PoolCounts::default(),
    });
    for method in [
        AnalysisMethod::Threshold,
        AnalysisMethod::Statistical {
            confidence: DEFAULT_CONFIDENCE,
        },
    ] {
        // Below 100% OLD should have traffic: the step waits for it.
        let waiting = judge(method, &relative, windows, true, half_weight());
        assert_eq!(waiting.verdict, Verdict::Inconclusive, "{method:?}");
        // At 100% OLD has none by design: NEW's requests alone, and the note says so.
        let full = judge(method, &relative, windows, true, Weight::FULL);
        assert_eq!(full.verdict, Verdict::Pass, "{method:?}");
        let note = full.note.unwrap_or_default();
        assert!(note.contains("do not apply"), "{note}");
        // Too few NEW requests stay inconclusive at 100% too.
        let few = &windows_of(&WindowCounts {
            new: counts(10, 0, TEN_MS),
            old: PoolCounts::default(),
        });
        let full = judge(method, &relative, few, true, Weight::FULL);
        assert_eq!(full.verdict, Verdict::Inconclusive, "{method:?}");
    }
    // At 100% with NEW down, every request fails over to OLD: NEW has errors and no
    // latencies, OLD has it all. The ratio cannot judge, and that is not excused.
    let mut ratio = relative.clone();
    ratio.rules.max_error_rate_increase = None;
    let mut failed_over = PoolCounts::default();
    failed_over.responses[CodeClass::ServerError as usize] = 6000;
    let windows = &windows_of(&WindowCounts {
        new: failed_over,
        old: counts(6000, 0, TEN_MS),
    });
    for method in [
        AnalysisMethod::Threshold,
        AnalysisMethod::Statistical {
            confidence: DEFAULT_CONFIDENCE,
        },
    ] {
        let check = judge(method, &ratio, windows, true, Weight::FULL);
        assert_eq!(check.verdict, Verdict::Inconclusive, "{method:?}");
        let note = check.note.unwrap_or_default();
        assert!(note.contains("no latency samples"), "{note}");
    }
    // An absolute rule that could not judge is not excused at 100%.
    let mut latency = spec();
    latency.rules = crate::config::AnalysisRules {
        max_error_rate: None,
        max_error_rate_increase: None,
        max_p99_latency: latency.rules.max_p99_latency,
        max_p99_latency_ratio: None,
    };
    let mut no_latency = PoolCounts::default();
    no_latency.responses[CodeClass::Success as usize] = 6000;
    let windows = &windows_of(&WindowCounts {
        new: no_latency,
        old: PoolCounts::default(),
    });
    let check = judge(
        AnalysisMethod::Threshold,
        &latency,
        windows,
        true,
        Weight::FULL,
    );
    assert_eq!(check.verdict, Verdict::Inconclusive);
}

//! Rollouts on tokio's paused clock: hours of schedule in milliseconds.
//!
//! The proxy runs for real (controller, snapshot, analysis), but instead of sending
//! requests through sockets, each simulated second records traffic straight into the
//! pools' counters, exactly where the request path would: NEW gets the share the current
//! snapshot gives it, with the error rate and latency the scenario asks for.

mod support;

use std::time::Duration;

use cutover::CodeClass;
use support::*;

/// The classic seed schedule with the SPEC's example analysis.
const CLASSIC: &str = r#"    rollout:
      schedule: { start: 5%, step: 20%, every: 30m }
      analysis:
        interval: 30s
        window: 2m
        min_requests: 100
        failure_threshold: 3
        max_error_rate: 1%
        max_error_rate_increase: 0.5%
        max_p99_latency: 500ms
        trip: { error_rate: 25%, min_requests: 20, window: 10s }
"#;

/// A proxy whose backends are never contacted; state on tmpfs when there is one.
async fn proxy(rollout: &str) -> TestProxy {
    let nowhere = "127.0.0.1:9".parse().unwrap();
    let yaml = simple_config(&[nowhere], &[nowhere], "0%", rollout);
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    spawn_proxy_in(dir, &yaml, false).await
}

/// One simulated second of traffic.
#[derive(Clone, Copy)]
struct Traffic {
    requests_per_second: u64,
    new_error_rate: f64,
}

impl Traffic {
    const HEALTHY: Traffic = Traffic {
        requests_per_second: 200,
        new_error_rate: 0.0,
    };
}

/// Records one second of traffic, then lets one second pass.
async fn second(proxy: &TestProxy, traffic: Traffic) {
    {
        let snapshot = proxy.app.snapshot.load();
        let route = &snapshot.routes[0];
        let to_new =
            traffic.requests_per_second * u64::from(route.new_weight.basis_points()) / 10_000;
        let to_old = traffic.requests_per_second - to_new;
        let new_errors = (to_new as f64 * traffic.new_error_rate).round() as u64;
        let latency = Duration::from_millis(20);
        for _ in 0..to_old {
            route.service.old.stats.record(CodeClass::Success, latency);
        }
        for i in 0..to_new {
            let class = if i < new_errors {
                CodeClass::ServerError
            } else {
                CodeClass::Success
            };
            route.service.new.stats.record(class, latency);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn state(proxy: &TestProxy) -> (String, f64, usize) {
    let status = proxy.app.controller.status();
    let service = &status.services[0];
    (service.state.to_string(), service.weight, service.step)
}

fn checks(proxy: &TestProxy, result: &str) -> u64 {
    let metrics = proxy.app.metrics.encode();
    let prefix = format!("cutover_analysis_checks_total{{service=\"api\",result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn the_classic_schedule_promotes_in_two_and_a_half_simulated_hours() {
    let proxy = proxy(CLASSIC).await;
    let wall = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let mut weights = Vec::new();
    loop {
        second(&proxy, Traffic::HEALTHY).await;
        let (now, weight, _) = state(&proxy);
        if weights.last() != Some(&weight) {
            weights.push(weight);
        }
        if now == "promoted" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4 * 3600),
            "never promoted: {:?}",
            state(&proxy)
        );
    }
    let simulated = started.elapsed();
    assert_eq!(weights, vec![5.0, 25.0, 45.0, 65.0, 85.0, 100.0]);
    assert!(
        simulated >= Duration::from_secs(9000),
        "promoted early: {simulated:?}"
    );
    assert!(
        simulated <= Duration::from_secs(9000 + 60),
        "promoted late: {simulated:?}"
    );
    assert_eq!(checks(&proxy, "fail"), 0);
    // Measured at well under a second on a 2-core machine; the bound only guards
    // against the clock not being paused at all.
    assert!(
        wall.elapsed() < Duration::from_secs(30),
        "took {:?} of real time",
        wall.elapsed()
    );
    println!("2.5 simulated hours in {:?}", wall.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_five_percent_regression_rolls_back_after_exactly_threshold_failed_checks() {
    let proxy = proxy(CLASSIC).await;
    // Reach the 25% step, healthy.
    while state(&proxy).1 < 25.0 {
        second(&proxy, Traffic::HEALTHY).await;
    }
    let regression = Traffic {
        requests_per_second: 200,
        new_error_rate: 0.05,
    };
    let failed_before = checks(&proxy, "fail");
    let mut seconds = 0;
    while state(&proxy).0 != "rolled_back" {
        let failed = checks(&proxy, "fail") - failed_before;
        assert!(failed < 3, "3 failed checks but no rollback");
        second(&proxy, regression).await;
        seconds += 1;
        assert!(seconds < 600, "never rolled back");
    }
    assert_eq!(
        checks(&proxy, "fail") - failed_before,
        3,
        "rolled back on the third failed check"
    );
    let status = proxy.app.controller.status();
    assert_eq!(status.services[0].weight, 0.0);
    assert_eq!(
        status.services[0].rollback_reason.map(|r| r.label()),
        Some("analysis")
    );
    let check = status.services[0].last_check.as_ref().unwrap();
    assert!(
        check.breaches.iter().any(|b| b.contains("NEW error rate")),
        "{check:?}"
    );
    assert!(check.new.error_rate > 0.01);
    let metrics = proxy.app.metrics.encode();
    assert!(metrics.contains("cutover_rollbacks_total{service=\"api\",reason=\"analysis\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_hard_outage_trips_within_two_seconds() {
    let proxy = proxy(CLASSIC).await;
    let busy = Traffic {
        requests_per_second: 1000,
        new_error_rate: 0.0,
    };
    for _ in 0..300 {
        second(&proxy, busy).await;
    }
    assert_eq!(state(&proxy).0, "progressing");
    let outage = Traffic {
        requests_per_second: 1000,
        new_error_rate: 1.0,
    };
    let began = tokio::time::Instant::now();
    while state(&proxy).0 != "rolled_back" {
        second(&proxy, outage).await;
        assert!(
            began.elapsed() <= Duration::from_secs(2),
            "no trip within 2 s: {:?}",
            state(&proxy)
        );
    }
    let status = proxy.app.controller.status();
    assert_eq!(
        status.services[0].rollback_reason.map(|r| r.label()),
        Some("trip")
    );
}

#[tokio::test(start_paused = true)]
async fn too_little_traffic_extends_a_step_and_never_rolls_back() {
    let proxy = proxy(CLASSIC).await;
    // 5% of 10 requests a second: well under 100 NEW requests in a 2-minute window, and
    // under the trip's 20 in 10 s, even with every NEW request failing.
    let trickle = Traffic {
        requests_per_second: 10,
        new_error_rate: 1.0,
    };
    for _ in 0..(3 * 3600) {
        second(&proxy, trickle).await;
    }
    let (state_now, weight, step) = state(&proxy);
    assert_eq!(state_now, "progressing");
    assert_eq!(
        (weight, step),
        (5.0, 1),
        "the 30-minute step is extended, not completed"
    );
    assert_eq!(checks(&proxy, "fail"), 0);
    assert!(checks(&proxy, "inconclusive") > 300);
    let note = proxy.app.controller.status().services[0]
        .last_check
        .as_ref()
        .and_then(|c| c.note.clone())
        .unwrap();
    assert!(note.contains("needed"), "{note}");
}

#[tokio::test(start_paused = true)]
async fn alternating_failed_and_passed_checks_never_roll_back() {
    // A window as long as the interval: each check sees only its own 30 seconds.
    let rollout = CLASSIC.replace("window: 2m", "window: 30s").replace(
        "      schedule: { start: 5%, step: 20%, every: 30m }\n",
        "      schedule: { start: 20%, step: 20%, every: 30m }\n",
    );
    let proxy = proxy(&rollout).await;
    let bad = Traffic {
        requests_per_second: 200,
        new_error_rate: 0.05,
    };
    for interval in 0..40 {
        let traffic = if interval % 2 == 0 {
            bad
        } else {
            Traffic::HEALTHY
        };
        for _ in 0..30 {
            second(&proxy, traffic).await;
        }
    }
    assert_ne!(state(&proxy).0, "rolled_back");
    assert!(
        checks(&proxy, "fail") >= 15,
        "checks did fail: {}",
        checks(&proxy, "fail")
    );
    assert!(checks(&proxy, "pass") >= 15);
}

#[tokio::test(start_paused = true)]
async fn past_a_point_of_no_return_a_regression_pauses_instead() {
    let rollout = r#"    rollout:
      steps:
        - weight: 10%
          hold: 1m
          point_of_no_return: true
        - weight: 50%
          hold: 30m
        - weight: 100%
      analysis:
        interval: 10s
        window: 30s
        min_requests: 50
        failure_threshold: 2
        max_error_rate: 1%
"#;
    let proxy = proxy(rollout).await;
    while state(&proxy).1 < 50.0 {
        second(&proxy, Traffic::HEALTHY).await;
    }
    let bad = Traffic {
        requests_per_second: 200,
        new_error_rate: 0.2,
    };
    for _ in 0..120 {
        second(&proxy, bad).await;
    }
    let status = proxy.app.controller.status();
    let service = &status.services[0];
    assert_eq!(service.state, "paused");
    assert_eq!(
        service.weight, 50.0,
        "no rollback past the point of no return"
    );
    assert!(service.point_of_no_return_passed);
    assert_eq!(service.pause_cause.map(|c| c.as_str()), Some("analysis"));
    assert!(
        service
            .reason
            .as_deref()
            .unwrap()
            .contains("point of no return"),
        "{:?}",
        service.reason
    );
}

#[tokio::test(start_paused = true)]
async fn sticky_users_never_move_from_new_back_to_old_as_the_schedule_advances() {
    let rollout = format!("    sticky: {{ cookie: cutover_api }}\n{CLASSIC}");
    let proxy = proxy(&rollout).await;
    // 2000 users with the cookies the proxy would hand out, spread over every bucket.
    let users: Vec<http::HeaderMap> = (0..2000u32)
        .map(|i| {
            let mut headers = http::HeaderMap::new();
            let bucket = (i * 5) % 10_000;
            headers.insert("cookie", format!("cutover_api={bucket}").parse().unwrap());
            headers
        })
        .collect();
    let mut on_new = vec![false; users.len()];
    let mut weights = Vec::new();
    let client: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    while state(&proxy).0 != "promoted" {
        second(&proxy, Traffic::HEALTHY).await;
        let snapshot = proxy.app.snapshot.load();
        let route = &snapshot.routes[0];
        // Routing only changes with the weight: check every user at each new weight.
        if weights.last() == Some(&route.new_weight) {
            continue;
        }
        weights.push(route.new_weight);
        for (user, headers) in users.iter().enumerate() {
            let bucket = route.service.bucket(headers, client).value();
            let now_new = bucket < route.new_weight.basis_points();
            assert!(
                now_new || !on_new[user],
                "user {user} (bucket {bucket}) moved back to OLD at {}",
                route.new_weight
            );
            on_new[user] = now_new;
        }
    }
    assert_eq!(
        weights.len(),
        6,
        "every step of the schedule was seen: {weights:?}"
    );
    assert!(on_new.iter().all(|&n| n), "at 100% every user is on NEW");
}

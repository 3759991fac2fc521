//! The decision log of whole rollouts on tokio's paused clock: every decision is in
//! `state_dir/api.history.jsonl` with the numbers behind it, and they are the numbers
//! of the traffic the test made.

mod support;

use std::time::Duration;

use cutover::CodeClass;
use serde_json::Value;
use support::*;

const ROLLOUT: &str = r#"    rollout:
      steps:
        - { weight: 5%, hold: 2m }
        - { weight: 50%, hold: 2m }
        - weight: 100%
      analysis:
        interval: 30s
        window: 2m
        min_requests: 100
        failure_threshold: 3
        max_error_rate: 2%
        max_p99_latency: 500ms
METHOD"#;

async fn proxy(method: &str) -> TestProxy {
    let nowhere = "127.0.0.1:9".parse().unwrap();
    let rollout = ROLLOUT.replace("METHOD", method);
    let yaml = simple_config(&[nowhere], &[nowhere], "0%", &rollout);
    spawn_proxy_in(tempfile::tempdir().unwrap(), &yaml, false).await
}

/// One simulated second: `rate` requests, NEW's share failing at `new_errors`.
async fn second(proxy: &TestProxy, rate: u64, new_errors: f64) {
    {
        let snapshot = proxy.app.snapshot.load();
        let route = &snapshot.routes[0];
        let to_new = rate * u64::from(route.new_weight.basis_points()) / 10_000;
        let failing = (to_new as f64 * new_errors).round() as u64;
        let latency = Duration::from_millis(20);
        for _ in to_new..rate {
            route.service.old.stats.record(CodeClass::Success, latency);
        }
        for i in 0..to_new {
            let class = match i < failing {
                true => CodeClass::ServerError,
                false => CodeClass::Success,
            };
            route.service.new.stats.record(class, latency);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn records(proxy: &TestProxy) -> Vec<Value> {
    history(&proxy.dir.path().join("state"), "api")
}

fn rule<'a>(check: &'a Value, name: &str) -> &'a Value {
    check["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == name))
        .unwrap_or_else(|| panic!("no rule {name} in {check}"))
}

#[tokio::test(start_paused = true)]
async fn a_full_rollout_leaves_every_decision_with_its_numbers() {
    let proxy = proxy("").await;
    let mut seconds = 0;
    while service(&proxy).state != "promoted" {
        second(&proxy, 200, 0.0).await;
        seconds += 1;
        assert!(seconds < 3600, "never promoted: {:?}", rollout(&proxy));
    }
    let records = records(&proxy);
    // The step changes, in order, each with who decided.
    let steps: Vec<(f64, f64, String)> = of_kind(&records, "step")
        .iter()
        .map(|s| {
            (
                s["from_weight"].as_f64().unwrap(),
                s["to_weight"].as_f64().unwrap(),
                s["by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (0.0, 5.0, "startup".to_string()),
            (5.0, 50.0, "schedule".to_string()),
            (50.0, 100.0, "schedule".to_string()),
            (100.0, 100.0, "schedule".to_string()),
        ],
        "{records:#?}"
    );
    let states: Vec<String> = of_kind(&records, "state")
        .iter()
        .map(|s| {
            format!(
                "{} -> {}",
                s["from"].as_str().unwrap(),
                s["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        states,
        vec!["pending -> progressing", "progressing -> promoted"]
    );
    // Every check, with NEW's and OLD's numbers as the traffic made them.
    let checks = of_kind(&records, "check");
    assert!(checks.len() >= 8, "{} checks", checks.len());
    for (n, check) in checks.iter().enumerate() {
        let weight = check["weight"].as_f64().unwrap();
        let new = check["new"]["requests"].as_u64().unwrap();
        let old = check["old"]["requests"].as_u64().unwrap();
        // Check n (from 1) is 30·n s into the rollout; its window holds the last 2 minutes
        // of it at 200 req/s (a second of slack at each edge).
        let expected = 200 * (30 * (n as u64 + 1)).min(120);
        assert!((new + old).abs_diff(expected) <= 400, "check {n}: {check}");
        assert_eq!(check["new"]["errors"], 0, "{check}");
        let max_error_rate = rule(check, "max_error_rate");
        assert_eq!(max_error_rate["threshold"], 0.02);
        assert_eq!(max_error_rate["new_requests"], new);
        if check["outcome"] == "pass" {
            assert_eq!(max_error_rate["measured"], 0.0, "{check}");
            let p99 = rule(check, "max_p99_latency");
            assert_eq!(p99["threshold"], 500.0);
            let measured = p99["measured"].as_f64().unwrap();
            assert!((15.0..=30.0).contains(&measured), "{check}");
        }
        assert_eq!(check["method"], "threshold");
        assert!(weight > 0.0);
    }
    // The checks at 5% saw 5% of the traffic.
    for check in checks.iter().filter(|c| c["weight"] == 5.0) {
        let new = check["new"]["requests"].as_u64().unwrap();
        let all = new + check["old"]["requests"].as_u64().unwrap();
        assert_eq!(new * 20, all, "{check}");
    }
    // Each step change comes right after the passing check that allowed it.
    for (i, record) in records.iter().enumerate() {
        if record["kind"] == "step" && record["by"] == "schedule" {
            let previous = records[..i]
                .iter()
                .rev()
                .find(|r| r["kind"] == "check")
                .unwrap();
            assert_eq!(previous["outcome"], "pass", "{record}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollback_leaves_the_failed_checks_that_caused_it() {
    let proxy = proxy("").await;
    // Healthy for a minute, then NEW fails 10% of its requests (under no trip).
    for _ in 0..60 {
        second(&proxy, 200, 0.0).await;
    }
    let mut seconds = 0;
    while service(&proxy).state != "rolled_back" {
        second(&proxy, 200, 0.10).await;
        seconds += 1;
        assert!(seconds < 600, "never rolled back: {:?}", rollout(&proxy));
    }
    let records = records(&proxy);
    let failed: Vec<&Value> = of_kind(&records, "check")
        .into_iter()
        .filter(|c| c["outcome"] == "fail")
        .collect();
    assert_eq!(failed.len(), 3, "{records:#?}");
    for (n, check) in failed.iter().enumerate() {
        assert_eq!(check["consecutive_failures"], n as u64 + 1);
        let rule = rule(check, "max_error_rate");
        assert_eq!(rule["outcome"], "fail");
        let measured = rule["measured"].as_f64().unwrap();
        let new = &check["new"];
        let expected = new["errors"].as_f64().unwrap() / new["requests"].as_f64().unwrap();
        assert!((measured - expected).abs() < 1e-9, "{check}");
        assert!(measured > 0.02 && measured <= 0.10, "{check}");
    }
    // The rollback: weight 0 decided by the analysis, after the third failure.
    let last = records.len() - 1;
    let state = &records[last];
    assert_eq!(state["kind"], "state", "{state}");
    assert_eq!(state["to"], "rolled_back");
    assert_eq!(state["by"], "analysis");
    assert!(state["reason"]
        .as_str()
        .unwrap()
        .contains("3 failed checks in a row"));
    let step = &records[last - 1];
    assert_eq!(step["kind"], "step");
    assert_eq!(
        (step["from_weight"].as_f64(), step["to_weight"].as_f64()),
        (Some(5.0), Some(0.0))
    );
    assert_eq!(records[last - 2]["outcome"], "fail");
    assert_eq!(records[last - 2]["consecutive_failures"], 3);
}

#[tokio::test(start_paused = true)]
async fn statistical_checks_on_low_traffic_wait_then_pause_for_not_enough_evidence() {
    let proxy = proxy("        method: statistical\n        max_wait: 10m\n").await;
    let mut seconds = 0;
    while service(&proxy).state != "paused" {
        second(&proxy, 3, 0.0).await;
        seconds += 1;
        assert!(seconds < 3600, "never paused: {:?}", rollout(&proxy));
    }
    // 10 minutes of running time at the first step, to the check.
    assert!((600..=630).contains(&seconds), "paused after {seconds} s");
    let status = service(&proxy);
    assert_eq!(status.weight, 5.0);
    let records = records(&proxy);
    let checks = of_kind(&records, "check");
    assert!(checks.len() >= 19, "{}", checks.len());
    assert!(checks
        .iter()
        .all(|c| c["outcome"] == "inconclusive" && c["method"] == "statistical"));
    let pause = records.last().unwrap();
    assert_eq!(pause["kind"], "state", "{pause}");
    assert_eq!(pause["to"], "paused (not_enough_evidence)");
    assert_eq!(pause["by"], "analysis");
    assert!(
        pause["reason"]
            .as_str()
            .unwrap()
            .starts_with("not enough evidence"),
        "{pause}"
    );
}

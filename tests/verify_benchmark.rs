//! `verify: { benchmark: ... }` (SPEC §9): the same paced load against OLD and NEW
//! backends side by side; NEW's p99 and error rate decide, with the figures in the reason
//! and in the decision log.

mod support;

use std::time::Duration;

use support::*;

/// One test at a time: the latency each one measures is the test's truth, and the others'
/// load on the same two cores would add to it (an OLD p99 of 70 ms for a 10 ms backend in
/// one full-suite run while the five ran side by side).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 75/s for 2 s: 150 requests to each pool, enough for a p99.
fn benchmark(extra_steps: &str) -> String {
    format!(
        r#"    rollout:
      steps:
        - verify:
            benchmark: {{ rate: 75, duration: 2s, path: /items, max_p99_ratio: 1.5, max_error_rate: 2% }}
{extra_steps}        - weight: 100%
"#
    )
}

#[tokio::test]
async fn a_new_60ms_slower_than_old_fails_the_benchmark_on_p99() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    old.set_delay(Duration::from_millis(10));
    new.set_delay(Duration::from_millis(70));
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        &benchmark(""),
    ))
    .await;
    wait_for(&proxy, "the rollback", Duration::from_secs(30), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    let status = service(&proxy);
    assert_eq!(status.weight, 0.0);
    assert_eq!(status.rollback_reason.map(|r| r.label()), Some("verify"));
    let reason = status.reason.unwrap_or_default();
    let p99s = p99s(&reason);
    let (new_p99, old_p99) = p99s.unwrap_or_else(|| panic!("no p99s in {reason}"));
    assert!((10.0..40.0).contains(&old_p99), "{reason}");
    assert!((70.0..120.0).contains(&new_p99), "{reason}");
    assert!(reason.contains("above the limit of 1.5"), "{reason}");
    assert!(reason.contains("GET /items"), "{reason}");
    // Both pools got the whole load, straight from the benchmark, paced not bunched.
    assert_eq!(old.hits(), 150, "OLD got every benchmark request");
    assert_eq!(new.hits(), 150, "NEW got every benchmark request");
    let records = history(&proxy.dir.path().join("state"), "api");
    let verify = of_kind(&records, "verify");
    assert_eq!(verify.len(), 1, "{records:?}");
    assert_eq!(verify[0]["passed"], false);
    let detail = verify[0]["detail"][0].as_str().unwrap();
    assert!(
        detail.contains("NEW p99") && detail.contains("OLD p99"),
        "{detail}"
    );
    assert!(detail.contains("error rate NEW 0.00%"), "{detail}");
}

#[tokio::test]
async fn equal_pools_pass_the_benchmark_and_the_weight_moves() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let new_a = spawn_backend("new").await;
    let new_b = spawn_backend("new").await;
    for backend in [&old, &new_a, &new_b] {
        backend.set_delay(Duration::from_millis(20));
    }
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new_a.addr, new_b.addr],
        "0%",
        &benchmark(""),
    ))
    .await;
    wait_for(&proxy, "promotion", Duration::from_secs(30), || {
        service(&proxy).state == "promoted"
    })
    .await;
    assert_eq!(service(&proxy).weight, 100.0);
    // NEW's share of the load is spread over its backends.
    assert_eq!(new_a.hits() + new_b.hits(), 150);
    assert_eq!(new_a.hits(), 75);
    let records = history(&proxy.dir.path().join("state"), "api");
    let verify = of_kind(&records, "verify");
    assert_eq!(verify.len(), 1, "{records:?}");
    assert_eq!(verify[0]["passed"], true);
    let detail = verify[0]["detail"][0].as_str().unwrap();
    let (new_p99, old_p99) = p99s(detail).unwrap_or_else(|| panic!("{detail}"));
    assert!(new_p99 >= 20.0 && old_p99 >= 20.0, "{detail}");
    assert!(
        detail.contains("answers NEW 150 OLD 150 of 150 each"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_new_answering_500s_fails_on_the_error_rate() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    new.set_status(500);
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        &benchmark(""),
    ))
    .await;
    let reason = rollback_reason(&proxy).await;
    assert!(
        reason.contains("NEW error rate 100.00% is above the limit of 2.00%"),
        "{reason}"
    );
    assert!(reason.contains("status 500"), "{reason}");
}

#[tokio::test]
async fn an_old_pool_that_is_down_is_not_a_pass() {
    let _turn = TURN.lock().await;
    let dead = dead_addr().await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[dead], &[new.addr], "0%", &benchmark(""))).await;
    let reason = rollback_reason(&proxy).await;
    assert!(
        reason.contains("inconclusive: OLD answered 0 of 150 requests"),
        "{reason}"
    );
    assert!(reason.contains("cannot connect"), "{reason}");
}

#[tokio::test]
async fn after_a_point_of_no_return_a_failed_benchmark_pauses() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    new.set_status(503);
    let steps = "        - weight: 10%\n          point_of_no_return: true\n";
    let config = format!(
        "    rollout:\n      steps:\n{steps}        - verify:\n            benchmark: {{ rate: 75, duration: 2s, path: /items }}\n        - weight: 100%\n"
    );
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", &config)).await;
    wait_for(&proxy, "the pause", Duration::from_secs(30), || {
        service(&proxy).state == "paused"
    })
    .await;
    let status = service(&proxy);
    assert_eq!(status.weight, 10.0, "the weight stays where it was");
    let reason = status.reason.unwrap_or_default();
    assert!(reason.contains("NEW error rate"), "{reason}");
}

/// `(NEW p99, OLD p99)` in ms from "NEW p99 X ms / OLD p99 Y ms".
fn p99s(text: &str) -> Option<(f64, f64)> {
    let after = |marker: &str| -> Option<f64> {
        let rest = &text[text.find(marker)? + marker.len()..];
        rest.split(" ms").next()?.trim().parse().ok()
    };
    Some((after("NEW p99 ")?, after("OLD p99 ")?))
}

/// Waits for the rollout to roll back; its reason.
async fn rollback_reason(proxy: &TestProxy) -> String {
    wait_for(proxy, "the rollback", Duration::from_secs(30), || {
        service(proxy).state == "rolled_back"
    })
    .await;
    service(proxy).reason.unwrap_or_default()
}

//! `GET /services/{name}/shadow` after a shadow step: once the copies that were in flight
//! when the step ended have finished, its counts equal `cutover_shadow_requests_total`
//! and what NEW received, exactly.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn same(_: &str, path: &str) -> (u16, String) {
    (200, format!(r#"{{"path":"{path}","ok":true}}"#))
}

fn metric_of(metrics: &str, result: &str) -> u64 {
    let series = format!("cutover_shadow_requests_total{{service=\"api\",result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_report_is_exact_once_the_last_copy_finishes() {
    let old = spawn_json_backend(same).await;
    let new = spawn_json_backend(same).await;
    // Copies take a while on NEW, so many are still in flight when the step ends.
    new.set_delay(Duration::from_millis(300));
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        "    rollout:\n      steps:\n        - shadow: { percent: 100%, hold: 1s, min_requests: 20, max_mismatch: 1% }\n        - weight: 100%\n",
    ))
    .await;
    // Steady traffic through OLD until the step is over.
    let mut i = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while service(&proxy).state != "promoted" {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            service(&proxy)
        );
        let got = send(proxy.addr, get("a", &format!("/item/{}", i % 50))).await;
        assert_eq!(got.status, 200);
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // No more traffic: nothing else can be copied, the controller has nothing to wake for.
    let reports = |report: &Value, metrics: &str| {
        ["matched", "mismatched", "noise", "dropped"]
            .iter()
            .zip(["match", "mismatch", "noise", "dropped"])
            .all(|(field, result)| report[field].as_u64() == Some(metric_of(metrics, result)))
            && report["errors"].as_u64() == Some(metric_of(metrics, "error"))
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let (exact, report, metrics) = loop {
        let report: Value = serde_json::from_str(
            &admin_get(proxy.app.admin_addr, "/services/api/shadow")
                .await
                .body,
        )
        .unwrap();
        let metrics = admin_get(proxy.app.admin_addr, "/metrics").await.body;
        let exact = report["active"] == false
            && report["matched"].as_u64() == Some(new.direct())
            && reports(&report, &metrics);
        if exact || std::time::Instant::now() > until {
            break (exact, report, metrics);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        exact,
        "NEW received {} copies; match metric {}; report {report:#}",
        new.direct(),
        metric_of(&metrics, "match")
    );
    assert!(report["matched"].as_u64().unwrap() >= 20, "{report:#}");
    // And it stays so: the status published last is the final one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again: Value = serde_json::from_str(
        &admin_get(proxy.app.admin_addr, "/services/api/shadow")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(again, report);
}

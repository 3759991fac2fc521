//! The Grafana dashboard's latency panels, through a real Prometheus scraping the real
//! proxy in front of 50 ms backends: each panel's PromQL, as the dashboard has it, must
//! read about 50 ms (and the NEW/OLD ratio about 1).

mod support;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// `(title, expr)` of every panel query on request latency, from `grafana/cutover.json`.
fn latency_panels() -> Vec<(String, String)> {
    panels_on("cutover_request_duration_seconds")
}

/// `(title, expr)` of every panel query on shadow copies.
fn shadow_panels() -> Vec<(String, String)> {
    panels_on("cutover_shadow_requests_total")
}

/// `(title, expr)` of every panel query that reads `metric`.
fn panels_on(metric: &str) -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/cutover.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            match target["expr"].as_str() {
                Some(expr) if expr.contains(metric) => {
                    found.push((title.to_string(), expr.to_string()));
                }
                _ => {}
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_panels_read_50ms_for_a_50ms_backend() {
    let Some(prometheus) = external_tool("prometheus", "prometheus") else {
        return;
    };
    let panels = latency_panels();
    assert_eq!(panels.len(), 3, "p50, p99 and the p99 ratio: {panels:#?}");

    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    old.set_delay(Duration::from_millis(50));
    new.set_delay(Duration::from_millis(50));
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "50%", "")).await;

    // Four clients in a loop: about 80 requests a second, half to each pool.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (proxy.addr, stop.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                while !stop.load(SeqCst) {
                    let got = client.send(get("a", "/")).await.unwrap();
                    assert_eq!(got.status, http::StatusCode::OK);
                }
            })
        })
        .collect();

    let server = PrometheusServer::start(&prometheus, proxy.app.admin_addr, "250ms").await;
    // Grafana's $__rate_interval is 4 scrape intervals at least; 3 s holds 12 scrapes.
    let query = |expr: &str| {
        expr.replace("$service", "api")
            .replace("$__rate_interval", "3s")
    };
    let wanted = [
        panel_named(&panels, "p50"),
        panel_named(&panels, "p99 latency"),
        panel_named(&panels, "ratio"),
    ];
    let answers = || async {
        let mut seen = Vec::new();
        for (title, expr) in &wanted {
            seen.push((title.clone(), server.query(&query(expr)).await));
        }
        seen
    };
    // Both pools in each quantile panel, and the ratio: the first scrapes are in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = answers().await;
        if seen[0].1.len() == 2 && seen[1].1.len() == 2 && seen[2].1.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer for both pools within 30s: {seen:#?}\nprometheus log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Then a full rate window of scrapes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = answers().await;
    stop.store(true, SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    eprintln!("what Prometheus answered: {seen:?}");
    // The median sits in the 50-60 ms bucket; the p99 also carries this shared test
    // machine's tail, so it gets more room, but not the 1.3 s or 60 s of a corrupt histogram.
    for ((title, results), top) in seen[..2].iter().zip([0.080, 0.200]) {
        for (labels, seconds) in results {
            assert!(
                (0.045..=top).contains(seconds),
                "{title} {labels}: {seconds}s for 50 ms backends"
            );
        }
    }
    let ratio = seen[2].1[0].1;
    assert!((0.5..=2.0).contains(&ratio), "NEW/OLD p99 = {ratio}");
}

fn panel_named(panels: &[(String, String)], needle: &str) -> (String, String) {
    panels
        .iter()
        .find(|(title, _)| title.contains(needle))
        .cloned()
        .unwrap_or_else(|| panic!("no panel with {needle} in {panels:#?}"))
}

/// NEW answers differently on one path in ten.
fn differs_on_tenth(_: &str, path: &str) -> (u16, String) {
    (
        200,
        format!(
            r#"{{"path":"{path}","v":{}}}"#,
            u8::from(path.ends_with('0'))
        ),
    )
}

fn same_json(_: &str, path: &str) -> (u16, String) {
    (200, format!(r#"{{"path":"{path}","v":0}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_panels_read_the_known_mismatch_share_of_a_shadow_run() {
    let Some(prometheus) = external_tool("prometheus", "prometheus") else {
        return;
    };
    let panels = shadow_panels();
    let by_result = panel_named(&panels, "by result");
    let rate = panel_named(&panels, "mismatch rate");

    let old = spawn_json_backend(same_json).await;
    let new = spawn_json_backend(differs_on_tenth).await;
    // A long hold: the step is still copying while Prometheus looks.
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        "    rollout:\n      steps:\n        - shadow: { percent: 100%, hold: 10m, max_mismatch: 50% }\n        - weight: 100%\n",
    ))
    .await;
    // One client cycling over /item/0..9: exactly one copy in ten mismatches.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (addr, stop) = (proxy.addr, stop.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut i = 0u64;
            while !stop.load(SeqCst) {
                let got = client
                    .send(get("a", &format!("/item/{}", i % 10)))
                    .await
                    .unwrap();
                assert_eq!(got.status, http::StatusCode::OK);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let server = PrometheusServer::start(&prometheus, proxy.app.admin_addr, "250ms").await;
    let query = |expr: &str| {
        expr.replace("$service", "api")
            .replace("$__rate_interval", "3s")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = server.query(&query(&by_result.1)).await;
        if seen.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no shadow results within 30s: {seen:?}\nprometheus log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let results = server.query(&query(&by_result.1)).await;
    let share = server.query(&query(&rate.1)).await;
    stop.store(true, SeqCst);
    client.await.unwrap();
    eprintln!("by result: {results:?}; mismatch rate: {share:?}");

    let of = |result: &str| {
        results
            .iter()
            .find(|(labels, _)| labels["result"] == result)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {result} in {results:?}"))
    };
    let (matched, mismatched) = (of("match"), of("mismatch"));
    assert!(matched > 0.0 && mismatched > 0.0, "{results:?}");
    // Nine matches to one mismatch, give or take the rate windows' edges.
    let ratio = mismatched / (matched + mismatched);
    assert!(
        (0.05..=0.15).contains(&ratio),
        "mismatch share {ratio} from {results:?}"
    );
    assert_eq!(share.len(), 1, "{share:?}");
    assert!(
        (0.05..=0.15).contains(&share[0].1),
        "mismatch rate panel: {share:?}"
    );
}

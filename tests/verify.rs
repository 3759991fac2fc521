//! `verify` steps (SPEC §9): the service's smoke requests go straight to every NEW
//! backend, never through the split and never to OLD; one failure rolls back, naming the
//! request, the backend and what differed.

mod support;

use std::time::Duration;

use support::*;

const SMOKE: &str = r#"    rollout:
      steps:
        - verify: smoke
        - weight: 100%
    smoke:
      - { path: /healthz, expect_status: 200 }
      - { method: POST, path: /echo?x=1, body: '{"a":1}', headers: { Content-Type: application/json, X-Smoke: yes },
          expect_status: [200, 201], expect_body_contains: '"a":1', expect_header: { x-backend: NEW } }
"#;

#[tokio::test]
async fn smoke_requests_reach_every_new_backend_and_then_the_weight_moves() {
    let old = spawn_backend("old").await;
    let new_a = spawn_backend("new").await;
    let new_b = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new_a.addr, new_b.addr],
        "0%",
        SMOKE,
    ))
    .await;
    wait_for(&proxy, "promotion", Duration::from_secs(10), || {
        service(&proxy).state == "promoted"
    })
    .await;
    assert_eq!(service(&proxy).weight, 100.0);
    for backend in [&new_a, &new_b] {
        let seen = backend.seen();
        assert_eq!(
            seen.len(),
            2,
            "each NEW backend gets each smoke request once: {seen:#?}"
        );
        assert_eq!(
            (seen[0].method.as_str(), seen[0].uri.as_str()),
            ("GET", "/healthz")
        );
        assert_eq!(
            (seen[1].method.as_str(), seen[1].uri.as_str()),
            ("POST", "/echo?x=1")
        );
        assert_eq!(seen[1].body, r#"{"a":1}"#);
        assert_eq!(seen[1].headers["content-type"], "application/json");
        assert_eq!(seen[1].headers["x-smoke"], "yes");
    }
    assert_eq!(old.hits(), 0, "smoke requests never go to OLD");
}

#[tokio::test]
async fn a_failing_smoke_request_on_one_backend_rolls_back_naming_it() {
    let old = spawn_backend("old").await;
    let new_a = spawn_backend("new").await;
    let new_b = spawn_backend("new").await;
    new_b.set_status(503);
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new_a.addr, new_b.addr],
        "0%",
        SMOKE,
    ))
    .await;
    wait_for(&proxy, "the rollback", Duration::from_secs(10), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    let status = service(&proxy);
    assert_eq!(status.weight, 0.0, "NEW never got live traffic");
    let reason = status.reason.unwrap_or_default();
    let expected = format!(
        "smoke request GET /healthz on NEW backend {}: status 503, expected 200",
        new_b.addr
    );
    assert!(reason.contains(&expected), "{reason}");
    assert_eq!(
        status.rollback_reason.map(|r| r.label()),
        Some("verify"),
        "{reason}"
    );
    for _ in 0..5 {
        assert_eq!(send(proxy.addr, get("a", "/")).await.body, "old");
    }
    // The verdict is in the decision log, with what failed, ahead of the rollback it caused.
    let records = history(&proxy.dir.path().join("state"), "api");
    let verify = of_kind(&records, "verify");
    assert_eq!(verify.len(), 1, "{records:?}");
    assert_eq!(verify[0]["passed"], false);
    assert!(verify[0]["detail"][0].as_str().unwrap().contains(&expected));
    let verify_at = records.iter().position(|r| r["kind"] == "verify").unwrap();
    let rolled_back = records
        .iter()
        .position(|r| r["kind"] == "state" && r.to_string().contains("rolled_back"))
        .unwrap_or_else(|| panic!("no rollback in {records:?}"));
    assert!(verify_at < rolled_back, "{records:?}");
}

#[tokio::test]
async fn an_unreachable_new_backend_fails_verify() {
    let old = spawn_backend("old").await;
    let new_a = spawn_backend("new").await;
    let dead = dead_addr().await;
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new_a.addr, dead],
        "0%",
        SMOKE,
    ))
    .await;
    wait_for(&proxy, "the rollback", Duration::from_secs(10), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    let reason = service(&proxy).reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("on NEW backend {dead}: cannot connect")),
        "{reason}"
    );
}

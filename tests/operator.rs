//! What an operator sees through the admin API: status that never contradicts itself,
//! verbs that can be repeated, and a weight that is not lowered by accident.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::*;

const ROLLOUT: &str = r#"    rollout:
      start: manual
      steps:
        - weight: 50%
          hold: 1h
        - weight: 100%
      analysis:
        interval: 200ms
        window: 2s
        min_requests: 1
        max_error_rate: 50%
"#;

async fn post_json(admin: std::net::SocketAddr, path: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("host", admin.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let got = send(admin, request).await;
    (
        got.status,
        serde_json::from_str(&got.body).unwrap_or(Value::Null),
    )
}

async fn service(addr: std::net::SocketAddr) -> Value {
    let (status, body) = support::admin(addr, "GET", "/services/api").await;
    assert_eq!(status, StatusCode::OK);
    body
}

/// Sends traffic until `/services/api` satisfies `condition`.
async fn traffic_until(proxy: &TestProxy, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let mut client = Client::connect(proxy.addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = service(proxy.app.admin_addr).await;
        if condition(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {what}: {status:#}"
        );
        for _ in 0..5 {
            client.send(get("a", "/")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rolled_back_service_has_no_next_weight_no_hold_and_no_stale_pass() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", ROLLOUT)).await;
    let admin = proxy.app.admin_addr;
    assert_eq!(
        admin_post(admin, "/services/api/start").await.status,
        StatusCode::OK
    );
    let passed = traffic_until(&proxy, "a passing check", |s| {
        s["last_check"]["result"] == "pass"
    })
    .await;
    assert_eq!(passed["next_weight"], 100.0);
    assert!(passed["hold_remaining_s"].as_f64().unwrap() > 3500.0);

    let (status, body) = support::admin(admin, "POST", "/services/api/rollback").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    for status in [body, service(admin).await] {
        assert_eq!(status["state"], "rolled_back");
        assert_eq!(status["weight"], 0.0);
        assert_eq!(status["next_weight"], Value::Null, "{status:#}");
        assert_eq!(status["hold_remaining_s"], Value::Null, "{status:#}");
        assert_eq!(
            status["last_check"],
            Value::Null,
            "a passing check before a manual rollback is history: {status:#}"
        );
    }
}

#[tokio::test]
async fn each_check_has_its_own_increasing_seq() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", ROLLOUT)).await;
    let admin = proxy.app.admin_addr;
    assert_eq!(
        admin_post(admin, "/services/api/start").await.status,
        StatusCode::OK
    );
    let first = traffic_until(&proxy, "a check", |s| {
        s["last_check"]["seq"].as_u64().is_some()
    })
    .await;
    let first = first["last_check"]["seq"].as_u64().unwrap();
    assert!(first >= 1);
    let later = traffic_until(&proxy, "a later check", |s| {
        s["last_check"]["seq"]
            .as_u64()
            .is_some_and(|seq| seq > first)
    })
    .await;
    // Checks come every 200 ms: within a second, a few more, counted one by one.
    let seq = later["last_check"]["seq"].as_u64().unwrap();
    assert!(seq <= first + 5, "{first} then {seq}");
}

#[tokio::test]
async fn repeating_a_verb_succeeds_and_says_already() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", ROLLOUT)).await;
    let admin = proxy.app.admin_addr;
    for (verb, note) in [
        ("start", None),
        ("start", Some("already progressing")),
        ("resume", Some("already progressing")),
        ("pause", None),
        ("pause", Some("already paused")),
        ("rollback", None),
        ("rollback", Some("already rolled back")),
    ] {
        let (status, body) = support::admin(admin, "POST", &format!("/services/api/{verb}")).await;
        assert_eq!(status, StatusCode::OK, "{verb}: {body:#}");
        assert_eq!(body["note"].as_str(), note, "{verb}: {body:#}");
    }
    // What makes no sense is still refused, with the reason.
    let (status, body) = support::admin(admin, "POST", "/services/api/pause").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("only a progressing rollout"));
}

#[tokio::test]
async fn lowering_the_weight_needs_force_and_the_granularity_is_explained() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", ROLLOUT)).await;
    let admin = proxy.app.admin_addr;
    assert_eq!(
        admin_post(admin, "/services/api/start").await.status,
        StatusCode::OK
    );
    assert_eq!(routed_weight(&proxy), 50.0);

    let (status, body) = post_json(admin, "/services/api/weight", r#"{"weight": 30}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("from 50% to 30%") && error.contains("\"force\": true"),
        "{error}"
    );
    assert_eq!(routed_weight(&proxy), 50.0, "nothing moved");
    assert_eq!(service(admin).await["state"], "progressing");

    let (status, body) = post_json(
        admin,
        "/services/api/weight",
        r#"{"weight": 30, "force": true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(routed_weight(&proxy), 30.0);
    assert_eq!(body["state"], "paused");
    // Raising needs no force.
    let (status, _) = post_json(admin, "/services/api/weight", r#"{"weight": 60}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(routed_weight(&proxy), 60.0);

    let (status, body) = post_json(admin, "/services/api/weight", r#"{"weight": 60.005}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("steps of 0.01%") && error.contains("60%") && error.contains("60.01%"),
        "{error}"
    );
}

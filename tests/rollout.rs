//! Rollouts with real traffic through the proxy.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn sticky_users_only_ever_move_from_old_to_new_as_the_weight_rises() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let rollout = r#"    sticky: { cookie: cutover_api }
    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - weight: 30%
          hold: 1s
        - weight: 60%
          hold: 1s
        - weight: 100%
"#;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", rollout)).await;
    // 300 users, each with the cookie the proxy gave them on their first visit.
    let mut users = Vec::new();
    for _ in 0..300 {
        let first = send(proxy.addr, get("a", "/")).await;
        let cookie = first.headers["set-cookie"].to_str().unwrap();
        users.push(cookie.split(';').next().unwrap().to_string());
    }
    let mut pool_of: HashMap<usize, String> = HashMap::new();
    let mut moves_to_new = 0;
    let mut weights_seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let status = proxy.app.controller.status();
        let weight = status.services[0].weight;
        if weights_seen.last() != Some(&weight) {
            weights_seen.push(weight);
        }
        let mut client = Client::connect(proxy.addr).await;
        for (user, cookie) in users.iter().enumerate() {
            let request = Request::get("/")
                .header("host", "a")
                .header("cookie", cookie.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let pool = client.send(request).await.unwrap().body;
            match pool_of.insert(user, pool.clone()).as_deref() {
                Some("new") => assert_eq!(
                    pool, "new",
                    "user {user} moved from NEW back to OLD at {weight}%"
                ),
                Some("old") if pool == "new" => moves_to_new += 1,
                _ => {}
            }
        }
        if status.services[0].state == "promoted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        weights_seen.last(),
        Some(&100.0),
        "promoted: {weights_seen:?}"
    );
    assert!(weights_seen.len() >= 3, "{weights_seen:?}");
    assert!(
        pool_of.values().all(|p| p == "new"),
        "at 100% everyone is on NEW"
    );
    assert!(
        moves_to_new > 200,
        "users moved over as the weight rose: {moves_to_new}"
    );
}

#[tokio::test]
async fn a_failing_new_pool_is_rolled_back_with_real_traffic() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    new.set_status(500);
    let rollout = r#"    rollout:
      steps:
        - weight: 20%
          hold: 30s
        - weight: 100%
      analysis:
        interval: 1s
        window: 3s
        min_requests: 10
        failure_threshold: 2
        max_error_rate: 5%
"#;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", rollout)).await;
    let mut client = Client::connect(proxy.addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while proxy.app.controller.status().services[0].state != "rolled_back" {
        assert!(tokio::time::Instant::now() < deadline, "no rollback");
        for _ in 0..20 {
            client.send(get("a", "/")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits_at_rollback = new.hits();
    for _ in 0..100 {
        let got = client.send(get("a", "/")).await.unwrap();
        assert_eq!(got.body, "old", "after the rollback NEW gets nothing");
    }
    assert_eq!(new.hits(), hits_at_rollback);
    let status = proxy.app.controller.status();
    let service = &status.services[0];
    assert_eq!(service.rollback_reason.map(|r| r.label()), Some("analysis"));
    assert!(
        service
            .reason
            .as_deref()
            .unwrap()
            .contains("rolled back from 20%"),
        "{:?}",
        service.reason
    );
    let state = std::fs::read_to_string(proxy.dir.path().join("state/api.json")).unwrap();
    assert!(state.contains("\"phase\": \"rolled_back\""), "{state}");
}

//! HTTP hooks (SPEC §4): the JSON payload and headers they post, a failing answer, and a
//! receiver that does not answer in time.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------------------
// HTTP hooks
// ---------------------------------------------------------------------------------------

fn http_hook_config(receiver: SocketAddr) -> String {
    format!(
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      announce:
        on: [started]
        timeout: 5s
        http:
          url: "http://{receiver}/hooks/cutover?team=payments"
          headers:
            X-Team: payments
            Authorization: "Bearer s3cret"
"#
    )
}

#[tokio::test]
async fn an_http_hook_posts_the_json_payload_with_its_headers() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let receiver = spawn_backend("receiver").await;
    let proxy = proxy_with(&old, &new, &http_hook_config(receiver.addr)).await;
    wait_for(&proxy, "the http hook", Duration::from_secs(10), || {
        hook(&proxy, "announce").runs == 1
    })
    .await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "one POST: {seen:#?}");
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hooks/cutover?team=payments");
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", request.headers))
            .to_string()
    };
    assert_eq!(header("x-team"), "payments");
    assert_eq!(header("authorization"), "Bearer s3cret");
    assert!(header("content-type").starts_with("application/json"));
    assert_eq!(header("host"), receiver.addr.to_string());
    let payload: Value = serde_json::from_slice(&request.body)
        .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:?}", request.body));
    assert_eq!(payload["service"], "api");
    assert_eq!(payload["event"], "started");
    assert_eq!(payload["step"], 1);
    // At `started` nothing has moved yet: the 5% comes with step 1's `step_started`.
    assert_eq!(payload["weight"], 0.0);
    assert_eq!(payload["state"], "progressing");
    assert_eq!(
        payload["run_id"].as_str(),
        service(&proxy).run_id.as_deref(),
        "{payload:#}"
    );
    let announce = hook(&proxy, "announce");
    assert_eq!(announce.last_result.as_deref(), Some("ok"));
    assert_eq!(announce.last_detail.as_deref(), Some("HTTP 200"));
}

#[tokio::test]
async fn an_http_hook_answered_with_503_fails_without_changing_the_rollout() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let receiver = spawn_backend("receiver").await;
    receiver.set_status(503);
    let proxy = proxy_with(&old, &new, &http_hook_config(receiver.addr)).await;
    wait_for(&proxy, "the http hook", Duration::from_secs(10), || {
        hook(&proxy, "announce").runs == 1
    })
    .await;
    let announce = hook(&proxy, "announce");
    assert_eq!(announce.last_result.as_deref(), Some("failed"));
    assert_eq!(announce.last_detail.as_deref(), Some("HTTP 503"));
    assert_eq!(receiver.seen().len(), 1);
    let status = service(&proxy);
    assert_eq!((status.state.as_str(), status.weight), ("progressing", 5.0));
}

#[tokio::test]
async fn an_http_hook_that_does_not_answer_in_time_times_out() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let receiver = spawn_backend("receiver").await;
    receiver.set_delay(Duration::from_secs(10));
    let config = http_hook_config(receiver.addr).replace("timeout: 5s", "timeout: 1s");
    let proxy = proxy_with(&old, &new, &config).await;
    wait_for(
        &proxy,
        "the http hook to time out",
        Duration::from_secs(6),
        || hook(&proxy, "announce").runs == 1,
    )
    .await;
    let announce = hook(&proxy, "announce");
    assert_eq!(
        announce.last_result.as_deref(),
        Some("timeout"),
        "{announce:#?}"
    );
    assert_eq!(
        announce.last_detail.as_deref(),
        Some("no answer within 1s"),
        "{announce:#?}"
    );
    assert!(
        announce.last_duration_ms.unwrap_or_default() < 3000,
        "{announce:#?}"
    );
}

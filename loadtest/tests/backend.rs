//! The scripted backend: fail rate, delay, and the runtime control
//! endpoints.

mod common;

use std::time::Duration;

use common::{backend, http, plan, url};
use loadtest::backend::{BackendConfig, StopReason};
use loadtest::load;

const MS: Duration = Duration::from_millis(1);

#[tokio::test]
async fn answers_with_name_status_and_body() {
    let server = backend(BackendConfig {
        name: "old".into(),
        status: 201,
        body: "hello".into(),
        ..BackendConfig::default()
    })
    .await;
    let (status, body) = http("GET", &url(server.addr(), "/anything?x=1")).await;
    assert_eq!((status, body.as_str()), (201, "hello"));
    let summary = server.stop().await;
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.reason, StopReason::Requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_rate_fails_about_that_fraction() {
    let server = backend(BackendConfig {
        fail_rate: 0.5,
        fail_status: 503,
        ..BackendConfig::default()
    })
    .await;
    let run = plan(server.addr(), 1000.0, 200 * MS, 4, Duration::from_secs(5));
    let report = load::run(&run).await;
    assert_eq!(report.responses, 200);
    // Binomial(200, 0.5): outside 50..=150 has probability ~1e-12.
    assert!(
        (50..=150).contains(&report.status.s5xx),
        "{:?}",
        report.status
    );
    assert_eq!(report.status.s2xx + report.status.s5xx, 200);
    assert_eq!(report.failures, report.status.s5xx);
    let summary = server.stop().await;
    assert_eq!(summary.failed, report.status.s5xx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_control_changes_behaviour() {
    let server = backend(BackendConfig {
        fail_status: 502,
        ..BackendConfig::default()
    })
    .await;
    let addr = server.addr();
    let short = plan(addr, 200.0, 100 * MS, 2, Duration::from_secs(5));

    let before = load::run(&short).await;
    assert_eq!(before.status.s2xx, 20);

    let (status, body) = http("POST", &url(addr, "/__loadtest/fail-rate?value=1")).await;
    assert_eq!((status, body.as_str()), (200, "fail-rate 1\n"));
    let broken = load::run(&short).await;
    assert_eq!(broken.status.s5xx, 20, "{:?}", broken.status);

    let (status, _) = http("POST", &url(addr, "/__loadtest/fail-rate?value=0")).await;
    assert_eq!(status, 200);
    let (status, _) = http("POST", &url(addr, "/__loadtest/delay?value=100ms")).await;
    assert_eq!(status, 200);
    let slow = load::run(&short).await;
    assert_eq!(slow.status.s2xx, 20);
    assert!(slow.latency_us.min >= 100_000, "{:?}", slow.latency_us);

    let (status, body) = http("GET", &url(addr, "/__loadtest/state")).await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).expect("state is JSON");
    assert_eq!(state["fail_rate"], 0.0);
    assert_eq!(state["delay_ms"], 100.0);
    assert_eq!(state["requests"], 60);
    assert_eq!(state["failed"], 20);

    server.stop().await;
}

#[tokio::test]
async fn control_rejects_bad_requests() {
    let server = backend(BackendConfig::default()).await;
    let addr = server.addr();
    for (method, path, expected) in [
        ("POST", "/__loadtest/fail-rate?value=1.5", 400),
        ("POST", "/__loadtest/fail-rate?value=abc", 400),
        ("POST", "/__loadtest/fail-rate", 400),
        ("POST", "/__loadtest/delay?value=forever", 400),
        ("POST", "/__loadtest/delay?value=2h", 400),
        ("GET", "/__loadtest/fail-rate?value=0.1", 405),
        ("POST", "/__loadtest/state", 405),
        ("POST", "/__loadtest/nope", 404),
    ] {
        let (status, body) = http(method, &url(addr, path)).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
    }
    // Nothing above changed the behaviour or counted as traffic.
    let (_, body) = http("GET", &url(addr, "/__loadtest/state")).await;
    let state: serde_json::Value = serde_json::from_str(&body).expect("state is JSON");
    assert_eq!(state["fail_rate"], 0.0);
    assert_eq!(state["delay_ms"], 0.0);
    assert_eq!(state["requests"], 0);
    server.stop().await;
}

#[tokio::test]
async fn stopping_closes_keep_alive_connections() {
    let server = backend(BackendConfig::default()).await;
    let addr = server.addr();
    let warm = plan(addr, 100.0, 50 * MS, 2, Duration::from_secs(1));
    assert_eq!(load::run(&warm).await.status.s2xx, 5);
    server.stop().await;
    // The port no longer answers.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

//! The admin API's answers to bad requests, the data-plane gauges, and `reloaded` hooks.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

const ROLLOUT: &str = "    rollout:\n      start: manual\n      steps:\n        - weight: 10%\n          hold: 1h\n        - weight: 100%\n";

#[tokio::test]
async fn bad_requests_get_400_404_405_and_409() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", ROLLOUT)).await;
    let admin = proxy.app.admin_addr;
    proxy
        .app
        .controller
        .control("api", cutover::Op::Start)
        .await
        .unwrap();

    for body in [
        "",
        "{",
        "{\"weight\": \"lots\"}",
        "{\"weight\": 150}",
        "{\"weight\": true}",
        "{\"w\": 5}",
    ] {
        let got = send(admin, post("/services/api/weight", body)).await;
        assert_eq!(
            got.status,
            StatusCode::BAD_REQUEST,
            "{body:?}: {}",
            got.body
        );
        assert!(got.body.contains("\"error\""), "{}", got.body);
    }
    let got = send(admin, post("/services/api/weight", "{\"weight\": \"25%\"}")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert!(got.body.contains("\"weight\": 25.0"), "{}", got.body);

    assert_eq!(
        send(admin, post("/services/nope/pause", "")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(admin, get(&admin.to_string(), "/services/nope"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(admin, post("/services/api/explode", "")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(admin, get(&admin.to_string(), "/nowhere"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(admin, get(&admin.to_string(), "/reload")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Starting a started (here: paused by set-weight) rollout is no error; the answer says so.
    let again = send(admin, post("/services/api/start", "")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(
        again.body.contains("\"note\": \"already paused\""),
        "{}",
        again.body
    );
    let promoted = send(admin, post("/services/api/promote?full=true", "")).await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.body);
    let refused = send(admin, post("/services/api/retry", "")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused
            .body
            .contains("only a rolled back rollout can be retried"),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn a_static_service_refuses_rollout_verbs_with_409() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let got = send(proxy.app.admin_addr, post("/services/api/pause", "")).await;
    assert_eq!(got.status, StatusCode::CONFLICT);
    assert!(got.body.contains("no rollout"), "{}", got.body);
    let status = proxy.app.controller.status();
    assert_eq!(status.services[0].state, "static");
}

#[tokio::test]
async fn backend_up_and_active_connections_are_exported() {
    let old = spawn_backend("old").await;
    let dead = dead_addr().await;
    let check =
        "    health_check: { path: /, interval: 100ms, timeout: 50ms, healthy: 1, unhealthy: 1 }\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[dead], "0%", check)).await;
    let mut client = Client::connect(proxy.addr).await;
    client.send(get("a", "/")).await.unwrap();
    let metrics = || proxy.app.metrics.encode();
    let old_up = format!(
        "cutover_backend_up{{service=\"api\",pool=\"old\",backend=\"{}\"}} 1",
        old.addr
    );
    let new_down =
        format!("cutover_backend_up{{service=\"api\",pool=\"new\",backend=\"{dead}\"}} 0");
    let seen = eventually(Duration::from_secs(3), || metrics().contains(&new_down)).await;
    assert!(
        seen,
        "the dead NEW backend is reported down:\n{}",
        metrics()
    );
    assert!(metrics().contains(&old_up), "{}", metrics());
    assert!(
        metrics().contains("cutover_connections_active{listener=\"127.0.0.1:0\"} 1"),
        "one open client connection:\n{}",
        metrics()
    );
    drop(client);
    let closed = eventually(Duration::from_secs(3), || {
        metrics().contains("cutover_connections_active{listener=\"127.0.0.1:0\"} 0")
    })
    .await;
    assert!(closed, "{}", metrics());
}

#[tokio::test]
async fn reloaded_hooks_run_after_a_successful_reload_only() {
    let old = spawn_backend("old").await;
    let hooks = "    hooks:\n      note:\n        exec: [\"/bin/sh\", \"-c\", 'echo \"$CUTOVER_EVENT $CUTOVER_REASON\" >> reloads']\n        on: [reloaded]\n";
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", hooks);
    let proxy = spawn_proxy(&yaml).await;
    let log = proxy.dir.path().join("reloads");
    let admin = proxy.app.admin_addr;

    std::fs::write(
        proxy.config_path(),
        yaml.replace("weight: 0%", "weight: 200%"),
    )
    .unwrap();
    assert_eq!(
        send(admin, post("/reload", "")).await.status,
        StatusCode::BAD_REQUEST
    );
    std::fs::write(
        proxy.config_path(),
        yaml.replace("weight: 0%", "weight: 5%"),
    )
    .unwrap();
    assert_eq!(
        send(admin, post("/reload", "")).await.status,
        StatusCode::OK
    );
    let version = proxy.app.controller.status().config.version.clone();
    let ran = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| !l.is_empty())
    })
    .await;
    assert!(ran, "the reloaded hook ran");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines.trim(),
        format!("reloaded config {version} loaded"),
        "once, for the good reload"
    );
}

/// A web page in the operator's browser cannot drive a token-less admin API: browsers mark
/// cross-site requests with `Origin`, and those are refused (scripts send none).
#[tokio::test]
async fn a_token_less_admin_api_refuses_requests_from_other_sites() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", "")).await;
    let admin = proxy.app.admin_addr;
    let post = |origin: &str, host: String| {
        let origin = if origin.is_empty() {
            String::new()
        } else {
            format!("origin: {origin}\r\n")
        };
        format!(
            "POST /reload HTTP/1.1\r\nhost: {host}\r\n{origin}content-type: application/x-www-form-urlencoded\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    };
    let wait = Duration::from_secs(5);
    let evil = raw(
        admin,
        post("https://evil.example", admin.to_string()).as_bytes(),
        wait,
    )
    .await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    let port = admin.port();
    let rebinding = post(
        &format!("http://evil.example:{port}"),
        format!("evil.example:{port}"),
    );
    let rebound = raw(admin, rebinding.as_bytes(), wait).await;
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    let own = raw(
        admin,
        post(&format!("http://{admin}"), admin.to_string()).as_bytes(),
        wait,
    )
    .await;
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    let script = raw(admin, post("", admin.to_string()).as_bytes(), wait).await;
    assert!(script.starts_with("HTTP/1.1 200"), "{script}");
}

/// A web page that re-points its own name at 127.0.0.1 (DNS rebinding) reads nothing of a
/// token-less admin API but what is public: no status, no decision log, no shadow diffs.
#[tokio::test]
async fn a_rebound_page_reads_nothing_of_a_tokenless_admin_api() {
    let backend = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[backend.addr], &[backend.addr], "0%", "")).await;
    let admin = proxy.app.admin_addr;
    let rebound = format!("evil.example:{}", admin.port());
    for path in ["/status", "/services/api", "/services/api/history"] {
        let got = send(admin, get(&rebound, path)).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN, "{path}: {}", got.body);
        let got = send(admin, get(&format!("localhost:{}", admin.port()), path)).await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "{path} for localhost: {}",
            got.body
        );
    }
    for public in ["/", "/healthz", "/metrics"] {
        assert_eq!(
            send(admin, get(&rebound, public)).await.status,
            StatusCode::OK,
            "{public}"
        );
    }
}

//! Issue 13 defect 4: a reload never leaves the admin socket less protected than the
//! address it is still bound to requires. The socket binds 0.0.0.0 (all interfaces);
//! the test only ever connects to it through 127.0.0.1.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

const TOKEN: &str = "s3cret-admin-token";

fn config(admin_addr: &str, with_token: bool) -> String {
    let token = if with_token {
        "\n  token_file: admin.token"
    } else {
        ""
    };
    let yaml = simple_config(
        &["127.0.0.1:9".parse().unwrap()],
        &["127.0.0.1:9".parse().unwrap()],
        "0%",
        "",
    );
    yaml.replacen(
        "admin:\n  addr: \"127.0.0.1:0\"",
        &format!("admin:\n  addr: \"{admin_addr}\"{token}"),
        1,
    )
}

/// `GET /status` through loopback, with or without the token.
async fn status(admin: SocketAddr, token: Option<&str>) -> StatusCode {
    let loopback = SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let mut request = Request::get("/status").header("host", loopback.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(loopback, request.body(Full::new(Bytes::new())).unwrap())
        .await
        .status
}

async fn public_admin_proxy() -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let proxy = spawn_proxy_in(dir, &config("0.0.0.0:0", true), false).await;
    assert!(proxy.app.admin_addr.ip().is_unspecified());
    assert_eq!(
        status(proxy.app.admin_addr, None).await,
        StatusCode::UNAUTHORIZED
    );
    proxy
}

#[tokio::test]
async fn moving_admin_to_loopback_and_dropping_the_token_is_refused() {
    let proxy = public_admin_proxy().await;
    let admin = proxy.app.admin_addr;
    save_by_rename(&proxy.config_path(), &config("127.0.0.1:0", false));
    let errors = proxy
        .app
        .controller
        .reload(cutover::ReloadSource::Api)
        .await
        .expect_err("a reload that unguards a public admin socket must be refused");
    let message = errors.join("\n");
    assert!(
        message.contains("keeps listening on 0.0.0.0:0 until cutover restarts")
            && message.contains("keep `token_file`"),
        "{message}"
    );
    assert_eq!(status(admin, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(admin, Some(TOKEN)).await, StatusCode::OK);
}

#[tokio::test]
async fn the_running_address_decides_across_several_reloads() {
    let proxy = public_admin_proxy().await;
    let admin = proxy.app.admin_addr;
    // Moving to loopback with the token kept is fine; the socket stays where it is...
    save_by_rename(&proxy.config_path(), &config("127.0.0.1:0", true));
    reload_ok(&proxy).await;
    assert_eq!(
        proxy.app.controller.status().config.version,
        version_on_disk(&proxy.config_path())
    );
    // ...so dropping the token in a later reload is still refused.
    save_by_rename(&proxy.config_path(), &config("127.0.0.1:0", false));
    assert!(proxy
        .app
        .controller
        .reload(cutover::ReloadSource::Api)
        .await
        .is_err());
    assert_eq!(status(admin, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(admin, Some(TOKEN)).await, StatusCode::OK);
}

#[tokio::test]
async fn a_loopback_admin_may_drop_its_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let proxy = spawn_proxy_in(dir, &config("127.0.0.1:0", true), false).await;
    assert_eq!(
        status(proxy.app.admin_addr, None).await,
        StatusCode::UNAUTHORIZED
    );
    save_by_rename(&proxy.config_path(), &config("127.0.0.1:0", false));
    reload_ok(&proxy).await;
    assert_eq!(status(proxy.app.admin_addr, None).await, StatusCode::OK);
}

//! Hot reload (SPEC §8) of what the proxy listens on: listeners added and removed, a
//! listener that cannot be bound, and renewed certificates.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cutover::ReloadSource;
use http::StatusCode;
use support::*;
use tokio::net::TcpStream;

/// A directory of its own for certificates, as cert-manager would make: `(its parent, it)`.
fn tls_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    (tmp, tls)
}

// ---------------------------------------------------------------------------------------
// (6) Listeners added and removed by a reload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_listener_added_by_reload_serves() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy(&yaml).await;
    let mut kept = KeepAlive::connect(proxy.addr).await.unwrap();
    assert_eq!(kept.get("/").await.unwrap().1, "old");

    let port = free_port();
    let added: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        TcpStream::connect(added).await.is_err(),
        "precondition: {added} is free"
    );
    save_by_rename(&proxy.config_path(), &two_listeners(&yaml, port));
    reload_ok(&proxy).await;

    for _ in 0..3 {
        assert_eq!(served_by(added).await, "old", "through the added listener");
    }
    // The existing listener kept its socket and its open connections.
    assert_eq!(
        kept.get("/")
            .await
            .expect("a kept listener's connection was closed")
            .1,
        "old"
    );
    assert_eq!(served_by(proxy.addr).await, "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_stops_accepting_and_finishes_its_requests() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let one = simple_config(&[old.addr], &[new.addr], "0%", "");
    let port = free_port();
    let proxy = spawn_proxy(&two_listeners(&one, port)).await;
    let removed = proxy
        .app
        .listener(&format!("127.0.0.1:{port}"))
        .expect("the second listener is running");
    let kept = proxy.app.listener("127.0.0.1:0").unwrap();
    assert_eq!(served_by(removed).await, "old");

    // A slow request in flight on the listener that goes away.
    let slow = tokio::spawn(async move { send(removed, get("api.test", "/slow")).await });
    assert!(eventually(Duration::from_secs(2), || old.hits() == 2).await);
    save_by_rename(&proxy.config_path(), &one);
    reload_ok(&proxy).await;

    let closed = eventually_async(Duration::from_secs(3), || async {
        TcpStream::connect(removed).await.is_err()
    })
    .await;
    assert!(
        closed,
        "{removed} still accepts connections 3s after its removal"
    );
    let got = slow.await.unwrap();
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the in-flight request was cut: {got:?}"
    );
    assert_eq!(
        served_by(kept).await,
        "old",
        "the kept listener must still serve"
    );
}

#[tokio::test]
async fn a_listener_that_cannot_be_bound_fails_the_reload_and_changes_nothing() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy(&yaml).await;
    let version = running_version(&proxy);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let changed = simple_config(&[old.addr], &[new.addr], "100%", "");
    save_by_rename(&proxy.config_path(), &two_listeners(&changed, port));
    let errors = proxy
        .app
        .controller
        .reload(ReloadSource::Api)
        .await
        .expect_err("a reload with a port in use must fail");
    assert!(
        errors.iter().any(|e| e.contains(&port.to_string())),
        "the error should name the address: {errors:?}"
    );
    assert_eq!(running_version(&proxy), version);
    assert_eq!(
        routed_weight(&proxy),
        0.0,
        "the weight of a refused config applied"
    );
    assert_eq!(metric(&proxy, RELOADS_ERROR), 1.0);
    assert_eq!(served_by(proxy.addr).await, "old");
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// (8) Certificates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_renewed_certificate_is_served_after_a_reload() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (proxy, [first, second]) = tls_proxy(old.addr, new.addr).await;
    let connector = tls_connector(&[first.clone(), second.clone()]);
    let dir = proxy.dir.path();

    let (served, mut before) = tls_connect(&connector, proxy.addr).await;
    assert!(
        served == first,
        "the first certificate should be served at start"
    );
    assert_eq!(tls_get(&mut before).await, "old");

    // Renew: the second certificate replaces the files (renamed over, like cert-manager).
    for ext in ["crt", "key"] {
        let tmp = dir.join(format!("tls.{ext}.new"));
        std::fs::copy(dir.join(format!("second.{ext}")), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(format!("tls.{ext}"))).unwrap();
    }
    reload_ok(&proxy).await;
    let (served, mut after) = tls_connect(&connector, proxy.addr).await;
    assert!(
        served == second,
        "after the reload new connections should get the renewed certificate"
    );
    assert_eq!(tls_get(&mut after).await, "old");
    // A connection made before the reload is untouched.
    assert_eq!(tls_get(&mut before).await, "old");
}

#[tokio::test]
async fn a_broken_certificate_fails_the_reload_and_the_served_one_stays() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (proxy, [first, second]) = tls_proxy(old.addr, new.addr).await;
    let connector = tls_connector(&[first.clone(), second.clone()]);
    let dir = proxy.dir.path();
    let version = running_version(&proxy);

    // The key of another certificate: readable, but it does not match.
    std::fs::copy(dir.join("second.key"), dir.join("tls.key")).unwrap();
    let errors = proxy
        .app
        .controller
        .reload(ReloadSource::Api)
        .await
        .expect_err("a certificate with the wrong key must fail the reload");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("tls.crt") || e.contains("tls.key")),
        "the error should name the certificate files: {errors:?}"
    );
    assert_eq!(running_version(&proxy), version);
    assert!(proxy.app.controller.status().config.last_error.is_some());
    let (served, mut sender) = tls_connect(&connector, proxy.addr).await;
    assert!(
        served == first,
        "the running certificate should still be served"
    );
    assert_eq!(tls_get(&mut sender).await, "old");
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_picked_up_by_the_watcher() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    // The certificate lives in a directory of its own, as cert-manager would put it; the
    // YAML does not change at all.
    let (tmp, tls) = tls_dir();
    let (a_crt, a_key) = certificate(&tls, "first", &["api.test"]);
    let (b_crt, b_key) = certificate(&tls, "second", &["api.test"]);
    std::fs::copy(&a_crt, tls.join("tls.crt")).unwrap();
    std::fs::copy(&a_key, tls.join("tls.key")).unwrap();
    let yaml = with_listeners(
        &simple_config(&[old.addr], &[new.addr], "0%", ""),
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - { cert: tls/tls.crt, key: tls/tls.key }\n",
    );
    let proxy = spawn_proxy_in(tmp, &yaml, true).await;
    let (first, second) = (der(&a_crt), der(&b_crt));
    let connector = tls_connector(&[first.clone(), second.clone()]);
    let (served, _) = tls_connect(&connector, proxy.addr).await;
    assert!(served == first);

    for (from, to) in [(&b_key, "tls.key"), (&b_crt, "tls.crt")] {
        let tmp = tls.join(format!("{to}.new"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, tls.join(to)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (served, _) = tls_connect(&connector, proxy.addr).await;
        if served == second {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.app.controller.status().config.last_error.is_none());
}

/// A certificate that a reload named is watched too: renewed on disk, it is served
/// without a SIGHUP (the watcher once kept the files of the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_a_reload_named_is_watched_too() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (tmp, tls) = tls_dir();
    let (a_crt, a_key) = certificate(&tls, "first", &["api.test"]);
    let (b_crt, b_key) = certificate(&tls, "second", &["api.test"]);
    let (c_crt, c_key) = certificate(&tls, "third", &["api.test"]);
    let listener = |stem: &str| {
        with_listeners(
            &simple_config(&[old.addr], &[new.addr], "0%", ""),
            &format!("listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{ cert: tls/{stem}.crt, key: tls/{stem}.key }}\n"),
        )
    };
    // Start on first.crt; then an edit points the listener at tls.crt (same directory).
    let proxy = spawn_proxy_in(tmp, &listener("first"), true).await;
    std::fs::copy(&b_crt, tls.join("tls.crt")).unwrap();
    std::fs::copy(&b_key, tls.join("tls.key")).unwrap();
    save_by_rename(&proxy.config_path(), &listener("tls"));
    let connector = tls_connector(&[der(&a_crt), der(&b_crt), der(&c_crt)]);
    let mut served_second = false;
    for _ in 0..100 {
        if tls_connect(&connector, proxy.addr).await.0 == der(&b_crt) {
            served_second = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_second, "the edit naming tls.crt was picked up");
    drop(a_key);

    // Renew tls.crt/tls.key on disk, as cert-manager would.
    for (from, to) in [(&c_key, "tls.key"), (&c_crt, "tls.crt")] {
        let t = tls.join(format!("{to}.new"));
        std::fs::copy(from, &t).unwrap();
        std::fs::rename(&t, tls.join(to)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tls_connect(&connector, proxy.addr).await.0 == der(&c_crt) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate (named by a reload) was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

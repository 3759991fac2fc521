//! Hot reload (SPEC §8) under traffic: a reload storm loses no request, and WebSockets and
//! requests in flight survive reloads.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

// ---------------------------------------------------------------------------------------
// (1) A reload storm under traffic
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_five_reloads_under_300_rps_lose_no_request_and_end_at_the_last_weight() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: u32| simple_config(&[old.addr], &[new.addr], &format!("{w}%"), "");
    let proxy = spawn_proxy(&yaml(0)).await;
    let path = proxy.config_path();

    // 44 weights that all differ from their neighbour, then 80% and finally 30%.
    let mut weights: Vec<u32> = (0..44).map(|i| (i * 37 + 11) % 101).collect();
    weights.extend([80, 30]);
    assert!(weights.windows(2).all(|w| w[0] != w[1]));

    // 6 keep-alive clients × 50/s = 300 requests per second.
    let traffic = Traffic::start(proxy.addr, 6, 50);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let storm_started = Instant::now();
    let mut versions = vec![running_version(&proxy)];
    for (i, weight) in weights.iter().enumerate() {
        // Both ways of writing a file must work.
        if i % 2 == 0 {
            save_by_rename(&path, &yaml(*weight));
        } else {
            save_in_place(&path, &yaml(*weight));
        }
        let version = reload_ok(&proxy).await;
        assert_ne!(
            Some(&version),
            versions.last(),
            "reload {i} (weight {weight}%) kept the previous version"
        );
        assert_eq!(
            routed_weight(&proxy),
            f64::from(*weight),
            "after reload {i} the routing snapshot does not have the file's weight"
        );
        versions.push(version);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let storm = storm_started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tally = traffic.stop().await;

    eprintln!(
        "{} reloads in {storm:?}; {} requests ({} old, {} new), {} failed",
        weights.len(),
        tally.total(),
        tally.old,
        tally.new,
        tally.failures.len()
    );
    tally.assert_no_failures(&format!("during {} reloads", weights.len()));
    let rate = tally.total() as f64 / (storm + Duration::from_millis(400)).as_secs_f64();
    assert!(
        rate >= 150.0 && tally.total() >= 300,
        "the clients sent only {} requests ({rate:.0}/s) over a {storm:?} storm: \
         the storm was not exercised under traffic",
        tally.total()
    );
    assert!(
        tally.old > 0 && tally.new > 0,
        "traffic under changing weights should reach both pools: {tally:?}"
    );
    assert_eq!(
        metric(&proxy, RELOADS_OK),
        weights.len() as f64,
        "every reload should be counted as ok"
    );
    assert_eq!(metric(&proxy, RELOADS_ERROR), 0.0);

    // The last file says 30%: the status, the snapshot and the traffic agree.
    assert_eq!(running_version(&proxy), version_on_disk(&path));
    assert_eq!(proxy.app.controller.status().services[0].weight, 30.0);
    assert_eq!(routed_weight(&proxy), 30.0);
    let (_, to_new) = split(proxy.addr, 1000).await;
    assert!(
        (285..=315).contains(&to_new),
        "after the storm NEW served {to_new} of 1000 requests; the last weight is 30%"
    );
}

// ---------------------------------------------------------------------------------------
// (5) WebSockets and in-flight requests across reloads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_websocket_stays_open_through_several_reloads() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy(&yaml("0%")).await;
    let path = proxy.config_path();
    let mut ws = open_websocket(proxy.addr).await;
    echo(&mut ws, "before any reload").await.unwrap();
    assert_eq!(old.hits(), 1, "the tunnel should go to OLD at 0%");

    // Shift everything to NEW and back, with the tunnel open to OLD all along.
    for (i, weight) in ["100%", "50%", "100%", "0%", "100%"].iter().enumerate() {
        save_by_rename(&path, &yaml(weight));
        reload_ok(&proxy).await;
        let message = format!("message {i} after the reload to {weight}");
        echo(&mut ws, &message)
            .await
            .unwrap_or_else(|e| panic!("the tunnel broke after reload {i} ({weight}): {e}"));
    }
    assert_eq!(metric(&proxy, RELOADS_OK), 5.0);
    assert_eq!(
        served_by(proxy.addr).await,
        "new",
        "the last reload set 100%"
    );
    echo(&mut ws, "still here").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_during_reloads_complete() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy(&yaml("0%")).await;
    let path = proxy.config_path();

    // Three /slow requests (300 ms at the backend), each on its own connection.
    let addr = proxy.addr;
    let slow: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let got = send(addr, get("api.test", "/slow")).await;
                (got, Instant::now())
            })
        })
        .collect();
    let arrived = eventually(Duration::from_secs(2), || old.hits() == 3).await;
    assert!(arrived, "the slow requests did not reach OLD");

    for weight in ["100%", "50%", "100%"] {
        save_by_rename(&path, &yaml(weight));
        reload_ok(&proxy).await;
    }
    let reloaded_at = Instant::now();
    for task in slow {
        let (got, finished_at) = task.await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{got:?}");
        assert_eq!(got.body, "old");
        assert!(
            finished_at > reloaded_at,
            "the request finished before the reloads: the test did not overlap them"
        );
    }
    assert_eq!(served_by(proxy.addr).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_to_a_backend_the_reload_removes_completes() {
    let first = spawn_backend("old").await;
    let second = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[first.addr], &[new.addr], "0%", "")).await;

    let addr = proxy.addr;
    let slow = tokio::spawn(async move { send(addr, get("api.test", "/slow")).await });
    assert!(eventually(Duration::from_secs(2), || first.hits() == 1).await);
    // OLD is now only the second backend: the first one leaves the config mid-request.
    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[second.addr], &[new.addr], "0%", ""),
    );
    reload_ok(&proxy).await;
    let got = slow.await.unwrap();
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the in-flight request was cut: {got:?}"
    );
    assert_eq!(served_by(proxy.addr).await, "old");
    assert_eq!(
        second.hits(),
        1,
        "new requests should go to the backend now configured"
    );
    assert_eq!(first.hits(), 1);
}

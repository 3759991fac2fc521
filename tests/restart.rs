//! Issue 13: a restart under load refuses nothing. The real binary serves 40 requests a
//! second (keep-alive and new connections); a second process started with
//! `CUTOVER_TAKEOVER=1` binds beside it, stops it, takes over the state, and serves on.

mod support;

use std::time::Duration;

use support::*;

fn config(old: &Backend, new: &Backend, port: u16, admin: u16) -> String {
    format!(
        r#"listeners:
  - addr: "127.0.0.1:{port}"
admin:
  addr: "127.0.0.1:{admin}"
state_dir: state
limits:
  shutdown_grace: 5s
services:
  - name: api
    old: {{ backends: [{{ addr: "{}" }}] }}
    new: {{ backends: [{{ addr: "{}" }}] }}
    rollout:
      steps:
        - {{ weight: 20%, hold: 1h }}
"#,
        old.addr, new.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_under_load_fails_no_request_and_keeps_the_rollout() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let path = dir.path().join("cutover.yaml");
    std::fs::write(&path, config(&old, &new, port, admin)).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let mut first = Process::spawn(&path, &[]);
    first
        .wait_for_log("admin API", Duration::from_secs(10))
        .await;
    let mut before = wait_for_status(admin).await;
    while before["services"][0]["state"] != "progressing" {
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = wait_for_status(admin).await;
    }

    // A second plain start is refused: it would share the state directory.
    let mut intruder = Process::spawn(&path, &[]);
    assert_eq!(intruder.wait_exit(Duration::from_secs(10)).await, Some(1));
    assert!(
        intruder.log().contains("is in use by another cutover (pid")
            && intruder.log().contains(&first.pid().to_string()),
        "{}",
        intruder.log()
    );

    let load = Load::start(addr, 8, 5); // 40 requests a second
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut second = Process::spawn(&path, &[("CUTOVER_TAKEOVER", "1")]);
    assert_eq!(
        first.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "the old process did not stop cleanly:\n{}",
        first.log()
    );
    second
        .wait_for_log("admin API", Duration::from_secs(10))
        .await;
    let served_by_first = load.ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retried = load.retried();
    let (ok, failures) = load.stop().await;
    eprintln!(
        "{ok} requests, {} failed, {retried} retried after an idle keep-alive close",
        failures.len()
    );

    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the takeover: {:#?}\nold log:\n{}\nnew log:\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)],
        first.log(),
        second.log()
    );
    assert!(ok >= 60, "only {ok} requests in ~2 s at 40/s");
    assert!(
        ok - served_by_first >= 20,
        "the new process served {} requests",
        ok - served_by_first
    );
    assert!(second.log().contains("takeover: pid"), "{}", second.log());
    let after = wait_for_status(admin).await;
    for field in ["state", "step", "weight"] {
        assert_eq!(
            after["services"][0][field], before["services"][0][field],
            "{field} changed across the takeover"
        );
    }
    assert_eq!(after["services"][0]["weight"], 20.0);
}

async fn wait_for_status(admin: u16) -> serde_json::Value {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    for _ in 0..500 {
        if let Some(status) = admin_status(addr).await {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no /status from the admin API");
}

//! Stopping and starting the real binary: a prompt exit on SIGTERM, and a hold that
//! survives the restart.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"listeners:
  - addr: "LISTEN"
admin:
  addr: "ADMIN"
state_dir: state
services:
  - name: api
    old: { backends: [{ addr: "OLD" }] }
    new: { backends: [{ addr: "OLD" }] }
    rollout:
      steps:
        - weight: 10%
          hold: 1h
        - weight: 100%
"#;

async fn start(dir: &Path, old: SocketAddr, admin: SocketAddr, listen: SocketAddr) -> Cutover {
    let config = dir.join("cutover.yaml");
    if !config.exists() {
        let yaml = CONFIG
            .replace("ADMIN", &admin.to_string())
            .replace("OLD", &old.to_string())
            .replace("LISTEN", &listen.to_string());
        std::fs::write(&config, yaml).unwrap();
    }
    Cutover::start(&config, admin).await
}

/// Sends SIGTERM and returns how long the process took to exit.
fn stop(cutover: &mut Cutover) -> Duration {
    let sent = Instant::now();
    cutover.signal(libc::SIGTERM);
    let exit = cutover.child.wait().unwrap();
    let took = sent.elapsed();
    assert!(exit.success(), "{exit}\n{}", cutover.log());
    took
}

#[tokio::test]
async fn sigterm_with_no_open_connection_exits_within_half_a_second() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut running = start(dir.path(), old.addr, admin, listen).await;
    running
        .wait_for_service("the first step", |s| s["weight"] == 10.0)
        .await;
    // Requests that leave pooled connections to the backend behind.
    for _ in 0..20 {
        assert_eq!(send(listen, get("api", "/")).await.status, 200);
    }
    let took = stop(&mut running);
    eprintln!("exit {took:?} after SIGTERM");
    assert!(
        took < Duration::from_millis(500),
        "exited {took:?} after SIGTERM\n{}",
        running.log()
    );
    assert!(running.log().contains("all connections finished"));
}

/// The hold observed so far, as the state file has it.
fn observed_on_disk(dir: &Path) -> Duration {
    let text = std::fs::read_to_string(dir.join("state/api.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    Duration::from_millis(state["hold_observed_ms"].as_u64().unwrap())
}

#[tokio::test]
async fn the_observed_hold_survives_a_stop_and_a_crash() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    // A clean stop writes the hold as it is at the stop.
    let mut running = start(dir.path(), old.addr, admin, listen).await;
    running
        .wait_for_service("the first step", |s| s["weight"] == 10.0)
        .await;
    let begun = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop(&mut running);
    let ran = begun.elapsed();
    let saved = observed_on_disk(dir.path());
    assert!(
        saved + Duration::from_millis(300) >= ran && saved <= ran + Duration::from_millis(300),
        "ran {ran:?}, saved {saved:?}"
    );

    // After a restart the hold goes on from there; a crash loses at most about a second.
    let mut running = start(dir.path(), old.addr, admin, listen).await;
    let status = running.service_status().await;
    let left = Duration::from_secs_f64(status["hold_remaining_s"].as_f64().unwrap());
    assert!(
        left <= Duration::from_secs(3600) - saved + Duration::from_millis(300),
        "{left:?} left after {saved:?} observed"
    );
    let begun = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    running.signal(libc::SIGKILL);
    running.child.wait().unwrap();
    let ran = begun.elapsed();
    let after_crash = observed_on_disk(dir.path());
    assert!(
        after_crash + Duration::from_millis(1300) >= saved + ran,
        "{saved:?} + ran {ran:?}, but only {after_crash:?} survived the crash"
    );
}

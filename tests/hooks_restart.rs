//! `run` hooks across a `kill -9` of the real binary (SPEC §4): a hook that succeeded is
//! never run again after the restart.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------------------
// Restarts: the real binary, killed with SIGKILL
// ---------------------------------------------------------------------------------------

/// A config for the restart tests: a `run: migrate` step with `exec`, then 10% for 1 h.
fn restart_config(admin: SocketAddr, old: SocketAddr, new: SocketAddr, exec: &str) -> String {
    format!(
        r#"listeners:
  - addr: "127.0.0.1:{listen}"
admin:
  addr: "{admin}"
state_dir: state
services:
  - name: api
    old: {{ backends: [{{ addr: "{old}" }}] }}
    new: {{ backends: [{{ addr: "{new}" }}] }}
    rollout:
      steps:
        - run: migrate
        - weight: 10%
          hold: 1h
    hooks:
      migrate:
        exec: {exec}
"#,
        listen = free_port(),
    )
}

#[tokio::test]
async fn a_succeeded_run_hook_is_not_run_again_after_kill_9_and_restart() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = restart_config(admin, old.addr, new.addr, &format!("[\"{RECORD}\"]"));
    std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();

    let running = Cutover::start_in(dir.path(), admin).await;
    let before = running
        .wait_for_service("the run step to complete", |s| {
            s["step"] == 2 && s["weight"] == 10.0
        })
        .await;
    let runs = calls_of(dir.path(), "run");
    assert_eq!(runs.len(), 1, "the run hook ran once: {runs:#?}");
    assert_eq!(runs[0].env("CUTOVER_STEP"), "1");
    assert_eq!(before["hooks"][0]["last_result"], "ok", "{before:#}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/api.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 1, "the state file is at step 2: {state:#}");
    drop(running); // SIGKILL: no chance to clean up.

    let running = Cutover::start_in(dir.path(), admin).await;
    let after = running
        .wait_for_service("the restored rollout", |s| s["state"] == "progressing")
        .await;
    assert_eq!(after["step"], 2, "{after:#}");
    assert_eq!(after["weight"], 10.0, "{after:#}");
    assert_eq!(after["run_id"], before["run_id"], "the same run continues");
    // A hook run again would start as soon as the controller resumes; give it two ticks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = calls_of(dir.path(), "run");
    assert_eq!(
        runs.len(),
        1,
        "the run hook that had succeeded ran again after the restart: {runs:#?}\nlog:\n{}",
        running.log()
    );
    let after = running.service_status().await;
    assert_eq!(after["hooks"][0]["name"], "migrate");
    assert_eq!(after["hooks"][0]["runs"], 0, "{after:#}");
    assert_eq!(after["step"], 2, "{after:#}");
    assert_eq!(after["weight"], 10.0, "{after:#}");
}

#[tokio::test]
async fn a_run_hook_that_succeeded_while_paused_is_not_run_again_after_kill_9() {
    // The rollout is paused while the hook runs, so it stays at the `run` step after the
    // hook succeeded: only the persisted outcome tells the restarted process not to run it
    // again when the rollout resumes.
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = restart_config(
        admin,
        old.addr,
        new.addr,
        r#"["/bin/sh", "-c", 'echo "$CUTOVER_RUN_ID" >> runs; sleep 2']"#,
    );
    std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();
    let runs = || {
        std::fs::read_to_string(dir.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    let running = Cutover::start_in(dir.path(), admin).await;
    running
        .wait_for_service("the run hook to start", |s| {
            s["hooks"][0]["running"] == true
        })
        .await;
    let paused = admin_post(admin, "/services/api/pause").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let before = running
        .wait_for_service("the run hook to succeed", |s| s["hooks"][0]["runs"] == 1)
        .await;
    assert_eq!(before["hooks"][0]["last_result"], "ok", "{before:#}");
    assert_eq!(before["state"], "paused", "{before:#}");
    assert_eq!(before["step"], 1, "still at the run step: {before:#}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/api.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["hooks"]["0:migrate"]["ok"], true,
        "the outcome is persisted: {state:#}"
    );
    assert_eq!(runs(), 1);
    drop(running); // SIGKILL

    let running = Cutover::start_in(dir.path(), admin).await;
    let restored = running
        .wait_for_service("the restored rollout", |s| s["state"] == "paused")
        .await;
    assert_eq!(restored["step"], 1, "{restored:#}");
    assert_eq!(restored["run_id"], before["run_id"]);
    let resumed = admin_post(admin, "/services/api/resume").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let after = running
        .wait_for_service("the step after the run step", |s| s["step"] == 2)
        .await;
    assert_eq!(after["weight"], 10.0, "{after:#}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        runs(),
        1,
        "the run hook that had succeeded ran again after the restart\nlog:\n{}",
        running.log()
    );
    assert_eq!(running.service_status().await["hooks"][0]["runs"], 0);
}

//! Hooks (SPEC §4) that steer a rollout: gates polled until they pass or their deadline,
//! and `run` steps whose failure rolls back.
//!
//! Hooks are small `/bin/sh` scripts, inline in the config or
//! `tests/fixtures/hooks/record.sh`, which records every call (environment, payload,
//! working directory) in the config's directory. The controller ticks once a second, so
//! steps hold for 1 s and waits are bounded polls, never long fixed sleeps.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------------------
// Gates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_gate_is_polled_until_its_file_appears_and_not_before() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - gate: ready
        - weight: 100%
    hooks:
      ready:
        exec: ["/bin/sh", "-c", 'if test -e open; then r=open; else r=closed; fi; echo "$CUTOVER_EVENT $CUTOVER_STEP $CUTOVER_WEIGHT $r" >> attempts; test $r = open']
        every: 1s
        timeout: 5s
"#,
    )
    .await;
    let dir = proxy.dir.path().to_path_buf();
    let attempts = || {
        std::fs::read_to_string(dir.join("attempts"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    wait_for(
        &proxy,
        "three gate attempts",
        Duration::from_secs(10),
        || attempts().len() >= 3,
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "three attempts within {:?}: the gate is not waiting `every: 1s` between attempts",
        started.elapsed()
    );
    let status = service(&proxy);
    assert_eq!(
        status.state, "waiting",
        "the gate has not passed: {status:#?}"
    );
    assert_eq!(status.step, 1);
    assert_eq!(
        status.weight, 0.0,
        "no traffic moves before the gate passes"
    );
    let gate = hook(&proxy, "ready");
    assert_eq!(gate.last_event.as_deref(), Some("gate"));
    assert_eq!(gate.last_result.as_deref(), Some("failed"), "{gate:#?}");
    assert_eq!(gate.last_detail.as_deref(), Some("exit 1"), "{gate:#?}");
    for _ in 0..20 {
        assert_eq!(send(proxy.addr, get("a", "/")).await.body, "old");
    }
    assert_eq!(new.hits(), 0, "NEW got traffic before the gate passed");

    let before_open = attempts();
    assert!(
        before_open.iter().all(|a| a == "gate 1 0 closed"),
        "every attempt is CUTOVER_EVENT=gate, step 1, weight 0, and found no file: {before_open:?}"
    );
    std::fs::write(dir.join("open"), "").unwrap();
    wait_for(
        &proxy,
        "the rollout to pass the gate",
        Duration::from_secs(10),
        || service(&proxy).state == "promoted",
    )
    .await;
    let after_pass = attempts();
    let (last, earlier) = after_pass.split_last().unwrap();
    assert_eq!(
        last, "gate 1 0 open",
        "the gate passed on an attempt that found the file: {after_pass:?}"
    );
    assert!(
        earlier.iter().all(|a| a == "gate 1 0 closed"),
        "every attempt before it failed: {after_pass:?}"
    );
    assert_eq!(hook(&proxy, "ready").last_result.as_deref(), Some("ok"));
    // Once passed, a gate is not polled any more.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        attempts().len(),
        after_pass.len(),
        "the gate ran after it passed"
    );
}

#[tokio::test]
async fn a_gate_that_never_passes_rolls_back_at_its_deadline_with_on_deadline_rollback() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - gate: never
        - weight: 100%
    hooks:
      never:
        exec: ["/bin/sh", "-c", "echo not yet; exit 1"]
        every: 1s
        deadline: 2s
        on_deadline: rollback
      notify:
        on: [rollback]
        exec: ["RECORD"]
"#,
    )
    .await;
    wait_for(
        &proxy,
        "the gate at step 2",
        Duration::from_secs(10),
        || {
            let s = service(&proxy);
            s.step == 2 && s.state == "waiting"
        },
    )
    .await;
    let at_gate = Instant::now();
    assert_eq!(service(&proxy).weight, 10.0);
    wait_for(&proxy, "the rollback", Duration::from_secs(10), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    assert!(
        at_gate.elapsed() >= Duration::from_millis(1500),
        "rolled back {:?} after reaching a gate with `deadline: 2s`",
        at_gate.elapsed()
    );
    let status = service(&proxy);
    assert_eq!(
        status.rollback_reason.map(|r| r.label()),
        Some("gate"),
        "{status:#?}"
    );
    assert_eq!(status.weight, 0.0);
    let reason = status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("did not pass within 2s"),
        "the reason names the deadline: {reason:?}"
    );
    assert!(
        hook(&proxy, "never").runs >= 2,
        "the gate was retried before its deadline: {:#?}",
        hook(&proxy, "never")
    );
    let dir = proxy.dir.path();
    wait_for(&proxy, "the rollback hook", Duration::from_secs(5), || {
        !calls_of(dir, "rollback").is_empty()
    })
    .await;
    let call = &calls_of(dir, "rollback")[0];
    assert_eq!(call.env("CUTOVER_WEIGHT"), "0");
    assert_eq!(call.payload["weight"], 0.0);
    for _ in 0..20 {
        assert_eq!(send(proxy.addr, get("a", "/")).await.body, "old");
    }
}

// ---------------------------------------------------------------------------------------
// Run steps
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_run_step_rolls_back_and_the_rollback_hook_sees_weight_0() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 50%
          hold: 1s
        - run: migrate
        - weight: 100%
    hooks:
      migrate:
        exec: ["/bin/sh", "-c", "echo migration failed >&2; exit 1"]
      notify:
        on: [rollback]
        exec: ["RECORD"]
"#,
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while service(&proxy).state != "rolled_back" {
        assert!(
            Instant::now() < deadline,
            "no rollback: {:#?}",
            service(&proxy)
        );
        for _ in 0..10 {
            client.send(get("a", "/")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_hits = new.hits();
    assert!(new_hits > 0, "NEW got traffic at 50% before the run step");

    let status = service(&proxy);
    assert_eq!(status.weight, 0.0);
    assert_eq!(
        status.rollback_reason.map(|r| r.label()),
        Some("hook"),
        "{status:#?}"
    );
    let migrate = hook(&proxy, "migrate");
    assert_eq!(migrate.last_event.as_deref(), Some("run"));
    assert_eq!(migrate.last_result.as_deref(), Some("failed"));
    assert_eq!(migrate.last_detail.as_deref(), Some("exit 1"));
    assert_eq!(migrate.stderr_tail, "migration failed\n");

    let dir = proxy.dir.path();
    wait_for(&proxy, "the rollback hook", Duration::from_secs(5), || {
        !calls_of(dir, "rollback").is_empty()
    })
    .await;
    let calls = calls_of(dir, "rollback");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.env("CUTOVER_WEIGHT"), "0", "{call:#?}");
    assert_eq!(call.payload["weight"], 0.0, "{call:#?}");
    assert_eq!(call.payload["state"], "rolled_back", "{call:#?}");
    assert_eq!(call.env("CUTOVER_STEP"), "2", "the run step");
    let reason = call.env("CUTOVER_REASON");
    assert!(
        reason.contains("rolled back from 50%") && reason.contains("migrate"),
        "the reason says what failed: {reason:?}"
    );
    assert_eq!(call.payload["reason"], reason);

    for _ in 0..50 {
        assert_eq!(client.send(get("a", "/")).await.unwrap().body, "old");
    }
    assert_eq!(new.hits(), new_hits, "NEW got traffic after the rollback");
    let state = std::fs::read_to_string(dir.join("state/api.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["phase"], "rolled_back");
    assert_eq!(state["weight"], 0.0);
}

#[tokio::test]
async fn a_hook_program_that_does_not_exist_fails_its_run_step_cleanly() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - run: missing
        - weight: 100%
    hooks:
      missing:
        exec: ["cutover-test-no-such-program", "--flag"]
        retries: 1
"#,
    )
    .await;
    wait_for(&proxy, "the rollback", Duration::from_secs(10), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    let status = service(&proxy);
    assert_eq!(status.rollback_reason.map(|r| r.label()), Some("hook"));
    let reason = status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("2 attempt(s)") && reason.contains("cannot start"),
        "one attempt and one retry, both failing to start: {reason:?}"
    );
    let missing = hook(&proxy, "missing");
    assert_eq!(missing.runs, 2, "{missing:#?}");
    assert!(!missing.running);
    assert_eq!(missing.last_result.as_deref(), Some("failed"));
    let detail = missing.last_detail.unwrap_or_default();
    assert!(
        detail.contains("cannot start") && detail.contains("cutover-test-no-such-program"),
        "{detail:?}"
    );
    assert_eq!(
        sample(
            &proxy.app.metrics.encode(),
            "cutover_hook_runs_total{service=\"api\",hook=\"missing\",result=\"failed\"}"
        ),
        Some(2.0)
    );
    // The proxy carries on.
    let got = send(proxy.addr, get("a", "/")).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "old"));
}

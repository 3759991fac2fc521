//! Event hooks (SPEC §4): the environment and JSON payload they get, the step they are
//! about, and that a slow one blocks neither requests nor the rollout.
//!
//! Hooks are small `/bin/sh` scripts, inline in the config or
//! `tests/fixtures/hooks/record.sh`, which records every call (environment, payload,
//! working directory) in the config's directory. The controller ticks once a second, so
//! steps hold for 1 s and waits are bounded polls, never long fixed sleeps.

mod support;

use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------
// Event hooks: environment, payload, output, metrics
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn event_hooks_get_the_cutover_environment_and_the_json_payload() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    // A relative program path is relative to the config's directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    std::fs::copy(RECORD, dir.path().join("hooks/record.sh")).unwrap();
    let yaml = simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      record:
        on: [started]
        exec: ["hooks/record.sh"]
"#,
    );
    let proxy = spawn_proxy_in(dir, &yaml, false).await;
    let dir = proxy.dir.path();
    wait_for(
        &proxy,
        "the `started` hook",
        Duration::from_secs(10),
        || hook(&proxy, "record").runs == 1 && !calls_of(dir, "started").is_empty(),
    )
    .await;
    let calls = calls_of(dir, "started");
    assert_eq!(calls.len(), 1, "`started` fired once: {calls:#?}");
    let call = &calls[0];
    let run_id = service(&proxy)
        .run_id
        .expect("a started rollout has a run id");

    let expected_env = [
        ("CUTOVER_SERVICE", "api"),
        ("CUTOVER_EVENT", "started"),
        ("CUTOVER_STEP", "1"),
        // At `started` nothing has moved yet: the 5% comes with step 1's `step_started`.
        ("CUTOVER_WEIGHT", "0"),
        ("CUTOVER_REASON", "rollout started"),
        ("CUTOVER_RUN_ID", run_id.as_str()),
    ];
    for (name, value) in expected_env {
        assert_eq!(call.env(name), value, "{name}");
    }

    let payload = call
        .payload
        .as_object()
        .expect("the payload is a JSON object");
    let mut keys: Vec<&str> = payload.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "analysis",
            "event",
            "reason",
            "run_id",
            "service",
            "state",
            "step",
            "timestamp",
            "weight"
        ],
        "the payload's fields (SPEC §4)"
    );
    assert_eq!(payload["service"], "api");
    assert_eq!(payload["event"], "started");
    assert_eq!(payload["step"], 1);
    // At `started` nothing has moved yet: the 5% comes with step 1's `step_started`.
    assert_eq!(payload["weight"], 0.0);
    assert_eq!(payload["state"], "progressing");
    assert_eq!(payload["reason"], "rollout started");
    assert_eq!(payload["run_id"], run_id.as_str());
    let timestamp = payload["timestamp"].as_str().expect("a timestamp string");
    let at = humantime::parse_rfc3339(timestamp)
        .unwrap_or_else(|e| panic!("timestamp {timestamp:?} is not RFC 3339: {e}"));
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "timestamp {timestamp} is not now"
    );

    assert_eq!(
        call.cwd.canonicalize().unwrap(),
        dir.canonicalize().unwrap(),
        "hooks run in the config's directory"
    );
    let status = hook(&proxy, "record");
    assert_eq!(status.last_event.as_deref(), Some("started"));
    assert_eq!(status.last_result.as_deref(), Some("ok"), "{status:#?}");
}

#[tokio::test]
async fn step_event_hooks_name_the_step_they_are_about() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - weight: 100%
    hooks:
      record:
        on: [step_started, step_completed, promoted]
        exec: ["RECORD"]
"#,
    )
    .await;
    let dir = proxy.dir.path();
    wait_for(
        &proxy,
        "five event hooks to finish",
        Duration::from_secs(10),
        || calls(dir).len() >= 5 && hook(&proxy, "record").runs >= 5,
    )
    .await;
    assert_eq!(service(&proxy).state, "promoted");
    assert_eq!(
        service(&proxy).step,
        2,
        "status shows a promoted 2-step rollout at step 2"
    );

    let mut seen: Vec<(String, String, String)> = calls(dir)
        .iter()
        .map(|c| {
            (
                c.env("CUTOVER_EVENT").to_string(),
                c.env("CUTOVER_STEP").to_string(),
                c.env("CUTOVER_REASON").to_string(),
            )
        })
        .collect();
    seen.sort();
    let events_and_steps: Vec<(&str, &str)> = seen
        .iter()
        .map(|(event, step, _)| (event.as_str(), step.as_str()))
        .collect();
    assert_eq!(
        events_and_steps,
        [
            ("promoted", "2"),
            ("step_completed", "1"),
            ("step_completed", "2"),
            ("step_started", "1"),
            ("step_started", "2"),
        ],
        "CUTOVER_STEP of each event is the step it is about \
         (events, steps and reasons: {seen:#?})"
    );
    for call in calls_of(dir, "step_started") {
        assert_eq!(
            call.payload["step"].to_string(),
            call.env("CUTOVER_STEP"),
            "payload and environment agree: {call:#?}"
        );
        assert_eq!(
            call.payload["state"], "progressing",
            "a step that starts is progressing: {call:#?}"
        );
    }
    let promoted = &calls_of(dir, "promoted")[0];
    assert_eq!(promoted.payload["weight"], 100.0);
    assert_eq!(promoted.payload["state"], "promoted");
}

// ---------------------------------------------------------------------------------------
// Hooks never block
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_event_hook_delays_neither_requests_nor_the_next_step() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - weight: 100%
    hooks:
      slow:
        on: [started]
        timeout: 30s
        exec: ["/bin/sh", "-c", "sleep 5; touch slow-done"]
"#,
    )
    .await;
    let done = proxy.dir.path().join("slow-done");
    wait_for(
        &proxy,
        "the slow hook to start",
        Duration::from_secs(5),
        || hook(&proxy, "slow").running,
    )
    .await;

    // Requests through the proxy while the hook runs, until the rollout is promoted.
    let mut client = Client::connect(proxy.addr).await;
    let mut latencies = Vec::new();
    while service(&proxy).state != "promoted" {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "not promoted {:?} after the start with a 1 s hold: the slow hook holds the \
             rollout up: {:#?}",
            started.elapsed(),
            service(&proxy)
        );
        let sent = Instant::now();
        let got = client.send(get("a", "/")).await.unwrap();
        latencies.push(sent.elapsed());
        assert_eq!(got.status, 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let promoted_at = started.elapsed();
    assert!(
        hook(&proxy, "slow").running && !done.exists(),
        "the rollout was promoted at {promoted_at:?}, while the 5 s hook was still running"
    );
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        latencies.len() >= 20,
        "{} requests while the hook ran",
        latencies.len()
    );
    assert!(
        slowest < Duration::from_millis(500),
        "the slowest of {} requests took {slowest:?} while a hook was running",
        latencies.len()
    );
    // And the hook really ran its 5 s.
    wait_for(
        &proxy,
        "the slow hook to finish",
        Duration::from_secs(8),
        || hook(&proxy, "slow").runs == 1,
    )
    .await;
    let slow = hook(&proxy, "slow");
    assert_eq!(slow.last_result.as_deref(), Some("ok"), "{slow:#?}");
    assert!(
        slow.last_duration_ms.unwrap_or_default() >= 5000,
        "{slow:#?}"
    );
    assert!(done.exists());
}

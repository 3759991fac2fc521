//! Exec hooks as processes (SPEC §4): output captured into the status, runs counted in
//! metrics, and timeouts that kill the whole process group.
//!
//! Hooks are small `/bin/sh` scripts, inline in the config or
//! `tests/fixtures/hooks/record.sh`, which records every call (environment, payload,
//! working directory) in the config's directory. The controller ticks once a second, so
//! steps hold for 1 s and waits are bounded polls, never long fixed sleeps.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

#[tokio::test]
async fn hook_output_is_captured_and_shown_in_status() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      noisy:
        on: [started]
        exec: ["/bin/sh", "-c", 'echo "stdout says $CUTOVER_EVENT"; echo "stderr says hello" >&2; exit 3']
"#,
    )
    .await;
    wait_for(
        &proxy,
        "the hook to finish",
        Duration::from_secs(10),
        || hook(&proxy, "noisy").runs == 1,
    )
    .await;
    let got = admin_get(proxy.app.admin_addr, "/status").await;
    assert_eq!(got.status, 200, "{}", got.body);
    let status: Value = serde_json::from_str(&got.body).unwrap();
    let hooks = status["services"][0]["hooks"]
        .as_array()
        .expect("a hooks array");
    let noisy = hooks
        .iter()
        .find(|h| h["name"] == "noisy")
        .unwrap_or_else(|| panic!("no `noisy` hook in /status: {status:#}"));
    assert_eq!(noisy["runs"], 1, "{noisy:#}");
    assert_eq!(noisy["running"], false, "{noisy:#}");
    assert_eq!(noisy["last_event"], "started", "{noisy:#}");
    assert_eq!(noisy["last_result"], "failed", "{noisy:#}");
    assert_eq!(noisy["last_detail"], "exit 3", "{noisy:#}");
    assert_eq!(noisy["stdout_tail"], "stdout says started\n", "{noisy:#}");
    assert_eq!(noisy["stderr_tail"], "stderr says hello\n", "{noisy:#}");
    assert!(noisy["last_duration_ms"].is_u64(), "{noisy:#}");
    assert!(noisy["last_at"].is_string(), "{noisy:#}");
    // A failing event hook does not change the rollout.
    assert_eq!(status["services"][0]["state"], "progressing");
}

#[tokio::test]
async fn a_chatty_hook_is_not_blocked_by_its_pipes_and_status_keeps_the_tail() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    // ~200 KB on each stream: more than a pipe holds, and more than the 64 KiB kept.
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      chatty:
        on: [started]
        timeout: 20s
        exec: ["/bin/sh", "-c", 'i=0; while [ $i -lt 3000 ]; do echo "line $i: a chatty hook writes a lot of output"; echo "error $i: and a lot on stderr as well, too" >&2; i=$((i+1)); done; echo the-end; echo stderr-end >&2']
"#,
    )
    .await;
    wait_for(
        &proxy,
        "the chatty hook to finish",
        Duration::from_secs(15),
        || hook(&proxy, "chatty").runs == 1,
    )
    .await;
    let chatty = hook(&proxy, "chatty");
    assert_eq!(
        chatty.last_result.as_deref(),
        Some("ok"),
        "{:?}",
        chatty.last_detail
    );
    assert!(
        chatty
            .stdout_tail
            .ends_with("line 2999: a chatty hook writes a lot of output\nthe-end\n"),
        "stdout's tail is the end of the output: {:?}",
        Tail(&chatty.stdout_tail)
    );
    assert!(
        chatty
            .stderr_tail
            .ends_with("error 2999: and a lot on stderr as well, too\nstderr-end\n"),
        "stderr's tail is the end of the output: {:?}",
        Tail(&chatty.stderr_tail)
    );
    for tail in [&chatty.stdout_tail, &chatty.stderr_tail] {
        assert!(tail.len() <= 64 * 1024, "a tail of {} bytes", tail.len());
        assert!(
            !tail.contains("line 0:") && !tail.contains("error 0:"),
            "only the tail is kept"
        );
    }
}

#[tokio::test]
async fn hook_runs_are_counted_in_metrics_by_result() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      good:
        on: [started, step_started]
        exec: ["/bin/sh", "-c", "exit 0"]
      bad:
        on: [started]
        exec: ["/bin/sh", "-c", "exit 1"]
"#,
    )
    .await;
    wait_for(&proxy, "three hook runs", Duration::from_secs(10), || {
        hook(&proxy, "good").runs == 2 && hook(&proxy, "bad").runs == 1
    })
    .await;
    let got = admin_get(proxy.app.admin_addr, "/metrics").await;
    assert_eq!(got.status, 200);
    let metrics = got.body;
    let series = [
        (
            "cutover_hook_runs_total{service=\"api\",hook=\"good\",result=\"ok\"}",
            2.0,
        ),
        (
            "cutover_hook_runs_total{service=\"api\",hook=\"bad\",result=\"failed\"}",
            1.0,
        ),
        (
            "cutover_hook_duration_seconds_count{service=\"api\",hook=\"good\"}",
            2.0,
        ),
        (
            "cutover_hook_duration_seconds_count{service=\"api\",hook=\"bad\"}",
            1.0,
        ),
    ];
    for (name, value) in series {
        assert_eq!(
            sample(&metrics, name),
            Some(value),
            "{name} in:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("hook"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "cutover_hook_runs_total{service=\"api\",hook=\"good\",result=\"failed\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
}

// ---------------------------------------------------------------------------------------
// Timeouts: the whole process group goes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hook_that_times_out_is_killed_with_the_child_it_forked() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      forks:
        on: [started]
        timeout: 3s
        exec: ["/bin/sh", "-c", "sleep 30 & echo $! > child.pid.tmp; mv child.pid.tmp child.pid; echo $$ > hook.pid.tmp; mv hook.pid.tmp hook.pid; wait"]
"#,
    )
    .await;
    let (hook_pid, child_pid, _guard) = hook_and_child_pids(&proxy).await;
    // The hook started after `started` and before its pid files appeared (now).
    let seen = Instant::now();
    tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
    assert!(
        alive(hook_pid) && alive(child_pid),
        "the hook ({hook_pid}) and its child ({child_pid}) run until the 3 s timeout"
    );
    // SIGTERM at 3 s ends both at once: a plain `sleep` does not survive it. SIGKILL would
    // only come 5 s later, at 8 s.
    let gone = eventually(
        (seen + Duration::from_millis(4500)).saturating_duration_since(Instant::now()),
        || !alive(hook_pid) && !alive(child_pid),
    )
    .await;
    assert!(
        gone,
        "{:?} after the hook started: hook {hook_pid} alive: {}, child {child_pid} alive: {} \
         (an orphan of a hook that timed out)",
        seen.elapsed(),
        alive(hook_pid),
        alive(child_pid)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "killed {:?} after the proxy started, before the 3 s timeout",
        started.elapsed()
    );
    wait_for(
        &proxy,
        "the timeout to be reported",
        Duration::from_secs(5),
        || hook(&proxy, "forks").runs == 1,
    )
    .await;
    let status = hook(&proxy, "forks");
    assert_eq!(
        status.last_result.as_deref(),
        Some("timeout"),
        "{status:#?}"
    );
    let detail = status.last_detail.unwrap_or_default();
    assert!(detail.contains("timed out after 3s"), "{detail:?}");
    let metrics = proxy.app.metrics.encode();
    assert_eq!(
        sample(
            &metrics,
            "cutover_hook_runs_total{service=\"api\",hook=\"forks\",result=\"timeout\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // An event hook timing out does not change the rollout.
    assert_eq!(service(&proxy).state, "progressing");
}

#[tokio::test]
async fn a_hook_group_that_ignores_sigterm_is_killed_5s_later() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    // Both the script and its child note SIGTERM and carry on.
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      stubborn:
        on: [started]
        timeout: 1s
        exec: ["/bin/sh", "-c", "trap 'echo hook >> got-term' TERM; (trap 'echo child >> got-term' TERM; while :; do sleep 1; done) & echo $! > child.pid.tmp; mv child.pid.tmp child.pid; echo $$ > hook.pid.tmp; mv hook.pid.tmp hook.pid; while :; do sleep 1; done"]
"#,
    )
    .await;
    let (hook_pid, child_pid, _guard) = hook_and_child_pids(&proxy).await;
    let dir = proxy.dir.path().to_path_buf();
    let got_term = || std::fs::read_to_string(dir.join("got-term")).unwrap_or_default();
    wait_for(
        &proxy,
        "SIGTERM to reach the hook and its child",
        Duration::from_secs(5),
        || got_term().contains("hook") && got_term().contains("child"),
    )
    .await;
    assert!(
        alive(hook_pid) && alive(child_pid),
        "the group ignored SIGTERM and is still there during the grace period"
    );
    let gone = eventually(Duration::from_secs(10), || {
        !alive(hook_pid) && !alive(child_pid)
    })
    .await;
    assert!(
        gone,
        "SIGKILL did not come: hook {hook_pid} alive: {}, child {child_pid} alive: {}",
        alive(hook_pid),
        alive(child_pid)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(5900),
        "killed {:?} after the proxy started, with `timeout: 1s`: the 5 s grace after \
         SIGTERM was not given",
        started.elapsed()
    );
    wait_for(
        &proxy,
        "the timeout to be reported",
        Duration::from_secs(5),
        || hook(&proxy, "stubborn").runs == 1,
    )
    .await;
    assert_eq!(
        hook(&proxy, "stubborn").last_result.as_deref(),
        Some("timeout")
    );
}

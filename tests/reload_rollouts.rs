//! Hot reload (SPEC §8) of a running rollout: same steps keep its place, changed steps
//! continue from the right one.

mod support;

use std::time::Duration;

use support::*;

// ---------------------------------------------------------------------------------------
// (7) Rollouts across reloads
// ---------------------------------------------------------------------------------------

const ROLLOUT_AT_30: &str = "    rollout:
      steps:
        - weight: 10%
        - weight: 30%
          hold: 1h
        - weight: 100%
";

#[tokio::test]
async fn a_reload_that_keeps_the_steps_keeps_the_rollouts_place() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        ROLLOUT_AT_30,
    ))
    .await;
    let at_30 = eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await;
    assert!(
        at_30,
        "the rollout did not reach 30%: {:?}",
        rollout(&proxy)
    );
    let before = rollout(&proxy);
    assert_eq!(before, ("progressing".to_string(), 2, 3, 30.0));
    let run_id = proxy.app.controller.status().services[0].run_id.clone();

    // Change something else about the service: the rollout carries on where it was.
    let extra =
        format!("    timeouts: {{ connect: 1s, request: 30s, idle: 60s }}\n{ROLLOUT_AT_30}");
    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[old.addr], &[new.addr], "0%", &extra),
    );
    reload_ok(&proxy).await;
    assert_eq!(rollout(&proxy), before);
    assert_eq!(proxy.app.controller.status().services[0].run_id, run_id);
    assert_eq!(routed_weight(&proxy), 30.0);
}

#[tokio::test]
async fn changed_steps_without_analysis_continue_from_the_first_step_above_the_weight() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        ROLLOUT_AT_30,
    ))
    .await;
    let at_30 = eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await;
    assert!(
        at_30,
        "the rollout did not reach 30%: {:?}",
        rollout(&proxy)
    );
    assert_eq!(rollout(&proxy), ("progressing".to_string(), 2, 3, 30.0));

    let new_steps = "    rollout:
      steps:
        - weight: 5%
          hold: 1h
        - weight: 20%
          hold: 1h
        - weight: 40%
          hold: 1h
        - weight: 80%
          hold: 1h
        - weight: 100%
";
    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[old.addr], &[new.addr], "0%", new_steps),
    );
    reload_ok(&proxy).await;
    // No analysis: nothing to wait for, 40% (step 3 of 5) at once, not 5% (step 1).
    assert_eq!(
        rollout(&proxy),
        ("progressing".to_string(), 3, 5, 40.0),
        "after the steps changed at 30%, the first new step above 30% is 40% (step 3/5)"
    );
    assert_eq!(routed_weight(&proxy), 40.0);
    let (_, to_new) = split(proxy.addr, 500).await;
    assert!(
        (190..=210).contains(&to_new),
        "NEW served {to_new} of 500 at 40%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_steps_with_analysis_move_on_after_the_next_passing_check() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let analysis = "      analysis:
        interval: 1s
        window: 10s
        min_requests: 20
        max_error_rate: 5%
";
    let before = format!(
        "    rollout:
      steps:
        - weight: 30%
          hold: 1h
        - weight: 100%
{analysis}"
    );
    let after = format!(
        "    rollout:
      steps:
        - weight: 20%
          hold: 1h
        - weight: 50%
          hold: 1h
        - weight: 100%
{analysis}"
    );
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", &before)).await;
    let at_30 = eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await;
    assert!(
        at_30,
        "the rollout did not reach 30%: {:?}",
        rollout(&proxy)
    );

    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[old.addr], &[new.addr], "0%", &after),
    );
    reload_ok(&proxy).await;
    let (state, _, steps, weight) = rollout(&proxy);
    assert_eq!(
        (state.as_str(), steps, weight),
        ("progressing", 3, 30.0),
        "right after the reload the weight must stay at 30% until a check passes"
    );

    // Without traffic the checks are inconclusive: the rollout waits at 30%.
    let series = "cutover_analysis_checks_total{service=\"api\",result=\"inconclusive\"}";
    let inconclusive = metric(&proxy, series);
    let waited = eventually(Duration::from_secs(4), || {
        metric(&proxy, series) >= inconclusive + 2.0
    })
    .await;
    assert!(waited, "no inconclusive checks after the reload");
    assert_eq!(
        rollout(&proxy).3,
        30.0,
        "the rollout moved without a passing check"
    );

    // Enough traffic for NEW (30% of 200 ≥ min_requests 20): the next check passes.
    let (_, to_new) = split(proxy.addr, 200).await;
    assert!(to_new >= 40, "NEW got only {to_new} of 200");
    let moved = eventually(Duration::from_secs(5), || rollout(&proxy).3 == 50.0).await;
    let status = proxy.app.controller.status();
    assert!(
        moved,
        "after a passing check the rollout should be at 50% (the first new step above 30%): \
         {:?}, last check {:?}",
        rollout(&proxy),
        status.services[0].last_check
    );
    assert_eq!(rollout(&proxy), ("progressing".to_string(), 2, 3, 50.0));
    assert_eq!(routed_weight(&proxy), 50.0);
}

/// A proxy whose rollout holds at 30%, its config text, and its backends (kept alive).
async fn at_30() -> (TestProxy, String, [Backend; 2]) {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let config = simple_config(&[old.addr], &[new.addr], "0%", ROLLOUT_AT_30);
    let proxy = spawn_proxy(&config).await;
    assert!(eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await);
    (proxy, config, [old, new])
}

/// A service a reload removes (or renames) leaves no rollout gauges behind: `/status` no
/// longer lists it, and an alert on its last state would fire until a restart.
#[tokio::test]
async fn a_removed_service_leaves_no_rollout_gauges() {
    let (proxy, config, _backends) = at_30().await;
    let weight = "cutover_rollout_weight{service=\"api\"}";
    let progressing = "cutover_rollout_state{service=\"api\",state=\"progressing\"}";
    assert_eq!(metric(&proxy, weight), 30.0);
    assert_eq!(metric(&proxy, progressing), 1.0);
    save_by_rename(
        &proxy.config_path(),
        &config.replace("name: api", "name: web"),
    );
    reload_ok(&proxy).await;
    let metrics = proxy.app.metrics.encode();
    let left: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("cutover_rollout_") && line.contains("service=\"api\""))
        .filter(|line| !line.contains("_total") && !line.contains("rollbacks"))
        .collect();
    assert!(left.is_empty(), "gauges of the removed service: {left:#?}");
    assert!(metrics.contains("cutover_rollout_weight{service=\"web\"}"));
}

/// `state_dir` changed by a reload takes effect at the next restart, as the state, its
/// lock and the decision log the admin API serves must move together: moved alone, the
/// history served stayed behind.
#[tokio::test]
async fn a_reload_keeps_the_running_state_dir() {
    let (proxy, config, _backends) = at_30().await;
    let history = proxy.dir.path().join("state/api.history.jsonl");
    let records = || std::fs::read_to_string(&history).unwrap().lines().count();
    let before = records();
    let moved = config.replace("state_dir: state\n", "state_dir: state2\n");
    save_by_rename(&proxy.config_path(), &moved);
    reload_ok(&proxy).await;
    assert!(!proxy.dir.path().join("state2").exists());
    assert!(
        records() > before,
        "the reload's record is in the running decision log"
    );
    assert_eq!(rollout(&proxy).3, 30.0);
}

//! Restarts, stops and hooks in flight: a restart with changed steps resumes nothing at the
//! old step's index, a hook result queued at a stop is saved, a rollback whose save failed
//! is saved once the store works again, rollback hooks wait for a step hook still running.

use super::*;

fn store_with(saved: Vec<RolloutState>) -> MemoryStore {
    MemoryStore {
        saved: Arc::new(Mutex::new(
            saved.into_iter().map(|s| (s, Weight::ZERO)).collect(),
        )),
        snapshot: Arc::default(),
        fail: Arc::default(),
    }
}

fn controller_with(path: &Path, store: &MemoryStore) -> (Controller, ControllerHandle) {
    let config = load(path);
    let data_plane = tokio::runtime::Handle::current();
    let parts = Parts {
        listeners: Listeners::new(
            vec![data_plane.clone()],
            store.snapshot.clone(),
            &config.limits,
        ),
        metrics: RolloutMetrics::register(&mut Registry::default()),
        admin_token: Arc::new(arc_swap::ArcSwap::from_pointee(None)),
        store: Box::new(store.clone()),
        traffic: Box::new(LocalTraffic),
        snapshot: store.snapshot.clone(),
        data_plane,
        config,
    };
    Controller::start(parts).unwrap()
}

fn restore_all(c: &mut Controller) {
    for (service, startup) in std::mem::take(&mut c.startups) {
        c.restore(&service, startup);
    }
}

const MIGRATE: &str = "    rollout:
      steps:
        - weight: 5%
          hold: 1h
        - weight: 25%
          hold: 1h
        - run: migrate
          point_of_no_return: true
        - weight: 100%
      analysis: { interval: 1s, window: 10s, min_requests: 1, max_error_rate: 1% }
    hooks:
      migrate:
        exec: [\"sh\", \"-c\", \"echo ran >> migrated\"]
        timeout: 5s
";

/// The saved state comes from a config with one more step in front (a gate): it is at
/// step 3 of 5 there, 25% held for 10 of 60 minutes. The operator removed the gate and
/// restarted: index 2 is now `run: migrate`.
#[tokio::test]
async fn a_restart_with_changed_steps_does_not_run_the_hook_now_at_the_old_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &[("api", MIGRATE)]);
    let plan = Plan::of(&load(&path).services[0]).unwrap();
    let mut saved = RolloutState::new(&plan, Weight::ZERO);
    saved.phase = Phase::Progressing;
    saved.step = 2;
    saved.weight = Weight::from_percent(25.0).unwrap();
    saved.hold_observed_ms = 600_000;
    saved.run_id = "run-1".into();
    saved.steps_fingerprint = "the-steps-with-the-gate".into();
    let store = store_with(vec![saved]);
    let (mut c, _handle) = controller_with(&path, &store);
    restore_all(&mut c);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ran = std::fs::read_to_string(dir.path().join("migrated")).unwrap_or_default();
    assert_eq!(
        ran, "",
        "the new plan's `run: migrate` (a point of no return) ran at 25% on restart, \
         before the 25% step was held or checked; hooks: {:?}",
        c.services[0].hooks
    );
}

const RUN_STEP: &str = "    rollout:
      start: manual
      steps:
        - run: migrate
        - weight: 10%
          hold: 1h
    hooks:
      migrate:
        exec: [\"true\"]
";

/// A `run` hook finished (its result is queued for the controller) when the stop
/// arrives: the stop must not lose the result, or the successor runs the hook again.
#[tokio::test]
async fn a_run_hook_result_queued_at_shutdown_is_saved() {
    let mut lost = 0;
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &[("api", RUN_STEP)]);
        let store = store_with(Vec::new());
        let (mut c, handle) = controller_with(&path, &store);
        c.control("api", Op::Start).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // `true` has exited
        let stop = tokio::spawn(async move { handle.shutdown(Duration::ZERO).await });
        tokio::task::yield_now().await; // the Shutdown command is queued
        c.run().await;
        let _ = stop.await;
        let last = store.saved.lock().unwrap().last().unwrap().0.clone();
        if !last.hooks.get("0:migrate").is_some_and(|r| r.ok) {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "a succeeded `run` hook's result was dropped at shutdown in {lost} of 10 stops: \
         the successor runs it again"
    );
}

/// A rollback whose save failed goes ahead in memory; the save is never tried again, so
/// after a crash the rollout resumes at the weight it was rolled back from.
#[tokio::test(start_paused = true)]
async fn a_rollback_whose_save_failed_is_saved_once_the_store_works_again() {
    let mut h = harness(&[("api", HOURLY)], Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    h.store.fail.store(true, Ordering::SeqCst);
    h.controller.control("api", Op::Rollback).unwrap();
    assert_eq!(h.routed(), Weight::ZERO);
    h.store.fail.store(false, Ordering::SeqCst);
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        h.controller.on_wake();
    }
    let last = h.store.saved.lock().unwrap().last().unwrap().0.clone();
    assert_eq!(
        (last.phase, last.weight.percent()),
        (Phase::RolledBack, 0.0),
        "a restart now would resume at 5%"
    );
}

const SWITCHING: &str = "    rollout:
      steps:
        - run: switch-writes
        - weight: 100%
    hooks:
      switch-writes:
        exec: [\"sh\", \"-c\", \"sleep 1; echo switched >> order\"]
        timeout: 10s
      rollback-db:
        on: [rollback]
        exec: [\"sh\", \"-c\", \"echo rolled-back >> order\"]
        timeout: 10s
";

/// A rollback while a `run` hook runs: NEW's weight is 0 at once, and the rollback hooks,
/// which undo what the steps did, wait for that hook to end instead of running beside it.
#[tokio::test]
async fn rollback_hooks_wait_for_the_step_hook_still_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &[("api", SWITCHING)]);
    let store = store_with(Vec::new());
    let (mut c, _handle) = controller_with(&path, &store);
    restore_all(&mut c); // start: auto, the run step's hook starts
    assert!(c.services[0].hooks["switch-writes"].running);
    c.control("api", Op::Rollback).unwrap();
    assert_eq!(store.snapshot.load().routes[0].new_weight, Weight::ZERO);
    assert!(
        !c.services[0].hooks["rollback-db"].running,
        "the rollback hook started beside the step hook"
    );
    let done = c.hook_rx.recv().await.unwrap();
    c.hook_done(done);
    assert!(c.services[0].hooks["rollback-db"].running);
    let done = c.hook_rx.recv().await.unwrap();
    c.hook_done(done);
    let order = std::fs::read_to_string(dir.path().join("order")).unwrap();
    assert_eq!(order, "switched\nrolled-back\n");
}

const ROLLBACK_HOOK: &str = "    rollout:
      steps:
        - weight: 10%
          hold: 1h
    hooks:
      rollback-db:
        on: [rollback]
        exec: [\"sh\", \"-c\", \"sleep 1; echo done >> rolled-back\"]
        timeout: 10s
";

/// A rollback, then the process stops (SIGTERM, a takeover, a crash) while the rollback
/// hook runs: the hook is killed with the runtime, and the next process runs it again
/// (it once never did).
#[test]
fn a_rollback_hook_cut_short_by_a_restart_is_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &[("api", ROLLBACK_HOOK)]);
    let store = store_with(Vec::new());
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    first.block_on(async {
        let (mut c, _handle) = controller_with(&path, &store);
        restore_all(&mut c); // start: auto
        c.control("api", Op::Rollback).unwrap();
        assert!(c.services[0].hooks["rollback-db"].running);
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    drop(first); // the process stops: its hooks are killed with it
    assert_eq!(
        store.saved.lock().unwrap().last().unwrap().0.phase,
        Phase::RolledBack
    );
    let second = runtime();
    second.block_on(async {
        let (mut c, _handle) = controller_with(&path, &store);
        restore_all(&mut c);
        assert!(c.services[0].hooks["rollback-db"].running);
        let done = c.hook_rx.recv().await.unwrap();
        c.hook_done(done);
    });
    assert!(
        dir.path().join("rolled-back").exists(),
        "the rollback hook never completed: killed at the stop, not run by the successor"
    );
    let last = store.saved.lock().unwrap().last().unwrap().0.clone();
    assert!(!last.rollback_hooks_pending, "saved as done once it ended");
}

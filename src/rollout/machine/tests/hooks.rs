//! Gates, run steps, restarts and changed steps.

use super::*;

#[test]
fn a_gate_is_polled_until_it_passes_and_its_deadline_pauses_or_rolls_back() {
    let steps = vec![
        gate("replication", 15, Some(60), OnDeadline::Pause),
        weight_step(100.0, 0),
    ];
    let mut rollout = Rollout::started(plan(steps.clone(), None));
    assert_eq!(rollout.state.shown_state(&rollout.plan), "waiting");
    let runs = |r: &Rollout| {
        r.effects
            .iter()
            .filter(|e| matches!(e, Effect::RunStepHook { .. }))
            .count()
    };
    assert_eq!(runs(&rollout), 1);
    rollout.hook_done(false);
    rollout.seconds(14);
    assert_eq!(runs(&rollout), 1, "not before `every`");
    rollout.seconds(1);
    assert_eq!(runs(&rollout), 2);
    rollout.hook_done(true);
    assert_eq!(rollout.state.phase, Phase::Promoted);

    let mut rollout = Rollout::started(plan(steps, None));
    for _ in 0..4 {
        rollout.hook_done(false);
        rollout.seconds(15);
    }
    rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(rollout.state.pause_cause, Some(PauseCause::GateDeadline));
    rollout.ok(Input::Resume);
    assert!(rollout.state.hook_in_flight, "resuming runs the gate again");
    assert_eq!(rollout.state.gate_elapsed_ms, 0, "with a fresh deadline");

    let steps = vec![
        gate("replication", 15, Some(30), OnDeadline::Rollback),
        weight_step(100.0, 0),
    ];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.hook_done(false);
    rollout.seconds(40);
    assert_eq!(
        rollout.state.phase,
        Phase::Progressing,
        "the attempt in flight may still pass"
    );
    rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Gate));
}

#[test]
fn a_run_step_retries_then_rolls_back() {
    let steps = switching_writes(0, 2, false, [weight_step(100.0, 0)]);
    let mut rollout = Rollout::started(plan(steps, None));
    assert_eq!(rollout.state.step, 1);
    rollout.hook_done(false);
    rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::Progressing);
    let effects = rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Hook));
    assert_eq!(published(&effects), vec![Weight::ZERO]);
    assert_eq!(
        rollout.state.hooks["1:switch-writes"],
        StepHookRecord {
            ok: false,
            attempts: 3
        }
    );
}

#[test]
fn a_succeeded_run_hook_is_not_run_again_after_a_restart() {
    let steps = vec![
        run("switch-writes", 0, false),
        weight_step(50.0, 600),
        weight_step(100.0, 0),
    ];
    let plan = plan(steps, None);
    let mut rollout = Rollout::started(plan.clone());
    rollout.hook_done(true);
    rollout.seconds(100);
    // Restart: the persisted state comes back without the in-memory flags.
    let json = serde_json::to_string(&rollout.state).unwrap();
    let mut restored = Rollout::new(plan.clone());
    restored.state = serde_json::from_str(&json).unwrap();
    let effects = restored.ok(Input::Restored);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::RunStepHook { .. })));
    assert_eq!(published(&effects), vec![w(50.0)]);
    assert_eq!(restored.state.hold_observed_ms, 100_000);

    // A hook that was still running when the process died is run again.
    let mut rollout = Rollout::started(plan.clone());
    let json = serde_json::to_string(&rollout.state).unwrap();
    rollout.state = serde_json::from_str(&json).unwrap();
    let effects = rollout.ok(Input::Restored);
    assert!(effects.contains(&Effect::RunStepHook {
        step: 0,
        hook: "switch-writes".into(),
        attempt: 1
    }));
}

#[test]
fn late_hook_results_are_ignored() {
    let steps = vec![run("slow", 0, false), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.ok(Input::Rollback);
    let effects = rollout.ok(Input::HookFinished {
        step: 0,
        hook: "slow".into(),
        ok: true,
        detail: String::new(),
    });
    assert!(effects.is_empty());
    assert_eq!(rollout.state.phase, Phase::RolledBack);
}

#[test]
fn changed_steps_realign_after_the_next_passing_check() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::Promote { full: false });
    rollout.ok(Input::Promote { full: false });
    assert_eq!(rollout.state.weight, w(45.0));
    rollout.plan = plan(
        vec![
            weight_step(10.0, 60),
            weight_step(40.0, 60),
            weight_step(60.0, 60),
            weight_step(100.0, 0),
        ],
        Some(analysis(3)),
    );
    rollout.plan.fingerprint = "two".into();
    rollout.ok(Input::StepsChanged {
        run_id: "ignored".into(),
    });
    assert!(rollout.state.realign);
    assert_eq!(rollout.state.weight, w(45.0), "the weight is kept");
    rollout.seconds(600);
    rollout.check(Verdict::Inconclusive);
    assert_eq!(rollout.state.weight, w(45.0));
    rollout.check(Verdict::Pass);
    assert!(!rollout.state.realign);
    assert_eq!(rollout.state.step, 2);
    assert_eq!(rollout.state.weight, w(60.0));
    assert_eq!(rollout.state.steps_fingerprint, "two");
}

#[test]
fn changed_steps_restart_a_rolled_back_rollout() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::Rollback);
    rollout.plan.fingerprint = "two".into();
    rollout.ok(Input::StepsChanged {
        run_id: "run-2".into(),
    });
    assert_eq!(rollout.state.phase, Phase::Progressing);
    assert_eq!(rollout.state.step, 0);
    assert_eq!(rollout.state.run_id, "run-2");
}

fn verify(point_of_no_return: bool) -> PlannedStep {
    PlannedStep {
        kind: PlannedKind::Verify {
            requests: 2,
            benchmark: None,
            worst_case: Duration::ZERO,
        },
        point_of_no_return,
    }
}

#[test]
fn a_verify_step_runs_once_passes_on_and_rolls_back_or_pauses_on_failure() {
    let steps = vec![verify(false), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps.clone(), None));
    assert!(rollout.state.hook_in_flight, "the smoke requests are out");
    assert_eq!(
        rollout.state.weight,
        w(0.0),
        "no traffic before verify passes"
    );
    rollout.hook_done(true);
    assert_eq!(rollout.state.phase, Phase::Promoted);

    let mut rollout = Rollout::started(plan(steps, None));
    rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Verify));
    let reason = rollout.state.reason.clone().unwrap_or_default();
    assert!(reason.contains("step 1 verify failed: exit 1"), "{reason}");

    let shadow = shadow(None);
    let mut rollout = Rollout::started(plan(vec![shadow, weight_step(100.0, 0)], None));
    assert!(rollout.state.hook_in_flight, "the copier runs");
    rollout.hook_done(false);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Shadow));

    // Past a point of no return a failing verify pauses instead.
    let steps = vec![run("switch", 0, true), verify(false), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.hook_done(true);
    rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(rollout.state.pause_cause, Some(PauseCause::Hook));
}

/// A verify verdict that arrives while paused is applied on resume: a failure rolls back
/// (it once ran the step again, which a quieter hour could pass), a pass goes on.
#[test]
fn a_verify_failure_while_paused_rolls_back_on_resume() {
    let steps = vec![verify(false), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps.clone(), None));
    rollout.ok(Input::Pause);
    rollout.hook_done(false);
    assert_eq!(rollout.state.phase, Phase::Paused);
    rollout.ok(Input::Resume);
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Verify));
    let reason = rollout.state.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("step 1 verify failed while paused"),
        "{reason}"
    );

    let mut rollout = Rollout::started(plan(steps, None));
    rollout.ok(Input::Pause);
    rollout.hook_done(true);
    rollout.ok(Input::Resume);
    assert_eq!(rollout.state.phase, Phase::Promoted);

    // Past a point of no return a failure pauses; resuming that pause runs verify again
    // (the operator's way to check NEW once more), however often.
    let steps = vec![run("switch", 0, true), verify(false), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.hook_done(true);
    rollout.hook_done(false);
    assert_eq!(rollout.state.pause_cause, Some(PauseCause::Hook));
    for _ in 0..2 {
        rollout.ok(Input::Resume);
        assert_eq!(rollout.state.phase, Phase::Progressing);
        assert!(rollout.state.hook_in_flight, "verify runs again");
        rollout.hook_done(false);
        assert_eq!(rollout.state.pause_cause, Some(PauseCause::Hook));
    }
    // A manual pause while that run is out, then a resume before its verdict: the old
    // failure is not acted on again; the run in progress decides.
    rollout.ok(Input::Resume);
    rollout.ok(Input::Pause);
    rollout.ok(Input::Resume);
    assert_eq!(rollout.state.phase, Phase::Progressing);
    assert!(rollout.state.hook_in_flight);
    rollout.hook_done(true);
    assert_eq!(rollout.state.phase, Phase::Promoted);
}

/// `set-weight` while a `run` hook runs keeps its result: after `resume` the rollout
/// realigns onto the same `run` step and does not run the hook a second time.
#[test]
fn set_weight_during_a_run_hook_does_not_run_it_twice() {
    let steps = switching_writes(60, 0, true, [weight_step(50.0, 60), weight_step(100.0, 0)]);
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.seconds(60);
    assert_eq!(rollout.state.step, 1);
    assert!(rollout.state.hook_in_flight, "switch-writes is running");
    rollout.ok(Input::SetWeight {
        weight: w(5.0),
        force: false,
    });
    // Resuming now would realign onto the step and start the hook once more.
    assert!(rollout.refused(Input::Resume).contains("still running"));
    // switch-writes finishes: writes now go to NEW.
    rollout.ok(Input::HookFinished {
        step: 1,
        hook: "switch-writes".into(),
        ok: true,
        detail: "exit 0".into(),
    });
    rollout.ok(Input::Resume);
    let runs = rollout
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::RunStepHook { hook, .. } if hook == "switch-writes"))
        .count();
    assert_eq!(
        runs, 1,
        "switch-writes ran {runs} times; state: {:?}",
        rollout.state
    );
}

/// A shadow step held 60 s; `max_wait` as configured.
fn shadow(max_wait: Option<Duration>) -> PlannedStep {
    PlannedStep {
        kind: PlannedKind::Shadow(crate::config::ShadowSpec {
            hold: Duration::from_secs(60),
            max_wait,
            max_mismatch: 0.01,
            ..crate::config::ShadowSpec::example()
        }),
        point_of_no_return: false,
    }
}

impl Rollout {
    fn short(&mut self) -> Vec<Effect> {
        self.ok(Input::ProbeShort {
            step: self.state.step,
            detail: "12 of the 500 comparisons it needs".into(),
        })
    }
}

/// A shadow step short of comparisons waits, then pauses for "not enough evidence" once
/// `max_wait` of running time since its start has passed (paused time does not count);
/// resuming waits another `max_wait`, and enough comparisons still complete the step.
#[test]
fn a_shadow_step_short_of_comparisons_pauses_after_max_wait() {
    let steps = vec![
        shadow(Some(Duration::from_secs(120))),
        weight_step(100.0, 0),
    ];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.seconds(60);
    rollout.short();
    assert_eq!(
        rollout.state.phase,
        Phase::Progressing,
        "the hold just ended"
    );
    rollout.ok(Input::Pause);
    rollout.seconds(100); // paused: no running time
    rollout.short();
    rollout.ok(Input::Resume);
    rollout.seconds(59);
    rollout.short();
    assert_eq!(
        rollout.state.phase,
        Phase::Progressing,
        "119 s of running time"
    );
    rollout.seconds(1);
    rollout.short();
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(
        rollout.state.pause_cause,
        Some(PauseCause::NotEnoughEvidence)
    );
    let reason = rollout.state.reason.clone().unwrap_or_default();
    assert_eq!(
        reason,
        "not enough evidence: step 1 shadow waited 2m: 12 of the 500 comparisons it needs"
    );
    assert!(rollout.state.hook_in_flight, "the copier goes on");

    rollout.ok(Input::Resume);
    rollout.seconds(119);
    rollout.short();
    assert_eq!(rollout.state.phase, Phase::Progressing, "another 2 minutes");
    rollout.hook_done(true);
    assert_eq!(rollout.state.phase, Phase::Promoted);
}

/// Without `max_wait` the wait is 3 × the hold, at least 10 minutes; a report for another
/// step, or while paused, changes nothing.
#[test]
fn a_shadow_steps_default_wait_is_the_checks_one() {
    let steps = vec![shadow(None), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.seconds(599);
    rollout.short();
    rollout.ok(Input::ProbeShort {
        step: 1,
        detail: String::new(),
    });
    assert_eq!(rollout.state.phase, Phase::Progressing);
    rollout.ok(Input::Pause);
    rollout.short();
    assert_eq!(rollout.state.pause_cause, Some(PauseCause::Manual));
    rollout.ok(Input::Resume);
    rollout.seconds(1);
    rollout.short();
    assert_eq!(
        rollout.state.pause_cause,
        Some(PauseCause::NotEnoughEvidence)
    );
}

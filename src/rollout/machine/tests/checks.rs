//! Time and checks: holds, analysis verdicts, the trip, points of no return.

use super::*;

#[test]
fn the_classic_schedule_promotes_after_two_and_a_half_hours_of_passing_checks() {
    let mut rollout = Rollout::started(classic());
    assert_eq!(rollout.state.weight, w(5.0));
    let mut seconds = 0;
    while rollout.state.phase == Phase::Progressing {
        rollout.seconds(1);
        seconds += 1;
        if seconds % 30 == 0 {
            rollout.check(Verdict::Pass);
        }
        assert!(seconds < 4 * 3600, "never promoted");
    }
    assert_eq!(rollout.state.phase, Phase::Promoted);
    assert_eq!(rollout.state.weight, Weight::FULL);
    // Five 30-minute holds, then a passing check at 100% (here it falls on second 9000).
    assert!((9000..=9030).contains(&seconds), "{seconds}");
    let weights: Vec<f64> = published(&rollout.effects)
        .iter()
        .map(|w| w.percent())
        .collect();
    assert_eq!(weights, vec![5.0, 25.0, 45.0, 65.0, 85.0, 100.0]);
    assert_eq!(rollout.events().last(), Some(&HookEvent::Promoted));
}

#[test]
fn a_step_needs_its_hold_and_a_passing_check() {
    let mut rollout = Rollout::started(classic());
    rollout.check(Verdict::Pass);
    rollout.seconds(1799);
    assert_eq!(rollout.state.step, 0, "hold not over");
    rollout.check(Verdict::Inconclusive);
    rollout.seconds(10);
    assert_eq!(rollout.state.step, 0, "the last check was inconclusive");
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.step, 1);
    assert_eq!(rollout.state.weight, w(25.0));
    assert_eq!(rollout.state.hold_observed_ms, 0);
}

#[test]
fn too_little_traffic_extends_a_step_and_never_rolls_back() {
    let mut rollout = Rollout::started(classic());
    for _ in 0..1000 {
        rollout.seconds(30);
        rollout.check(Verdict::Inconclusive);
    }
    assert_eq!(rollout.state.phase, Phase::Progressing);
    assert_eq!(rollout.state.step, 0);
    assert_eq!(rollout.state.consecutive_failures, 0);
}

#[test]
fn threshold_failed_checks_in_a_row_roll_back() {
    let mut rollout = Rollout::started(classic());
    rollout.check(Verdict::Fail);
    rollout.check(Verdict::Fail);
    assert_eq!(rollout.state.phase, Phase::Progressing);
    let effects = rollout.check(Verdict::Fail);
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert_eq!(rollout.state.weight, Weight::ZERO);
    assert_eq!(
        rollout.state.rollback_reason,
        Some(RollbackReason::Analysis)
    );
    assert_eq!(published(&effects), vec![Weight::ZERO]);
    let publish_at = effects
        .iter()
        .position(|e| matches!(e, Effect::Publish(_)))
        .unwrap();
    let rollback_at = effects
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::Event {
                    event: HookEvent::Rollback,
                    ..
                }
            )
        })
        .unwrap();
    assert!(
        publish_at < rollback_at,
        "traffic is back on OLD before rollback hooks run"
    );
    assert!(effects.contains(&Effect::RolledBack(RollbackReason::Analysis)));
    assert_eq!(
        rollout
            .events()
            .iter()
            .filter(|e| **e == HookEvent::CheckFailed)
            .count(),
        3
    );
}

#[test]
fn alternating_pass_and_fail_never_rolls_back() {
    let mut rollout = Rollout::started(classic());
    for _ in 0..500 {
        rollout.check(Verdict::Fail);
        rollout.check(Verdict::Fail);
        rollout.check(Verdict::Pass);
    }
    assert_eq!(rollout.state.phase, Phase::Progressing);
}

#[test]
fn a_trip_rolls_back_at_once() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::Trip {
        reason: "outage".into(),
    });
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Trip));
}

#[test]
fn rolled_back_is_latched_until_retry() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::Rollback);
    assert_eq!(rollout.state.rollback_reason, Some(RollbackReason::Manual));
    rollout.seconds(5000);
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.phase, Phase::RolledBack);
    assert!(rollout
        .refused(Input::Resume)
        .contains("only a paused rollout"));
    assert!(rollout
        .refused(Input::Promote { full: false })
        .contains("retry"));
    assert!(rollout
        .refused(Input::SetWeight {
            weight: w(10.0),
            force: true,
        })
        .contains("retry"));
    let rolled_back = rollout.state.clone();
    assert!(
        rollout.ok(Input::Rollback).is_empty(),
        "already rolled back"
    );
    assert_eq!(rollout.state, rolled_back);
    rollout.ok(Input::Retry {
        run_id: "run-2".into(),
    });
    assert_eq!(rollout.state.phase, Phase::Progressing);
    assert_eq!(rollout.state.step, 0);
    assert_eq!(rollout.state.weight, w(5.0));
    assert_eq!(rollout.state.run_id, "run-2");
    assert_eq!(rollout.state.rollback_reason, None);
}

#[test]
fn past_a_point_of_no_return_regressions_pause() {
    let steps = switching_writes(0, 0, true, [weight_step(50.0, 60), weight_step(100.0, 0)]);
    let mut rollout = Rollout::started(plan(steps, Some(analysis(2))));
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.step, 1);
    rollout.hook_done(true);
    assert!(rollout.state.point_of_no_return_passed);
    assert_eq!(rollout.state.weight, w(50.0));
    rollout.check(Verdict::Fail);
    rollout.check(Verdict::Fail);
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(rollout.state.pause_cause, Some(PauseCause::Analysis));
    assert_eq!(rollout.state.weight, w(50.0), "no rollback");
    rollout.ok(Input::Trip {
        reason: "outage".into(),
    });
    assert_eq!(rollout.state.phase, Phase::Paused);
    let events = rollout.events();
    assert!(events.ends_with(&[
        HookEvent::CheckFailed,
        HookEvent::CheckFailed,
        HookEvent::Paused
    ]));
    rollout.ok(Input::Resume);
    assert_eq!(rollout.state.consecutive_failures, 0);
}

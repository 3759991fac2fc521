//! The operator's verbs.

use super::*;

#[test]
fn pause_freezes_the_hold_and_resume_continues() {
    let mut rollout = Rollout::started(classic());
    rollout.seconds(600);
    rollout.ok(Input::Pause);
    rollout.seconds(3600);
    assert_eq!(rollout.state.hold_observed_ms, 600_000);
    let paused = rollout.state.clone();
    assert!(
        rollout.ok(Input::Pause).is_empty(),
        "already paused: no effect"
    );
    assert_eq!(rollout.state, paused);
    rollout.ok(Input::Resume);
    let progressing = rollout.state.clone();
    assert!(rollout.ok(Input::Resume).is_empty(), "already progressing");
    assert_eq!(rollout.state, progressing);
    rollout.seconds(1200);
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.step, 1);
}

#[test]
fn checks_still_roll_back_a_paused_rollout() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::Pause);
    for _ in 0..3 {
        rollout.check(Verdict::Fail);
    }
    assert_eq!(rollout.state.phase, Phase::RolledBack);
}

#[test]
fn promote_completes_the_current_step_and_full_jumps_to_the_last() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::Promote { full: false });
    assert_eq!(rollout.state.step, 1);
    assert_eq!(rollout.state.weight, w(25.0));
    rollout.ok(Input::Promote { full: true });
    assert_eq!(rollout.state.step, 5);
    assert_eq!(rollout.state.weight, Weight::FULL);
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.phase, Phase::Promoted);
    let promoted = rollout.state.clone();
    assert!(rollout.ok(Input::Promote { full: false }).is_empty());
    assert_eq!(rollout.state, promoted, "already promoted: nothing changes");
}

#[test]
fn promote_full_will_not_skip_a_run_hook() {
    let steps = switching_writes(60, 0, true, [weight_step(100.0, 0)]);
    let mut rollout = Rollout::started(plan(steps, None));
    let refusal = rollout.refused(Input::Promote { full: true });
    assert!(refusal.contains("switch-writes"), "{refusal}");
}

#[test]
fn a_pause_step_waits_for_promote() {
    let steps = vec![weight_step(5.0, 0), pause(), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, None));
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(rollout.state.pause_cause, Some(PauseCause::PauseStep));
    rollout.seconds(100);
    assert!(rollout.refused(Input::Resume).contains("promote"));
    rollout.ok(Input::Promote { full: false });
    assert_eq!(rollout.state.phase, Phase::Promoted);
}

#[test]
fn set_weight_pauses_there_and_resume_continues_above_it() {
    let mut rollout = Rollout::started(classic());
    assert!(Rollout::new(classic())
        .refused(Input::SetWeight {
            weight: w(30.0),
            force: false,
        })
        .contains("not started"));
    rollout.ok(Input::SetWeight {
        weight: w(30.0),
        force: false,
    });
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(rollout.state.weight, w(30.0));
    rollout.ok(Input::Resume);
    assert_eq!(rollout.state.weight, w(30.0), "kept until a check passes");
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.weight, w(45.0), "never back down to 25%");
    assert_eq!(rollout.state.step, 2);
}

#[test]
fn start_is_for_pending_rollouts_only() {
    let mut rollout = Rollout::new(classic());
    assert!(rollout.refused(Input::Pause).contains("pending"));
    assert!(rollout.refused(Input::Rollback).contains("not started"));
    rollout.ok(Input::Start { run_id: "r".into() });
    assert_eq!(
        rollout.events()[..2],
        [HookEvent::Started, HookEvent::StepStarted]
    );
    let started = rollout.state.clone();
    assert!(rollout
        .ok(Input::Start {
            run_id: "r2".into()
        })
        .is_empty());
    assert_eq!(rollout.state, started, "already started: the run id stays");
}

#[test]
fn lowering_the_weight_by_hand_takes_force() {
    let mut rollout = Rollout::started(classic());
    rollout.ok(Input::SetWeight {
        weight: w(40.0),
        force: false,
    });
    let refusal = rollout.refused(Input::SetWeight {
        weight: w(20.0),
        force: false,
    });
    assert!(
        refusal.contains("from 40% to 20%") && refusal.contains("--force"),
        "{refusal}"
    );
    let same = rollout.state.clone();
    assert!(rollout
        .ok(Input::SetWeight {
            weight: w(40.0),
            force: false,
        })
        .is_empty());
    assert_eq!(rollout.state, same, "the same weight again changes nothing");
    rollout.ok(Input::SetWeight {
        weight: w(20.0),
        force: true,
    });
    assert_eq!(rollout.state.weight, w(20.0));
    assert_eq!(rollout.state.phase, Phase::Paused);
}

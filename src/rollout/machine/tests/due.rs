//! What the controller's clock is told: how much running time until time alone changes
//! something; and the one spelling of every state and label.

use super::*;

fn due(rollout: &Rollout) -> Option<Duration> {
    rollout.state.running_time_until_due(&rollout.plan)
}

#[test]
fn a_hold_is_due_at_its_end_then_waits_for_a_check_not_for_time() {
    let steps = vec![weight_step(10.0, 30), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, Some(analysis(3))));
    assert_eq!(due(&rollout), Some(Duration::from_secs(30)));
    rollout.ok(Input::Tick(Duration::from_millis(12_345)));
    assert_eq!(due(&rollout), Some(Duration::from_millis(17_655)));
    rollout.seconds(18);
    assert_eq!(
        due(&rollout),
        None,
        "held: only a passing check completes it"
    );
    rollout.ok(Input::Pause);
    assert_eq!(due(&rollout), None, "a paused rollout's clock is frozen");
}

#[test]
fn a_failed_gate_is_due_again_after_every_or_at_its_deadline() {
    let steps = vec![
        gate("ready", 15, Some(20), OnDeadline::Pause),
        weight_step(100.0, 0),
    ];
    let mut rollout = Rollout::started(plan(steps, None));
    assert_eq!(due(&rollout), None, "while the gate's hook runs");
    rollout.hook_done(false);
    assert_eq!(due(&rollout), Some(Duration::from_secs(15)));
    rollout.seconds(15);
    rollout.hook_done(false);
    assert_eq!(
        due(&rollout),
        Some(Duration::from_secs(5)),
        "the deadline first"
    );
}

#[test]
fn nothing_is_due_for_a_rollout_that_is_not_progressing() {
    let steps = vec![weight_step(10.0, 30)];
    assert_eq!(due(&Rollout::new(plan(steps.clone(), None))), None);
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.ok(Input::Rollback);
    assert_eq!(due(&rollout), None);
}

#[test]
fn every_state_and_label_is_spelled_as_serde_spells_it() {
    let spelled = |value: serde_json::Value, text: &str| {
        assert_eq!(value, serde_json::Value::String(text.to_string()));
    };
    for state in ServiceState::ALL {
        spelled(serde_json::to_value(state).unwrap(), state.as_str());
    }
    for reason in RollbackReason::ALL {
        spelled(serde_json::to_value(reason).unwrap(), reason.label());
    }
    for cause in [
        PauseCause::Manual,
        PauseCause::PauseStep,
        PauseCause::SetWeight,
        PauseCause::GateDeadline,
        PauseCause::Analysis,
        PauseCause::Trip,
        PauseCause::Hook,
    ] {
        spelled(serde_json::to_value(cause).unwrap(), cause.as_str());
    }
    for verdict in Verdict::ALL {
        spelled(serde_json::to_value(verdict).unwrap(), verdict.label());
    }
    assert_eq!(PauseCause::PauseStep.as_str(), "pause_step");
}

//! `max_wait`: a step whose checks stay inconclusive pauses for "not enough evidence".

use super::*;

fn statistical(max_wait: Option<u64>) -> Plan {
    let mut plan = classic();
    if let Some(analysis) = plan.analysis.as_mut() {
        analysis.method = crate::config::AnalysisMethod::Statistical { confidence: 0.99 };
        analysis.max_wait = max_wait.map(Duration::from_secs);
    }
    plan
}

fn inconclusive_for(rollout: &mut Rollout, seconds: u64) {
    for _ in 0..seconds / 30 {
        rollout.seconds(30);
        rollout.check(Verdict::Inconclusive);
    }
}

/// Inconclusive for `seconds`, still progressing; 30 s more pauses it for evidence.
fn pauses_after(rollout: &mut Rollout, seconds: u64) {
    inconclusive_for(rollout, seconds - 30);
    assert_eq!(rollout.state.phase, Phase::Progressing);
    inconclusive_for(rollout, 30);
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(
        rollout.state.pause_cause,
        Some(PauseCause::NotEnoughEvidence)
    );
}

#[test]
fn a_statistical_step_inconclusive_past_max_wait_pauses_for_not_enough_evidence() {
    let mut rollout = Rollout::started(statistical(Some(600)));
    pauses_after(&mut rollout, 600);
    let reason = rollout.state.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("not enough evidence"), "{reason}");
    assert_eq!(rollout.state.weight, w(5.0), "a pause keeps the weight");
    // Resuming waits another `max_wait`, from now.
    rollout.ok(Input::Resume);
    pauses_after(&mut rollout, 600);
}

#[test]
fn the_default_max_wait_is_three_holds_and_a_conclusive_check_restarts_it() {
    // classic(): 30-minute holds, so 90 minutes.
    let mut rollout = Rollout::started(statistical(None));
    inconclusive_for(&mut rollout, 3600);
    rollout.check(Verdict::Fail);
    pauses_after(&mut rollout, 5400);
}

#[test]
fn the_threshold_method_waits_unless_max_wait_is_set() {
    let mut rollout = Rollout::started(classic());
    inconclusive_for(&mut rollout, 6 * 3600);
    assert_eq!(rollout.state.phase, Phase::Progressing);
    let mut plan = classic();
    if let Some(analysis) = plan.analysis.as_mut() {
        analysis.max_wait = Some(Duration::from_secs(900));
    }
    let mut rollout = Rollout::started(plan);
    pauses_after(&mut rollout, 900);
}

/// Set by hand to 97% (a statistical analysis, `max_wait` 10 minutes), left paused for
/// `paused` seconds, then resumed: realigning.
fn realigning_at_97(paused: u64) -> Rollout {
    let mut rollout = Rollout::started(statistical(Some(600)));
    rollout.ok(Input::SetWeight {
        weight: w(97.0),
        force: false,
    });
    rollout.seconds(paused);
    rollout.ok(Input::Resume);
    assert!(rollout.state.realign);
    rollout
}

#[test]
fn a_realignment_inconclusive_past_max_wait_pauses_too() {
    // The rollout waits for a passing check at 97% before it goes on to the step above.
    // Inconclusive checks (OLD's 3% short of `min_requests`, say) end that wait after
    // `max_wait` as they end a step's.
    let mut rollout = realigning_at_97(3600);
    pauses_after(&mut rollout, 600);
    assert_eq!(rollout.state.weight, w(97.0), "a pause keeps the weight");
    let reason = rollout.state.reason.clone().unwrap_or_default();
    assert!(reason.contains("at 97%"), "{reason}");
    // Resumed, it waits another `max_wait`; promoted, it goes on without the evidence.
    rollout.ok(Input::Resume);
    assert!(rollout.state.realign);
    pauses_after(&mut rollout, 600);
    rollout.ok(Input::Promote { full: false });
    assert!(!rollout.state.realign);
    assert_eq!(rollout.state.phase, Phase::Progressing);
    assert_eq!(rollout.state.weight, w(100.0));
}

#[test]
fn a_state_saved_without_its_undecided_time_waits_max_wait_from_the_next_check() {
    // A realignment an hour old, saved by a build that did not keep when its checks were
    // last conclusive: the wait counts from the next inconclusive check, not from the
    // start (it once paused for "not enough evidence" at the first check after upgrade).
    let mut rollout = realigning_at_97(0);
    rollout.seconds(3600);
    let mut saved = serde_json::to_value(&rollout.state).unwrap();
    saved.as_object_mut().unwrap().remove("undecided_from_ms");
    rollout.state = serde_json::from_value(saved).unwrap();
    assert_eq!(rollout.state.undecided_from_ms, None);
    rollout.check(Verdict::Inconclusive);
    assert_eq!(
        rollout.state.phase,
        Phase::Progressing,
        "the wait starts here"
    );
    pauses_after(&mut rollout, 600);
    // Kept from then on, and written again.
    let saved = serde_json::to_value(&rollout.state).unwrap();
    assert!(saved["undecided_from_ms"].is_u64(), "{saved}");
}

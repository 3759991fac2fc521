use super::*;
use crate::config::load::schedule_steps;
use crate::config::{AnalysisSpec, StartMode};
use crate::rollout::schedule::PlannedStep;

fn w(percent: f64) -> Weight {
    Weight::from_percent(percent).unwrap()
}

fn analysis(threshold: u32) -> AnalysisSpec {
    AnalysisSpec {
        interval: Duration::from_secs(30),
        window: Duration::from_secs(120),
        min_requests: 100,
        failure_threshold: threshold,
        max_error_rate: Some(0.01),
        max_error_rate_increase: None,
        max_p99_latency: None,
        max_p99_latency_ratio: None,
        trip: None,
    }
}

fn weight_step(percent: f64, hold_s: u64) -> PlannedStep {
    PlannedStep {
        kind: PlannedKind::Weight {
            weight: w(percent),
            hold: Duration::from_secs(hold_s),
        },
        point_of_no_return: false,
    }
}

fn gate(hook: &str, every_s: u64, deadline_s: Option<u64>, on_deadline: OnDeadline) -> PlannedStep {
    PlannedStep {
        kind: PlannedKind::Gate {
            hook: hook.into(),
            every: Duration::from_secs(every_s),
            deadline: deadline_s.map(Duration::from_secs),
            on_deadline,
        },
        point_of_no_return: false,
    }
}

fn run(hook: &str, retries: u32, point_of_no_return: bool) -> PlannedStep {
    PlannedStep {
        kind: PlannedKind::Run {
            hook: hook.into(),
            retries,
        },
        point_of_no_return,
    }
}

fn pause() -> PlannedStep {
    PlannedStep {
        kind: PlannedKind::Pause,
        point_of_no_return: false,
    }
}

fn plan(steps: Vec<PlannedStep>, analysis: Option<AnalysisSpec>) -> Plan {
    Plan {
        steps,
        analysis,
        start: StartMode::Auto,
        fingerprint: "one".into(),
    }
}

fn classic() -> Plan {
    let steps = schedule_steps(w(5.0), w(20.0), Duration::from_secs(1800))
        .into_iter()
        .map(|step| match step.kind {
            crate::config::StepKind::Weight { weight, hold } => PlannedStep {
                kind: PlannedKind::Weight { weight, hold },
                point_of_no_return: false,
            },
            _ => unreachable!(),
        })
        .collect();
    plan(steps, Some(analysis(3)))
}

/// A rollout under test: the plan, the state, and every effect so far.
struct Rollout {
    plan: Plan,
    state: RolloutState,
    effects: Vec<Effect>,
}

impl Rollout {
    fn new(plan: Plan) -> Rollout {
        let state = RolloutState::new(&plan, Weight::ZERO);
        Rollout {
            plan,
            state,
            effects: Vec::new(),
        }
    }

    fn started(plan: Plan) -> Rollout {
        let mut rollout = Rollout::new(plan);
        rollout.ok(Input::Start {
            run_id: "run-1".into(),
        });
        rollout
    }

    fn apply(&mut self, input: Input) -> Result<Vec<Effect>, Refusal> {
        let effects = apply(&self.plan, &mut self.state, input)?;
        self.effects.extend(effects.iter().cloned());
        Ok(effects)
    }

    fn ok(&mut self, input: Input) -> Vec<Effect> {
        self.apply(input).expect("transition accepted")
    }

    fn refused(&mut self, input: Input) -> String {
        let before = self.state.clone();
        let refusal = self.apply(input).expect_err("transition refused");
        assert_eq!(self.state, before, "a refusal changes nothing");
        refusal.0
    }

    fn seconds(&mut self, n: u64) {
        for _ in 0..n {
            self.ok(Input::Tick(Duration::from_secs(1)));
        }
    }

    fn check(&mut self, verdict: Verdict) -> Vec<Effect> {
        self.ok(Input::Check {
            verdict,
            summary: "test".into(),
        })
    }

    fn hook_done(&mut self, ok: bool) -> Vec<Effect> {
        let step = self.state.step;
        let hook = self.plan.steps[step].hook().unwrap().to_string();
        self.ok(Input::HookFinished {
            step,
            hook,
            ok,
            detail: "exit 1".into(),
        })
    }

    fn events(&self) -> Vec<HookEvent> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { event, .. } => Some(*event),
                _ => None,
            })
            .collect()
    }
}

fn published(effects: &[Effect]) -> Vec<Weight> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(w) => Some(*w),
            _ => None,
        })
        .collect()
}

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
    assert!(rollout.refused(Input::SetWeight(w(10.0))).contains("retry"));
    assert!(rollout.refused(Input::Rollback).contains("already"));
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
    let steps = vec![
        weight_step(5.0, 0),
        run("switch-writes", 0, true),
        weight_step(50.0, 60),
        weight_step(100.0, 0),
    ];
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

#[test]
fn pause_freezes_the_hold_and_resume_continues() {
    let mut rollout = Rollout::started(classic());
    rollout.seconds(600);
    rollout.ok(Input::Pause);
    rollout.seconds(3600);
    assert_eq!(rollout.state.hold_observed_ms, 600_000);
    assert!(rollout.refused(Input::Pause).contains("only a progressing"));
    rollout.ok(Input::Resume);
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
    assert!(rollout
        .refused(Input::Promote { full: false })
        .contains("already promoted"));
}

#[test]
fn promote_full_will_not_skip_a_run_hook() {
    let steps = vec![
        weight_step(5.0, 60),
        run("switch-writes", 0, true),
        weight_step(100.0, 0),
    ];
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
        .refused(Input::SetWeight(w(30.0)))
        .contains("not started"));
    rollout.ok(Input::SetWeight(w(30.0)));
    assert_eq!(rollout.state.phase, Phase::Paused);
    assert_eq!(rollout.state.weight, w(30.0));
    rollout.ok(Input::Resume);
    assert_eq!(rollout.state.weight, w(30.0), "kept until a check passes");
    rollout.check(Verdict::Pass);
    assert_eq!(rollout.state.weight, w(45.0), "never back down to 25%");
    assert_eq!(rollout.state.step, 2);
}

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
    let steps = vec![
        weight_step(5.0, 0),
        run("switch-writes", 2, false),
        weight_step(100.0, 0),
    ];
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
    assert!(rollout
        .refused(Input::Start { run_id: "r".into() })
        .contains("not pending"));
}

#[test]
fn no_analysis_means_holds_alone() {
    let steps = vec![weight_step(10.0, 60), weight_step(100.0, 0)];
    let mut rollout = Rollout::started(plan(steps, None));
    rollout.seconds(59);
    assert_eq!(rollout.state.step, 0);
    rollout.seconds(1);
    assert_eq!(rollout.state.phase, Phase::Promoted);
}

#[test]
fn each_event_carries_the_step_weight_and_state_it_happened_at() {
    // One promote moves through a step, a zero-hold step and the promotion at once.
    let steps = vec![
        weight_step(10.0, 600),
        weight_step(50.0, 0),
        weight_step(100.0, 0),
    ];
    let mut rollout = Rollout::started(plan(steps, None));
    let effects = rollout.ok(Input::Promote { full: false });
    let events: Vec<(HookEvent, usize, f64, &str)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event {
                event,
                step,
                weight,
                state,
                ..
            } => Some((*event, *step, weight.percent(), state.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![
            (HookEvent::StepCompleted, 1, 10.0, "progressing"),
            (HookEvent::StepStarted, 2, 50.0, "progressing"),
            (HookEvent::StepCompleted, 2, 50.0, "progressing"),
            (HookEvent::StepStarted, 3, 100.0, "progressing"),
            (HookEvent::StepCompleted, 3, 100.0, "progressing"),
            (HookEvent::Promoted, 3, 100.0, "promoted"),
        ]
    );
}

#[test]
fn the_state_round_trips_through_json() {
    let mut rollout = Rollout::started(classic());
    rollout.seconds(42);
    rollout.check(Verdict::Fail);
    let json = serde_json::to_string_pretty(&rollout.state).unwrap();
    assert!(json.contains("\"phase\": \"progressing\""), "{json}");
    let back: RolloutState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rollout.state);
}

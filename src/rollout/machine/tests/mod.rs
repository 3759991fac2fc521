use super::*;
use crate::config::schedule_steps;
use crate::config::{AnalysisRules, AnalysisSpec, OnDeadline, StartMode};
use crate::rollout::schedule::PlannedStep;

mod checks;
mod due;
mod evidence;
mod hooks;
mod operator;

fn w(percent: f64) -> Weight {
    Weight::from_percent(percent).unwrap()
}

fn analysis(threshold: u32) -> AnalysisSpec {
    AnalysisSpec {
        failure_threshold: threshold,
        rules: AnalysisRules {
            max_error_rate: Some(0.01),
            ..AnalysisRules::default()
        },
        ..AnalysisSpec::example()
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

/// 5% held `hold_s`, the `switch-writes` run step, then `after`.
fn switching_writes(
    hold_s: u64,
    retries: u32,
    point_of_no_return: bool,
    after: impl IntoIterator<Item = PlannedStep>,
) -> Vec<PlannedStep> {
    let mut steps = vec![
        weight_step(5.0, hold_s),
        run("switch-writes", retries, point_of_no_return),
    ];
    steps.extend(after);
    steps
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

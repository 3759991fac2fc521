//! The schedule: a service's steps as the state machine uses them, and what can be said
//! about them before anything runs (the timeline of `cutover plan`).
//!
//! Pure: built from the validated config, no I/O, no clock.

use std::time::Duration;

use crate::config::{
    AnalysisSpec, BenchmarkSpec, OnDeadline, Service, ShadowSpec, StartMode, StepKind, VerifySpec,
    Weight,
};

/// A service's rollout, with each step's hook settings resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub steps: Vec<PlannedStep>,
    pub analysis: Option<AnalysisSpec>,
    pub start: StartMode,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedStep {
    pub kind: PlannedKind,
    pub point_of_no_return: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PlannedKind {
    Weight {
        weight: Weight,
        hold: Duration,
    },
    Pause,
    Gate {
        hook: String,
        every: Duration,
        deadline: Option<Duration>,
        on_deadline: OnDeadline,
    },
    Run {
        hook: String,
        retries: u32,
    },
    /// The smoke requests against every NEW backend, then the benchmark if any; one
    /// attempt, failure rolls back.
    Verify {
        /// Smoke requests per NEW backend (0 when the step sends none).
        requests: usize,
        benchmark: Option<BenchmarkSpec>,
        /// The longest the step can take: every smoke request and benchmark request
        /// running into its timeout.
        worst_case: Duration,
    },
    /// Copies of OLD's requests to NEW for `hold`; the mismatch rate decides.
    Shadow(ShadowSpec),
}

/// The name a shadow step's outcome is recorded under.
pub(crate) const SHADOW_RECORD: &str = "shadow";

/// The name a verify step's outcome is recorded under, like a step hook's.
pub(crate) const VERIFY_RECORD: &str = "verify";

impl PlannedStep {
    pub(crate) fn hook(&self) -> Option<&str> {
        match &self.kind {
            PlannedKind::Gate { hook, .. } | PlannedKind::Run { hook, .. } => Some(hook),
            PlannedKind::Verify { .. } => Some(VERIFY_RECORD),
            PlannedKind::Shadow(_) => Some(SHADOW_RECORD),
            _ => None,
        }
    }

    pub(crate) fn describe(&self) -> String {
        let text = match &self.kind {
            PlannedKind::Weight { weight, hold } if hold.is_zero() => format!("weight {weight}"),
            PlannedKind::Weight { weight, hold } => {
                format!(
                    "weight {weight}, hold {}",
                    humantime::format_duration(*hold)
                )
            }
            PlannedKind::Pause => "pause until `cutover promote`".to_string(),
            PlannedKind::Gate { hook, every, .. } => {
                format!("gate {hook} (every {})", humantime::format_duration(*every))
            }
            PlannedKind::Run { hook, .. } => format!("run {hook}"),
            PlannedKind::Verify {
                requests,
                benchmark,
                worst_case,
            } => {
                let smoke = (*requests > 0)
                    .then(|| format!("{requests} smoke request(s) against every NEW backend"));
                let what: Vec<String> = smoke
                    .into_iter()
                    .chain(benchmark.as_ref().map(ToString::to_string))
                    .collect();
                format!(
                    "verify: {}; at most {}",
                    what.join(", then "),
                    humantime::format_duration(*worst_case)
                )
            }
            PlannedKind::Shadow(spec) => spec.to_string(),
        };
        if self.point_of_no_return {
            format!("{text} [point of no return]")
        } else {
            text
        }
    }
}

/// A verify step's plan: what it sends, and for how long at most.
fn verify_plan(service: &Service, spec: &VerifySpec) -> PlannedKind {
    let requests = if spec.smoke { service.smoke.len() } else { 0 };
    let per_request = service.timeouts.connect + service.timeouts.request;
    let smoke_count = u32::try_from(requests * service.new.backends.len()).unwrap_or(u32::MAX);
    let benchmark_time = spec
        .benchmark
        .as_ref()
        .map_or(Duration::ZERO, |b| b.duration + per_request);
    PlannedKind::Verify {
        requests,
        benchmark: spec.benchmark.clone(),
        worst_case: per_request.saturating_mul(smoke_count) + benchmark_time,
    }
}

impl Plan {
    /// The plan of a service with a rollout; `None` for a static split.
    pub(crate) fn of(service: &Service) -> Option<Plan> {
        let rollout = service.rollout.as_ref()?;
        let steps = rollout
            .steps
            .iter()
            .map(|step| {
                let kind = match &step.kind {
                    StepKind::Weight { weight, hold } => PlannedKind::Weight {
                        weight: *weight,
                        hold: *hold,
                    },
                    StepKind::Pause => PlannedKind::Pause,
                    StepKind::Gate { hook } => {
                        let config = service.hook(hook);
                        PlannedKind::Gate {
                            hook: hook.clone(),
                            every: config.map_or(crate::config::defaults::GATE_EVERY, |h| h.every),
                            deadline: config.and_then(|h| h.deadline),
                            on_deadline: config.map_or(OnDeadline::Pause, |h| h.on_deadline),
                        }
                    }
                    StepKind::Run { hook } => PlannedKind::Run {
                        hook: hook.clone(),
                        retries: service.hook(hook).map_or(0, |h| h.retries),
                    },
                    StepKind::Verify(spec) => verify_plan(service, spec),
                    StepKind::Shadow(spec) => PlannedKind::Shadow(spec.clone()),
                };
                PlannedStep {
                    kind,
                    point_of_no_return: step.point_of_no_return,
                }
            })
            .collect();
        Some(Plan {
            steps,
            analysis: rollout.analysis.clone(),
            start: rollout.start,
            fingerprint: rollout.fingerprint.clone(),
        })
    }

    /// Where a rollout at `weight` continues when its steps changed (SPEC §8): right after
    /// the last weight step at or below it, so no lower weight is held again and no step
    /// that comes after it (a `run`, a gate) is skipped.
    pub(crate) fn realign_target(&self, weight: Weight) -> usize {
        self.steps
            .iter()
            .rposition(
                |step| matches!(step.kind, PlannedKind::Weight { weight: w, .. } if w <= weight),
            )
            .map_or(0, |index| index + 1)
    }

    /// The next weight the rollout will set after step `index`.
    pub(crate) fn next_weight(&self, index: usize, current: Weight) -> Option<Weight> {
        self.steps
            .iter()
            .skip(index + 1)
            .find_map(|step| match step.kind {
                PlannedKind::Weight { weight, .. } if weight > current => Some(weight),
                _ => None,
            })
    }
}

/// One line of `cutover plan`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TimelineEntry {
    pub index: usize,
    pub description: String,
    /// NEW's weight while this step runs.
    pub weight: Weight,
    /// The soonest this step can start, counted from the start of the rollout.
    pub earliest_start: Duration,
    /// Whether a step before this one waits for something with no fixed time (a gate, a
    /// pause, a `run` hook, enough traffic).
    pub after_open_ended: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timeline {
    pub entries: Vec<TimelineEntry>,
    /// The sum of the holds: no rollout of this plan can be promoted sooner.
    pub minimum_total: Duration,
    /// The longest a regression can go on before the rollout is rolled back (or paused,
    /// past a point of no return); `None` without analysis.
    pub worst_case_detection: Option<Detection>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Detection {
    /// A regression that breaks a rule by a little: the window has to fill with bad
    /// traffic, then `failure_threshold` checks in a row have to fail.
    pub regression: Duration,
    /// A hard outage: the trip, checked every second.
    pub outage: Option<Duration>,
}

/// The timeline of a plan, starting from `initial` (the static weight before the start).
pub(crate) fn timeline(plan: &Plan, initial: Weight) -> Timeline {
    let mut entries = Vec::new();
    let mut at = Duration::ZERO;
    let mut weight = initial;
    let mut open_ended = false;
    for (index, step) in plan.steps.iter().enumerate() {
        if let PlannedKind::Weight { weight: w, .. } = step.kind {
            weight = w;
        }
        entries.push(TimelineEntry {
            index,
            description: step.describe(),
            weight,
            earliest_start: at,
            after_open_ended: open_ended,
        });
        match step.kind {
            PlannedKind::Weight { hold, .. } => {
                at += hold;
                open_ended |= plan.analysis.is_some();
            }
            // At least the hold; then it waits for `min_requests` comparisons.
            PlannedKind::Shadow(ref spec) => {
                at += spec.hold;
                open_ended = true;
            }
            // At least the benchmark's duration; the smoke requests take what they take.
            PlannedKind::Verify { ref benchmark, .. } => {
                at += benchmark.as_ref().map_or(Duration::ZERO, |b| b.duration);
                open_ended = true;
            }
            _ => open_ended = true,
        }
    }
    let worst_case_detection = plan.analysis.as_ref().map(|analysis| {
        let checks = analysis.interval * analysis.failure_threshold;
        Detection {
            regression: analysis.window + checks + Duration::from_secs(1),
            outage: analysis.trip.as_ref().map(|_| Duration::from_secs(2)),
        }
    });
    Timeline {
        entries,
        minimum_total: at,
        worst_case_detection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule_steps;
    use crate::config::{AnalysisRules, AnalysisSpec, Step};

    fn plan_of(steps: Vec<Step>, analysis: Option<AnalysisSpec>) -> Plan {
        Plan {
            steps: steps
                .into_iter()
                .map(|s| PlannedStep {
                    kind: match s.kind {
                        StepKind::Weight { weight, hold } => PlannedKind::Weight { weight, hold },
                        StepKind::Pause => PlannedKind::Pause,
                        StepKind::Gate { hook } => PlannedKind::Gate {
                            hook,
                            every: Duration::from_secs(15),
                            deadline: None,
                            on_deadline: OnDeadline::Pause,
                        },
                        StepKind::Run { hook } => PlannedKind::Run { hook, retries: 0 },
                        StepKind::Verify(spec) => PlannedKind::Verify {
                            requests: usize::from(spec.smoke),
                            benchmark: spec.benchmark,
                            worst_case: Duration::ZERO,
                        },
                        StepKind::Shadow(spec) => PlannedKind::Shadow(spec),
                    },
                    point_of_no_return: s.point_of_no_return,
                })
                .collect(),
            analysis,
            start: StartMode::Auto,
            fingerprint: "test".into(),
        }
    }

    fn w(percent: f64) -> Weight {
        Weight::from_percent(percent).unwrap()
    }

    fn step(kind: StepKind, point_of_no_return: bool) -> Step {
        Step {
            kind,
            point_of_no_return,
        }
    }

    fn weight_step(percent: f64) -> Step {
        let kind = StepKind::Weight {
            weight: w(percent),
            hold: Duration::ZERO,
        };
        step(kind, false)
    }

    fn analysis() -> AnalysisSpec {
        AnalysisSpec {
            rules: AnalysisRules {
                max_error_rate: Some(0.01),
                ..AnalysisRules::default()
            },
            trip: Some(AnalysisSpec::example_trip()),
            ..AnalysisSpec::example()
        }
    }

    #[test]
    fn the_classic_schedule_takes_two_and_a_half_hours() {
        let plan = plan_of(
            schedule_steps(w(5.0), w(20.0), Duration::from_secs(1800)),
            Some(analysis()),
        );
        let timeline = timeline(&plan, Weight::ZERO);
        let weights: Vec<f64> = timeline
            .entries
            .iter()
            .map(|e| e.weight.percent())
            .collect();
        assert_eq!(weights, vec![5.0, 25.0, 45.0, 65.0, 85.0, 100.0]);
        assert_eq!(timeline.minimum_total, Duration::from_secs(9000));
        assert_eq!(
            timeline.entries[5].earliest_start,
            Duration::from_secs(9000)
        );
        let detection = timeline.worst_case_detection.unwrap();
        assert_eq!(detection.regression, Duration::from_secs(120 + 90 + 1));
        assert_eq!(detection.outage, Some(Duration::from_secs(2)));
    }

    #[test]
    fn realignment_continues_after_the_last_weight_at_or_below() {
        let steps = vec![
            step(StepKind::Gate { hook: "g".into() }, false),
            weight_step(5.0),
            weight_step(25.0),
            step(StepKind::Run { hook: "r".into() }, true),
            weight_step(50.0),
            weight_step(100.0),
        ];
        let plan = plan_of(steps, None);
        assert_eq!(
            plan.realign_target(w(30.0)),
            3,
            "the run step after 25% is not skipped"
        );
        assert_eq!(plan.realign_target(w(25.0)), 3);
        assert_eq!(plan.realign_target(w(60.0)), 5);
        assert_eq!(plan.realign_target(w(1.0)), 0);
        assert_eq!(plan.realign_target(w(100.0)), 6, "past the end: promoted");
        assert_eq!(plan.next_weight(1, w(5.0)), Some(w(25.0)));
        assert_eq!(plan.next_weight(5, w(100.0)), None);
    }
}

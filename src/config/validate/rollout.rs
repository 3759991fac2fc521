//! A service's `rollout:`: its steps (or the schedule that expands into steps) and the
//! analysis that decides whether NEW is healthy enough to go on.

use std::time::Duration;

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::{AnalysisFile, RolloutFile, ScheduleFile, StepFile, TripFile};
use crate::config::model::*;
use crate::config::yaml::Mark;
use crate::hash::fnv1a;

impl Checker<'_> {
    pub(super) fn rollout(
        &mut self,
        rollout: &Spanned<RolloutFile>,
        hooks: &[(Hook, Mark)],
    ) -> Option<RolloutSpec> {
        let file = &rollout.value;
        let start = match &file.start {
            None => defaults::START,
            Some(s) => match s.value.as_str() {
                "auto" => StartMode::Auto,
                "manual" => StartMode::Manual,
                other => {
                    self.error(
                        s.mark,
                        format!("`start` is `auto` or `manual`, not `{other}`"),
                    );
                    StartMode::Auto
                }
            },
        };
        let steps = match (&file.steps, &file.schedule) {
            (Some(steps), None) => self.steps(steps, hooks),
            (None, Some(schedule)) => self.schedule(schedule),
            (Some(_), Some(schedule)) => {
                self.error(
                    schedule.mark,
                    "a rollout has `steps` or `schedule`, not both",
                );
                None
            }
            (None, None) => {
                self.error(rollout.mark, "a rollout needs `steps` or `schedule`");
                None
            }
        };
        let analysis = file.analysis.as_ref().and_then(|a| self.analysis(a));
        let steps = steps?;
        let fingerprint = format!("{:016x}", fnv1a(format!("{steps:?}").as_bytes()));
        Some(RolloutSpec {
            start,
            steps,
            analysis,
            fingerprint,
        })
    }

    fn steps(
        &mut self,
        steps: &Spanned<Vec<Spanned<StepFile>>>,
        hooks: &[(Hook, Mark)],
    ) -> Option<Vec<Step>> {
        if steps.value.is_empty() {
            self.error(steps.mark, "`steps` is empty");
            return None;
        }
        let mut out = Vec::new();
        let mut last_weight: Option<(Weight, usize)> = None;
        for (index, step) in steps.value.iter().enumerate() {
            let Some(built) = self.step(step, hooks) else {
                continue;
            };
            if let StepKind::Weight { weight, .. } = &built.kind {
                if let Some((previous, previous_index)) = last_weight {
                    if *weight < previous {
                        self.error(
                            step.mark,
                            format!(
                                "step {} lowers the weight to {weight} after step {} set {previous}: \
                                 weights only rise, so that users move from old to new and never back",
                                index + 1,
                                previous_index + 1
                            ),
                        );
                    }
                }
                last_weight = Some((*weight, index));
            }
            out.push(built);
        }
        (out.len() == steps.value.len()).then_some(out)
    }

    fn step(&mut self, step: &Spanned<StepFile>, hooks: &[(Hook, Mark)]) -> Option<Step> {
        let file = &step.value;
        if let (Some(hold), None) = (&file.hold, &file.weight) {
            self.error(hold.mark, "`hold` belongs to a `weight` step");
        }
        self.one_step_kind(step)?;
        let point_of_no_return = file.point_of_no_return.as_ref().is_some_and(|p| p.value);
        let kind = if let Some(weight) = &file.weight {
            let weight = self.weight(weight)?;
            let hold = self.duration(&file.hold, Duration::ZERO);
            StepKind::Weight { weight, hold }
        } else if file.pause.0.is_some() {
            StepKind::Pause
        } else if let Some(gate) = &file.gate {
            self.hook_ref(gate, hooks)?;
            StepKind::Gate {
                hook: gate.value.clone(),
            }
        } else if let Some(run) = &file.run {
            self.hook_ref(run, hooks)?;
            StepKind::Run {
                hook: run.value.clone(),
            }
        } else if let Some(verify) = &file.verify {
            StepKind::Verify(self.verify_step(verify)?)
        } else if let Some(shadow) = &file.shadow {
            StepKind::Shadow(self.shadow_step(shadow)?)
        } else {
            return None;
        };
        Some(Step {
            kind,
            point_of_no_return,
        })
    }

    /// A step does exactly one thing; the error names what is missing or what clashes.
    fn one_step_kind(&mut self, step: &Spanned<StepFile>) -> Option<()> {
        let file = &step.value;
        let written = [
            ("weight", file.weight.is_some()),
            ("pause", file.pause.0.is_some()),
            ("gate", file.gate.is_some()),
            ("run", file.run.is_some()),
            ("verify", file.verify.is_some()),
            ("shadow", file.shadow.is_some()),
        ];
        let kinds: Vec<&str> = written
            .iter()
            .filter(|(_, present)| *present)
            .map(|(kind, _)| *kind)
            .collect();
        match kinds.as_slice() {
            [] => {
                self.error(
                    step.mark,
                    "a step needs one of `weight`, `pause`, `gate`, `run`, `verify` or `shadow`",
                );
                None
            }
            [_] => Some(()),
            [first, second, ..] => {
                self.error(
                    step.mark,
                    format!("a step does one thing; this one has both `{first}` and `{second}`"),
                );
                None
            }
        }
    }

    pub(super) fn schedule(&mut self, schedule: &Spanned<ScheduleFile>) -> Option<Vec<Step>> {
        let file = &schedule.value;
        let start = self.required(&file.start, schedule.mark, "start");
        let step = self.required(&file.step, schedule.mark, "step");
        let every = self.required(&file.every, schedule.mark, "every");
        let (start, step, every) = (start?, step?, every?);
        let start_weight = self.weight(start)?;
        let step_weight = self.weight(step)?;
        let hold = self.duration_opt(&Some(every.clone()))?;
        if step_weight == Weight::ZERO {
            self.error(step.mark, "the schedule's `step` must be above 0%");
            return None;
        }
        Some(schedule_steps(start_weight, step_weight, hold))
    }

    pub(super) fn analysis(&mut self, analysis: &Spanned<AnalysisFile>) -> Option<AnalysisSpec> {
        let file = &analysis.value;
        let interval = self.positive_duration(&file.interval, defaults::ANALYSIS_INTERVAL);
        let window = self.positive_duration(&file.window, defaults::ANALYSIS_WINDOW);
        if window > Duration::from_secs(3600) {
            if let Some(w) = &file.window {
                self.error(w.mark, "the analysis window is at most 1h");
            }
        }
        let ratio = match &file.max_p99_latency_ratio {
            Some(r) if r.value.is_finite() && r.value >= 1.0 => Some(r.value),
            Some(r) => {
                self.error(
                    r.mark,
                    "`max_p99_latency_ratio` is a factor of 1.0 or more, like 1.5",
                );
                None
            }
            None => None,
        };
        let trip = file.trip.as_ref().and_then(|t| self.trip(t));
        let method = self.method(file);
        let max_wait = match &file.max_wait {
            Some(w) => match self.duration_opt(&file.max_wait) {
                Some(d) if d < interval => {
                    self.error(
                        w.mark,
                        "`max_wait` must be at least the analysis `interval`: no check could run",
                    );
                    None
                }
                d => d,
            },
            None => None,
        };
        let spec = AnalysisSpec {
            interval,
            window,
            min_requests: self.count(
                &file.min_requests,
                defaults::ANALYSIS_MIN_REQUESTS,
                1,
                1_000_000_000,
            ),
            failure_threshold: self.count(
                &file.failure_threshold,
                u64::from(defaults::FAILURE_THRESHOLD),
                1,
                1000,
            ) as u32,
            rules: AnalysisRules {
                max_error_rate: self.fraction(&file.max_error_rate),
                max_error_rate_increase: self.fraction(&file.max_error_rate_increase),
                max_p99_latency: self.duration_opt(&file.max_p99_latency),
                max_p99_latency_ratio: ratio,
            },
            trip,
            method,
            max_wait,
        };
        if !spec.rules.any() && spec.trip.is_none() {
            self.error(
                analysis.mark,
                "`analysis` has no rule: set at least one of `max_error_rate`, \
                 `max_error_rate_increase`, `max_p99_latency`, `max_p99_latency_ratio`, `trip`",
            );
        }
        Some(spec)
    }

    /// `method: threshold | statistical` and `confidence: 99%` (statistical only).
    fn method(&mut self, file: &AnalysisFile) -> AnalysisMethod {
        let statistical = match &file.method {
            None => false,
            Some(m) => match m.value.as_str() {
                "threshold" => false,
                "statistical" => true,
                other => {
                    self.error(
                        m.mark,
                        format!("unknown analysis method {other:?}: use threshold or statistical"),
                    );
                    false
                }
            },
        };
        let Some(field) = &file.confidence else {
            return if statistical {
                AnalysisMethod::Statistical {
                    confidence: defaults::ANALYSIS_CONFIDENCE,
                }
            } else {
                AnalysisMethod::Threshold
            };
        };
        if !statistical {
            self.error(
                field.mark,
                "`confidence` only applies to `method: statistical`",
            );
            return AnalysisMethod::Threshold;
        }
        match self.fraction(&file.confidence) {
            Some(c) if c > 0.5 && c < 1.0 => AnalysisMethod::Statistical { confidence: c },
            Some(_) => {
                self.error(
                    field.mark,
                    "`confidence` is a percent strictly between 50% and 100%, like 99%",
                );
                AnalysisMethod::Statistical {
                    confidence: defaults::ANALYSIS_CONFIDENCE,
                }
            }
            None => AnalysisMethod::Statistical {
                confidence: defaults::ANALYSIS_CONFIDENCE,
            },
        }
    }

    pub(super) fn trip(&mut self, trip: &Spanned<TripFile>) -> Option<TripSpec> {
        let file = &trip.value;
        let rate = self
            .required(&file.error_rate, trip.mark, "error_rate")?
            .clone();
        let window = self.positive_duration(&file.window, defaults::TRIP_WINDOW);
        if window > Duration::from_secs(3600) {
            if let Some(w) = &file.window {
                self.error(w.mark, "the trip window is at most 1h");
            }
        }
        Some(TripSpec {
            error_rate: self.fraction(&Some(rate))?,
            min_requests: self.count(
                &file.min_requests,
                defaults::TRIP_MIN_REQUESTS,
                1,
                1_000_000_000,
            ),
            window,
        })
    }
}

/// The steps of `schedule: {start, step, every}`: `start`, then `+step` every `every`,
/// ending at 100%, which needs no hold (the rollout is promoted on its first passing check).
pub fn schedule_steps(start: Weight, step: Weight, every: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut bp = u32::from(start.basis_points());
    let increment = u32::from(step.basis_points()).max(1);
    while bp < 10_000 {
        steps.push(Step {
            kind: StepKind::Weight {
                weight: Weight::from_basis_points(bp as u16).unwrap_or(Weight::FULL),
                hold: every,
            },
            point_of_no_return: false,
        });
        bp += increment;
    }
    steps.push(Step {
        kind: StepKind::Weight {
            weight: Weight::FULL,
            hold: Duration::ZERO,
        },
        point_of_no_return: false,
    });
    steps
}

/// Comparisons with OLD alone under the threshold method without `max_wait`: a step
/// whose OLD share is short of `min_requests` (a 95% step at low traffic) cannot be judged,
/// and under that method waits for good.
pub(super) fn warnings(config: &Config, out: &mut Vec<String>) {
    for service in &config.services {
        let analysis = service.rollout.as_ref().and_then(|r| r.analysis.as_ref());
        let Some(analysis) = analysis else {
            continue;
        };
        let rules = &analysis.rules;
        let comparisons_only = rules.max_error_rate.is_none()
            && rules.max_p99_latency.is_none()
            && (rules.max_error_rate_increase.is_some() || rules.max_p99_latency_ratio.is_some());
        if comparisons_only
            && analysis.method == AnalysisMethod::Threshold
            && analysis.max_wait.is_none()
        {
            out.push(format!(
                "service `{}`: `analysis` only compares NEW with OLD; a step that leaves OLD \
                 fewer than {} requests in the window cannot be judged and waits for good \
                 (set `max_wait` to pause instead, or add `max_error_rate` or \
                 `max_p99_latency`)",
                service.name, analysis.min_requests
            ));
        }
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;

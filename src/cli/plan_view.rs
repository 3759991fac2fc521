//! `cutover plan`: a rollout's timeline as text.

use crate::config;
use crate::rollout::schedule::{self, Plan};

/// The timeline of one service, as text.
pub(crate) fn plan_text(service: &config::Service) -> String {
    let Some(plan) = Plan::of(service) else {
        return format!(
            "service {}: no rollout; static weight {}\n\n",
            service.name, service.weight
        );
    };
    let timeline = schedule::timeline(&plan, service.weight);
    let start = match plan.start {
        config::StartMode::Auto => "starts on the first run",
        config::StartMode::Manual => "waits for `cutover start`",
    };
    let mut out = format!(
        "service {}: {} steps, {start}\n",
        service.name,
        plan.steps.len()
    );
    out.push_str("  step  earliest start  NEW weight  what\n");
    for entry in &timeline.entries {
        let at = humantime::format_duration(entry.earliest_start).to_string();
        let at = if entry.after_open_ended {
            format!("{at}+")
        } else {
            at
        };
        out.push_str(&format!(
            "  {:>4}  {:>14}  {:>10}  {}\n",
            entry.index + 1,
            at,
            entry.weight.to_string(),
            entry.description
        ));
    }
    out.push_str(&format!(
        "  minimum total: {} (the holds; \"+\" marks starts that also wait for checks, gates, hooks or pauses)\n",
        humantime::format_duration(timeline.minimum_total)
    ));
    match (&timeline.worst_case_detection, &plan.analysis) {
        (Some(detection), Some(analysis)) => {
            out.push_str(&format!(
                "  worst case from a regression to rollback: {} (window {} filling with bad traffic, then {} failed checks {} apart)\n",
                humantime::format_duration(detection.regression),
                humantime::format_duration(analysis.window),
                analysis.failure_threshold,
                humantime::format_duration(analysis.interval),
            ));
            match (detection.outage, &analysis.trip) {
                (Some(outage), Some(trip)) => out.push_str(&format!(
                    "  hard outage: rolled back within {} (trip at {:.0}% errors, with at least {} NEW requests a second)\n",
                    humantime::format_duration(outage),
                    trip.error_rate * 100.0,
                    trip.min_requests
                )),
                _ => out.push_str("  hard outage: no trip configured; detected like any regression\n"),
            }
        }
        _ => out.push_str(
            "  no analysis: regressions are not detected; steps advance on their holds alone\n",
        ),
    }
    out.push('\n');
    out
}

//! `cutover report`: the migration report, from the history file alone (SPEC §10).
//!
//! `render` turns the decision log's entries into one self-contained HTML page (inline SVG
//! charts, inline CSS with a print stylesheet, no script, font or network reference) or a
//! Markdown text. Both show the same facts: the weight over time, NEW and OLD error rate
//! and p99 per check with the limits, every decision with its numbers, the hook runs, and
//! the checklist of control points: what was checked at each, the evidence, and who or
//! what decided. The words for each decision are written once, here, for both formats.

mod html;
mod markdown;
mod svg;

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::evidence::record::{
    confidence_percent, CheckRecord, DecidedBy, Decision, Entry, Method, Outcome, PoolMeasure,
    Rule, RuleRecord,
};

/// The report's format (`--format html|md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Html,
    Markdown,
}

/// The report of `service` from its history `entries` (oldest first).
pub(crate) fn render(service: &str, entries: &[Entry], format: Format) -> String {
    let facts = Facts::of(service, entries);
    match format {
        Format::Html => html::page(&facts),
        Format::Markdown => markdown::text(&facts),
    }
}

/// What both formats show, computed once.
#[derive(Debug)]
struct Facts<'a> {
    service: &'a str,
    entries: &'a [Entry],
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    final_state: String,
    final_weight: f64,
    checks: [usize; 3],
    control_points: Vec<ControlPoint>,
}

/// One control point of the rollout: a step, a state change, a hook, a verify or shadow
/// result, an operator's command, a trip or a reload.
#[derive(Debug)]
struct ControlPoint {
    index: usize,
    at: OffsetDateTime,
    what: String,
    checked: String,
    evidence: String,
    decided_by: String,
}

impl ControlPoint {
    /// The table's text columns after the time, in the order both formats print them.
    fn columns(&self) -> [&str; 4] {
        [&self.what, &self.checked, &self.evidence, &self.decided_by]
    }
}

impl<'a> Facts<'a> {
    fn of(service: &'a str, entries: &'a [Entry]) -> Facts<'a> {
        let mut checks = [0; 3];
        let mut final_state = "unknown".to_string();
        for entry in entries {
            match &entry.decision {
                Decision::Check(check) => match check.outcome {
                    Outcome::Pass => checks[0] += 1,
                    Outcome::Fail => checks[1] += 1,
                    _ => checks[2] += 1,
                },
                Decision::State(state) => final_state = state.to.clone(),
                _ => {}
            }
        }
        Facts {
            service,
            entries,
            first: entries.first().map(|e| e.at),
            last: entries.last().map(|e| e.at),
            final_state,
            final_weight: entries.last().map_or(0.0, |e| e.weight),
            checks,
            control_points: control_points(entries),
        }
    }
}

fn control_points(entries: &[Entry]) -> Vec<ControlPoint> {
    let mut points = Vec::new();
    let mut last_check: Option<&CheckRecord> = None;
    let mut last_trip: Option<String> = None;
    for (index, entry) in entries.iter().enumerate() {
        let point =
            |what: String, checked: String, evidence: String, decided_by: String| ControlPoint {
                index,
                at: entry.at,
                what,
                checked,
                evidence,
                decided_by,
            };
        let analysis = || match last_check {
            Some(check) => (
                format!("last check: {}", check.outcome.label()),
                check_evidence(check),
            ),
            None => ("no check yet".to_string(), "-".to_string()),
        };
        match &entry.decision {
            Decision::Check(check) => last_check = Some(check),
            Decision::Trip(trip) => {
                last_trip = Some(trip.reason.clone());
                points.push(point(
                    "trip".to_string(),
                    format!("NEW's last {} requests", trip.requests),
                    format!(
                        "{} errors ({} >= {})",
                        trip.errors,
                        percent(trip.error_rate),
                        percent(trip.threshold)
                    ),
                    "analysis".to_string(),
                ));
            }
            Decision::Step(step) => {
                let (checked, evidence) = analysis();
                points.push(point(
                    format!(
                        "{} → step {}: {} (weight {}% → {}%)",
                        step.from_step
                            .map_or("start".to_string(), |s| format!("step {}", s + 1)),
                        step.to_step + 1,
                        step.description,
                        step.from_weight,
                        step.to_weight
                    ),
                    checked,
                    evidence,
                    format!("{}: {}", step.by.describe(), step.reason),
                ));
            }
            Decision::State(state) => {
                let (checked, evidence) = match last_trip.take() {
                    Some(reason) if state.to == "rolled_back" => ("the trip".to_string(), reason),
                    _ => analysis(),
                };
                points.push(point(
                    format!("{} → {}", state.from, state.to),
                    checked,
                    evidence,
                    format!("{}: {}", state.by.describe(), state.reason),
                ));
            }
            Decision::Hook(hook) => points.push(point(
                format!("hook {} ({})", hook.hook, hook.event),
                "exit status".to_string(),
                hook_evidence(hook),
                format!("hook {}", hook.hook),
            )),
            // The record counts the step (1 run, 0 or 1 failed); the requests and
            // comparisons behind the verdict are in its detail.
            Decision::Verify(probe) | Decision::Shadow(probe) => points.push(point(
                format!("{} {}", entry.decision.kind(), probe.name),
                match entry.decision {
                    Decision::Shadow(_) => "copies of live requests, compared with OLD's",
                    _ => "NEW's answers to smoke requests or a benchmark",
                }
                .to_string(),
                format!("{}{}", verdict(probe.passed), first_detail(&probe.detail)),
                format!("{} step", entry.decision.kind()),
            )),
            Decision::Operator(command) => points.push(point(
                format!("operator: {}", command.command),
                "the command".to_string(),
                match (&command.detail, command.accepted) {
                    (Some(detail), accepted) => format!("{}: {detail}", accepted_label(accepted)),
                    (None, accepted) => accepted_label(accepted).to_string(),
                },
                format!("operator {}", command.client),
            )),
            Decision::Reload(reload) => points.push(point(
                "reload".to_string(),
                "the new configuration".to_string(),
                format!(
                    "{}: {}",
                    if reload.ok { "applied" } else { "rejected" },
                    reload.changes.join(", ")
                ),
                reload.by.describe(),
            )),
        }
    }
    points
}

fn accepted_label(accepted: bool) -> &'static str {
    if accepted {
        "accepted"
    } else {
        "refused"
    }
}

fn verdict(passed: bool) -> &'static str {
    if passed {
        "passed"
    } else {
        "FAILED"
    }
}

fn first_detail(detail: &[String]) -> String {
    detail
        .first()
        .map_or(String::new(), |line| format!(" ({line})"))
}

fn hook_evidence(hook: &crate::evidence::record::HookRecord) -> String {
    format!(
        "{}, exit {}, {} ms, attempt {}",
        if hook.ok { "succeeded" } else { "FAILED" },
        hook.exit_code
            .map_or("-".to_string(), |code| code.to_string()),
        hook.duration_ms,
        hook.attempt
    )
}

/// `NEW 1200 req, 2.50% errors, p99 41.5 ms; OLD …; max_error_rate fail (…)`.
fn check_evidence(check: &CheckRecord) -> String {
    let mut text = format!(
        "NEW {}; OLD {}",
        pool_line(&check.new),
        pool_line(&check.old)
    );
    let failed: Vec<String> = check
        .rules
        .iter()
        .filter(|r| r.outcome == Outcome::Fail)
        .map(rule_line)
        .collect();
    if !failed.is_empty() {
        text.push_str(&format!("; {}", failed.join("; ")));
    }
    text
}

fn pool_line(pool: &PoolMeasure) -> String {
    format!(
        "{} req, {} errors ({}), p99 {}",
        pool.requests,
        pool.errors,
        percent(pool.error_rate),
        pool.p99_ms
            .map_or("-".to_string(), |p99| format!("{p99:.1} ms"))
    )
}

/// One rule with every number: `max_error_rate fail: 2.50% (limit 1.00%; NEW 1200 req,
/// OLD 22800 req; 99% bounds 1.65%..3.78%)`.
fn rule_line(rule: &RuleRecord) -> String {
    let value = |v: f64| rule_value(rule.rule, v);
    let mut text = format!(
        "{} {}: {} (limit {}; NEW {} req, OLD {} req",
        rule.rule.label(),
        rule.outcome.label(),
        rule.measured.map_or("-".to_string(), value),
        value(rule.threshold),
        rule.new_requests,
        rule.old_requests
    );
    if let Some(bound) = rule.bound {
        text.push_str(&format!(
            "; {}% bounds {}..{}",
            confidence_percent(bound.confidence),
            value(bound.lower),
            value(bound.upper)
        ));
    }
    if let Some(p) = rule.p_value {
        text.push_str(&format!("; p = {p:.2e}"));
    }
    text.push(')');
    // Why a rule was skipped, or a pass above its limit (the ratio's 5 ms floor).
    if let Some(note) = &rule.note {
        text.push_str(&format!(": {note}"));
    }
    text
}

fn rule_value(rule: Rule, value: f64) -> String {
    match rule {
        Rule::MaxErrorRate | Rule::MaxErrorRateIncrease => percent(value),
        Rule::MaxP99Latency => format!("{value:.1} ms"),
        Rule::MaxP99LatencyRatio => format!("{value:.2}x"),
        Rule::LatencyVsOld => format!("{value:.3}"),
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// `from → to by whom: why`, the shape of every step and state change.
fn change(from: impl fmt::Display, to: impl fmt::Display, by: &DecidedBy, reason: &str) -> String {
    format!("{from} → {to} by {}: {reason}", by.describe())
}

/// The decision in one line, with its numbers.
pub(crate) fn describe(entry: &Entry) -> String {
    match &entry.decision {
        Decision::Check(check) => {
            let mut text = format!(
                "check {} ({}, {} s window): {}",
                check.outcome.label(),
                match check.method {
                    Method::Threshold => "threshold",
                    Method::Statistical => "statistical",
                },
                check.window_s,
                check_evidence(check)
            );
            if let Some(note) = &check.note {
                text.push_str(&format!(" — {note}"));
            }
            text
        }
        Decision::Trip(trip) => trip.reason.clone(),
        Decision::Step(step) => format!(
            "step {} ({}): {}",
            step.to_step + 1,
            step.description,
            change(
                format_args!("weight {}%", step.from_weight),
                format_args!("{}%", step.to_weight),
                &step.by,
                &step.reason
            )
        ),
        Decision::State(state) => change(&state.from, &state.to, &state.by, &state.reason),
        Decision::Operator(command) => format!(
            "operator {} ran `{}`: {}{}",
            command.client,
            command.command,
            accepted_label(command.accepted),
            command
                .detail
                .as_ref()
                .map_or(String::new(), |d| format!(" ({d})"))
        ),
        Decision::Hook(hook) => format!(
            "hook {} ({}): {}",
            hook.hook,
            hook.event,
            hook_evidence(hook)
        ),
        Decision::Verify(probe) | Decision::Shadow(probe) => format!(
            "{} {}: {}{}",
            entry.decision.kind(),
            probe.name,
            verdict(probe.passed),
            first_detail(&probe.detail)
        ),
        Decision::Reload(reload) => format!(
            "reload {} by {}: {}",
            if reload.ok { "applied" } else { "rejected" },
            reload.by.describe(),
            reload.changes.join(", ")
        ),
    }
}

/// `2026-11-30T14:30:05Z`.
fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests;

//! The report from generated histories: a 3-hour rollout that promotes, and one that
//! rolls back on a trip. Set `CUTOVER_REPORT_SAMPLE=/tmp/x.html` to keep the page.

use scraper::{Html, Selector};
use time::OffsetDateTime;

use super::*;
use crate::evidence::record::*;

fn at(second: i64) -> OffsetDateTime {
    // 2026-11-30T14:00:00Z
    OffsetDateTime::from_unix_timestamp(1_796_047_200 + second).unwrap()
}

fn rule(rule: Rule, outcome: Outcome, measured: f64, threshold: f64) -> RuleRecord {
    RuleRecord {
        rule,
        outcome,
        measured: Some(measured),
        threshold,
        new_requests: 1200,
        old_requests: 22800,
        bound: Some(Bound {
            confidence: 0.99,
            lower: measured * 0.6,
            upper: measured * 1.4,
        }),
        p_value: (rule == Rule::LatencyVsOld).then_some(1e-5),
        note: None,
    }
}

fn check(second: i64, weight: f64, error_rate: f64, p99: f64) -> Entry {
    let requests = (24000.0 * weight / 100.0) as u64;
    let outcome = if error_rate > 0.01 {
        Outcome::Fail
    } else {
        Outcome::Pass
    };
    Entry::new(
        at(second),
        "api",
        weight,
        Some(0),
        Decision::Check(CheckRecord {
            method: Method::Statistical,
            outcome,
            window_s: 120.0,
            new: PoolMeasure {
                requests,
                errors: (requests as f64 * error_rate) as u64,
                error_rate,
                p99_ms: Some(p99),
            },
            old: PoolMeasure {
                requests: 24000 - requests,
                errors: ((24000 - requests) as f64 * 0.005) as u64,
                error_rate: if requests < 24000 { 0.005 } else { 0.0 },
                p99_ms: Some(40.0),
            },
            rules: vec![
                rule(Rule::MaxErrorRate, outcome, error_rate, 0.01),
                rule(
                    Rule::MaxErrorRateIncrease,
                    outcome,
                    error_rate - 0.005,
                    0.005,
                ),
                rule(Rule::MaxP99Latency, Outcome::Pass, p99, 500.0),
                rule(Rule::LatencyVsOld, Outcome::Pass, 0.12, 0.5),
            ],
            note: None,
            consecutive_failures: u32::from(outcome == Outcome::Fail),
        }),
    )
}

fn entry(second: i64, weight: f64, decision: Decision) -> Entry {
    Entry::new(at(second), "api", weight, Some(0), decision)
}

fn step(second: i64, from: f64, to: f64, index: usize) -> Entry {
    entry(
        second,
        to,
        Decision::Step(StepRecord {
            from_step: index.checked_sub(1),
            to_step: index,
            description: format!("weight {to}%"),
            from_weight: from,
            to_weight: to,
            by: DecidedBy::Schedule,
            reason: "hold observed, last check passed".to_string(),
        }),
    )
}

fn hook(second: i64, weight: f64, name: &str, ok: bool) -> Entry {
    entry(
        second,
        weight,
        Decision::Hook(HookRecord {
            hook: name.to_string(),
            event: "run".to_string(),
            ok,
            exit_code: Some(if ok { 0 } else { 3 }),
            duration_ms: 812,
            attempt: 1,
            output_tail: format!("{name} <done> & flushed\n"),
        }),
    )
}

/// 3 hours: verify, shadow, 5% → 25% → 50% (a reload and an operator pause on the way),
/// a write-switch hook, 100%, promoted; a check every 30 s.
fn three_hour_rollout() -> Vec<Entry> {
    let mut entries = vec![entry(
        0,
        0.0,
        Decision::Verify(ProbeRecord {
            name: "smoke".to_string(),
            passed: true,
            total: 2,
            failed: 0,
            detail: Vec::new(),
        }),
    )];
    entries.push(entry(
        5,
        0.0,
        Decision::Shadow(ProbeRecord {
            name: "of GET/HEAD at 100%".to_string(),
            passed: true,
            total: 4800,
            failed: 2,
            detail: vec!["GET /items/7: body differs".to_string()],
        }),
    ));
    let weights = [5.0, 25.0, 50.0, 100.0];
    let mut previous = 0.0;
    for (index, weight) in weights.into_iter().enumerate() {
        let start = 10 + index as i64 * 2700;
        entries.push(step(start, previous, weight, index));
        for k in 1..90 {
            let second = start + k * 30;
            // A bump at 25% that fails two checks and recovers.
            let error_rate = if index == 1 && (40..42).contains(&k) {
                0.02
            } else {
                0.004 + 0.001 * ((k % 5) as f64) / 5.0
            };
            entries.push(check(second, weight, error_rate, 40.0 + (k % 7) as f64));
            if index == 1 && k == 60 {
                entries.push(entry(
                    second + 1,
                    weight,
                    Decision::Reload(ReloadRecord {
                        ok: true,
                        changes: vec!["analysis".to_string()],
                        by: DecidedBy::Config,
                    }),
                ));
            }
            if index == 2 && k == 30 {
                entries.push(entry(
                    second + 1,
                    weight,
                    Decision::Operator(OperatorRecord {
                        command: "pause".to_string(),
                        client: "10.0.0.7:51234".to_string(),
                        accepted: true,
                        detail: None,
                    }),
                ));
            }
        }
        if index == 2 {
            entries.push(hook(start + 2695, weight, "switch-writes", true));
        }
        previous = weight;
    }
    entries.push(entry(
        10_810,
        100.0,
        Decision::State(StateRecord {
            from: "progressing".to_string(),
            to: "promoted".to_string(),
            by: DecidedBy::Schedule,
            reason: "last step done".to_string(),
        }),
    ));
    entries.push(hook(10_811, 100.0, "alert", true));
    entries
}

fn rollback() -> Vec<Entry> {
    let mut entries = vec![step(0, 0.0, 5.0, 0), check(30, 5.0, 0.004, 41.0)];
    entries.push(entry(
        41,
        5.0,
        Decision::Trip(TripRecord {
            requests: 40,
            errors: 40,
            error_rate: 1.0,
            threshold: 0.25,
            reason: "trip: 40 of NEW's last 40 requests failed (100.0% >= 25.0%)".to_string(),
        }),
    ));
    entries.push(entry(
        41,
        0.0,
        Decision::State(StateRecord {
            from: "progressing".to_string(),
            to: "rolled_back".to_string(),
            by: DecidedBy::Analysis,
            reason: "trip".to_string(),
        }),
    ));
    entries.push(hook(42, 0.0, "rollback-db", false));
    entries
}

fn no_external_reference(html: &str) {
    for forbidden in [
        "http://", "https://", "src=", "<script", "<link", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "the report holds {forbidden:?}");
    }
}

#[test]
fn a_three_hour_rollout_report_shows_every_decision_and_stays_small() {
    let entries = three_hour_rollout();
    assert!(entries.len() > 360, "{}", entries.len());
    let html = render("api", &entries, Format::Html);
    if let Some(path) = std::env::var_os("CUTOVER_REPORT_SAMPLE") {
        std::fs::write(path, &html).unwrap();
    }
    assert!(html.len() < 1024 * 1024, "{} bytes", html.len());
    no_external_reference(&html);
    let document = Html::parse_document(&html);
    assert!(
        document.errors.is_empty(),
        "{:?}",
        &document.errors[..3.min(document.errors.len())]
    );
    // Every decision has its row, with its time and its numbers.
    for (index, entry) in entries.iter().enumerate() {
        let selector = Selector::parse(&format!("tr#d{index}")).unwrap();
        let row = document
            .select(&selector)
            .next()
            .unwrap_or_else(|| panic!("decision {index} is missing"));
        let text: String = row.text().collect();
        assert!(text.contains(entry.decision.kind()), "{text}");
        assert_eq!(
            row.select(&Selector::parse("td.t").unwrap())
                .next()
                .unwrap()
                .attr("title"),
            Some(timestamp(entry.at).as_str())
        );
        if let Decision::Check(check) = &entry.decision {
            assert!(
                text.contains(&format!("{} req", check.new.requests)),
                "{text}"
            );
            assert!(text.contains(&percent(check.new.error_rate)), "{text}");
            assert_eq!(row.value().attr("class"), Some(check.outcome.label()));
        }
    }
    // Three charts, the limits drawn.
    assert_eq!(
        document
            .select(&Selector::parse("svg.chart").unwrap())
            .count(),
        3
    );
    assert!(html.contains("max_error_rate 1.00%"));
    assert!(html.contains("max_p99_latency 500 ms"));
    // The control points: 4 steps, verify, shadow, reload, operator, 2 hooks, promoted.
    let points = document
        .select(&Selector::parse("table#checkpoints tbody tr").unwrap())
        .count();
    assert_eq!(points, 11);
    assert!(html.contains("operator 10.0.0.7:51234"));
    // Text escaped, not markup.
    assert!(html.contains("switch-writes &lt;done&gt; &amp; flushed"));
    assert!(html.contains("@media print"));
    // Printed, passing checks keep their line but not their rule list.
    assert!(html.contains("tr.pass ul.rules{display:none}"));
}

#[test]
fn a_rollback_names_the_trip_as_its_evidence() {
    let entries = rollback();
    let html = render("api", &entries, Format::Html);
    no_external_reference(&html);
    let document = Html::parse_document(&html);
    let rows: Vec<String> = document
        .select(&Selector::parse("table#checkpoints tbody tr").unwrap())
        .map(|row| row.text().collect::<Vec<_>>().join("|"))
        .collect();
    let rolled_back = rows
        .iter()
        .find(|row| row.contains("progressing → rolled_back"))
        .expect("the rollback is a control point");
    assert!(
        rolled_back.contains("the trip|trip: 40 of NEW's last 40 requests failed"),
        "{rolled_back}"
    );
    assert!(rolled_back.contains("analysis: trip"), "{rolled_back}");
    assert!(
        rows.iter()
            .any(|row| row.contains("FAILED, exit 3, 812 ms")),
        "{rows:?}"
    );
    let facts = Facts::of("api", &entries);
    assert_eq!(facts.final_state, "rolled_back");
    assert_eq!(facts.final_weight, 0.0);
}

#[test]
fn the_markdown_report_holds_every_decision() {
    let entries = three_hour_rollout();
    let text = render("api", &entries, Format::Markdown);
    let decision_lines = text
        .lines()
        .filter(|line| line.starts_with("- 2026-11-30T"))
        .count();
    let hook_lines = entries
        .iter()
        .filter(|e| matches!(e.decision, Decision::Hook(_)))
        .count();
    assert_eq!(decision_lines, entries.len() + hook_lines);
    assert!(
        text.contains("| 2026-11-30T14:00:10Z | start → step 1: weight 5% (weight 0% → 5%) |"),
        "{text}"
    );
    assert!(text.contains(
        "max_error_rate fail: 2.00% (limit 1.00%; NEW 1200 req, OLD 22800 req; 99% bounds 1.20%..2.80%)"
    ));
    assert!(text.contains("latency_vs_old pass: 0.120 (limit 0.500;"));
    // A verify or shadow record counts the step, not requests: its verdict and detail,
    // never "1 of 1 failed" dressed as request counts.
    assert!(
        text.contains(
            "[shadow] weight 0%: shadow of GET/HEAD at 100%: passed (GET /items/7: body differs)"
        ),
        "{text}"
    );
    assert!(text.contains("| copies of live requests, compared with OLD's | passed (GET /items/7: body differs) |"), "{text}");
    assert!(text.contains("Final state **promoted**, NEW weight **100%**"));
}

#[test]
fn an_empty_history_still_renders() {
    let html = render("api", &[], Format::Html);
    assert!(html.contains("no decisions recorded"));
    assert!(render("api", &[], Format::Markdown).contains("0 decisions"));
}

/// A rollout of seconds labelled its time axis `03:17` at every tick (seen in Chromium):
/// short spans show seconds, so the ticks differ; long ones keep `HH:MM`.
#[test]
fn the_time_axis_of_a_short_history_shows_seconds() {
    let ticks = |entries: &[Entry]| -> Vec<String> {
        let html = render("api", entries, Format::Html);
        let page = Html::parse_document(&html);
        let first_svg = page
            .select(&Selector::parse("svg").unwrap())
            .next()
            .unwrap();
        first_svg
            .select(&Selector::parse(r#"text[text-anchor="middle"]"#).unwrap())
            .map(|t| t.text().collect())
            .collect()
    };
    let short = ticks(&rollback());
    assert_eq!(short.len(), 7, "{short:?}");
    let distinct: std::collections::BTreeSet<_> = short.iter().collect();
    assert_eq!(distinct.len(), short.len(), "{short:?}");
    assert!(short.iter().all(|t| t.len() == 8), "{short:?}");
    let long = ticks(&three_hour_rollout());
    assert!(long.iter().all(|t| t.len() == 5), "{long:?}");
}

#[test]
fn a_bound_at_99_5_percent_is_not_rounded_to_100() {
    // The newest-requests judgement runs at 1 - α/2: 99.5% beside checks at 99%.
    let rule = RuleRecord {
        rule: Rule::MaxErrorRate,
        outcome: Outcome::Fail,
        measured: Some(0.02),
        threshold: 0.01,
        new_requests: 1200,
        old_requests: 22800,
        bound: Some(Bound {
            confidence: 0.995,
            lower: 0.012,
            upper: 0.028,
        }),
        p_value: None,
        note: None,
    };
    let line = rule_line(&rule);
    assert!(line.contains("; 99.5% bounds 1.20%..2.80%"), "{line}");
    // A rule's note is part of its line: why it was skipped, or passed above its limit.
    let skipped = RuleRecord {
        outcome: Outcome::Skipped,
        measured: None,
        bound: None,
        note: Some("OLD has fewer than 100 requests: nothing to compare with".to_string()),
        ..rule
    };
    let line = rule_line(&skipped);
    assert!(
        line.ends_with("OLD 22800 req): OLD has fewer than 100 requests: nothing to compare with"),
        "{line}"
    );
}

#[test]
fn the_markdown_report_keeps_hook_output_and_reasons_as_text() {
    let mut entries = vec![hook(0, 0.0, "migrate", false)];
    if let Decision::Hook(record) = &mut entries[0].decision {
        record.output_tail = "done\n```\n<script>alert(1)</script>\n".to_string();
        record.hook = "<img src=x onerror=alert(2)>".to_string();
    }
    let text = render("api", &entries, Format::Markdown);
    assert!(!text.contains("<img"), "{text}");
    // The output stays whole inside a fence its own backticks cannot close.
    assert!(
        text.contains("\n  ````\n  done\n  ```\n  <script>alert(1)</script>\n  ````"),
        "{text}"
    );
    assert_eq!(text.matches("<script>").count(), 1, "{text}");
}

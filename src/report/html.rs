//! The HTML report: one file, inline CSS (with a print stylesheet) and inline SVG; no
//! script, no font, no image or link to fetch.

use std::fmt::Write;

use super::svg::{Chart, Series};
use super::{describe, rule_line, timestamp, Facts};
use crate::evidence::record::{Decision, Outcome, Rule};

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2433;margin:24px auto;max-width:1040px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5dae3;padding-bottom:4px}
.meta{color:#55607a}.summary{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.summary div{border:1px solid #d5dae3;border-radius:6px;padding:6px 12px}.summary b{display:block;font-size:18px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e3e7ee;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f5f9}td.t{white-space:nowrap;font-variant-numeric:tabular-nums;color:#55607a}
tr.fail td{background:#fdecec}tr.inconclusive td{color:#55607a}ul.rules{margin:2px 0 0 16px;padding:0;color:#3b4560}
.chart{width:100%;height:auto;display:block;margin:8px 0}.chart .grid{stroke:#e6e9ef}.chart .limit{stroke:#c0392b;stroke-dasharray:6 4}
.chart .event{stroke:#8e44ad;stroke-dasharray:2 3}.chart .ax{font-size:11px;fill:#55607a}.chart .ct{font-size:13px;font-weight:600;fill:#1d2433}
.chart .lim{font-size:11px;fill:#c0392b}.chart .ev{font-size:11px;fill:#8e44ad}.chart .fail{fill:#c0392b}
code{font-size:12px}
@media print{body{margin:0;max-width:none;font-size:11px}h2{break-after:avoid}tr,.chart{break-inside:avoid}
tr.fail td{background:none;font-weight:600}th{background:none}@page{margin:14mm}
tr.pass ul.rules{display:none}}
"#;

/// Escapes text for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(facts: &Facts<'_>) -> String {
    let mut out = String::with_capacity(64 * 1024 + facts.entries.len() * 600);
    let name = escape(facts.service);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cutover report: {name}</title><style>{STYLE}</style></head><body>"
    );
    let span = match (facts.first, facts.last) {
        (Some(first), Some(last)) => format!("{} to {}", timestamp(first), timestamp(last)),
        _ => "no decisions recorded".to_string(),
    };
    let _ = write!(
        out,
        "<h1>Migration report: {name}</h1><p class=\"meta\">{span} · from the decision log</p>"
    );
    let [pass, fail, inconclusive] = facts.checks;
    let _ = write!(
        out,
        "<div class=\"summary\"><div>final state<b>{}</b></div><div>NEW weight<b>{}%</b></div><div>checks passed<b>{pass}</b></div><div>checks failed<b>{fail}</b></div><div>inconclusive<b>{inconclusive}</b></div><div>decisions<b>{}</b></div></div>",
        escape(&facts.final_state),
        facts.final_weight,
        facts.entries.len()
    );
    out.push_str("<h2>Weight, errors and latency</h2>");
    for chart in charts(facts) {
        out.push_str(&chart);
    }
    checklist(&mut out, facts);
    hooks(&mut out, facts);
    decisions(&mut out, facts);
    out.push_str("</body></html>\n");
    out
}

/// NEW's points, OLD's points, NEW's failed checks: (seconds, value) each.
type Points = (Vec<(f64, f64)>, Vec<(f64, f64)>, Vec<(f64, f64)>);

fn charts(facts: &Facts<'_>) -> Vec<String> {
    let Some(first) = facts.first else {
        return Vec::new();
    };
    let seconds = |at: time::OffsetDateTime| (at - first).as_seconds_f64();
    let span = facts.last.map_or(1.0, seconds);
    let mut weight = Vec::new();
    let (mut new_errors, mut old_errors, mut new_p99, mut old_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut error_marks, mut p99_marks) = (Vec::new(), Vec::new());
    let (mut error_limit, mut p99_limit) = (None, None);
    let mut events = Vec::new();
    for entry in facts.entries {
        let x = seconds(entry.at);
        if weight.last().map(|w: &(f64, f64)| w.1) != Some(entry.weight) {
            weight.push((x, entry.weight));
        }
        match &entry.decision {
            Decision::Check(check) => {
                if check.new.requests > 0 {
                    new_errors.push((x, check.new.error_rate * 100.0));
                }
                if check.old.requests > 0 {
                    old_errors.push((x, check.old.error_rate * 100.0));
                }
                new_p99.extend(check.new.p99_ms.map(|p| (x, p)));
                old_p99.extend(check.old.p99_ms.map(|p| (x, p)));
                for rule in &check.rules {
                    match rule.rule {
                        Rule::MaxErrorRate => error_limit = Some(rule.threshold * 100.0),
                        Rule::MaxP99Latency => p99_limit = Some(rule.threshold),
                        _ => {}
                    }
                }
                if check.outcome == Outcome::Fail {
                    error_marks.push((x, check.new.error_rate * 100.0));
                    p99_marks.extend(check.new.p99_ms.map(|p| (x, p)));
                }
            }
            Decision::State(state) if state.to != "progressing" => {
                events.push((state.to.clone(), x));
            }
            _ => {}
        }
    }
    let line = |label, color, points, marks| Series {
        label,
        color,
        points,
        step: false,
        marks,
    };
    let weight_chart = Chart {
        title: "NEW weight (%)",
        series: vec![Series {
            label: "NEW weight",
            color: "#2c6fbb",
            points: weight,
            step: true,
            marks: Vec::new(),
        }],
        limits: Vec::new(),
        events: events.clone(),
        unit: |v| format!("{v:.0}%"),
        span,
        start: first,
    };
    // NEW against OLD, NEW's failed checks marked, the configured limit dashed.
    let versus = |title,
                  (new, old, marks): Points,
                  limit: Option<(String, f64)>,
                  unit: fn(f64) -> String| Chart {
        title,
        series: vec![
            line("NEW", "#d35400", new, marks),
            line("OLD", "#7f8c8d", old, Vec::new()),
        ],
        limits: limit.into_iter().collect(),
        events: events.clone(),
        unit,
        span,
        start: first,
    };
    let error_chart = versus(
        "Error rate per check (%)",
        (new_errors, old_errors, error_marks),
        error_limit.map(|l| (format!("max_error_rate {l:.2}%"), l)),
        |v| format!("{v:.2}%"),
    );
    let p99_chart = versus(
        "p99 latency per check (ms)",
        (new_p99, old_p99, p99_marks),
        p99_limit.map(|l| (format!("max_p99_latency {l:.0} ms"), l)),
        |v| format!("{v:.0}"),
    );
    vec![
        weight_chart.render(),
        error_chart.render(),
        p99_chart.render(),
    ]
}

fn checklist(out: &mut String, facts: &Facts<'_>) {
    out.push_str("<h2>Control points</h2><table id=\"checkpoints\"><thead><tr><th>time</th><th>control point</th><th>what was checked</th><th>evidence</th><th>decided by</th></tr></thead><tbody>");
    for point in &facts.control_points {
        let _ = write!(
            out,
            "<tr><td class=\"t\"><a href=\"#d{}\">{}</a></td>",
            point.index,
            clock_of(point.at)
        );
        for column in point.columns() {
            let _ = write!(out, "<td>{}</td>", escape(column));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn hooks(out: &mut String, facts: &Facts<'_>) {
    out.push_str("<h2>Hook runs</h2><table id=\"hooks\"><thead><tr><th>time</th><th>hook</th><th>event</th><th>result</th><th>exit</th><th>duration</th><th>output (tail)</th></tr></thead><tbody>");
    let mut any = false;
    for entry in facts.entries {
        let Decision::Hook(hook) = &entry.decision else {
            continue;
        };
        any = true;
        let _ = write!(
            out,
            "<tr class=\"{}\"><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td><code>{}</code></td></tr>",
            if hook.ok { "pass" } else { "fail" },
            clock_of(entry.at),
            escape(&hook.hook),
            escape(&hook.event),
            if hook.ok { "ok" } else { "failed" },
            hook.exit_code.map_or("-".to_string(), |c| c.to_string()),
            hook.duration_ms,
            escape(hook.output_tail.trim_end())
        );
    }
    if !any {
        out.push_str("<tr><td colspan=\"7\">no hook ran</td></tr>");
    }
    out.push_str("</tbody></table>");
}

fn decisions(out: &mut String, facts: &Facts<'_>) {
    out.push_str("<h2>Every decision</h2><table id=\"decisions\"><thead><tr><th>time</th><th>kind</th><th>weight</th><th>decision and numbers</th></tr></thead><tbody>");
    for (index, entry) in facts.entries.iter().enumerate() {
        let class = match &entry.decision {
            Decision::Check(check) => check.outcome.label(),
            Decision::Trip(_) => "fail",
            _ => "other",
        };
        let _ = write!(
            out,
            "<tr id=\"d{index}\" class=\"{class}\"><td class=\"t\" title=\"{}\">{}</td><td>{}</td><td>{}%</td><td>{}",
            timestamp(entry.at),
            clock_of(entry.at),
            entry.decision.kind(),
            entry.weight,
            escape(&describe(entry))
        );
        if let Decision::Check(check) = &entry.decision {
            out.push_str("<ul class=\"rules\">");
            for rule in &check.rules {
                let _ = write!(out, "<li>{}</li>", escape(&rule_line(rule)));
            }
            out.push_str("</ul>");
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
}

/// `14:30:05`, UTC.
fn clock_of(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
}

//! The Markdown report (`--format md`): the same facts as the HTML page, as text.

use std::fmt::Write;

use super::{describe, rule_line, timestamp, Facts};
use crate::evidence::record::Decision;

pub(super) fn text(facts: &Facts<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024 + facts.entries.len() * 400);
    let _ = writeln!(out, "# Migration report: {}\n", plain(facts.service));
    if let (Some(first), Some(last)) = (facts.first, facts.last) {
        let _ = writeln!(
            out,
            "{} to {}, from the decision log.\n",
            timestamp(first),
            timestamp(last)
        );
    }
    let [pass, fail, inconclusive] = facts.checks;
    let _ = writeln!(
        out,
        "Final state **{}**, NEW weight **{}%**; checks: {pass} passed, {fail} failed, {inconclusive} inconclusive; {} decisions.\n",
        facts.final_state,
        facts.final_weight,
        facts.entries.len()
    );
    out.push_str("## Control points\n\n| time | control point | what was checked | evidence | decided by |\n|---|---|---|---|---|\n");
    for point in &facts.control_points {
        let _ = write!(out, "| {} |", timestamp(point.at));
        for column in point.columns() {
            let _ = write!(out, " {} |", cell(column));
        }
        out.push('\n');
    }
    out.push_str("\n## Hook runs\n\n");
    let mut any = false;
    for entry in facts.entries {
        if let Decision::Hook(hook) = &entry.decision {
            any = true;
            let _ = writeln!(out, "- {} {}", timestamp(entry.at), plain(&describe(entry)));
            let tail = hook.output_tail.trim_end();
            if !tail.is_empty() {
                let fence = fence(tail);
                let _ = writeln!(
                    out,
                    "\n  {fence}\n  {}\n  {fence}",
                    tail.replace('\n', "\n  ")
                );
            }
        }
    }
    if !any {
        out.push_str("No hook ran.\n");
    }
    out.push_str("\n## Every decision\n\n");
    for entry in facts.entries {
        let _ = writeln!(
            out,
            "- {} [{}] weight {}%: {}",
            timestamp(entry.at),
            entry.decision.kind(),
            entry.weight,
            plain(&describe(entry))
        );
        if let Decision::Check(check) = &entry.decision {
            for rule in &check.rules {
                let _ = writeln!(out, "  - {}", plain(&rule_line(rule)));
            }
        }
    }
    out
}

/// A table cell: no line breaks, no column separators.
fn cell(text: &str) -> String {
    plain(text).replace('|', "\\|").replace('\n', " ")
}

/// Text that renderers show as text: Markdown passes raw HTML through, and a hook's
/// output or a reason may hold some (`<script>`, `<img onerror=…>`).
fn plain(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;")
}

/// A code fence longer than any run of backticks in `text`, which would close a shorter one.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

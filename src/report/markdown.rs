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
/// output or a reason may hold some (`<script>`, `<img onerror=…>`). A code span (`` `…` ``)
/// is left as it is: nothing inside one is interpreted, an entity included, so an escaped
/// `<` there would show as `&lt;`. Outside spans a backslash is doubled and `[` escaped,
/// so that every backtick this finds is one a renderer finds too (`` \` `` is no opener;
/// a link's destination cannot swallow one).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        escape_into(&mut out, &rest[..open]);
        let ticks = &rest[open..];
        let run = ticks.len() - ticks.trim_start_matches('`').len();
        let inside = &ticks[run..];
        match closing_run(inside, run) {
            Some(end) => {
                out.push_str(&ticks[..run + end + run]);
                rest = &inside[end + run..];
            }
            // A run of backticks that nothing closes is text.
            None => {
                out.push_str(&ticks[..run]);
                rest = inside;
            }
        }
    }
    escape_into(&mut out, rest);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '\\' => out.push_str("\\\\"),
            '[' => out.push_str("\\["),
            c => out.push(c),
        }
    }
}

/// Where in `text` the first run of exactly `run` backticks starts (what closes a code
/// span that opened with as many).
fn closing_run(text: &str, run: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] == b'`' {
            i += 1;
        }
        if i - start == run {
            return Some(start);
        }
    }
    None
}

/// A code fence longer than any run of backticks in `text`, which would close a shorter one.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn html_is_escaped_outside_code_spans_and_left_alone_inside_them() {
        assert_eq!(
            plain("<script> & `a<b && c` <b>"),
            "&lt;script> &amp; `a<b && c` &lt;b>"
        );
        // A span opened by two backticks closes only at two: one inside is text.
        assert_eq!(plain("``x`<y`` <z"), "``x`<y`` &lt;z");
        // A backtick that nothing closes is text; what follows it is escaped.
        assert_eq!(plain("it's ` <i> open"), "it's ` &lt;i> open");
        assert_eq!(plain("``` `<a>`"), "``` `<a>`");
        assert_eq!(plain(""), "");
        // A backslash before a backtick: shown as written, and the backtick after it opens
        // a span for a renderer as it does here (the backslash itself is escaped).
        assert_eq!(
            plain(r"\`<img onerror=x>`"),
            r"\\`<img onerror=x>`",
            "inside the span it is text"
        );
        assert_eq!(plain(r"a\<b"), r"a\\&lt;b");
        // A link cannot form, so its destination cannot take a backtick away.
        assert_eq!(plain("[a](`) <img src=x> `"), r"\[a](`) <img src=x> `");
    }
}

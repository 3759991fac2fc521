//! Durations accept exactly the documented units and are bounded (issue 12, issue 13
//! defect 7): what `validate` passes can never overflow a deadline on the request path.

use std::path::Path;

use cutover::config::{self, ConfigErrors};

fn config_with(service_extra: &str, limits: &str) -> String {
    format!(
        r#"
listeners:
  - addr: "127.0.0.1:0"
{limits}
services:
  - name: api
    old: {{ backends: [{{ addr: "127.0.0.1:9001" }}] }}
    new: {{ backends: [{{ addr: "127.0.0.1:9002" }}] }}
{service_extra}
"#
    )
}

fn errors(source: &str) -> ConfigErrors {
    match config::load::from_str(source, Path::new("/tmp/cutover-durations/cutover.yaml")) {
        Ok(_) => panic!("expected the config to be refused:\n{source}"),
        Err(errors) => errors,
    }
}

/// The error at `line` (1-based, of `source`), as `validate` prints it.
fn error_at(errors: &ConfigErrors, line: usize) -> String {
    errors
        .0
        .iter()
        .find(|e| e.mark.line as usize == line)
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("no error at line {line}: {errors}"))
}

fn line_of(source: &str, needle: &str) -> usize {
    source
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in the source"))
}

#[test]
fn thirty_months_is_refused_with_a_hint_and_its_position() {
    let source = config_with(
        "    rollout:\n      steps:\n        - { weight: 10%, hold: 30M }\n",
        "",
    );
    let errors = errors(&source);
    let line = line_of(&source, "hold: 30M");
    let shown = error_at(&errors, line);
    assert!(
        shown.contains(&format!("cutover.yaml:{line}:"))
            && shown.contains("`30M`: unknown unit `M`; durations use ms, s, m, h, d (e.g. 30m"),
        "{shown}"
    );
}

#[test]
fn years_fractions_and_words_are_refused() {
    for (value, hint) in [
        ("1y", "unknown unit `y`"),
        ("1.5h", "fractions are not accepted"),
        ("30 minutes", "without spaces"),
    ] {
        let source = config_with(&format!("    timeouts: {{ request: \"{value}\" }}\n"), "");
        let shown = error_at(&errors(&source), line_of(&source, "timeouts:"));
        assert!(shown.contains(hint), "{value}: {shown}");
    }
}

#[test]
fn durations_that_would_overflow_a_deadline_are_refused() {
    let huge = "18446744073709551615s";
    let source = config_with(&format!("    timeouts: {{ request: {huge} }}\n"), "");
    let shown = error_at(&errors(&source), line_of(&source, "timeouts:"));
    assert!(shown.contains("longer than the maximum of 30d"), "{shown}");

    let source = config_with("", &format!("limits: {{ header_read_timeout: {huge} }}"));
    let shown = error_at(&errors(&source), line_of(&source, "header_read_timeout"));
    assert!(shown.contains("longer than the maximum of 30d"), "{shown}");
}

#[test]
fn the_documented_units_and_days_load() {
    let source = config_with(
        "    timeouts: { connect: 250ms, request: 1h30m, idle: 90s }\n    rollout:\n      steps:\n        - { weight: 10%, hold: 1d }\n",
        "limits: { shutdown_grace: 30d }",
    );
    let config = config::load::from_str(&source, Path::new("/tmp/cutover-durations/c.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let api = config.service("api").expect("service api");
    assert_eq!(api.timeouts.request.as_secs(), 5400);
    assert_eq!(config.limits.shutdown_grace.as_secs(), 30 * 86400);
}

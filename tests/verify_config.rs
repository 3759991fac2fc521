//! The `verify` long form and `shadow` methods through the binary: `validate` errors with
//! their positions, its warning for copied methods with side effects, `plan`'s view of a
//! benchmark, and the JSON Schema accepting both forms.

mod support;

use std::path::Path;
use std::process::Output;

use support::*;

fn run(dir: &Path, yaml: &str, args: &[&str]) -> Output {
    let path = dir.join("cutover.yaml");
    std::fs::write(&path, yaml).unwrap();
    std::process::Command::new(binary())
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap()
}

fn config(steps: &str) -> String {
    format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nservices:\n  - name: api\n    old:\n      backends:\n        - addr: \"127.0.0.1:9001\"\n        - addr: \"127.0.0.1:9002\"\n    new:\n      backends:\n        - addr: \"127.0.0.1:9003\"\n    timeouts: {{ connect: 1s, request: 4s }}\n    rollout:\n      steps:\n{steps}        - weight: 100%\n    smoke:\n      - {{ path: /healthz }}\n"
    )
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_long_form_is_validated_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config(
        "        - verify:\n            smoke: true\n            benchmrk: {}\n        - verify:\n            benchmark: { rate: 5, duration: 2s, path: /x, max_p99_ratio: 0.5 }\n        - verify:\n            benchmark: { rate: 50, duration: 30s }\n        - verify: {}\n        - verify: yes-please\n",
    );
    let output = run(dir.path(), &bad, &["validate"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in [
        ":17:13: unknown key `benchmrk` (did you mean `benchmark`?)",
        ":19:74: `max_p99_ratio` is NEW's p99 over OLD's, at least 1",
        ":19:24: a benchmark of 10 request(s) per pool (5/s for 2s) cannot tell a p99",
        ":21:24: missing `path`",
        ":22:19: this `verify` step checks nothing",
        ":23:19: `verify: yes-please`: write `verify: smoke`",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{stderr}");
    }
    let few =
        config("        - verify:\n            benchmark: { rate: 10, duration: 5s, path: /x }\n");
    let output = run(dir.path(), &few, &["validate"]);
    let (_, stderr) = text(&output);
    assert!(
        stderr.contains(
            ":16:24: a benchmark of 50 request(s) per pool (10/s for 5s) cannot tell a p99"
        ),
        "{stderr}"
    );
}

#[test]
fn plan_shows_the_benchmark_and_its_worst_case() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(
        "        - verify: smoke\n        - verify:\n            smoke: true\n            benchmark: { rate: 50, duration: 30s, path: /api/v1/items, max_p99_ratio: 1.3, max_error_rate: 0.1% }\n",
    );
    let output = run(dir.path(), &good, &["validate"]);
    assert_eq!(output.status.code(), Some(0), "{:?}", text(&output));
    let output = run(dir.path(), &good, &["plan"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // Smoke alone: 1 request × 1 NEW backend × (1s + 4s).
    assert!(
        stdout.contains("verify: 1 smoke request(s) against every NEW backend; at most 5s"),
        "{stdout}"
    );
    // Then the benchmark: 5s for the smoke request, 30s of load, 5s for the last answer.
    assert!(
        stdout.contains(
            "verify: 1 smoke request(s) against every NEW backend, then benchmark GET /api/v1/items at 50/s for 30s against OLD and NEW (NEW p99 at most 1.3 x OLD's, NEW errors at most 0.1%); at most 40s"
        ),
        "{stdout}"
    );
    // The benchmark's 30s count in the earliest start of the step after it.
    assert!(stdout.contains("30s+        100%  weight 100%"), "{stdout}");
}

#[test]
fn the_schema_takes_both_forms() {
    let output = std::process::Command::new(binary())
        .arg("schema")
        .output()
        .unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let as_json = |yaml_steps: serde_json::Value| {
        serde_json::json!({
            "services": [{ "name": "api", "old": { "backends": [{ "addr": "127.0.0.1:1" }] },
                "new": { "backends": [{ "addr": "127.0.0.1:2" }] },
                "rollout": { "steps": yaml_steps } }]
        })
    };
    let good = as_json(serde_json::json!([
        { "verify": "smoke" },
        { "verify": { "smoke": true, "benchmark": { "rate": 50, "duration": "30s", "path": "/x", "max_p99_ratio": 1.3, "max_error_rate": "0.1%" } } }
    ]));
    assert!(
        validator.is_valid(&good),
        "{:?}",
        validator
            .iter_errors(&good)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    for bad in [
        serde_json::json!([{ "verify": "fast" }]),
        serde_json::json!([{ "verify": { "benchmrk": {} } }]),
        serde_json::json!([{ "verify": { "benchmark": { "rate": 50, "speed": 1 } } }]),
    ] {
        assert!(!validator.is_valid(&as_json(bad.clone())), "{bad}");
    }
}

#[test]
fn validate_warns_when_a_shadow_step_copies_a_method_with_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let risky = config(
        "        - shadow: { percent: 10%, hold: 1m, max_mismatch: 1%, methods: [GET, POST, DELETE] }\n",
    );
    let output = run(dir.path(), &risky, &["validate"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a warning is not an error: {stderr}"
    );
    assert!(stdout.contains(": ok"), "{stdout}");
    let warning = "warning: service `api`, step 1 (shadow) copies POST, DELETE: methods with side effects. \
                   OLD serves each copied request twice (three times with `noise: auto`) and NEW once";
    assert!(stderr.contains(warning), "no `{warning}` in:\n{stderr}");
    let safe = config(
        "        - shadow: { percent: 10%, hold: 1m, max_mismatch: 1%, methods: [GET, HEAD, OPTIONS, TRACE] }\n",
    );
    let output = run(dir.path(), &safe, &["validate"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

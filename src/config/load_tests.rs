use std::time::Duration;

use http::HeaderName;

use super::*;
use crate::config::model::*;

const MINIMAL: &str = r#"
listeners:
  - addr: "127.0.0.1:0"
services:
  - name: api
    old:
      backends:
        - { addr: "127.0.0.1:9001" }
    new:
      backends:
        - { addr: "127.0.0.1:9002", weight: 2 }
"#;

fn load_str(source: &str) -> Result<Config, ConfigErrors> {
    from_str(source, Path::new("/tmp/cutover-test/cutover.yaml"))
}

fn errors(source: &str) -> Vec<ConfigError> {
    match load_str(source) {
        Ok(_) => panic!("expected errors for:\n{source}"),
        Err(errors) => errors.0,
    }
}

/// `MINIMAL` and `more` after it: settings of its `api` service, or more services.
fn minimal_and(more: &str) -> String {
    format!("{MINIMAL}{more}")
}

/// The one error whose message contains `needle`.
fn error_with<'a>(errors: &'a [ConfigError], needle: &str) -> &'a ConfigError {
    errors
        .iter()
        .find(|e| e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error containing {needle:?} in {errors:#?}"))
}

#[test]
fn a_minimal_config_gets_the_defaults() {
    let config = load_str(MINIMAL).unwrap();
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.admin.addr, "127.0.0.1:9901".parse().unwrap());
    assert!(config.admin.token.is_none());
    assert_eq!(config.state_dir, Path::new("/tmp/cutover-test/state"));
    let api = &config.services[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.weight, Weight::ZERO);
    assert_eq!(api.balance, Balance::RoundRobin);
    assert_eq!(api.retries, 2);
    assert_eq!(api.timeouts, Timeouts::default());
    assert_eq!(api.matcher.path_prefix, "/");
    assert_eq!(api.new.backends[0].weight, 2);
    assert!(api.rollout.is_none());
    assert_eq!(config.origin.version.len(), 16);
}

#[test]
fn a_misspelled_key_names_the_key_and_its_line() {
    let source = MINIMAL.replace("    old:", "    olld:\n      backends: []\n    old:");
    let errors = errors(&source);
    let error = error_with(&errors, "`olld`");
    assert_eq!(error.mark.line, 6);
    assert_eq!(error.mark.col, 5);
    assert_contains!(error.message, "did you mean `old`");
    assert!(
        error
            .to_string()
            .starts_with("/tmp/cutover-test/cutover.yaml:6:5: "),
        "{error}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let source = r#"
listeners:
  - addr: "nowhere"
admin:
  addr: "0.0.0.0:9901"
limits:
  header_read_timeout: 10
  max_header_bytes: lots
services:
  - name: API
    weight: 120%
    balance: fastest
    old:
      backends:
        - { addr: "10.0.0.5" }
    new:
      backends: []
  - name: other
    colour: blue
    old: { backends: [{ addr: "10.0.0.6:80" }] }
    new: { backends: [{ addr: "10.0.0.7:80" }] }
"#;
    let errors = errors(source);
    let expect = [
        ("not an address", 3),
        ("reachable from other hosts", 5),
        ("needs a unit", 7),
        ("not a size", 8),
        ("may hold only a-z", 10),
        ("outside 0%..100%", 11),
        ("unknown balance", 12),
        ("not a backend address", 15),
        ("needs at least one backend", 17),
        ("`colour`", 19),
    ];
    for (needle, line) in expect {
        assert_eq!(error_with(&errors, needle).mark.line, line, "{needle}");
    }
    let lines: Vec<u32> = errors.iter().map(|e| e.mark.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "errors come in file order");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errors = errors("listeners:\n  - addr: [1, 2\nservices: x\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.starts_with("invalid YAML"));
    assert!(errors[0].mark.line >= 2);
}

#[test]
fn service_names_are_unique_and_matches_reachable() {
    let source = minimal_and(
        r#"  - name: api
    old: { backends: [{ addr: "127.0.0.1:1" }] }
    new: { backends: [{ addr: "127.0.0.1:2" }] }
"#,
    );
    let errors = errors(&source);
    let twice = error_with(&errors, "defined twice");
    assert_eq!(twice.mark.line, 12);
    assert_contains!(twice.message, "line 5");
    error_with(&errors, "never reached");
}

#[test]
fn steps_must_name_hooks_that_exist() {
    let source = minimal_and(
        r#"    rollout:
      steps:
        - gate: replication-caught-up
        - weight: 5%
          hold: 10m
        - run: switch-writes
    hooks:
      replication-caught-up:
        exec: ["/bin/true"]
"#,
    );
    let errors = errors(&source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("no hook named `switch-writes`"));
    assert!(errors[0].message.contains("`replication-caught-up`"));
    assert_eq!(errors[0].mark.line, 17);
}

#[test]
fn a_verify_step_needs_smoke_requests_and_the_one_form() {
    let source = minimal_and(
        r#"    rollout:
      steps:
        - verify: smoke
        - weight: 100%
"#,
    );
    let found = errors(&source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].message.contains("has none: add a `smoke:` list"));
    let source = minimal_and(
        r#"    rollout:
      steps:
        - verify: everything
    smoke:
      - { path: /healthz }
"#,
    );
    let errors = errors(&source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        error_with(&errors, "write `verify: smoke` or `verify: { smoke: true")
            .mark
            .line,
        14
    );
}

/// A verify step's smoke requests, one plain and one with every expectation.
const GOOD_SMOKE: &str = r#"    rollout:
      steps:
        - verify: smoke
        - weight: 100%
    smoke:
      - { path: /healthz }
      - { method: POST, path: /echo, body: '{"a":1}', headers: { Content-Type: application/json },
          expect_status: [200, 201], expect_body_contains: '"a":1', expect_header: { content-type: JSON } }
"#;

#[test]
fn smoke_requests_are_read_whole() {
    let source = format!(
        "{MINIMAL}{GOOD_SMOKE}{}",
        r#"      - { path: /bad, expect_status: [] }
      - { path: /bad, expect_status: 700 }
"#
    );
    let errors = errors(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors
        .iter()
        .all(|e| e.message.contains("`expect_status` is a status code")));
    let good = format!("{MINIMAL}{GOOD_SMOKE}");
    let config = load_str(&good).expect("valid");
    let smoke = &config.services[0].smoke;
    assert_eq!(smoke[0].expect_status, vec![200]);
    assert_eq!(smoke[1].method, http::Method::POST);
    assert_eq!(smoke[1].expect_status, vec![200, 201]);
    assert_eq!(smoke[1].body.as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(smoke[1].headers[0].0, "content-type");
    assert_eq!(smoke[1].expect_header[0].1, "json");
    assert_eq!(
        config.services[0].rollout.as_ref().unwrap().steps[0].kind,
        crate::config::StepKind::Verify(crate::config::VerifySpec::SMOKE)
    );
}

#[test]
fn shadow_steps_are_read_whole_and_bad_values_named() {
    let source = minimal_and(
        r#"    rollout:
      steps:
        - shadow: { percent: 0%, hold: 10m, max_wait: 5m, max_mismatch: 1%, noise: sometimes,
                    methods: [GET, "NOT A METHOD"], compare: { ignore_json: ["timestamp"], max_body: lots } }
        - weight: 100%
"#,
    );
    let found = errors(&source);
    for needle in [
        "copies more than 0%",
        "write `auto` or `off`",
        "is not an HTTP method",
        "is not a JSON path",
        "`max_wait` must be at least the step's `hold`",
    ] {
        error_with(&found, needle);
    }
    assert_eq!(found.len(), 6, "{found:#?}");
    let good = minimal_and(
        r#"    rollout:
      steps:
        - shadow: { percent: 50%, hold: 10m, max_wait: 1h, max_mismatch: 1%, noise: auto, methods: [GET, POST],
                    compare: { headers: [content-type], ignore_json: ["$.meta.at"], max_body: 64KiB } }
        - shadow: { percent: 100%, hold: 1m, max_mismatch: 0% }
        - weight: 100%
"#,
    );
    let config = load_str(&good).expect("valid");
    let steps = &config.services[0].rollout.as_ref().unwrap().steps;
    let crate::config::StepKind::Shadow(spec) = &steps[0].kind else {
        panic!("{steps:?}")
    };
    assert_eq!(spec.percent, 0.5);
    assert_eq!(spec.max_wait, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(spec.methods, vec![http::Method::GET, http::Method::POST]);
    assert!(spec.copy_bodies && spec.noise_auto);
    assert_eq!(
        spec.ignore_json,
        vec![vec!["meta".to_string(), "at".to_string()]]
    );
    assert_eq!(spec.max_body, 64 * 1024);
    assert_eq!(spec.compare_headers[0], "content-type");
    let crate::config::StepKind::Shadow(spec) = &steps[1].kind else {
        panic!("{steps:?}")
    };
    assert_eq!(
        spec.methods,
        vec![http::Method::GET, http::Method::HEAD, http::Method::OPTIONS]
    );
    assert!(
        !spec.copy_bodies,
        "bodies only for methods listed explicitly"
    );
    assert_eq!((spec.min_requests, spec.max_in_flight), (100, 256));
    assert_eq!(spec.max_wait, None, "3 × the hold, at least 10 minutes");
}

#[test]
fn weights_only_rise() {
    let source = minimal_and(
        r#"    rollout:
      steps:
        - weight: 25%
        - weight: 20%
"#,
    );
    let errors = errors(&source);
    let error = error_with(&errors, "lowers the weight to 20%");
    assert_eq!(error.mark.line, 15);
}

#[test]
fn a_step_does_one_thing() {
    let source = minimal_and(
        r#"    rollout:
      steps:
        - weight: 5%
          pause: {}
        - hold: 5m
        - {}
"#,
    );
    let errors = errors(&source);
    error_with(&errors, "has both `weight` and `pause`");
    error_with(&errors, "`hold` belongs to a `weight` step");
    error_with(&errors, "a step needs one of");
}

#[test]
fn the_schedule_shorthand_expands_to_the_classic_steps() {
    let source = minimal_and(
        r#"    rollout:
      schedule: { start: 5%, step: 20%, every: 30m }
      analysis:
        max_error_rate: 1%
"#,
    );
    let config = load_str(&source).unwrap();
    let rollout = config.services[0].rollout.as_ref().unwrap();
    let weights: Vec<f64> = rollout
        .steps
        .iter()
        .map(|s| match s.kind {
            StepKind::Weight { weight, .. } => weight.percent(),
            _ => panic!("only weight steps"),
        })
        .collect();
    assert_eq!(weights, vec![5.0, 25.0, 45.0, 65.0, 85.0, 100.0]);
    let holds: Vec<Duration> = rollout
        .steps
        .iter()
        .map(|s| match s.kind {
            StepKind::Weight { hold, .. } => hold,
            _ => Duration::ZERO,
        })
        .collect();
    assert_eq!(holds[..5], [Duration::from_secs(1800); 5]);
    assert_eq!(holds[5], Duration::ZERO);
    let analysis = rollout.analysis.as_ref().unwrap();
    assert_eq!(analysis.interval, Duration::from_secs(30));
    assert_eq!(analysis.window, Duration::from_secs(120));
    assert_eq!(analysis.min_requests, 100);
    assert_eq!(analysis.failure_threshold, 3);
    assert_eq!(analysis.rules.max_error_rate, Some(0.01));
}

#[test]
fn analysis_needs_a_rule() {
    let source = format!("{MINIMAL}    rollout:\n      schedule: {{ start: 5%, step: 20%, every: 30m }}\n      analysis: {{ interval: 10s }}\n");
    let errors = errors(&source);
    error_with(&errors, "has no rule");
}

#[test]
fn the_admin_token_file_is_read_and_required_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "s3cret\n").unwrap();
    let source = MINIMAL.replace(
        "services:",
        "admin:\n  addr: \"0.0.0.0:9901\"\n  token_file: admin.token\nservices:",
    );
    let config = from_str(&source, &dir.path().join("cutover.yaml")).unwrap();
    assert_eq!(config.admin.token.as_deref(), Some("s3cret"));
    assert!(
        !format!("{:?}", config.admin).contains("s3cret"),
        "tokens never reach logs"
    );

    let missing = source.replace("admin.token", "missing.token");
    let errors = from_str(&missing, &dir.path().join("cutover.yaml"))
        .unwrap_err()
        .0;
    error_with(&errors, "cannot read token file");
}

#[test]
fn tls_files_must_be_readable() {
    let source = MINIMAL.replace(
        "  - addr: \"127.0.0.1:0\"",
        "  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - { cert: tls/missing.crt, key: tls/missing.key }",
    );
    let errors = errors(&source);
    let error = error_with(&errors, "cannot read certificate");
    assert_eq!(error.mark.line, 6);
    assert_contains!(error.message, "/tmp/cutover-test/tls/missing.crt");
}

#[test]
fn hooks_are_checked() {
    let source = minimal_and(
        r#"    hooks:
      none: { timeout: 5s }
      both: { exec: ["/bin/true"], http: { url: "http://127.0.0.1:1/" } }
      missing-script: { exec: ["hooks/does-not-exist.sh"] }
      bad-url: { http: { url: "ftp://x/" } }
      bad-event: { exec: ["/bin/true"], on: [rollbacks] }
      bad-deadline: { exec: ["/bin/true"], on_deadline: explode }
"#,
    );
    let errors = errors(&source);
    error_with(&errors, "needs `exec` or `http`");
    error_with(&errors, "both `exec` and `http`");
    error_with(&errors, "does-not-exist.sh");
    error_with(&errors, "not an http:// or https:// URL");
    error_with(&errors, "unknown event `rollbacks`");
    error_with(&errors, "`on_deadline` is `pause` or `rollback`");
}

#[test]
fn durations_percentages_and_sizes() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
    assert!(parse_duration("soon").is_err());
    assert_eq!(parse_percent("5%"), Ok(5.0));
    assert_eq!(parse_percent("0.5%"), Ok(0.5));
    assert_eq!(parse_percent("25"), Ok(25.0));
    assert!(parse_percent("101%").is_err());
    assert!(parse_percent("-1%").is_err());
    assert!(parse_percent("five").is_err());
    assert_eq!(parse_bytes("64KiB"), Ok(65536));
    assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
    assert_eq!(parse_bytes("4096"), Ok(4096));
    assert!(parse_bytes("64 potatoes").is_err());
}

#[test]
fn hosts_and_sticky_modes() {
    let source = MINIMAL.replace(
        "    old:",
        "    match: { hosts: [\"API.example.com\", \"*.api.example.com\"], path_prefix: /v1 }\n    sticky: { header: X-User-Id }\n    old:",
    );
    let config = load_str(&source).unwrap();
    let api = &config.services[0];
    assert_eq!(
        api.matcher.hosts,
        vec![
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Suffix(".api.example.com".into())
        ]
    );
    assert_eq!(api.matcher.path_prefix, "/v1");
    assert_eq!(
        api.sticky,
        Some(Sticky::Header(HeaderName::from_static("x-user-id")))
    );

    let two = MINIMAL.replace(
        "    old:",
        "    sticky: { cookie: c, client_ip: true }\n    old:",
    );
    error_with(&errors(&two), "takes one of");
}

#[test]
fn fingerprints_follow_the_steps() {
    let with = |steps: &str| {
        let source = format!("{MINIMAL}    rollout:\n      steps:\n{steps}");
        load_str(&source).unwrap().services[0]
            .rollout
            .clone()
            .unwrap()
            .fingerprint
    };
    let a = with("        - weight: 5%\n          hold: 1m\n        - weight: 100%\n");
    let b = with("        - weight: 5%\n          hold: 1m\n        - weight: 100%\n");
    let c = with("        - weight: 10%\n          hold: 1m\n        - weight: 100%\n");
    assert_eq!(a, b);
    assert_ne!(a, c);
}

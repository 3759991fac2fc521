//! Issue 12: hooks get a built environment, not cutover's: a secret in cutover's
//! environment reaches a real hook process only when the hook's config lists it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

/// Each hook writes its whole environment to `<name>.env` in the config's directory.
const HOOKS: &str = r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      plain:
        on: [started]
        exec: ["/bin/sh", "-c", "env > plain.env"]
      listed:
        on: [started]
        exec: ["/bin/sh", "-c", "env > listed.env"]
        env: { REGION: eu-1, SHADOW: "no" }
        pass_env: [APP_SECRET_TOKEN, DBX_*]
"#;

fn env_of(dir: &std::path::Path, name: &str) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(format!("{name}.env")))
        .unwrap_or_else(|e| panic!("{name}.env: {e}"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_secret_reaches_only_the_hook_that_lists_it() {
    // Set before the proxy starts; this test binary has no other test to disturb.
    std::env::set_var("APP_SECRET_TOKEN", "hunter2");
    std::env::set_var("DBX_HOST", "db1.internal");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "do-not-leak");
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(&old, &new, HOOKS).await;
    wait_for(&proxy, "both hooks to run", Duration::from_secs(10), || {
        hook(&proxy, "plain").runs == 1 && hook(&proxy, "listed").runs == 1
    })
    .await;
    let dir = proxy.dir.path();

    let plain = env_of(dir, "plain");
    for secret in ["APP_SECRET_TOKEN", "DBX_HOST", "AWS_SECRET_ACCESS_KEY"] {
        assert!(!plain.contains_key(secret), "{secret} leaked: {plain:#?}");
    }
    assert_eq!(plain["CUTOVER_EVENT"], "started");
    assert!(plain.contains_key("PATH"), "{plain:#?}");

    let listed = env_of(dir, "listed");
    assert_eq!(listed["APP_SECRET_TOKEN"], "hunter2");
    assert_eq!(listed["DBX_HOST"], "db1.internal");
    assert_eq!(listed["REGION"], "eu-1");
    assert_eq!(listed["SHADOW"], "no");
    assert!(!listed.contains_key("AWS_SECRET_ACCESS_KEY"), "{listed:#?}");
}

#[test]
fn bad_env_settings_are_refused_with_positions() {
    let yaml = simple_config(
        &["127.0.0.1:9".parse().unwrap()],
        &["127.0.0.1:9".parse().unwrap()],
        "0%",
        r#"    hooks:
      a:
        on: [started]
        exec: ["/bin/true"]
        env: { "1BAD": x, CUTOVER_STEP: "3" }
        pass_env: ["*", "OK_*"]
      b:
        on: [started]
        http: { url: "http://127.0.0.1:9/" }
        env: { X: y }
"#,
    );
    let errors = match cutover::config::load::from_str(&yaml, std::path::Path::new("/tmp/c.yaml")) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.to_string(),
    };
    for needle in [
        "`1BAD` is not an environment variable name",
        "`CUTOVER_STEP`: the `CUTOVER_` variables are set by cutover",
        "`*` alone would pass cutover's whole environment",
        "`env` and `pass_env` are for exec hooks",
    ] {
        let line = errors
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{errors}"));
        assert!(line.starts_with("/tmp/c.yaml:"), "{line}");
    }
}

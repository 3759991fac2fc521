//! The CLI on a bad day: a broken config, a restarting proxy, refusals (the real binary).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use support::*;

const CONFIG: &str = r#"listeners:
  - addr: "127.0.0.1:0"
admin:
  addr: "ADMIN"
  token_file: admin.token
state_dir: state
services:
  - name: api
    old: { backends: [{ addr: "OLD" }] }
    new: { backends: [{ addr: "OLD" }] }
    rollout:
      start: manual
      steps:
        - weight: 10%
          hold: 1h
        - weight: 100%
"#;

/// Starts the binary on a config with a token file; returns it and the config's path.
async fn start(dir: &Path, old: SocketAddr) -> (Cutover, std::path::PathBuf) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(dir.join("admin.token"), "s3cret\n").unwrap();
    let config = dir.join("cutover.yaml");
    let yaml = CONFIG
        .replace("ADMIN", &admin.to_string())
        .replace("OLD", &old.to_string());
    std::fs::write(&config, yaml).unwrap();
    (Cutover::start(&config, admin).await, config)
}

/// `cutover ARGS -c CONFIG`, with no admin address or token from the environment.
fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("CUTOVER_TOKEN")
        .env_remove("CUTOVER_ADMIN")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn break_syntax(config: &Path) {
    let mut yaml = std::fs::read_to_string(config).unwrap();
    yaml.push_str("  - name: [unclosed\n");
    std::fs::write(config, yaml).unwrap();
}

#[tokio::test]
async fn a_broken_config_still_reaches_the_running_proxy_and_says_how() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (running, config) = start(dir.path(), old.addr).await;
    break_syntax(&config);

    let status = cli(&config, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains("api  PENDING"), "{}", text(&status));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("the config does not parse"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "recorded in {}",
            dir.path().join(".cutover.yaml.admin").display()
        )) && stderr.contains(&running.admin.to_string()),
        "{stderr}"
    );

    // reload reaches it too, and reports the config's errors rather than "cannot reach".
    let reload = cli(&config, &["reload"]);
    assert_eq!(reload.status.code(), Some(1), "{}", text(&reload));
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert!(stderr.contains("the running one stays"), "{stderr}");
    assert!(!stderr.contains("cannot reach"), "{stderr}");
}

#[tokio::test]
async fn a_broken_config_and_no_running_proxy_never_fall_back_to_a_default() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut running, config) = start(dir.path(), old.addr).await;
    // A clean stop removes the record; a record left by a dead process is ignored.
    running.signal(libc::SIGTERM);
    running.child.wait().unwrap();
    assert!(!dir.path().join(".cutover.yaml.admin").exists());
    break_syntax(&config);

    let status = cli(&config, &["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("cannot tell where the admin API is"),
        "{stderr}"
    );
    assert!(stderr.contains("pass --admin URL"), "{stderr}");
    assert!(!stderr.contains("9901"), "{stderr}");
}

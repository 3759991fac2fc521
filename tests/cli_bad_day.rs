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

const GATED: &str = r#"listeners:
  - addr: "127.0.0.1:0"
admin:
  addr: "ADMIN"
state_dir: state
services:
  - name: api
    old: { backends: [{ addr: "OLD" }] }
    new: { backends: [{ addr: "OLD" }] }
    hooks:
      lag:
        exec: ["sh", "-c", "echo checking the replica; echo 'replica lag 42s > 5s' >&2; exit 1"]
        every: 200ms
    rollout:
      steps:
        - gate: lag
        - weight: 100%
"#;

/// Starts the binary on a config with a token file; returns it and the config's path.
async fn start(dir: &Path, old: SocketAddr) -> (Cutover, std::path::PathBuf) {
    start_with(dir, old, CONFIG).await
}

async fn start_with(dir: &Path, old: SocketAddr, yaml: &str) -> (Cutover, std::path::PathBuf) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(dir.join("admin.token"), "s3cret\n").unwrap();
    let config = dir.join("cutover.yaml");
    let yaml = yaml
        .replace("ADMIN", &admin.to_string())
        .replace("OLD", &old.to_string());
    std::fs::write(&config, yaml).unwrap();
    let running = Cutover::start(&config, admin).await;
    // The admin API answers a moment before the process has recorded its address.
    let record = dir.join(".cutover.yaml.admin");
    assert!(eventually(std::time::Duration::from_secs(5), || record.exists()).await);
    (running, config)
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
    assert!(running.child.wait().unwrap().success());
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn refusals_are_sentences_and_repeats_say_already() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (_running, config) = start(dir.path(), old.addr).await;

    let refused = cli(&config, &["retry", "api"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert_eq!(
        stderr(&refused),
        "cutover: refused: only a rolled back rollout can be retried; this one is pending.\n"
    );

    for verb in ["start", "pause"] {
        let first = cli(&config, &[verb, "api"]);
        assert_eq!(first.status.code(), Some(0), "{}", text(&first));
        assert!(!stdout(&first).contains("already"), "{}", text(&first));
    }
    let again = cli(&config, &["pause", "api"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        stdout(&again).starts_with("api: already paused; nothing changed\n"),
        "{}",
        text(&again)
    );
}

#[tokio::test]
async fn set_weight_downwards_needs_force() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (_running, config) = start(dir.path(), old.addr).await;
    assert_eq!(cli(&config, &["start", "api"]).status.code(), Some(0));

    let lower = cli(&config, &["set-weight", "api", "5%"]);
    assert_eq!(lower.status.code(), Some(1), "{}", text(&lower));
    assert!(
        stderr(&lower).starts_with(
            "cutover: refused: lowering NEW's weight from 10% to 5% sends sticky users"
        ),
        "{}",
        text(&lower)
    );
    assert!(stderr(&lower).contains("--force"), "{}", text(&lower));
    let forced = cli(&config, &["set-weight", "api", "5%", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    assert!(
        stdout(&forced).contains("api  PAUSED  step 1/2  NEW 5%"),
        "{}",
        text(&forced)
    );

    let fine = cli(&config, &["set-weight", "api", "0.005"]);
    assert_eq!(fine.status.code(), Some(1), "{}", text(&fine));
    assert!(stderr(&fine).contains("steps of 0.01%"), "{}", text(&fine));
}

#[tokio::test]
async fn the_all_services_view_shows_why_a_gate_fails() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (running, config) = start_with(dir.path(), old.addr, GATED).await;
    running
        .wait_for_service("a failed gate run", |s| {
            s["hooks"][0]["last_result"] == "failed"
        })
        .await;
    let status = cli(&config, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let out = stdout(&status);
    assert!(out.contains("api  WAITING  step 1/2"), "{out}");
    assert!(out.contains("  gate lag: failed ("), "{out}");
    assert!(out.contains("    stderr: replica lag 42s > 5s\n"), "{out}");
}

/// Everything a child writes to stdout, collected by a thread as it comes.
struct Collected(std::sync::Arc<std::sync::Mutex<String>>);

impl Collected {
    fn start(child: &mut std::process::Child) -> Collected {
        use std::io::Read;
        let mut pipe = child.stdout.take().unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Collected(text)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the output after `from` bytes contains `needle`; returns where it ends.
    async fn wait_for(&self, from: usize, needle: &str) -> usize {
        let found = eventually(std::time::Duration::from_secs(10), || {
            self.text()[from..].contains(needle)
        })
        .await;
        assert!(found, "no {needle:?} in:\n{}", &self.text()[from..]);
        self.text().len()
    }
}

#[tokio::test]
async fn status_watch_survives_a_restart_of_the_proxy() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut running, config) = start(dir.path(), old.addr).await;
    let admin = running.admin;
    let mut watch = Command::new(binary())
        .args(["status", "--watch", "-c"])
        .arg(&config)
        .env_remove("CUTOVER_TOKEN")
        .env_remove("CUTOVER_ADMIN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let output = Collected::start(&mut watch);
    let seen = output.wait_for(0, "api  PENDING").await;

    running.signal(libc::SIGTERM);
    running.child.wait().unwrap();
    let seen = output.wait_for(seen, "reconnecting").await;
    assert!(
        output.text().contains("cannot reach the admin API at"),
        "{}",
        output.text()
    );
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watch must carry on"
    );

    let _restarted = Cutover::start(&config, admin).await;
    let after = output.wait_for(seen, "(refreshing every second").await;
    let last_view = &output.text()[seen..after];
    assert!(last_view.contains("api  PENDING"), "{last_view}");
    let _ = watch.kill();
    let _ = watch.wait();
}

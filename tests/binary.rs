//! The real `cutover` binary: the CLI, signals, crashes and restarts.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use http::StatusCode;
use support::*;

/// A running binary and the address its listener serves.
struct Running {
    cutover: Cutover,
    listen: SocketAddr,
}

impl std::ops::Deref for Running {
    type Target = Cutover;
    fn deref(&self) -> &Cutover {
        &self.cutover
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Cutover {
        &mut self.cutover
    }
}

/// Writes `yaml` (with LISTEN and ADMIN placeholders filled) and starts the binary.
async fn start(dir: &Path, yaml: &str) -> Running {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = yaml
        .replace("LISTEN", &listen.to_string())
        .replace("ADMIN", &admin.to_string());
    std::fs::write(dir.join("cutover.yaml"), yaml).unwrap();
    restart(dir, listen, admin).await
}

async fn restart(dir: &Path, listen: SocketAddr, admin: SocketAddr) -> Running {
    let cutover = Cutover::start(&dir.join("cutover.yaml"), admin).await;
    Running { cutover, listen }
}

/// After a SIGTERM: the process exits 0 within 10 s and nothing accepts on `listen`.
async fn exits_0_and_stops_listening(cutover: &mut Cutover, listen: SocketAddr) {
    let exited = eventually(Duration::from_secs(10), || {
        cutover.child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(exited, "still running after SIGTERM:\n{}", cutover.log());
    let code = cutover.child.wait().unwrap().code();
    assert_eq!(code, Some(0), "{}", cutover.log());
    assert!(
        std::net::TcpStream::connect(listen).is_err(),
        "still accepting on {listen}"
    );
}

/// User and system CPU time (clock ticks) of each of the process's threads named `name`.
fn thread_ticks(pid: u32, name: &str) -> Vec<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut ticks = Vec::new();
    for task in tasks {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // `pid (comm) state ...`: the comm may hold spaces, the fields after it do not.
        let (head, fields) = stat.rsplit_once(')').unwrap();
        if head.split_once('(').unwrap().1 != name {
            continue;
        }
        let fields: Vec<&str> = fields.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the comm.
        ticks.push(fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap());
    }
    ticks
}

/// Runs a CLI command against `admin`.
fn cli(admin: SocketAddr, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .args(["--admin", &format!("http://{admin}")])
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

async fn status_json(admin: SocketAddr, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut request = http::Request::get("/status").header("host", admin.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let got = send(
        admin,
        request
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    (
        got.status,
        serde_json::from_str(&got.body).unwrap_or_default(),
    )
}

const ROLLOUT: &str = r#"listeners:
  - addr: "LISTEN"
admin:
  addr: "ADMIN"
state_dir: state
limits:
  shutdown_grace: 10s
services:
  - name: api
    old: { backends: [{ addr: "OLD" }] }
    new: { backends: [{ addr: "NEW" }] }
    rollout:
      start: manual
      steps:
        - weight: 10%
          hold: 1h
        - weight: 40%
          hold: 1h
        - pause: {}
        - weight: 100%
"#;

fn rollout_config(old: SocketAddr, new: SocketAddr) -> String {
    ROLLOUT
        .replace("OLD", &old.to_string())
        .replace("NEW", &new.to_string())
}

#[test]
fn validate_names_the_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.yaml");
    let yaml = "listeners:\n  - addr: \"127.0.0.1:0\"\nservices:\n  - name: api\n    old: { backends: [{ addr: \"127.0.0.1:1\" }] }\n    new: { backends: [{ addr: \"127.0.0.1:2\" }] }\n    rollout:\n      steps:\n        - weight: 5%\n          hodl: 10m\n";
    std::fs::write(&path, yaml).unwrap();
    let output = Command::new(binary())
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:10:11: unknown key `hodl` (did you mean `hold`?)",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    std::fs::write(&path, yaml.replace("hodl", "hold")).unwrap();
    let output = Command::new(binary())
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn every_example_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = vec![root.join("config/cutover.yaml")];
    for entry in std::fs::read_dir(root.join("config/examples")).unwrap() {
        configs.push(entry.unwrap().path());
    }
    assert!(configs.len() >= 2);
    for config in configs {
        let output = Command::new(binary())
            .arg("validate")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            config.display(),
            text(&output)
        );
        let plan = Command::new(binary())
            .arg("plan")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    }
}

#[test]
fn usage_errors_exit_2_and_an_unreachable_admin_exits_3() {
    let output = Command::new(binary()).arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let output = Command::new(binary()).arg("run").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let output = cli(dead, &["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the admin API"));
}

/// On three cores the binary runs two worker threads beside its main one: each serves
/// its share of the connections, and a SIGTERM lets the requests in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_three_cores_every_core_serves_and_sigterm_drains_them_all() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = rollout_config(old.addr, old.addr)
        .replace("LISTEN", &listen.to_string())
        .replace("ADMIN", &admin.to_string());
    std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();
    let mut cutover = Cutover::start_on_cores(&dir.path().join("cutover.yaml"), admin, 3).await;
    let pid = cutover.child.id();
    assert_eq!(thread_ticks(pid, "cutover-worker").len(), 2);
    let log = cutover.log();
    assert!(
        log.contains("runtimes=3"),
        "the log says how many runtimes:\n{log}"
    );
    // 40 connections, 100 requests on each in rounds, until each worker has spent two
    // clock ticks (20 ms) serving: more than waking for the connections it did not take.
    let before = thread_ticks(pid, "cutover-worker");
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(KeepAlive::connect(listen).await.unwrap());
    }
    let mut after = before.clone();
    for _round in 0..10 {
        let mut running = tokio::task::JoinSet::new();
        for mut client in clients.drain(..) {
            running.spawn(async move {
                for _ in 0..100 {
                    assert_eq!(client.get("/").await.unwrap().0, StatusCode::OK);
                }
                client
            });
        }
        while let Some(client) = running.join_next().await {
            clients.push(client.unwrap());
        }
        after = thread_ticks(pid, "cutover-worker");
        if after
            .iter()
            .zip(&before)
            .all(|(after, before)| after >= &(before + 2))
        {
            break;
        }
    }
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(after, before)| after >= &(before + 2)),
        "a worker thread did not serve in 40,000 requests: CPU ticks {before:?} -> {after:?}"
    );
    drop(clients);
    old.set_delay(Duration::from_millis(1000));
    let hits = old.hits();
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..20 {
        in_flight.spawn(async move { send(listen, get("a", "/")).await.status });
    }
    let arrived = eventually(Duration::from_secs(5), || old.hits() == hits + 20).await;
    assert!(
        arrived,
        "{} of 20 requests reached the backend",
        old.hits() - hits
    );
    cutover.signal(libc::SIGTERM);
    while let Some(status) = in_flight.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK, "{}", cutover.log());
    }
    exits_0_and_stops_listening(&mut cutover, listen).await;
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let old = spawn_backend("old").await;
    old.set_delay(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let yaml = rollout_config(old.addr, old.addr);
    let mut running = start(dir.path(), &yaml).await;
    let listen = running.listen;
    let in_flight = tokio::spawn(async move { send(listen, get("a", "/")).await });
    let arrived = eventually(Duration::from_secs(5), || old.hits() == 1).await;
    assert!(arrived);
    running.signal(libc::SIGTERM);
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, StatusCode::OK, "the in-flight request finished");
    exits_0_and_stops_listening(&mut running, listen).await;
    assert!(running.log().contains("SIGTERM received"));
}

#[tokio::test]
async fn a_rollout_resumes_at_the_same_step_after_kill_9() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), &rollout_config(old.addr, new.addr)).await;
    let (_, status) = status_json(running.admin, None).await;
    assert_eq!(status["services"][0]["state"], "pending");
    assert_eq!(cli(running.admin, &["start", "api"]).status.code(), Some(0));
    assert_eq!(
        cli(running.admin, &["promote", "api"]).status.code(),
        Some(0)
    );
    let (_, status) = status_json(running.admin, None).await;
    assert_eq!(status["services"][0]["step"], 2);
    assert_eq!(status["services"][0]["weight"], 40.0);
    let (listen, admin) = (running.listen, running.admin);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(running); // SIGKILL: no chance to clean up.

    let running = restart(dir.path(), listen, admin).await;
    let (_, status) = status_json(running.admin, None).await;
    let service = &status["services"][0];
    assert_eq!(service["state"], "progressing", "{service}");
    assert_eq!(service["step"], 2);
    assert_eq!(service["weight"], 40.0);
    let hold = service["hold_remaining_s"].as_f64().unwrap();
    assert!(hold <= 3600.0 && hold > 3500.0, "{hold}");
    // And the restored weight really routes: some requests reach NEW.
    let mut client = Client::connect(running.listen).await;
    for _ in 0..50 {
        client.send(get("a", "/")).await.unwrap();
    }
    assert!(
        (15..=25).contains(&new.hits()),
        "NEW got {} of 50 at 40%",
        new.hits()
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start_and_is_named() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let state = dir.path().join("state/api.json");
    std::fs::write(
        &state,
        "{\"format\": 1, \"service\": \"api\", \"phase\": \"progr",
    )
    .unwrap();
    let listen = free_port();
    let yaml = rollout_config(old.addr, old.addr)
        .replace("LISTEN", &format!("127.0.0.1:{listen}"))
        .replace("ADMIN", &format!("127.0.0.1:{}", free_port()));
    std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();
    let output = Command::new(binary())
        .arg("run")
        .arg("-c")
        .arg(dir.path().join("cutover.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&state.display().to_string()), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    let untouched = std::fs::read_to_string(&state).unwrap();
    assert!(untouched.ends_with("\"progr"), "the file is left as it was");
}

#[tokio::test]
async fn every_cli_verb_works_against_a_running_proxy() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), &rollout_config(old.addr, new.addr)).await;
    let admin = running.admin;
    let weight = |admin| async move {
        let (_, status) = status_json(admin, None).await;
        (
            status["services"][0]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            status["services"][0]["weight"].as_f64().unwrap_or(-1.0),
        )
    };

    let refused = cli(admin, &["pause", "api"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("refused: only a progressing rollout can pause"),
        "{}",
        text(&refused)
    );

    let ok = |args: &[&str]| {
        let output = cli(admin, args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output));
        output
    };
    let started = ok(&["start", "api"]);
    assert!(
        String::from_utf8_lossy(&started.stdout).contains("PROGRESSING"),
        "{}",
        text(&started)
    );
    assert_eq!(weight(admin).await, ("progressing".into(), 10.0));
    ok(&["pause", "api"]);
    assert_eq!(weight(admin).await.0, "paused");
    ok(&["resume", "api"]);
    ok(&["promote", "api"]);
    assert_eq!(weight(admin).await, ("progressing".into(), 40.0));
    ok(&["promote", "api"]);
    assert_eq!(
        weight(admin).await,
        ("paused".into(), 40.0),
        "at the pause step"
    );
    let resume = cli(admin, &["resume", "api"]);
    assert_eq!(
        resume.status.code(),
        Some(1),
        "a pause step wants promote: {}",
        text(&resume)
    );
    ok(&["set-weight", "api", "55%"]);
    assert_eq!(weight(admin).await, ("paused".into(), 55.0));
    ok(&["promote", "api", "--full"]);
    assert_eq!(weight(admin).await.1, 100.0);
    ok(&["rollback", "api"]);
    assert_eq!(weight(admin).await, ("rolled_back".into(), 0.0));
    ok(&["retry", "api"]);
    assert_eq!(weight(admin).await, ("progressing".into(), 10.0));

    let status = ok(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("api  PROGRESSING  step 1/4  NEW 10%"), "{out}");
    let json = ok(&["status", "api", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["name"], "api");
    let reload = ok(&["reload"]);
    assert!(String::from_utf8_lossy(&reload.stdout).contains("reloaded"));
    let unknown = cli(admin, &["pause", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    let bad = cli(admin, &["set-weight", "api", "150"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
}

#[tokio::test]
async fn the_admin_token_is_required_except_for_health_and_metrics() {
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "s3cret-token\n").unwrap();
    let yaml = rollout_config(old.addr, old.addr).replace(
        "admin:\n  addr: \"ADMIN\"\n",
        "admin:\n  addr: \"ADMIN\"\n  token_file: admin.token\n",
    );
    let running = start(dir.path(), &yaml).await;
    let admin = running.admin;
    assert_eq!(status_json(admin, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_json(admin, Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_json(admin, Some("s3cret-token")).await.0,
        StatusCode::OK
    );
    for public in ["/healthz", "/metrics"] {
        assert_eq!(
            send(admin, get("admin", public)).await.status,
            StatusCode::OK,
            "{public}"
        );
    }
    let post = http::Request::post("/services/api/start")
        .header("host", "admin")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(admin, post).await.status, StatusCode::UNAUTHORIZED);

    // The CLI finds the token in the config, or takes it from CUTOVER_TOKEN / --token-file.
    let config = dir.path().join("cutover.yaml");
    let with_config = Command::new(binary())
        .args(["status", "-c"])
        .arg(&config)
        .env_remove("CUTOVER_TOKEN")
        .env_remove("CUTOVER_ADMIN")
        .output()
        .unwrap();
    assert_eq!(with_config.status.code(), Some(0), "{}", text(&with_config));
    let wrong = Command::new(binary())
        .args(["status", "--admin", &format!("http://{admin}")])
        .env("CUTOVER_TOKEN", "nope")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
}

//! `log_format: json` and `access_log`, through the real binary: every log line is one JSON
//! object, and the access log holds one true line per request (the backend that answered,
//! its status, the bytes the client got, a duration no shorter than the backend took);
//! a reload that turns the access log off stops it, and a reload whose file cannot be
//! opened keeps the running config.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(
    old: SocketAddr,
    new: SocketAddr,
    listen: u16,
    admin: SocketAddr,
    access: &str,
) -> String {
    format!(
        "log_format: json\naccess_log: {access}\n{}",
        simple_config(&[old], &[new], "50%", "")
            .replace(
                "127.0.0.1:0\"\nadmin",
                &format!("127.0.0.1:{listen}\"\nadmin")
            )
            .replace(
                "addr: \"127.0.0.1:0\"\nstate_dir",
                &format!("addr: \"{admin}\"\nstate_dir")
            )
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

async fn wait_for_lines(path: &Path, count: usize) -> Vec<Value> {
    let found = eventually(Duration::from_secs(5), || lines(path).len() >= count).await;
    assert!(found, "{} lines expected, found {:?}", count, lines(path));
    lines(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_a_true_access_log() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    old.set_delay(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = config(old.addr, new.addr, listen, admin, "access.log");
    std::fs::write(dir.path().join("cutover.yaml"), &yaml).unwrap();
    let proxy = Cutover::start_in(dir.path(), admin).await;
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();

    let mut client = KeepAlive::connect(addr).await.unwrap();
    let mut answers = Vec::new();
    for i in 0..10 {
        let (status, body) = client.get(&format!("/items?i={i}")).await.unwrap();
        assert_eq!(status, 200);
        answers.push(body);
    }
    let twice = b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    let refused = raw(addr, twice, Duration::from_millis(500)).await;
    let access = dir.path().join("access.log");
    let logged = wait_for_lines(&access, 11).await;

    for (i, (line, body)) in logged.iter().zip(&answers).enumerate() {
        assert_eq!(line["target"], format!("/items?i={i}"), "{line}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["service"], "api");
        assert_eq!(line["status"], 200);
        assert_eq!(line["complete"], true);
        // The pool and backend are the ones whose name the client got back.
        assert_eq!(line["pool"], body.as_str(), "{line}");
        let backend = if body == "old" { old.addr } else { new.addr };
        assert_eq!(line["backend"], backend.to_string());
        assert_eq!(line["bytes"], body.len() as u64);
        let ms = line["duration_ms"].as_f64().unwrap();
        if body == "old" {
            assert!((50.0..1000.0).contains(&ms), "OLD takes 50 ms: {line}");
        } else {
            assert!(ms < 50.0, "NEW answers at once: {line}");
        }
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    let pools: Vec<&str> = logged[..10]
        .iter()
        .map(|l| l["pool"].as_str().unwrap())
        .collect();
    assert!(
        pools.contains(&"old") && pools.contains(&"new"),
        "{pools:?}"
    );
    let last = &logged[10];
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert_eq!(last["status"], 400);
    assert_eq!(
        (&last["service"], &last["pool"]),
        (&"-".into(), &"-".into())
    );

    // A path whose directory is missing is a config error (file:line:col); a file that
    // cannot be opened fails the reload. Either way the running access log stays.
    let missing = yaml.replace("access_log: access.log", "access_log: nowhere/access.log");
    std::fs::write(dir.path().join("cutover.yaml"), &missing).unwrap();
    let got = admin_post(admin, "/reload").await;
    assert_eq!(got.status, 400, "{}", got.body);
    assert!(
        got.body.contains("cutover.yaml:2:13: the directory of"),
        "{}",
        got.body
    );
    std::fs::create_dir(dir.path().join("a-directory")).unwrap();
    let unopenable = yaml.replace("access_log: access.log", "access_log: a-directory");
    std::fs::write(dir.path().join("cutover.yaml"), &unopenable).unwrap();
    let got = admin_post(admin, "/reload").await;
    assert!(!got.status.is_success(), "{}", got.body);
    assert!(
        got.body.contains("cannot open the access log"),
        "{}",
        got.body
    );
    client.get("/after-failed-reload").await.unwrap();
    let logged = wait_for_lines(&access, 12).await;
    assert_eq!(logged[11]["target"], "/after-failed-reload");

    // Off: the reload applies to connections already open.
    let off = yaml.replace("access_log: access.log", "access_log: off");
    std::fs::write(dir.path().join("cutover.yaml"), &off).unwrap();
    let got = admin_post(admin, "/reload").await;
    assert_eq!(got.status, 200, "{}", got.body);
    client.get("/not-logged").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lines(&access).len(), 12, "nothing logged after `off`");

    // Every line of the process's own log is a JSON object with a level and a message.
    let log = proxy.log();
    let mut reloaded = 0;
    for line in log.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line}"
        );
        if value["message"] == "config reloaded" {
            assert!(value["version"].is_string(), "fields are fields: {line}");
            reloaded += 1;
        }
    }
    assert_eq!(reloaded, 1, "{log}");
}

//! The decision log through the real binary: operator commands carry the admin client's
//! address, `GET /services/{name}/history` and `cutover history --follow` show them as
//! they happen, and `cutover report` renders them after the proxy has stopped.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::*;

const CONFIG: &str = r#"listeners:
  - addr: "LISTEN"
admin:
  addr: "ADMIN"
state_dir: state
services:
  - name: api
    old: { backends: [{ addr: "OLD" }] }
    new: { backends: [{ addr: "NEW" }] }
    rollout:
      start: manual
      steps:
        - weight: 10%
          hold: 1h
        - weight: 100%
    hooks:
      notify:
        exec: ["/bin/sh", "-c", "echo notified the pager; exit 3"]
        on: [paused]
"#;

async fn start(dir: &Path) -> Cutover {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (_, admin) = write_config(dir, CONFIG, old.addr, new.addr);
    // The backends live as long as the test's runtime.
    std::mem::forget((old, new));
    Cutover::start_in(dir, admin).await
}

fn cutover(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .arg("-c")
        .arg(dir.join("cutover.yaml"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn history_follows_and_report_renders_after_the_proxy_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(dir.path()).await;
    let got = admin_post(proxy.admin, "/services/api/start").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);

    // `history --follow --json` prints what is there, then streams what comes.
    let mut follow = Command::new(binary())
        .args(["history", "api", "--follow", "--json", "-c"])
        .arg(dir.path().join("cutover.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["kind"], "operator", "{first}");
    assert_eq!(first["command"], "start");
    // Drain what was already written, then make a new decision.
    while lines.recv_timeout(Duration::from_millis(500)).is_ok() {}
    let got = admin_post(proxy.admin, "/services/api/pause").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let streamed: Vec<Value> = (0..2)
        .map(|_| {
            lines
                .recv_timeout(Duration::from_secs(5))
                .expect("streamed")
        })
        .collect();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(streamed[0]["kind"], "operator", "{streamed:?}");
    assert_eq!(streamed[0]["command"], "pause");
    assert_eq!(streamed[0]["accepted"], true);
    let client = streamed[0]["client"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(streamed[1]["kind"], "state");
    assert_eq!(streamed[1]["to"], "paused (manual)");
    assert_eq!(streamed[1]["by"], "operator");
    assert_eq!(streamed[1]["client"], client);

    // The hook the pause ran: its exit, duration and output.
    let mut hook = None;
    for _ in 0..100 {
        let got = admin_get(proxy.admin, "/services/api/history").await;
        let all: Vec<Value> = serde_json::from_str(&got.body).unwrap();
        hook = all.into_iter().find(|r| r["kind"] == "hook");
        if hook.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hook = hook.expect("a hook record");
    assert_eq!(hook["hook"], "notify", "{hook}");
    assert_eq!(hook["event"], "paused");
    assert_eq!(hook["ok"], false);
    assert_eq!(hook["exit_code"], 3);
    assert!(hook["duration_ms"].as_u64().unwrap() < 5_000, "{hook}");
    assert!(
        hook["output_tail"]
            .as_str()
            .unwrap()
            .contains("notified the pager"),
        "{hook}"
    );

    // A refused command is recorded too, with why.
    let got = admin_post(proxy.admin, "/services/api/retry").await;
    assert_eq!(got.status, StatusCode::CONFLICT, "{}", got.body);

    // The admin API: whole, since a time, and a bad time.
    let got = admin_get(proxy.admin, "/services/api/history").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let all: Vec<Value> = serde_json::from_str(&got.body).unwrap();
    let refused = all.last().unwrap();
    assert_eq!(refused["command"], "retry", "{refused}");
    assert_eq!(refused["accepted"], false);
    assert!(
        refused["detail"].as_str().unwrap().contains("rolled back"),
        "{refused}"
    );
    let pause_at = streamed[1]["at"].as_str().unwrap().replace('+', "%2B");
    let got = admin_get(
        proxy.admin,
        &format!("/services/api/history?since={pause_at}"),
    )
    .await;
    let since: Vec<Value> = serde_json::from_str(&got.body).unwrap();
    let kinds: Vec<&str> = since.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["state", "hook", "operator"], "{since:?}");
    let got = admin_get(proxy.admin, "/services/api/history?since=yesterday").await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.body);
    assert!(got.body.contains("RFC 3339"), "{}", got.body);
    // A `since` without its value is an error too, not the whole history.
    for bare in ["since", "since="] {
        let got = admin_get(proxy.admin, &format!("/services/api/history?{bare}")).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bare}: {}", got.body);
    }
    // `limit`: the newest records only, with or without `since`.
    let got = admin_get(proxy.admin, "/services/api/history?limit=2").await;
    let newest: Vec<Value> = serde_json::from_str(&got.body).unwrap();
    assert_eq!(newest, all[all.len() - 2..].to_vec(), "{}", got.body);
    let path = format!("/services/api/history?since={pause_at}&limit=1");
    let got = admin_get(proxy.admin, &path).await;
    let newest: Vec<Value> = serde_json::from_str(&got.body).unwrap();
    assert_eq!(newest, since[since.len() - 1..].to_vec(), "{}", got.body);
    for huge in ["100000", "99999999999999999999999"] {
        let got = admin_get(proxy.admin, &format!("/services/api/history?limit={huge}")).await;
        let every: Vec<Value> = serde_json::from_str(&got.body).unwrap();
        assert_eq!(every, all, "a limit above the count is the whole history");
    }
    for bad in [
        "limit",
        "limit=",
        "limit=0",
        "limit=00",
        "limit=-1",
        "limit=+5",
        "limit=ten",
    ] {
        let got = admin_get(proxy.admin, &format!("/services/api/history?{bad}")).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bad}: {}", got.body);
    }
    let got = admin_get(proxy.admin, "/services/nope/history").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);

    // A reload is a decision too.
    let got = admin_post(proxy.admin, "/reload").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let version = serde_json::from_str::<Value>(&got.body).unwrap()["version"].clone();
    let got = admin_get(proxy.admin, "/services/api/history").await;
    let all: Vec<Value> = serde_json::from_str(&got.body).unwrap();
    let reload = all.last().unwrap();
    assert_eq!(reload["kind"], "reload", "{reload}");
    assert_eq!(reload["ok"], true);
    let change = reload["changes"][0].as_str().unwrap();
    assert!(change.contains(version.as_str().unwrap()), "{reload}");

    // The proxy stops; the report is made from the file alone.
    drop(proxy);
    let md = cutover(dir.path(), &["report", "api", "--format", "md"]);
    assert!(md.status.success(), "{md:?}");
    let md = String::from_utf8(md.stdout).unwrap();
    let html_path = dir.path().join("report.html");
    let html = cutover(
        dir.path(),
        &["report", "api", "-o", html_path.to_str().unwrap()],
    );
    assert!(html.status.success(), "{html:?}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") || html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    for record in &all {
        if record["kind"] == "operator" {
            let command = record["command"].as_str().unwrap();
            assert!(md.contains(command), "{command} missing from:\n{md}");
            assert!(html.contains(command), "{command} missing from the HTML");
            assert!(md.contains(client) && html.contains(client));
        }
    }
    // Every decision has its line in the report, by time and kind.
    assert!(md.contains(&format!("{} decisions", all.len())), "{md}");
    for record in &all {
        let line = format!(
            "- {} [{}]",
            record["at"].as_str().unwrap(),
            record["kind"].as_str().unwrap()
        );
        assert!(md.contains(&line), "{line} missing from:\n{md}");
    }
    // And the text history, with the proxy stopped.
    let text = cutover(dir.path(), &["history", "api"]);
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.lines().count(), all.len(), "{text}");
    assert!(text.contains("pause"), "{text}");
    let unknown = cutover(dir.path(), &["history", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    // Output that cannot be written is a failure, not a quiet success (a closed pipe,
    // `| head`, is the reader's choice and stays one).
    for args in [
        &["history", "api"][..],
        &["report", "api", "--format", "md"],
    ] {
        let full = Command::new(binary())
            .args(args)
            .arg("-c")
            .arg(dir.path().join("cutover.yaml"))
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&full.stderr);
        assert_eq!(full.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    }
}

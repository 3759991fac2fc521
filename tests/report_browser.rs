//! The migration report of a wired history in a real browser: the binary runs a short
//! rollout (checks on live traffic, operator commands, hooks, a rollback), `cutover
//! report` writes the HTML from the file alone, and headless Chromium renders it. Every
//! decision of the history must be in the rendered DOM, nothing may point outside the
//! file, and the screenshot is kept for a human to look at.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
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
        - weight: 50%
          hold: 1h
        - weight: 100%
      analysis:
        interval: 1s
        window: 5s
        min_requests: 5
        failure_threshold: 3
        max_error_rate: 1%
        max_p99_latency: 500ms
    hooks:
      notify:
        exec: ["/bin/sh", "-c", "echo paging the on-call for $CUTOVER_EVENT"]
        on: [paused, resumed, rollback]
      rollback-db:
        exec: ["/bin/sh", "-c", "echo restoring the old schema; exit 2"]
        on: [rollback]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_rollback_renders_every_decision_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (listen, admin) = write_config(dir.path(), CONFIG, old.addr, new.addr);
    let proxy = Cutover::start_in(dir.path(), admin).await;
    let state = dir.path().join("state");

    assert_eq!(
        admin_post(admin, "/services/api/start").await.status,
        StatusCode::OK
    );
    // Live traffic until a few checks have passed on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while of_kind(&history(&state, "api"), "check")
        .iter()
        .filter(|c| c["outcome"] == "pass")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "no passing checks:\n{}",
            proxy.log()
        );
        for _ in 0..10 {
            send(listen, get("api", "/")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for command in ["pause", "resume", "rollback"] {
        let got = admin_post(admin, &format!("/services/api/{command}")).await;
        assert_eq!(got.status, StatusCode::OK, "{command}: {}", got.body);
    }
    // The hooks of the three events (notify ×3, rollback-db ×1) are recorded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while of_kind(&history(&state, "api"), "hook").len() < 4 {
        assert!(Instant::now() < deadline, "hooks:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(proxy);
    let records = history(&state, "api");

    let html_path = dir.path().join("report.html");
    let out = Command::new(binary())
        .args(["report", "api", "-o"])
        .arg(&html_path)
        .arg("-c")
        .arg(dir.path().join("cutover.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.len() < 1 << 20, "{} bytes", html.len());
    let lower = html.to_ascii_lowercase();
    for external in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "@import",
        "url(http",
        "<script",
        "<link",
    ] {
        assert!(
            !lower.contains(external),
            "the report refers outside itself: {external}"
        );
    }

    let dom = render(&chromium, &html_path, &["--dump-dom"]);
    let page = scraper::Html::parse_document(&dom);
    let row = |i: usize| scraper::Selector::parse(&format!("tr#d{i} td")).unwrap();
    for (i, record) in records.iter().enumerate() {
        let cells: Vec<_> = page.select(&row(i)).collect();
        assert!(
            cells.len() >= 3,
            "decision {i} ({record}) is not in the rendered page"
        );
        assert_eq!(
            cells[0].value().attr("title"),
            record["at"].as_str(),
            "{record}"
        );
        assert_eq!(
            cells[1].text().collect::<String>(),
            record["kind"].as_str().unwrap()
        );
    }
    assert!(
        page.select(&row(records.len())).next().is_none(),
        "more rows than decisions"
    );
    let text: String = page.root_element().text().collect();
    assert!(
        text.contains("restoring the old schema"),
        "the hook's output is shown"
    );
    assert!(of_kind(&records, "state")
        .iter()
        .any(|s| s["to"].as_str().unwrap().starts_with("rolled_back")));
    // Charts are drawn: inline SVG made it through the browser.
    assert!(
        page.select(&scraper::Selector::parse("svg").unwrap())
            .count()
            >= 2
    );

    let shot = dir.path().join("report.png");
    render(
        &chromium,
        &html_path,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2400",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let kept = std::env::temp_dir().join("cutover-report-screenshot.png");
    std::fs::write(&kept, &png).unwrap();
    println!("report screenshot: {}", kept.display());
}

/// Runs headless Chromium on the file with `args`; its stdout.
fn render(chromium: &Path, file: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

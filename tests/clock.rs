//! The controller's clock on tokio's paused clock: every configured interval is honoured
//! to the millisecond, not rounded to a once-a-second tick.
//!
//! Time is moved by hand, one millisecond at a time, and between two moves the test
//! yields until the controller has done what came due and any hook it started has
//! answered. While the test task keeps yielding, the runtime is never idle, so tokio never
//! jumps the paused clock ahead while a hook's real socket I/O is in flight.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A proxy whose backends are never contacted; `rollout` is appended to its service.
async fn proxy(rollout: &str) -> TestProxy {
    let nowhere = "127.0.0.1:9".parse().unwrap();
    spawn_proxy(&simple_config(&[nowhere], &[nowhere], "0%", rollout)).await
}

fn hook_running(proxy: &TestProxy) -> bool {
    proxy.app.controller.status().services[0]
        .hooks
        .iter()
        .any(|h| h.running)
}

/// Moves the paused clock by 1 ms, then lets the controller and any hook it runs finish.
async fn one_millisecond(proxy: &TestProxy) {
    tokio::time::advance(Duration::from_millis(1)).await;
    let wall = std::time::Instant::now();
    loop {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        if !hook_running(proxy) {
            return;
        }
        assert!(
            wall.elapsed() < Duration::from_secs(5),
            "a hook never answered"
        );
    }
}

fn checks(proxy: &TestProxy) -> u64 {
    let metrics = proxy.app.metrics.encode();
    metrics
        .lines()
        .filter(|line| line.starts_with("cutover_analysis_checks_total{service=\"api\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The gaps between consecutive instants.
fn gaps(instants: &[Instant]) -> Vec<Duration> {
    instants.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn an_analysis_interval_of_500ms_checks_every_500ms() {
    let proxy = proxy(
        r#"    rollout:
      schedule: { start: 5%, step: 20%, every: 30m }
      analysis:
        interval: 500ms
        window: 2s
        min_requests: 1
        max_error_rate: 1%
"#,
    )
    .await;
    let mut seen = checks(&proxy);
    let mut checked_at = Vec::new();
    for _ in 0..3_000 {
        one_millisecond(&proxy).await;
        let now = checks(&proxy);
        if now > seen {
            assert_eq!(now, seen + 1, "one check at a time");
            checked_at.push(Instant::now());
            seen = now;
        }
    }
    assert!(checked_at.len() >= 5, "{} checks in 3 s", checked_at.len());
    for gap in gaps(&checked_at) {
        assert_eq!(gap, Duration::from_millis(500), "checks at {checked_at:?}");
    }
}

/// Answers every request with 503 and notes when each arrived.
async fn failing_gate() -> (std::net::SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let noted = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            noted.lock().unwrap().push(Instant::now());
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (addr, arrivals)
}

#[tokio::test(start_paused = true)]
async fn a_gate_with_every_300ms_is_polled_every_300ms() {
    let (gate, arrivals) = failing_gate().await;
    let proxy = proxy(&format!(
        r#"    rollout:
      steps:
        - gate: ready
        - weight: 100%
    hooks:
      ready:
        every: 300ms
        timeout: 5s
        http:
          url: "http://{gate}/ready"
"#
    ))
    .await;
    for _ in 0..1_300 {
        one_millisecond(&proxy).await;
    }
    let polls = arrivals.lock().unwrap().clone();
    assert!(polls.len() >= 4, "{} polls in 1.3 s", polls.len());
    for gap in gaps(&polls) {
        assert_eq!(gap, Duration::from_millis(300), "polls at {polls:?}");
    }
    let status = proxy.app.controller.status();
    assert_eq!(status.services[0].state, "waiting");
}

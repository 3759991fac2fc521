//! Open-loop load against in-process backends: latency accounting, status
//! and error counting, header tallies.

mod common;

use std::time::Duration;

use common::{backend, plan};
use loadtest::backend::BackendConfig;
use loadtest::load;

const MS: Duration = Duration::from_millis(1);

/// The core property of an open-loop tool: when the server cannot keep up,
/// requests are still scheduled (and sent) at the requested rate, and the
/// queueing shows up as latency instead of as a silently lower rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_grows_instead_of_rate_dropping_when_server_is_slow() {
    let server = backend(BackendConfig {
        delay: 50 * MS,
        ..BackendConfig::default()
    })
    .await;
    // One connection serves at most 20 req/s with a 50 ms delay; ask for 100.
    let slow = plan(server.addr(), 100.0, 300 * MS, 1, Duration::from_secs(10));
    let report = load::run(&slow).await;

    assert_eq!(report.scheduled, 30, "{report:#?}");
    assert_eq!(report.sent, 30, "every scheduled request is sent");
    assert_eq!(report.responses, 30);
    assert_eq!(report.status.s2xx, 30);
    // The 30th request is scheduled at 290 ms but served around 1.5 s.
    assert!(report.latency_us.max > 1_000_000, "{:?}", report.latency_us);
    assert!(report.latency_us.p50 > 400_000, "{:?}", report.latency_us);
    // Each request itself still took ~50 ms: a closed-loop tool would
    // report only this and look perfectly healthy.
    assert!(
        report.service_time_us.p99 < 200_000,
        "{:?}",
        report.service_time_us
    );
    // The achieved rate is what the server could do, not what was asked.
    assert!(report.achieved_rate < 25.0, "{}", report.achieved_rate);

    // With enough connections the same load is served on time.
    let pooled = plan(server.addr(), 100.0, 300 * MS, 16, Duration::from_secs(10));
    let report = load::run(&pooled).await;
    assert_eq!(report.responses, 30);
    assert!(report.latency_us.p99 < 200_000, "{:?}", report.latency_us);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_run_counts_statuses_and_tallies_header() {
    let server = backend(BackendConfig {
        name: "new".into(),
        ..BackendConfig::default()
    })
    .await;
    let healthy = plan(server.addr(), 200.0, 250 * MS, 4, Duration::from_secs(5))
        .with_count_header(Some("X-Backend"))
        .expect("valid header");
    let report = load::run(&healthy).await;

    assert_eq!(report.scheduled, 50);
    assert_eq!(report.sent, 50);
    assert_eq!(report.status.s2xx, 50);
    assert_eq!(report.failures, 0);
    assert_eq!(report.errors.total(), 0);
    let tally = report.count_header.as_ref().expect("tally");
    assert_eq!(tally.name, "x-backend");
    assert_eq!(tally.values.get("new"), Some(&50));
    assert!(report.latency_us.p99 < 100_000, "{:?}", report.latency_us);

    let text = report.render_text();
    assert!(text.contains("2xx 50"), "{text}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["status"]["2xx"], 50);
    assert_eq!(json["count_header"]["values"]["new"], 50);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_stops_early() {
    let server = backend(BackendConfig::default()).await;
    let capped = plan(
        server.addr(),
        1000.0,
        Duration::from_secs(5),
        4,
        Duration::from_secs(5),
    )
    .with_max_requests(Some(25));
    let started = std::time::Instant::now();
    let report = load::run(&capped).await;
    assert_eq!(report.scheduled, 25);
    assert_eq!(report.responses, 25);
    assert!(started.elapsed() < Duration::from_secs(2));
    server.stop().await;
}

/// Requests that outlive `--timeout` are counted as timeouts and the run
/// still ends on time, even when the server never answers in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_counted_and_bound_the_run() {
    let server = backend(BackendConfig {
        delay: Duration::from_secs(10),
        ..BackendConfig::default()
    })
    .await;
    let stuck = plan(server.addr(), 50.0, 200 * MS, 2, 200 * MS);
    let started = std::time::Instant::now();
    let report = load::run(&stuck).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "run must be bounded"
    );
    assert_eq!(report.scheduled, 10);
    assert_eq!(report.responses, 0);
    assert_eq!(report.errors.timeout, 10, "{report:#?}");
    assert_eq!(report.failures, 10);
    // Only requests that got a connection were sent; the rest expired in
    // the queue.
    assert!(report.sent >= 2 && report.sent <= 10, "{}", report.sent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_connect_error() {
    // Bind and release a port so that nothing listens on it.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let refused = plan(addr, 100.0, 100 * MS, 2, Duration::from_secs(1));
    let report = load::run(&refused).await;
    assert_eq!(report.scheduled, 10);
    assert_eq!(report.errors.connect, 10, "{report:#?}");
    assert_eq!(report.sent, 0);
    assert_eq!(report.failures, 10);
    assert!(!report.error_samples.is_empty());
}

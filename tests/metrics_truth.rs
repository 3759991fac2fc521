//! `/metrics` against known truths: requests of a known latency through the real proxy,
//! then the scrape read the way Prometheus reads it (cumulative buckets, `+Inf`,
//! `histogram_quantile`), and `promtool check metrics` on the live scrape.

mod support;

use std::time::Duration;

use support::*;

/// Sends `n` requests through `proxy` on `clients` keep-alive connections, all answered 200.
async fn requests(proxy: &TestProxy, n: usize, clients: usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let addr = proxy.addr;
            let share = n / clients + usize::from(c < n % clients);
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..share {
                    let got = client.send(get("a", "/")).await.unwrap();
                    assert_eq!(got.status, http::StatusCode::OK);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn scrape(proxy: &TestProxy) -> String {
    let got = admin_get(proxy.app.admin_addr, "/metrics").await;
    assert!(got.status.is_success(), "{got:?}");
    got.body
}

/// A proxy whose OLD and NEW backends both answer after `delay`, NEW at 50%.
async fn proxy_with_latency(delay: Duration) -> TestProxy {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    old.set_delay(delay);
    new.set_delay(delay);
    spawn_proxy(&simple_config(&[old.addr], &[new.addr], "50%", "")).await
}

const DURATION: &str = "cutover_request_duration_seconds";

/// Buckets rise, the last is `+Inf` and holds `_count`.
fn assert_well_formed(histogram: &ExposedHistogram, what: &str) {
    let counts: Vec<f64> = histogram.buckets.iter().map(|b| b.1).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "{what}: buckets are not cumulative: {:?}",
        histogram.buckets
    );
    let (le, last) = histogram.buckets.last().unwrap();
    assert_eq!(le, "+Inf", "{what}: the last bucket is le=\"{le}\"");
    assert_eq!(
        *last, histogram.count,
        "{what}: +Inf bucket vs _count: {histogram:?}"
    );
}

#[tokio::test]
async fn a_50ms_backend_shows_50ms_in_the_histogram() {
    let proxy = proxy_with_latency(Duration::from_millis(50)).await;
    requests(&proxy, 40, 8).await;
    let text = scrape(&proxy).await;

    let mut total = 0.0;
    for pool in ["old", "new"] {
        let labels = format!("service=\"api\",pool=\"{pool}\"");
        let histogram = exposed_histogram(&text, DURATION, &labels);
        assert_well_formed(&histogram, pool);
        assert!(
            histogram.count > 0.0,
            "{pool} served nothing: {histogram:?}"
        );
        total += histogram.count;

        let mean = histogram.sum / histogram.count;
        assert!(
            (0.045..0.100).contains(&mean),
            "{pool}: _sum/_count = {mean}s for a 50 ms backend"
        );
        let p50 = histogram_quantile(0.5, &histogram.buckets);
        assert!(
            (0.025..=0.250).contains(&p50),
            "{pool}: histogram_quantile(0.5) = {p50}s for a 50 ms backend: {:?}",
            histogram.buckets
        );
    }
    assert_eq!(total, 40.0, "every request is counted once");
}

#[tokio::test]
async fn a_1ms_backend_has_a_p99_below_50ms() {
    let proxy = proxy_with_latency(Duration::from_millis(1)).await;
    requests(&proxy, 200, 4).await;
    let text = scrape(&proxy).await;
    for pool in ["old", "new"] {
        let labels = format!("service=\"api\",pool=\"{pool}\"");
        let histogram = exposed_histogram(&text, DURATION, &labels);
        assert_well_formed(&histogram, pool);
        let p99 = histogram_quantile(0.99, &histogram.buckets);
        assert!(
            p99 < 0.050,
            "{pool}: histogram_quantile(0.99) = {p99}s for a 1 ms backend: {:?}",
            histogram.buckets
        );
    }
}

/// A rollout with a hook that has run, so every family has series.
async fn proxy_with_every_family() -> TestProxy {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let extra = "    rollout:\n      steps:\n        - weight: 50%\n          hold: 1h\n    \
                 hooks:\n      note:\n        on: [started]\n        \
                 exec: [\"/bin/sh\", \"-c\", \"exit 0\"]\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", extra)).await;
    wait_for(&proxy, "the hook's run", Duration::from_secs(10), || {
        hook(&proxy, "note").runs == 1
    })
    .await;
    requests(&proxy, 20, 2).await;
    proxy
}

#[tokio::test]
async fn promtool_accepts_a_live_scrape() {
    let Some(promtool) = external_tool("promtool", "prometheus") else {
        return;
    };
    let proxy = proxy_with_every_family().await;
    let got = admin_get(proxy.app.admin_addr, "/metrics").await;
    assert_eq!(
        got.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = got.body;
    for family in [
        "cutover_requests_total",
        "cutover_hook_runs_total",
        "cutover_hook_duration_seconds",
        "cutover_request_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("\n{family}")),
            "no {family} series in:\n{text}"
        );
    }
    let (code, printed) = promtool_check_metrics(&promtool, &text).await;
    assert_eq!(
        (code, printed.trim()),
        (0, ""),
        "promtool check metrics on:\n{text}"
    );
}

#[tokio::test]
async fn prometheus_is_served_openmetrics_with_the_same_samples() {
    let proxy = proxy_with_every_family().await;
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let request = http::Request::get("/metrics")
        .header("host", "admin")
        .header("accept", accept)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = send(proxy.app.admin_addr, request).await;
    assert_eq!(
        got.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(got.body.ends_with("# EOF\n"), "{}", got.body);
    assert!(got.body.contains("# TYPE cutover_requests counter\n"));
    let text = admin_get(proxy.app.admin_addr, "/metrics").await.body;
    let samples = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("cutover_connections_active"))
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(series, _)| series)
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        samples(&got.body),
        samples(&text),
        "the same series in both formats"
    );
}

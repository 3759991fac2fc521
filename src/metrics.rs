//! The metrics of SPEC §6, in OpenMetrics text via prometheus-client.
//!
//! Design note: the request path's numbers (requests, durations, upstream errors) live in
//! the atomics of `stats::PoolStats`, which the analysis reads too. They are encoded at
//! scrape time by a collector that walks the current routing snapshot, so the request
//! path never touches a metric family (a lookup there takes a lock and hashes labels) and
//! there is a single source for what `/metrics` shows and what the analysis decides on.
//! The controller's metrics (rollout state, checks, hooks, reloads) are its own
//! (`rollout::controller::RolloutMetrics`), registered here by the app.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::proxy::ListenerState;
use crate::routing::SharedSnapshot;
use crate::stats::{CodeClass, PoolCounts, UpstreamErrorKind, LATENCY_EDGES_US};
use crate::upstream::{now_millis, Pool};

/// The `le` bounds exposed for request durations: 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 per decade
/// from 1 ms to 8 s, then 10, 30 and 60 s. A superset of the usual Prometheus bounds, and
/// dense enough (adjacent bounds at most 1.5× apart) that `histogram_quantile` lands
/// near the truth: a 50 ms service reads 50-60 ms, not the 75 ms that interpolating
/// between 50 and 100 ms would give. Every bound is an edge of the stats buckets.
const DURATION_BOUNDS_US: [u64; 39] = duration_bounds();

const fn duration_bounds() -> [u64; 39] {
    const STEPS: [u64; 9] = [10, 15, 20, 25, 30, 40, 50, 60, 80];
    let mut bounds = [0u64; 39];
    let mut scale = 100;
    let mut i = 0;
    while i < 36 {
        bounds[i] = STEPS[i % 9] * scale;
        i += 1;
        if i % 9 == 0 {
            scale *= 10;
        }
    }
    bounds[36] = 10_000_000;
    bounds[37] = 30_000_000;
    bounds[38] = 60_000_000;
    bounds
}

/// The registry `/metrics` encodes: the request path's counters, read at scrape time, and
/// whatever families other parts register (the controller's, `RolloutMetrics`).
pub struct Metrics {
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(
        snapshot: SharedSnapshot,
        listeners: Arc<Mutex<Vec<Arc<ListenerState>>>>,
    ) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(DataPlane {
            snapshot,
            listeners,
        }));
        Metrics { registry }
    }

    /// Where other parts register their families, before the metrics are shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            let _ = writeln!(text, "# encoding failed: {err}");
        }
        text
    }

    /// Every metric in the format a client's `Accept` header asks for, with its
    /// content type.
    pub fn encode_for(&self, accept: Option<&str>) -> (String, &'static str) {
        let format = Format::negotiate(accept);
        let openmetrics = self.encode();
        let body = match format {
            Format::OpenMetrics => openmetrics,
            Format::Text => openmetrics_to_text(&openmetrics),
        };
        (body, format.content_type())
    }
}

/// The exposition formats `/metrics` serves: OpenMetrics to clients that ask for it
/// (Prometheus does), the classic text format 0.0.4 to everything else (curl, promtool,
/// older scrapers), as the official client libraries do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// OpenMetrics when `Accept` lists `application/openmetrics-text` with a weight above 0.
    fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The classic text format from OpenMetrics: a counter family is named after its samples
/// (`x_total`, where OpenMetrics names it `x`, which promtool reports as a family without
/// HELP), `unknown` is `untyped`, and there is no `# UNIT` or `# EOF`.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if tail == "unknown" { "untyped" } else { tail };
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(text, "{prefix}{name}{total} {tail}");
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// Encodes the request path's counters from the current snapshot at scrape time.
struct DataPlane {
    snapshot: SharedSnapshot,
    listeners: Arc<Mutex<Vec<Arc<ListenerState>>>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane").finish_non_exhaustive()
    }
}

/// (service, pool kind, the pool, its counts) for every pool of the snapshot.
type PoolRow<'a> = (&'a str, &'static str, &'a Pool, PoolCounts);

impl Collector for DataPlane {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.load_full();
        let rows: Vec<PoolRow<'_>> = snapshot
            .routes
            .iter()
            .flat_map(|route| {
                let service = &*route.service.name;
                [&route.service.old, &route.service.new]
                    .map(|pool| (service, pool.kind.label(), pool, pool.stats.counts()))
            })
            .collect();

        counters_by_pool(
            &mut encoder,
            "cutover_requests",
            "Requests answered, by pool and response class (error: no answer from the backend)",
            &rows,
            "code",
            |counts| CodeClass::ALL.map(|class| (class.label(), counts.responses[class as usize])),
        )?;

        let mut durations = encoder.encode_descriptor(
            "cutover_request_duration_seconds",
            "Time from receiving a request to the backend's response head",
            None,
            MetricType::Histogram,
        )?;
        for (service, pool, _, counts) in &rows {
            let (buckets, count) = duration_buckets(counts);
            let sum = counts.latency_sum_us as f64 / 1e6;
            let labels = [("service", *service), ("pool", *pool)];
            durations
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        counters_by_pool(
            &mut encoder,
            "cutover_upstream_errors",
            "Failures talking to backends, by kind",
            &rows,
            "kind",
            |counts| {
                UpstreamErrorKind::ALL
                    .map(|kind| (kind.label(), counts.upstream_errors[kind as usize]))
            },
        )?;

        let now_ms = now_millis();
        let mut up = encoder.encode_descriptor(
            "cutover_backend_up",
            "1 when the backend takes traffic: healthy and not ejected",
            None,
            MetricType::Gauge,
        )?;
        for (service, pool_label, pool, _) in &rows {
            for backend in &pool.backends {
                let labels = [
                    ("service", *service),
                    ("pool", *pool_label),
                    ("backend", &*backend.addr),
                ];
                let value = i64::from(backend.is_available(now_ms));
                up.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }

        let mut connections = encoder.encode_descriptor(
            "cutover_connections_active",
            "Open client connections, by listener",
            None,
            MetricType::Gauge,
        )?;
        let listeners = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        for listener in listeners {
            let labels = [("listener", listener.name.as_str())];
            let value = listener.active.load(std::sync::atomic::Ordering::Relaxed);
            connections.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }
}

/// A counter family by service, pool and one more label (`key`), one series for each
/// (value, count) that `series` gives for a pool.
fn counters_by_pool<S>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[PoolRow<'_>],
    key: &str,
    series: impl Fn(&PoolCounts) -> S,
) -> Result<(), std::fmt::Error>
where
    S: IntoIterator<Item = (&'static str, u64)>,
{
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (service, pool, _, counts) in rows {
        for (value, count) in series(counts) {
            let labels = [("service", *service), ("pool", *pool), (key, value)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
    }
    Ok(())
}

/// The count of each exposed bucket (not cumulative: prometheus-client's
/// `encode_histogram` sums them as it writes `_bucket`), ending with the `f64::MAX` bucket
/// it labels `+Inf`, and the total.
fn duration_buckets(counts: &PoolCounts) -> (Vec<(f64, u64)>, u64) {
    let mut buckets = Vec::with_capacity(DURATION_BOUNDS_US.len() + 1);
    let mut next = 0usize;
    for bound in DURATION_BOUNDS_US {
        let mut in_bucket = 0u64;
        while next < LATENCY_EDGES_US.len() && LATENCY_EDGES_US[next] <= bound {
            in_bucket += counts.latency[next];
            next += 1;
        }
        buckets.push((bound as f64 / 1e6, in_bucket));
    }
    let rest: u64 = counts.latency[next..].iter().sum();
    buckets.push((f64::MAX, rest));
    let total = buckets.iter().map(|&(_, count)| count).sum();
    (buckets, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PoolStats;
    use std::time::Duration;

    /// 0.9 ms, exactly 1 ms, 1.001 ms and 90 s, as the stats record them.
    fn four_latencies() -> PoolCounts {
        let stats = PoolStats::default();
        for micros in [900, 1_000, 1_001, 90_000_000] {
            stats.record(CodeClass::Success, Duration::from_micros(micros));
        }
        stats.counts()
    }

    #[test]
    fn duration_bounds_rise_and_are_stats_edges() {
        assert!(DURATION_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        assert!(DURATION_BOUNDS_US
            .windows(2)
            .all(|w| w[1] as f64 / w[0] as f64 <= 1.5 || w[0] >= 8_000_000));
        for bound in DURATION_BOUNDS_US {
            assert!(
                LATENCY_EDGES_US.contains(&bound),
                "{bound} is no stats edge"
            );
        }
        for usual in [
            1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        ] {
            assert!(DURATION_BOUNDS_US.contains(&usual), "{usual}");
        }
        assert_eq!(DURATION_BOUNDS_US[0], 1_000);
        assert_eq!(DURATION_BOUNDS_US[38], 60_000_000);
    }

    #[test]
    fn duration_buckets_count_each_bucket_once_at_exact_edges() {
        let (buckets, total) = duration_buckets(&four_latencies());
        let at = |seconds: f64| buckets.iter().find(|b| b.0 == seconds).unwrap().1;
        assert_eq!(total, 4);
        assert_eq!(buckets[0], (0.001, 2), "le=1ms holds 0.9ms and exactly 1ms");
        assert_eq!(
            buckets[1],
            (0.0015, 1),
            "1.001 ms, and nothing counted again"
        );
        assert_eq!(at(0.002) + at(60.0), 0);
        assert_eq!(
            buckets.last(),
            Some(&(f64::MAX, 1)),
            "the encoder's +Inf: 90 s"
        );
        assert_eq!(buckets.len(), DURATION_BOUNDS_US.len() + 1);
    }

    /// Encodes `counts` the way `DataPlane` does, for one series.
    struct OneHistogram(PoolCounts);

    impl std::fmt::Debug for OneHistogram {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("OneHistogram")
        }
    }

    impl Collector for OneHistogram {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor("d", "help", None, MetricType::Histogram)?;
            let (buckets, count) = duration_buckets(&self.0);
            family.encode_histogram::<NoLabelSet>(1.0, count, &buckets, None)
        }
    }

    #[test]
    fn the_exposed_histogram_is_cumulative_and_ends_at_plus_inf() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(OneHistogram(four_latencies())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "d_count 4",
            "d_bucket{le=\"0.001\"} 2",
            "d_bucket{le=\"0.0015\"} 3",
            "d_bucket{le=\"0.0025\"} 3",
            "d_bucket{le=\"60.0\"} 3",
            "d_bucket{le=\"+Inf\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn the_exposition_has_the_request_path_families() {
        let metrics = Metrics::new(SharedSnapshot::default(), Arc::default());
        let text = metrics.encode();
        for needle in [
            "# TYPE cutover_requests counter",
            "# TYPE cutover_request_duration_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everything_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        for other in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("application/openmetrics-text;q=0, text/plain"),
        ] {
            assert_eq!(Format::negotiate(other), Format::Text, "{other:?}");
        }
    }

    #[test]
    fn the_text_format_names_counter_families_after_their_samples() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                           a_requests_total{x=\"1\"} 3\n# HELP b Up.\n# TYPE b gauge\nb 1\n\
                           # HELP c Other.\n# TYPE c unknown\n# UNIT c seconds\nc 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total{x=\"1\"} 3\n# HELP b Up.\n# TYPE b gauge\nb 1\n\
             # HELP c Other.\n# TYPE c untyped\nc 2\n"
        );
    }
}

//! Per-pool outcome counters written by the request path and read by the analysis.
//!
//! The request path only does relaxed atomic increments here: one for the response
//! class, one for the latency bucket, one for the latency sum. The controller reads the
//! cumulative counts once a second and keeps the differences (see `rollout::analysis`);
//! `/metrics` encodes the same counts at scrape time. There is one `PoolStats` per
//! (service, pool) for the life of the process, shared by every routing snapshot, so
//! counters stay monotonic across reloads.
//!
//! Latency buckets: 12 per decade (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9 × 10^k µs)
//! from 10 µs to 100 s, so a p99 is known to within one bucket (≤ 25%), and the usual
//! Prometheus bounds (1 ms, 2.5 ms, 5 ms … 10 s, 30 s, 60 s) are bucket edges.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const DECADE: [u64; 12] = [10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90];
const DECADES: usize = 7;

/// Upper bounds of the latency buckets, in microseconds; one more bucket holds the rest.
pub(crate) const LATENCY_EDGES_US: [u64; DECADES * 12 + 1] = latency_edges();
pub(crate) const LATENCY_BUCKETS: usize = LATENCY_EDGES_US.len() + 1;

const fn latency_edges() -> [u64; DECADES * 12 + 1] {
    let mut edges = [0u64; DECADES * 12 + 1];
    let mut scale = 1u64;
    let mut decade = 0;
    while decade < DECADES {
        let mut i = 0;
        while i < 12 {
            edges[decade * 12 + i] = DECADE[i] * scale;
            i += 1;
        }
        scale *= 10;
        decade += 1;
    }
    edges[DECADES * 12] = 100_000_000;
    edges
}

/// The bucket a latency falls in.
pub(crate) fn latency_bucket(micros: u64) -> usize {
    LATENCY_EDGES_US.partition_point(|&edge| edge < micros)
}

names! {
    /// The response classes of `cutover_requests_total{code}`; a variant's discriminant is
    /// its index in a pool's counters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CodeClass: pub fn label, pub const ALL {
        Success => "2xx",
        Redirect => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
        /// No response from the backend: connect failure, timeout, reset or a bad response.
        Error => "error",
    }
}

impl CodeClass {
    pub fn of_status(status: u16) -> CodeClass {
        match status {
            ..=299 => CodeClass::Success,
            300..=399 => CodeClass::Redirect,
            400..=499 => CodeClass::ClientError,
            _ => CodeClass::ServerError,
        }
    }
}

names! {
    /// The kinds of `cutover_upstream_errors_total{kind}`; a variant's discriminant is its
    /// index in a pool's counters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum UpstreamErrorKind: pub fn label, pub const ALL {
        Connect => "connect",
        Timeout => "timeout",
        Reset => "reset",
        Protocol => "protocol",
    }
}

/// The counters of one pool of one service.
#[derive(Debug)]
pub struct PoolStats {
    responses: [AtomicU64; CodeClass::ALL.len()],
    upstream_errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_us: AtomicU64,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            responses: Default::default(),
            upstream_errors: Default::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

impl PoolStats {
    /// One request answered (by the backend or, for `Error`, by the proxy on its behalf).
    #[inline]
    pub fn record(&self, class: CodeClass, latency: Duration) {
        self.responses[class as usize].fetch_add(1, Relaxed);
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency[latency_bucket(micros)].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(micros, Relaxed);
    }

    /// A request this pool should have served but could not, with no latency to speak
    /// of (NEW had no healthy backend, so OLD served it).
    #[inline]
    pub fn record_unserved(&self) {
        self.responses[CodeClass::Error as usize].fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn record_upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// The cumulative counts right now.
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            responses: std::array::from_fn(|i| self.responses[i].load(Relaxed)),
            upstream_errors: std::array::from_fn(|i| self.upstream_errors[i].load(Relaxed)),
            latency: std::array::from_fn(|i| self.latency[i].load(Relaxed)),
            latency_sum_us: self.latency_sum_us.load(Relaxed),
        }
    }
}

/// Plain counts: cumulative from [`PoolStats::counts`], or a window's worth after
/// [`PoolCounts::minus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCounts {
    pub responses: [u64; CodeClass::ALL.len()],
    pub upstream_errors: [u64; UpstreamErrorKind::ALL.len()],
    pub latency: [u64; LATENCY_BUCKETS],
    pub latency_sum_us: u64,
}

impl Default for PoolCounts {
    fn default() -> Self {
        PoolCounts {
            responses: [0; CodeClass::ALL.len()],
            upstream_errors: [0; UpstreamErrorKind::ALL.len()],
            latency: [0; LATENCY_BUCKETS],
            latency_sum_us: 0,
        }
    }
}

impl PoolCounts {
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// 5xx answers plus requests the backend never answered.
    pub fn errors(&self) -> u64 {
        self.responses[CodeClass::ServerError as usize] + self.responses[CodeClass::Error as usize]
    }

    pub fn error_rate(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.errors() as f64 / n as f64,
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn minus(&self, earlier: &PoolCounts) -> PoolCounts {
        PoolCounts {
            responses: std::array::from_fn(|i| {
                self.responses[i].saturating_sub(earlier.responses[i])
            }),
            upstream_errors: std::array::from_fn(|i| {
                self.upstream_errors[i].saturating_sub(earlier.upstream_errors[i])
            }),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
        }
    }

    pub fn add(&mut self, other: &PoolCounts) {
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        for (a, b) in self.upstream_errors.iter_mut().zip(other.upstream_errors) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
        self.latency_sum_us += other.latency_sum_us;
    }

    /// The `q` quantile (0..1) of the recorded latencies, interpolated within its bucket;
    /// `None` without samples.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (index, &count) in self.latency.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if (seen + count) as f64 >= rank {
                let lower = if index == 0 {
                    0
                } else {
                    LATENCY_EDGES_US[index - 1]
                };
                let Some(&upper) = LATENCY_EDGES_US.get(index) else {
                    return Some(Duration::from_micros(lower));
                };
                let within = (rank - seen as f64) / count as f64;
                let micros = lower as f64 + within * (upper - lower) as f64;
                return Some(Duration::from_micros(micros.round() as u64));
            }
            seen += count;
        }
        LATENCY_EDGES_US.last().map(|&us| Duration::from_micros(us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_rise_and_hold_the_prometheus_bounds() {
        assert!(LATENCY_EDGES_US.windows(2).all(|w| w[0] < w[1]));
        for bound in [
            1_000, 2_500, 5_000, 10_000, 250_000, 500_000, 1_000_000, 10_000_000, 30_000_000,
            60_000_000,
        ] {
            assert!(LATENCY_EDGES_US.contains(&bound), "{bound}");
        }
        assert_eq!(LATENCY_EDGES_US[0], 10);
        assert_eq!(*LATENCY_EDGES_US.last().unwrap(), 100_000_000);
    }

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(10), 0);
        assert_eq!(latency_bucket(11), 1);
        assert_eq!(
            latency_bucket(1_000),
            LATENCY_EDGES_US.iter().position(|&e| e == 1_000).unwrap()
        );
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn code_classes() {
        assert_eq!(CodeClass::of_status(101), CodeClass::Success);
        assert_eq!(CodeClass::of_status(204), CodeClass::Success);
        assert_eq!(CodeClass::of_status(302), CodeClass::Redirect);
        assert_eq!(CodeClass::of_status(404), CodeClass::ClientError);
        assert_eq!(CodeClass::of_status(503), CodeClass::ServerError);
    }

    /// `/metrics` walks `ALL` and shows each counter (indexed by discriminant) under its
    /// label: a label on the wrong variant would misname a count, a missing variant hide one.
    #[test]
    fn the_label_tables_follow_the_counter_indexes() {
        let codes = CodeClass::ALL.map(|class| (class as usize, class.label()));
        let expected = [(0, "2xx"), (1, "3xx"), (2, "4xx"), (3, "5xx"), (4, "error")];
        assert_eq!(codes, expected);
        let kinds = UpstreamErrorKind::ALL.map(|kind| (kind as usize, kind.label()));
        let expected = [
            (0, "connect"),
            (1, "timeout"),
            (2, "reset"),
            (3, "protocol"),
        ];
        assert_eq!(kinds, expected);
    }

    #[test]
    fn counts_difference_and_error_rate() {
        let stats = PoolStats::default();
        let before = stats.counts();
        for _ in 0..95 {
            stats.record(CodeClass::Success, Duration::from_millis(2));
        }
        for _ in 0..3 {
            stats.record(CodeClass::ServerError, Duration::from_millis(2));
        }
        stats.record(CodeClass::Error, Duration::from_secs(2));
        stats.record_unserved();
        let window = stats.counts().minus(&before);
        assert_eq!(window.requests(), 100);
        assert_eq!(window.errors(), 5);
        assert!((window.error_rate() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn p99_is_within_its_bucket() {
        let mut counts = PoolCounts::default();
        let stats = PoolStats::default();
        for _ in 0..990 {
            stats.record(CodeClass::Success, Duration::from_millis(10));
        }
        for _ in 0..10 {
            stats.record(CodeClass::Success, Duration::from_millis(800));
        }
        counts.add(&stats.counts());
        let p99 = counts.latency_quantile(0.99).unwrap();
        assert!(
            p99 >= Duration::from_millis(9) && p99 <= Duration::from_millis(10),
            "{p99:?}"
        );
        let p999 = counts.latency_quantile(0.999).unwrap();
        assert!(
            p999 >= Duration::from_millis(700) && p999 <= Duration::from_millis(800),
            "{p999:?}"
        );
        assert_eq!(PoolCounts::default().latency_quantile(0.99), None);
    }

    #[test]
    fn quantile_of_a_single_sample_is_its_bucket() {
        let stats = PoolStats::default();
        stats.record(CodeClass::Success, Duration::from_millis(450));
        let p99 = stats.counts().latency_quantile(0.99).unwrap();
        assert!(
            p99 > Duration::from_millis(400) && p99 <= Duration::from_millis(500),
            "{p99:?}"
        );
    }
}

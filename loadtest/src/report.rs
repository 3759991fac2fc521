//! Results of one open-loop run: counters, latency percentiles, and their
//! rendering as text (for people) and JSON (for scripts and CI).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::duration::{format_duration, format_micros};

/// Lowest and highest latency the histograms track, in microseconds, and
/// their precision. Values above the top are clamped (and show as 60 s).
pub const LATENCY_MIN_US: u64 = 1;
pub const LATENCY_MAX_US: u64 = 60_000_000;
pub const LATENCY_SIGFIG: u8 = 3;

/// Generator lag above which the summary warns that the numbers are partly
/// the tool's own delay.
const LAG_WARNING_US: u64 = 1_000;

/// An empty latency histogram with the bounds every part of the tool uses,
/// so that histograms can always be merged.
pub fn new_histogram() -> Histogram<u64> {
    // The arguments are constants that hdrhistogram accepts; this cannot
    // fail at run time.
    Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Response counts by status class.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct StatusCounts {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    /// 1xx or anything outside 100..=599.
    pub other: u64,
}

impl StatusCounts {
    pub fn record(&mut self, status: u16) {
        match status {
            200..=299 => self.s2xx += 1,
            300..=399 => self.s3xx += 1,
            400..=499 => self.s4xx += 1,
            500..=599 => self.s5xx += 1,
            _ => self.other += 1,
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.s2xx += other.s2xx;
        self.s3xx += other.s3xx;
        self.s4xx += other.s4xx;
        self.s5xx += other.s5xx;
        self.other += other.other;
    }
}

/// Requests that got no HTTP response at all.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorCounts {
    /// TCP connect or handshake failed.
    pub connect: u64,
    /// No complete response within `--timeout` of the scheduled send time
    /// (including requests that spent the whole budget waiting for a free
    /// connection and were never sent).
    pub timeout: u64,
    /// Connection reset or closed mid-request, malformed response.
    pub io: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.io
    }

    pub fn merge(&mut self, other: &Self) {
        self.connect += other.connect;
        self.timeout += other.timeout;
        self.io += other.io;
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            min: histogram.min(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    /// `p50 1.2ms  p90 ...`, or a dash when nothing was measured.
    pub fn render(&self) -> String {
        if self.count == 0 {
            return "- (no responses)".to_string();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            format_micros(self.p50),
            format_micros(self.p90),
            format_micros(self.p99),
            format_micros(self.p999),
            format_micros(self.max)
        )
    }
}

/// Tally of one response header's values (`--count-header`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HeaderTally {
    pub name: String,
    /// Value -> number of responses; responses without the header are
    /// counted under `(none)`.
    pub values: BTreeMap<String, u64>,
}

/// Everything one open-loop run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoadReport {
    pub url: String,
    pub method: String,
    /// Requested arrival rate, requests per second.
    pub target_rate: f64,
    /// Length of the schedule (requests are scheduled only within it).
    pub duration_s: f64,
    pub connections: usize,
    pub timeout_s: f64,
    /// Requests the schedule called for.
    pub scheduled: u64,
    /// How late the load generator itself issued requests (time from the
    /// scheduled instant to putting the request in the queue). This is the
    /// tool's own error, included in `latency_us`; it should be tiny.
    pub scheduler_lag_us: LatencySummary,
    /// Requests actually written to a connection.
    pub sent: u64,
    /// Requests that received a complete HTTP response (any status).
    pub responses: u64,
    /// Wall time from the first scheduled request until the last request
    /// finished (so a backlog that drains after the schedule ends counts),
    /// and never less than the schedule itself.
    pub elapsed_s: f64,
    /// `responses / elapsed_s`.
    pub achieved_rate: f64,
    pub status: StatusCounts,
    pub errors: ErrorCounts,
    /// Transport errors plus 5xx responses: what a user would have seen fail.
    /// This is what `--max-errors` is compared against.
    pub failures: u64,
    /// Latency from each request's *scheduled* send time to the end of its
    /// response (coordinated-omission corrected). Responses only.
    pub latency_us: LatencySummary,
    /// Latency from the moment the request was actually written to the end of
    /// its response. This is what a closed-loop tool would report; compare
    /// with `latency_us` to see how much time requests spent queued.
    pub service_time_us: LatencySummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_header: Option<HeaderTally>,
    /// A few distinct transport error messages with their counts, to tell
    /// "connection refused" from "reset by peer" without a packet capture.
    pub error_samples: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Multi-line human summary.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target    {} {} at {}/s for {} over {} connection(s) (open loop, timeout {})",
            self.method,
            self.url,
            trim_rate(self.target_rate),
            format_duration(Duration::from_secs_f64(self.duration_s)),
            self.connections,
            format_duration(Duration::from_secs_f64(self.timeout_s)),
        );
        let _ = writeln!(
            out,
            "requests  scheduled {}  sent {}  responses {}  in {:.2}s  achieved {:.1}/s",
            self.scheduled, self.sent, self.responses, self.elapsed_s, self.achieved_rate
        );
        let s = &self.status;
        let _ = writeln!(
            out,
            "status    2xx {}  3xx {}  4xx {}  5xx {}  other {}",
            s.s2xx, s.s3xx, s.s4xx, s.s5xx, s.other
        );
        let e = &self.errors;
        let _ = writeln!(
            out,
            "errors    connect {}  timeout {}  io {}  (failures incl. 5xx: {})",
            e.connect, e.timeout, e.io, self.failures
        );
        let _ = writeln!(
            out,
            "latency   {}  (from scheduled time)",
            self.latency_us.render()
        );
        let _ = writeln!(
            out,
            "service   {}  (from actual send; closed-loop view)",
            self.service_time_us.render()
        );
        let lag = &self.scheduler_lag_us;
        let _ = writeln!(
            out,
            "generator lag p99 {}  max {}  (how late this tool issued requests)",
            format_micros(lag.p99),
            format_micros(lag.max)
        );
        if lag.p99 > LAG_WARNING_US {
            let _ = writeln!(
                out,
                "warning   the load generator fell behind its schedule (CPU starved?); latency includes its delay"
            );
        }
        if let Some(tally) = &self.count_header {
            let values: Vec<String> = tally
                .values
                .iter()
                .map(|(value, count)| format!("{value} {count}"))
                .collect();
            let _ = writeln!(out, "{:<9} {}", tally.name, values.join("  "));
        }
        for (message, count) in &self.error_samples {
            let _ = writeln!(out, "error     {count} x {message}");
        }
        out
    }
}

/// `500` rather than `500.0` for whole rates.
fn trim_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let mut counts = StatusCounts::default();
        for status in [200, 204, 301, 404, 500, 503, 101] {
            counts.record(status);
        }
        assert_eq!(
            counts,
            StatusCounts {
                s2xx: 2,
                s3xx: 1,
                s4xx: 1,
                s5xx: 2,
                other: 1
            }
        );
    }

    #[test]
    fn summary_of_empty_and_filled_histograms() {
        let mut histogram = new_histogram();
        assert_eq!(LatencySummary::from_histogram(&histogram).count, 0);
        for micros in 1..=1000 {
            histogram.saturating_record(micros);
        }
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.count, 1000);
        assert!((499..=501).contains(&summary.p50), "{summary:?}");
        assert!((989..=991).contains(&summary.p99), "{summary:?}");
        assert_eq!(summary.max, 1000);
        // Values past the top are clamped instead of lost.
        histogram.saturating_record(u64::MAX);
        assert!(histogram.max() >= LATENCY_MAX_US);
    }
}

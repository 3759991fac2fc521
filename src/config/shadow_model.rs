//! A `shadow` step, validated (SPEC §9).

use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method};

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSpec {
    /// Share of the requests OLD serves that are copied, 0..=1.
    pub percent: f64,
    pub hold: Duration,
    /// Comparisons needed before the step can complete.
    pub min_requests: u64,
    /// How long (running time from the step's start) the step may go on short of
    /// `min_requests` before it pauses for "not enough evidence"; `None`: 3 × `hold`, at
    /// least 10 minutes, as for checks.
    pub max_wait: Option<Duration>,
    /// Mismatching comparisons / comparisons, 0..=1.
    pub max_mismatch: f64,
    pub methods: Vec<Method>,
    /// Whether request bodies are copied: only when `methods` was written out.
    pub copy_bodies: bool,
    pub compare_status: bool,
    pub compare_headers: Vec<HeaderName>,
    pub compare_body: bool,
    /// `$.a.b` as `["a", "b"]`.
    pub ignore_json: Vec<Vec<String>>,
    pub max_body: usize,
    /// Learn noise from a second OLD backend.
    pub noise_auto: bool,
    pub max_in_flight: usize,
    /// Bounds each copy, connect to the end of the body.
    pub timeout: Duration,
}

impl fmt::Display for ShadowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shadow {}% to NEW, hold {}, at least {} comparisons, max mismatch {}%",
            self.percent * 100.0,
            humantime::format_duration(self.hold),
            self.min_requests,
            self.max_mismatch * 100.0
        )
    }
}

/// A `verify` step, validated (SPEC §9): `verify: smoke` is `{ smoke: true }`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifySpec {
    /// The service's smoke requests against every NEW backend.
    pub smoke: bool,
    pub benchmark: Option<BenchmarkSpec>,
}

impl VerifySpec {
    /// The short form, `verify: smoke`.
    pub const SMOKE: VerifySpec = VerifySpec {
        smoke: true,
        benchmark: None,
    };
}

/// The same paced, open-loop load against OLD and NEW backends side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkSpec {
    /// Requests a second, to each pool.
    pub rate: u32,
    pub duration: Duration,
    /// A GET request target.
    pub path: String,
    /// NEW p99 / OLD p99 at most.
    pub max_p99_ratio: f64,
    /// NEW (5xx + no answer) / requests at most, 0..=1.
    pub max_error_rate: f64,
}

impl BenchmarkSpec {
    pub const DEFAULT_RATE: u64 = 50;
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_P99_RATIO: f64 = 1.5;
    pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;

    /// Requests sent to each pool.
    pub fn requests(&self) -> u64 {
        (f64::from(self.rate) * self.duration.as_secs_f64()).round() as u64
    }
}

impl fmt::Display for BenchmarkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "benchmark GET {} at {}/s for {} against OLD and NEW (NEW p99 at most {} x OLD's, NEW errors at most {}%)",
            self.path,
            self.rate,
            humantime::format_duration(self.duration),
            self.max_p99_ratio,
            self.max_error_rate * 100.0
        )
    }
}

impl fmt::Display for VerifySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.smoke, &self.benchmark) {
            (true, None) => f.write_str("verify smoke"),
            (true, Some(b)) => write!(f, "verify smoke, then {b}"),
            (false, Some(b)) => write!(f, "verify: {b}"),
            (false, None) => f.write_str("verify: nothing"),
        }
    }
}

#[cfg(test)]
impl ShadowSpec {
    /// A spec for unit tests: everything compared, `$.meta.at` ignored, 1 KiB bodies.
    pub(crate) fn example() -> ShadowSpec {
        ShadowSpec {
            percent: 1.0,
            hold: Duration::from_secs(1),
            min_requests: 1,
            max_wait: None,
            max_mismatch: 0.0,
            methods: vec![Method::GET],
            copy_bodies: false,
            compare_status: true,
            compare_headers: vec![http::header::CONTENT_TYPE],
            compare_body: true,
            ignore_json: vec![vec!["meta".into(), "at".into()]],
            max_body: 1024,
            noise_auto: false,
            max_in_flight: 1,
            timeout: Duration::from_secs(1),
        }
    }
}

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

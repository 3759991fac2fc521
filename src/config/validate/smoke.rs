//! `smoke:`: the requests a `verify` step sends to every NEW backend (SPEC §9).

use http::{HeaderName, HeaderValue, Method};

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::{BenchmarkFile, OneOrMany, ServiceFile, SmokeFile, VerifyFile};
use crate::config::model::{RolloutSpec, SmokeRequest, StepKind};
use crate::config::{BenchmarkSpec, VerifySpec};

/// A p99 from fewer requests is the slowest one or two: not a percentile.
const BENCHMARK_MIN_REQUESTS: u64 = 100;
/// Each benchmark request has its own connection (see `shadow::benchmark`); beyond this
/// rate the connections' TIME_WAIT would crowd the ephemeral ports.
const BENCHMARK_MAX_RATE: u64 = 200;
const BENCHMARK_MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(600);

impl Checker<'_> {
    /// A `verify` step with nothing to send would pass without proving anything.
    pub(super) fn verify_has_smoke(
        &mut self,
        file: &ServiceFile,
        rollout: Option<&RolloutSpec>,
        no_smoke: bool,
    ) {
        let verifies = rollout.is_some_and(|r| {
            r.steps
                .iter()
                .any(|s| matches!(&s.kind, StepKind::Verify(v) if v.smoke))
        });
        if verifies && no_smoke && file.smoke.as_ref().is_none_or(Vec::is_empty) {
            let mark = file.rollout.as_ref().map(|r| r.mark);
            if let Some(mark) = mark {
                self.error(
                    mark,
                    "a `verify` step sends the service's `smoke` requests, and it has none: \
                     add a `smoke:` list to the service",
                );
            }
        }
    }

    /// `verify: smoke` or the long form `{ smoke: true, benchmark: {...} }`.
    pub(super) fn verify_step(&mut self, verify: &Spanned<VerifyFile>) -> Option<VerifySpec> {
        let file = &verify.value;
        if let Some(short) = &file.short {
            if short == "smoke" {
                return Some(VerifySpec::SMOKE);
            }
            self.error(
                verify.mark,
                format!(
                    "`verify: {short}`: write `verify: smoke` or `verify: {{ smoke: true, benchmark: {{ ... }} }}`"
                ),
            );
            return None;
        }
        for key in &file.unknown {
            let known = ["smoke", "benchmark"];
            let hint = known
                .iter()
                .find(|k| k.starts_with(&key.value[..key.value.len().min(3)]))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_else(|| "; expected `smoke` or `benchmark`".to_string());
            self.error(key.mark, format!("unknown key `{}`{hint}", key.value));
        }
        let smoke = file.smoke.as_ref().is_some_and(|s| s.value);
        let benchmark = match &file.benchmark {
            None => None,
            Some(benchmark) => Some(self.benchmark(benchmark)?),
        };
        if !file.unknown.is_empty() {
            return None;
        }
        if !smoke && benchmark.is_none() {
            self.error(
                verify.mark,
                "this `verify` step checks nothing: set `smoke: true`, add a `benchmark`, or both",
            );
            return None;
        }
        Some(VerifySpec { smoke, benchmark })
    }

    fn benchmark(&mut self, benchmark: &Spanned<BenchmarkFile>) -> Option<BenchmarkSpec> {
        let file = &benchmark.value;
        let path = self.required(&file.path, benchmark.mark, "path").cloned();
        let rate = self.count(
            &file.rate,
            BenchmarkSpec::DEFAULT_RATE,
            1,
            BENCHMARK_MAX_RATE,
        );
        let duration = self.positive_duration(&file.duration, BenchmarkSpec::DEFAULT_DURATION);
        let mut ok = true;
        if duration > BENCHMARK_MAX_DURATION {
            if let Some(d) = &file.duration {
                self.error(d.mark, "a benchmark runs for at most 10m");
                ok = false;
            }
        }
        let max_p99_ratio = match &file.max_p99_ratio {
            None => BenchmarkSpec::DEFAULT_MAX_P99_RATIO,
            Some(r) if r.value.is_finite() && r.value >= 1.0 => r.value,
            Some(r) => {
                self.error(
                    r.mark,
                    "`max_p99_ratio` is NEW's p99 over OLD's, at least 1 (1.3: NEW may be 30% slower)",
                );
                ok = false;
                1.0
            }
        };
        let max_error_rate = match &file.max_error_rate {
            None => Some(BenchmarkSpec::DEFAULT_MAX_ERROR_RATE),
            some => self.fraction(some),
        };
        let path = path?;
        if !path.value.starts_with('/') || path.value.parse::<http::Uri>().is_err() {
            self.error(
                path.mark,
                "a benchmark's `path` starts with `/` and is a valid request target",
            );
            return None;
        }
        let spec = BenchmarkSpec {
            rate: u32::try_from(rate).unwrap_or(u32::MAX),
            duration,
            path: path.value.clone(),
            max_p99_ratio,
            max_error_rate: max_error_rate?,
        };
        if spec.requests() < BENCHMARK_MIN_REQUESTS {
            self.error(
                benchmark.mark,
                format!(
                    "a benchmark of {} request(s) per pool ({}/s for {}) cannot tell a p99: \
                     make rate × duration at least {BENCHMARK_MIN_REQUESTS}",
                    spec.requests(),
                    spec.rate,
                    humantime::format_duration(spec.duration)
                ),
            );
            return None;
        }
        ok.then_some(spec)
    }

    pub(super) fn smoke(&mut self, smoke: &Spanned<SmokeFile>) -> Option<SmokeRequest> {
        let file = &smoke.value;
        let method = match &file.method {
            None => Method::GET,
            Some(m) => match Method::from_bytes(m.value.as_bytes()) {
                Ok(method) => method,
                Err(_) => {
                    self.error(m.mark, format!("`{}` is not an HTTP method", m.value));
                    return None;
                }
            },
        };
        let path = self.required(&file.path, smoke.mark, "path")?;
        if !path.value.starts_with('/') || path.value.parse::<http::Uri>().is_err() {
            self.error(
                path.mark,
                "a smoke request's `path` starts with `/` and is a valid request target",
            );
            return None;
        }
        let mut headers = Vec::new();
        for (name, value) in file.headers.iter().flat_map(|h| h.0.iter()) {
            match (
                HeaderName::from_bytes(name.value.as_bytes()),
                HeaderValue::from_str(&value.value),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => {
                    self.error(name.mark, format!("`{}` is not a header name", name.value))
                }
                (_, Err(_)) => self.error(value.mark, "not a valid header value"),
            }
        }
        let mut expect_header = Vec::new();
        for (name, value) in file.expect_header.iter().flat_map(|h| h.0.iter()) {
            match HeaderName::from_bytes(name.value.as_bytes()) {
                Ok(n) => expect_header.push((n, value.value.to_ascii_lowercase())),
                Err(_) => self.error(name.mark, format!("`{}` is not a header name", name.value)),
            }
        }
        let expect_status = match &file.expect_status {
            None => vec![defaults::SMOKE_EXPECT_STATUS],
            Some(status) => {
                let listed = match &status.value {
                    OneOrMany::One(one) => vec![*one],
                    OneOrMany::Many(many) => many.clone(),
                };
                if listed.is_empty() || listed.iter().any(|s| !(100..=599).contains(s)) {
                    self.error(
                        status.mark,
                        "`expect_status` is a status code (100 to 599) or a non-empty list of them",
                    );
                    return None;
                }
                listed.into_iter().map(|s| s as u16).collect()
            }
        };
        Some(SmokeRequest {
            method,
            path: path.value.clone(),
            headers,
            body: file.body.as_ref().map(|b| b.value.clone()),
            expect_status,
            expect_body_contains: file.expect_body_contains.as_ref().map(|b| b.value.clone()),
            expect_header,
        })
    }
}

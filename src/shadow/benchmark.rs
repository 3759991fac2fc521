//! A `verify` step's benchmark (SPEC §9): the same paced, open-loop load against OLD's and
//! NEW's backends side by side, and a verdict on NEW's p99 and error rate against OLD's.
//!
//! Open loop: request i is due at `start + i / rate` whether or not earlier ones have
//! answered, and its latency runs from that due time, so a backend that stalls is charged
//! for the queue it causes (no coordinated omission). Each request has its own connection
//! (as smoke requests do), made directly to a backend of the pool, round robin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, Method};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::exchange::{exchange, origin_form, Outgoing};
use crate::config::{BenchmarkSpec, Timeouts};

/// Fewer answers than this on either side: a p99 would be the slowest one or two.
pub(crate) const MIN_SAMPLES: u64 = 100;
/// Below this, two p99s differ by scheduler noise rather than by the backends: a NEW p99
/// within this much of OLD's passes whatever the ratio.
pub(crate) const P99_SLACK: Duration = Duration::from_millis(5);
/// Requests of one side waiting for an answer at once; a request due beyond this counts
/// as an error, so a stalled pool costs sockets and memory up to a bound, not without one.
const MAX_IN_FLIGHT: usize = 1024;
/// Only the start of an answer matters; the body is read and dropped up to this.
const MAX_BODY: usize = 64 * 1024;
/// NEW may answer this many percentage points more of the load with a 4xx than OLD did
/// before the two are taken to have done different work (a fast 404 is not a fast
/// answer).
pub(crate) const CLIENT_ERROR_SLACK_POINTS: u64 = 1;

/// What one pool did under the load.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub sent: u64,
    /// 5xx answers, and requests with no answer (refused, reset, timed out).
    pub errors: u64,
    /// Latencies of the answers (any status), in microseconds from the due time.
    pub latency: Histogram<u64>,
    /// One error, in words, for the reason.
    pub first_error: Option<String>,
    /// 4xx answers, which are timed in `latency` too.
    pub client_errors: ClientErrors,
}

/// A side's 4xx answers: how many, and the first one's status for the reason.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientErrors {
    pub count: u64,
    pub first: Option<u16>,
}

impl Side {
    fn new() -> Side {
        Side {
            sent: 0,
            errors: 0,
            // 1 µs to 1 hour at 3 significant figures: a p99 to 0.1%.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            first_error: None,
            client_errors: ClientErrors::default(),
        }
    }

    pub(crate) fn client_error_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.client_errors.count as f64 / self.sent as f64
        }
    }

    /// Whether this side answered more than `CLIENT_ERROR_SLACK_POINTS` percentage points
    /// more of its load with a 4xx than `other` did (in whole numbers: a share that is
    /// exactly one point more is not).
    fn more_client_errors_than(&self, other: &Side) -> bool {
        let (mine, theirs) = (
            self.client_errors.count as u128,
            other.client_errors.count as u128,
        );
        let (sent, other_sent) = (self.sent.max(1) as u128, other.sent.max(1) as u128);
        // mine / sent > theirs / other_sent + points / 100
        mine * other_sent * 100
            > theirs * sent * 100 + CLIENT_ERROR_SLACK_POINTS as u128 * sent * other_sent
    }

    pub(crate) fn error_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.errors as f64 / self.sent as f64
        }
    }

    pub(crate) fn p99(&self) -> Duration {
        // The histogram answers with the top of a value's bucket (80 ms reads 80.06 ms).
        Duration::from_micros(
            self.latency
                .lowest_equivalent(self.latency.value_at_quantile(0.99)),
        )
    }
}

/// Both sides and the verdict.
#[derive(Debug, Clone)]
pub(crate) struct BenchmarkOutcome {
    /// Why NEW fails, or why the comparison cannot be made; `None` is a pass.
    pub failure: Option<String>,
    /// The figures, in words, pass or fail.
    pub summary: String,
}

/// Runs `spec` against both pools at once and judges the result.
pub(crate) async fn run_benchmark(
    spec: &BenchmarkSpec,
    old: &[String],
    new: &[String],
    timeouts: Timeouts,
) -> BenchmarkOutcome {
    let (old_side, new_side) = tokio::join!(
        load(spec, old, timeouts, "OLD"),
        load(spec, new, timeouts, "NEW")
    );
    judge(spec, old_side, new_side)
}

/// The paced load against one pool.
async fn load(spec: &BenchmarkSpec, backends: &[String], timeouts: Timeouts, pool: &str) -> Side {
    let mut side = Side::new();
    if backends.is_empty() {
        side.first_error = Some(format!("{pool} has no backends"));
        return side;
    }
    let total = spec.requests();
    let period = Duration::from_secs_f64(1.0 / f64::from(spec.rate.max(1)));
    let deadline = timeouts.connect + timeouts.request;
    let target = match origin_form(&spec.path) {
        Ok(target) => target,
        Err(err) => {
            side.first_error = Some(err);
            return side;
        }
    };
    let path: Arc<str> = Arc::from(spec.path.as_str());
    let requests: Vec<Arc<Outgoing>> = backends
        .iter()
        .map(|backend| {
            let (headers, host) = (HeaderMap::new(), Some(backend.as_bytes()));
            let get = Outgoing::new(Method::GET, target.as_str(), &headers, host, Bytes::new());
            Arc::new(get)
        })
        .collect();
    let start = Instant::now();
    let mut running = JoinSet::new();
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        side.sent += 1;
        while let Some(done) = running.try_join_next() {
            record(&mut side, done);
        }
        if running.len() >= MAX_IN_FLIGHT {
            record(
                &mut side,
                Ok(Err(format!(
                    "{MAX_IN_FLIGHT} requests to {pool} were already waiting for an answer"
                ))),
            );
            continue;
        }
        let turn = (i as usize) % backends.len();
        let (backend, request) = (backends[turn].clone(), requests[turn].clone());
        let path = path.clone();
        let connect = timeouts.connect;
        running.spawn(async move {
            let answer = exchange(&backend, &request, connect, deadline, MAX_BODY)
                .await
                .map_err(|err| format!("GET {path} on {backend}: {err}"))?;
            let took = due.elapsed();
            if answer.status.is_server_error() {
                return Err(format!("GET {path} on {backend}: status {}", answer.status));
            }
            Ok((took, answer.status.as_u16()))
        });
    }
    while let Some(done) = running.join_next().await {
        record(&mut side, done);
    }
    side
}

type Done = Result<Result<(Duration, u16), String>, tokio::task::JoinError>;

fn record(side: &mut Side, done: Done) {
    match done {
        Ok(Ok((took, status))) => {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
            side.latency.saturating_record(micros);
            if (400..500).contains(&status) {
                side.client_errors.count += 1;
                side.client_errors.first.get_or_insert(status);
            }
        }
        Ok(Err(what)) => {
            side.errors += 1;
            side.first_error.get_or_insert(what);
        }
        Err(err) => {
            side.errors += 1;
            side.first_error
                .get_or_insert_with(|| format!("a benchmark request failed: {err}"));
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// The verdict. Too few answers on either side is a failure, not a pass: without OLD's
/// figures there is nothing to compare NEW with.
pub(crate) fn judge(spec: &BenchmarkSpec, old: Side, new: Side) -> BenchmarkOutcome {
    let (old_p99, new_p99) = (old.p99(), new.p99());
    let ratio = new_p99.as_secs_f64() / old_p99.as_secs_f64().max(1e-6);
    let summary = format!(
        "benchmark GET {} at {}/s for {}: NEW p99 {} / OLD p99 {} = {ratio:.2} (limit {}), \
         error rate NEW {} (limit {}) OLD {}, answers NEW {} OLD {} of {} each",
        spec.path,
        spec.rate,
        humantime::format_duration(spec.duration),
        ms(new_p99),
        ms(old_p99),
        spec.max_p99_ratio,
        percent(new.error_rate()),
        percent(spec.max_error_rate),
        percent(old.error_rate()),
        new.latency.len(),
        old.latency.len(),
        spec.requests(),
    );
    let example = |side: &Side| {
        side.first_error
            .as_ref()
            .map(|e| format!(" (e.g. {e})"))
            .unwrap_or_default()
    };
    let failure = if new.error_rate() > spec.max_error_rate {
        Some(format!(
            "NEW error rate {} is above the limit of {}{}",
            percent(new.error_rate()),
            percent(spec.max_error_rate),
            example(&new)
        ))
    } else if old.sent.saturating_sub(old.errors) < MIN_SAMPLES {
        Some(format!(
            "inconclusive: OLD answered {} of {} requests without error, fewer than the {MIN_SAMPLES} \
             a p99 needs, so NEW cannot be compared with it{}",
            old.sent.saturating_sub(old.errors),
            old.sent,
            example(&old)
        ))
    } else if new.sent.saturating_sub(new.errors) < MIN_SAMPLES {
        Some(format!(
            "inconclusive: NEW answered {} of {} requests without error, fewer than the {MIN_SAMPLES} \
             a p99 needs{}",
            new.sent.saturating_sub(new.errors),
            new.sent,
            example(&new)
        ))
    } else if new.more_client_errors_than(&old) {
        Some(format!(
            "NEW answered {} of the requests with a 4xx (e.g. {}), OLD {}: the two did \
             different work, so their latencies cannot be compared",
            percent(new.client_error_rate()),
            new.client_errors.first.unwrap_or(400),
            percent(old.client_error_rate()),
        ))
    } else if ratio > spec.max_p99_ratio && new_p99.saturating_sub(old_p99) > P99_SLACK {
        Some(format!(
            "NEW p99 {} / OLD p99 {} = {ratio:.2}, above the limit of {}",
            ms(new_p99),
            ms(old_p99),
            spec.max_p99_ratio
        ))
    } else {
        None
    };
    let summary = match &failure {
        Some(why) => format!("{why}; {summary}"),
        None => summary,
    };
    BenchmarkOutcome { failure, summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BenchmarkSpec {
        BenchmarkSpec {
            rate: 50,
            duration: Duration::from_secs(4),
            path: "/items".to_string(),
            max_p99_ratio: 1.3,
            max_error_rate: 0.01,
        }
    }

    fn side(sent: u64, errors: u64, latency_ms: u64) -> Side {
        let mut side = Side::new();
        side.sent = sent;
        side.errors = errors;
        for _ in 0..sent - errors {
            side.latency.record(latency_ms * 1000).unwrap();
        }
        side
    }

    /// Why the benchmark of OLD against NEW failed (it must fail).
    fn failure(old: Side, new: Side) -> String {
        judge(&spec(), old, new).failure.expect("a failure")
    }

    #[test]
    fn equal_sides_pass_and_the_summary_names_the_figures() {
        let outcome = judge(&spec(), side(200, 0, 20), side(200, 1, 21));
        assert_eq!(outcome.failure, None, "{}", outcome.summary);
        assert_contains!(outcome.summary, "NEW p99 21.0 ms / OLD p99 20.0 ms = 1.05");
        assert_contains!(outcome.summary, "error rate NEW 0.50%");
    }

    #[test]
    fn a_slow_new_fails_on_the_ratio_with_both_p99s() {
        assert_contains!(
            failure(side(200, 0, 20), side(200, 0, 80)),
            "NEW p99 80.0 ms / OLD p99 20.0 ms = 4.00, above the limit of 1.3"
        );
    }

    #[test]
    fn sub_millisecond_noise_is_not_a_regression_but_a_real_gap_is() {
        // 0.2 ms against 0.9 ms: a ratio of 4.5, a difference of 0.7 ms.
        let mut old = side(200, 0, 0);
        let mut new = side(200, 0, 0);
        old.latency.reset();
        new.latency.reset();
        for _ in 0..200 {
            old.latency.record(200).unwrap();
            new.latency.record(900).unwrap();
        }
        assert_eq!(judge(&spec(), old.clone(), new).failure, None);
        let slow = side(200, 0, 6);
        assert!(judge(&spec(), old, slow).failure.is_some());
    }

    #[test]
    fn errors_above_the_limit_fail() {
        assert_starts_with!(
            failure(side(200, 0, 20), side(200, 20, 20)),
            "NEW error rate 10.00% is above the limit of 1.00%"
        );
    }

    /// A NEW that answers 404 fast where OLD does the work is not faster: the benchmark
    /// fails rather than compare the two. A few 4xx more than OLD is still a comparison.
    #[test]
    fn a_new_that_answers_4xx_where_old_does_not_fails() {
        let with_4xx = |count, latency_ms| {
            let mut side = side(200, 0, latency_ms);
            side.client_errors = ClientErrors {
                count,
                first: (count > 0).then_some(404),
            };
            side
        };
        assert_starts_with!(
            failure(with_4xx(0, 20), with_4xx(200, 1)),
            "NEW answered 100.00% of the requests with a 4xx (e.g. 404), OLD 0.00%"
        );
        // One point more, exactly, is still a comparison; more is not, from any start.
        for old in [0, 12, 30] {
            let within = judge(&spec(), with_4xx(old, 20), with_4xx(old + 2, 20));
            assert_eq!(within.failure, None, "{old}: {}", within.summary);
            assert!(judge(&spec(), with_4xx(old, 20), with_4xx(old + 3, 20))
                .failure
                .is_some());
        }
    }

    #[test]
    fn too_few_answers_on_either_side_fail_closed() {
        assert_starts_with!(
            failure(side(200, 150, 20), side(200, 0, 20)),
            "inconclusive: OLD answered 50 of 200"
        );
        // NEW quick but too few: its errors already fail it; with a lax limit, still no pass.
        let lax = BenchmarkSpec {
            max_error_rate: 1.0,
            ..spec()
        };
        let outcome = judge(&lax, side(200, 0, 20), side(200, 150, 20));
        assert_starts_with!(
            outcome.failure.expect("a failure"),
            "inconclusive: NEW answered 50 of 200"
        );
        // Nothing sent at all.
        let outcome = judge(&spec(), Side::new(), Side::new());
        assert!(outcome.failure.is_some());
    }
}

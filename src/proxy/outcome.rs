//! The one place a request's outcome is recorded: the pool's response and latency
//! counters, its upstream error kinds, and each backend's outlier successes and failures
//! (the counterpart of Pingora's logging phase). The attempt logic (`attempt`) and the
//! handler decide what happened and call in here; nothing else on the request path
//! touches a counter.
//!
//! What is recorded, per request:
//! - a backend answered: its status class and latency, and an outlier success (a 5xx is
//!   an outlier failure);
//! - a try failed (connect, timeout, reset, protocol): the error kind and an outlier
//!   failure, once per backend tried;
//! - NEW could not take a request it was given (no available backend, or every connect
//!   failed): one NEW failure, with no latency, while OLD serves it;
//! - no answer at all: one `error` response for the pool that was to serve it, unless
//!   the client is to blame;
//! - a response body that breaks off: its error kind.
//!
//! All of it is relaxed atomic increments; the hot (answered) path is inlined.

use std::time::Instant;

use http::StatusCode;

use super::error::ProxyError;
use crate::stats::{CodeClass, UpstreamErrorKind};
use crate::upstream::{millis_at, Backend, BodyError, Connection, InFlight, Pool, Release};

/// A backend answered with `status`.
#[inline]
pub(super) fn answered(pool: &Pool, backend: &Backend, status: StatusCode, started: Instant) {
    let elapsed = started.elapsed();
    pool.stats
        .record(CodeClass::of_status(status.as_u16()), elapsed);
    if status.is_server_error() {
        backend.record_failure(pool, millis_at(started + elapsed));
    } else {
        backend.record_success();
    }
}

/// One try at `backend` failed with `error` (nothing usable came back).
pub(super) fn try_failed(pool: &Pool, backend: &Backend, error: &ProxyError, now_ms: u64) {
    if let Some(kind) = error.upstream_kind() {
        pool.stats.record_upstream_error(kind);
    }
    backend.record_failure(pool, now_ms);
}

/// The backend answered, but with something the client cannot be given.
pub(super) fn answer_refused(pool: &Pool, error: &ProxyError) {
    if let Some(kind) = error.upstream_kind() {
        pool.stats.record_upstream_error(kind);
    }
}

/// NEW was to serve this request and could not: NEW is charged, OLD serves it.
pub(super) fn unserved(new: &Pool) {
    new.stats.record_unserved();
}

/// The request got no answer from `pool`: the proxy answers in its place.
pub(super) fn failed(pool: &Pool, error: &ProxyError, started: Instant) {
    if error.counts_against_pool() {
        pool.stats.record(CodeClass::Error, started.elapsed());
    }
}

/// A streamed response body ends here: back to the pool, or counted as broken off.
impl Release for InFlight {
    #[inline]
    fn release(&self, connection: Connection) {
        self.check_in(connection);
    }

    fn failed(&self, error: &BodyError) {
        let kind = UpstreamErrorKind::from(error);
        self.backend().stats.record_upstream_error(kind);
        tracing::debug!(backend = %self.backend().addr, %error, "response body failed");
    }
}

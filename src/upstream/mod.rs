//! Pools and backends: choosing a backend, keep-alive connections, passive outlier
//! ejection and active health checks.
//!
//! - `backend`: one server, its idle connections, in-flight count, availability.
//! - `idle`: one runtime's idle connections to a backend.
//! - `pool`: the backends of one side of one service, and picking among them.
//! - `outlier`: consecutive failures and ejection, within `max_ejected` (atomically).
//! - `health`: active health-check tasks.
//! - `registry`: what outlives a routing snapshot (backends, counters, ejection counts).
//! - `connection`, `body`: the in-task HTTP/1.1 client (wire format in `http1`).
//! - `request_body`: a request body read ahead before a backend is chosen, then streamed.
//! - `watch`: looking at the client while its backend is quiet (hyper's `half_close`).
//!
//! This module records nothing about requests: the request path does, in one place
//! (`proxy::outcome`). It never imports `proxy`.

use std::sync::OnceLock;
use std::time::Instant;

mod backend;
mod body;
mod connection;
mod health;
mod idle;
mod outlier;
mod pool;
mod registry;
mod request_body;
mod watch;

pub(crate) use backend::{Backend, ConnectError, InFlight};
pub(crate) use body::{BodyError, Release, ResponseBody};
pub(crate) use connection::{Connection, ExchangeError};
pub(crate) use pool::Pool;
pub(crate) use registry::{PoolSettings, UpstreamRegistry};
pub(crate) use request_body::RequestBody;
pub(crate) use watch::{ClientWatch, Wait, Waited};

/// Which side of the migration a pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Old,
    New,
}

impl PoolKind {
    pub fn label(self) -> &'static str {
        match self {
            PoolKind::Old => "old",
            PoolKind::New => "new",
        }
    }
}

/// Milliseconds on a process-wide monotonic clock (ejection deadlines fit in an atomic).
pub(crate) fn now_millis() -> u64 {
    millis_at(Instant::now())
}

/// `instant` on the clock of [`now_millis`], without reading the clock again.
pub(crate) fn millis_at(instant: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    instant
        .saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_millis() as u64
}

//! Pools and backends: choosing a backend, keep-alive connections, passive outlier
//! ejection and active health checks.
//!
//! Design note: connections are pooled here, per backend, as plain sockets used by the
//! in-task HTTP/1.1 client of `client.rs` (why not hyper's client: see there). Getting a
//! connection and sending on it are separate steps, which is what the retry rule needs:
//! a connect failure means nothing was sent, so the request may go to another backend.
//! An idle connection is checked with the kernel before reuse: one the backend has closed,
//! or that holds bytes nobody asked for, is dropped (docs/design.md, "Backend connections").
//!
//! The idle pool is a lock-free `ArrayQueue`. A connection goes back into it only once its
//! response body has been read to the end; dropped early, it closes.
//!
//! Backends outlive routing snapshots: the controller's `UpstreamRegistry` hands the same
//! `Arc<Backend>` to every snapshot while its address and settings are unchanged, so a
//! reload keeps warm connections and health state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use http::{HeaderValue, Method};
use rand::Rng;
use tokio::net::TcpStream;

pub mod client;

use client::Connection;

use crate::config::{BackendSpec, Balance, HealthCheck, Outlier, PoolSpec, Timeouts};
use crate::stats::{PoolStats, UpstreamErrorKind};

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
pub fn now_millis() -> u64 {
    millis_at(Instant::now())
}

/// `instant` on the clock of [`now_millis`], without reading the clock again.
pub fn millis_at(instant: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    instant
        .saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_millis() as u64
}

/// Why no connection could be had. Nothing was sent in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("cannot connect to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
}

struct IdleConnection {
    connection: Connection,
    idle_since_ms: u64,
}

const IDLE_CAPACITY: usize = 512;

/// One backend server: where it is, its connections, and whether it may take traffic.
pub struct Backend {
    pub addr: Arc<str>,
    /// `host:port`, for the Host header of health checks.
    pub authority: HeaderValue,
    resolved: Option<SocketAddr>,
    timeouts: Timeouts,
    /// The counters of the pool this backend belongs to.
    pub stats: Arc<PoolStats>,
    idle: ArrayQueue<IdleConnection>,
    /// Set by active health checks; true when none are configured.
    healthy: AtomicBool,
    /// `now_millis()` until which passive outlier detection keeps this backend out.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    in_flight: AtomicU32,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Backend {
    pub fn new(addr: &str, timeouts: Timeouts, stats: Arc<PoolStats>) -> Backend {
        Backend {
            addr: Arc::from(addr),
            authority: HeaderValue::from_str(addr).unwrap_or(HeaderValue::from_static("localhost")),
            resolved: addr.parse().ok(),
            timeouts,
            stats,
            idle: ArrayQueue::new(IDLE_CAPACITY),
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    #[inline]
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.healthy.load(Relaxed) && self.ejected_until.load(Relaxed) <= now_ms
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Relaxed) > now_ms
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// A pooled connection if one is alive, else a new one.
    pub async fn connection(&self, now_ms: u64) -> Result<Connection, ConnectError> {
        if let Some(connection) = self.pooled(now_ms) {
            return Ok(connection);
        }
        self.connect().await
    }

    /// A pooled connection that is still open, clean and not idle for too long.
    ///
    /// Every connection is checked with the kernel as it is taken out, however recently
    /// it was used: one that holds unread bytes is closed, never reused (see
    /// [`Connection::is_clean`]). Should the backend close it just after this check, a
    /// request without a body is sent again (see the handler).
    pub fn pooled(&self, now_ms: u64) -> Option<Connection> {
        let max_idle = self.timeouts.idle.as_millis() as u64;
        while let Some(idle) = self.idle.pop() {
            let idle_for = now_ms.saturating_sub(idle.idle_since_ms);
            if idle_for < max_idle && idle.connection.is_clean() {
                return Some(idle.connection);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to the end. `now_ms` may be a
    /// little in the past (the start of the request): the connection then leaves the pool
    /// a little early, never late.
    pub fn check_in(&self, connection: Connection, now_ms: u64) {
        let idle = IdleConnection {
            connection,
            idle_since_ms: now_ms,
        };
        // A full pool means more idle connections than we will reuse: let this one close.
        let _ = self.idle.push(idle);
    }

    /// Opens a new connection, within the connect timeout.
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let after = self.timeouts.connect;
        let stream = tokio::time::timeout(after, self.tcp_connect())
            .await
            .map_err(|_| ConnectError::Timeout {
                addr: self.addr.to_string(),
                after,
            })??;
        let _ = stream.set_nodelay(true);
        Ok(Connection::new(stream))
    }

    async fn tcp_connect(&self) -> Result<TcpStream, ConnectError> {
        if let Some(addr) = self.resolved {
            return TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Io {
                    addr: self.addr.to_string(),
                    source,
                });
        }
        let addrs = tokio::net::lookup_host(&*self.addr)
            .await
            .map_err(|source| ConnectError::Resolve {
                addr: self.addr.to_string(),
                source,
            })?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = err,
            }
        }
        Err(ConnectError::Io {
            addr: self.addr.to_string(),
            source: last,
        })
    }

    /// Marks one more request in flight; the guard undoes it.
    pub fn start_request(self: &Arc<Self>, now_ms: u64) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight {
            backend: self.clone(),
            started_ms: now_ms,
        }
    }

    pub fn record_success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; returns true when this one got the backend ejected.
    pub fn record_failure(&self, pool: &Pool, now_ms: u64) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if failures < pool.outlier.consecutive_failures || self.is_ejected(now_ms) {
            return false;
        }
        let ejected = pool
            .backends
            .iter()
            .filter(|b| b.is_ejected(now_ms))
            .count();
        let allowed = (pool.backends.len() as f64 * pool.outlier.max_ejected).floor() as usize;
        if ejected >= allowed {
            return false;
        }
        let until = now_ms + pool.outlier.eject_for.as_millis() as u64;
        self.ejected_until.store(until, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        tracing::warn!(backend = %self.addr, eject_for = ?pool.outlier.eject_for, "backend ejected after {failures} consecutive failures");
        true
    }

    fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Relaxed) != healthy {
            if healthy {
                tracing::info!(backend = %self.addr, "backend is healthy again");
            } else {
                tracing::warn!(backend = %self.addr, "backend failed its health checks");
                // Its pooled connections are suspect too.
                while self.idle.pop().is_some() {}
            }
        }
    }
}

/// Decrements the backend's in-flight count when the exchange ends; takes the
/// connection back when a response body ends cleanly.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
    started_ms: u64,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Relaxed);
    }
}

impl client::Release for InFlight {
    fn release(&self, connection: Connection) {
        self.backend.check_in(connection, self.started_ms);
    }

    fn failed(&self, error: &client::BodyError) {
        let kind = match error {
            client::BodyError::Chunked => UpstreamErrorKind::Protocol,
            client::BodyError::Stalled(_) => UpstreamErrorKind::Timeout,
            client::BodyError::Io(_) | client::BodyError::Truncated => UpstreamErrorKind::Reset,
        };
        self.backend.stats.record_upstream_error(kind);
        tracing::debug!(backend = %self.backend.addr, %error, "response body failed");
    }
}

/// The backends of one side of one service, and how to choose among them.
#[derive(Debug)]
pub struct Pool {
    pub kind: PoolKind,
    pub backends: Vec<Arc<Backend>>,
    weights: Vec<u32>,
    total_weight: u32,
    balance: Balance,
    /// One cycle of nginx's smooth weighted round robin, precomputed: picking is then a
    /// single atomic increment, with no lock and no per-pick arithmetic over weights.
    sequence: Vec<u16>,
    cursor: AtomicUsize,
    outlier: Outlier,
    pub stats: Arc<PoolStats>,
}

impl Pool {
    pub fn new(
        kind: PoolKind,
        backends: Vec<(Arc<Backend>, u32)>,
        balance: Balance,
        outlier: Outlier,
        stats: Arc<PoolStats>,
    ) -> Pool {
        let weights: Vec<u32> = backends.iter().map(|(_, w)| (*w).max(1)).collect();
        let sequence = smooth_weighted_sequence(&weights);
        Pool {
            kind,
            backends: backends.into_iter().map(|(b, _)| b).collect(),
            total_weight: weights.iter().sum(),
            weights,
            balance,
            sequence,
            cursor: AtomicUsize::new(0),
            outlier,
            stats,
        }
    }

    pub fn has_available(&self, now_ms: u64) -> bool {
        self.backends.iter().any(|b| b.is_available(now_ms))
    }

    /// Chooses a backend that is available and not in `tried`.
    pub fn pick(&self, tried: &[usize], now_ms: u64) -> Option<usize> {
        let usable = |i: usize| self.backends[i].is_available(now_ms) && !tried.contains(&i);
        if self.backends.len() == 1 {
            return usable(0).then_some(0);
        }
        match self.balance {
            Balance::RoundRobin => {
                let len = self.sequence.len();
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..len)
                    .map(|offset| usize::from(self.sequence[(start + offset) % len]))
                    .find(|&i| usable(i))
            }
            Balance::Random => {
                let mut rng = rand::rng();
                let point = rng.random_range(0..self.total_weight);
                let first = self.weighted_index(point);
                (0..self.backends.len())
                    .map(|offset| (first + offset) % self.backends.len())
                    .find(|&i| usable(i))
            }
            Balance::LeastRequest => self.power_of_two_choices(&usable),
        }
    }

    fn weighted_index(&self, mut point: u32) -> usize {
        for (index, weight) in self.weights.iter().enumerate() {
            if point < *weight {
                return index;
            }
            point -= weight;
        }
        self.weights.len() - 1
    }

    /// Two random candidates; the one with fewer requests in flight per unit of weight.
    fn power_of_two_choices(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        let mut rng = rand::rng();
        let mut random_usable = |avoid: Option<usize>| {
            for _ in 0..4 {
                let i = rng.random_range(0..n);
                if usable(i) && Some(i) != avoid {
                    return Some(i);
                }
            }
            let start = rng.random_range(0..n);
            (0..n)
                .map(|offset| (start + offset) % n)
                .find(|&i| usable(i) && Some(i) != avoid)
        };
        let a = random_usable(None)?;
        let Some(b) = random_usable(Some(a)) else {
            return Some(a);
        };
        let load = |i: usize| f64::from(self.backends[i].in_flight()) / f64::from(self.weights[i]);
        Some(if load(b) < load(a) { b } else { a })
    }
}

/// nginx's smooth weighted round robin over one full cycle, weights reduced by their gcd
/// and scaled down when the cycle would be long.
fn smooth_weighted_sequence(weights: &[u32]) -> Vec<u16> {
    if weights.is_empty() {
        return Vec::new();
    }
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut reduced: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = reduced.iter().sum();
    const MAX_CYCLE: i64 = 10_000;
    if total > MAX_CYCLE {
        for w in &mut reduced {
            *w = (*w * MAX_CYCLE / total).max(1);
        }
    }
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..reduced.len() {
            current[i] += reduced[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u16);
    }
    sequence
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Identity of a backend across snapshots: same address and settings, same `Backend`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BackendKey {
    service: String,
    pool: PoolKind,
    addr: String,
    timeouts: Timeouts,
    health_check: Option<HealthCheck>,
}

/// Keeps backends and pool counters alive across routing snapshots. Owned by the
/// controller, the only builder of snapshots.
#[derive(Default)]
pub struct UpstreamRegistry {
    backends: HashMap<BackendKey, Weak<Backend>>,
    stats: HashMap<(String, PoolKind), Arc<PoolStats>>,
}

impl UpstreamRegistry {
    pub fn stats(&mut self, service: &str, pool: PoolKind) -> Arc<PoolStats> {
        self.stats
            .entry((service.to_string(), pool))
            .or_default()
            .clone()
    }

    /// Builds a pool, reusing backends whose settings are unchanged. New backends with a
    /// health check get their checker task.
    pub fn pool(
        &mut self,
        service: &str,
        kind: PoolKind,
        spec: &PoolSpec,
        settings: PoolSettings<'_>,
    ) -> Pool {
        self.backends
            .retain(|_, backend| backend.strong_count() > 0);
        let backends = spec
            .backends
            .iter()
            .map(|backend| {
                (
                    self.backend(service, kind, backend, &settings),
                    backend.weight,
                )
            })
            .collect();
        Pool::new(
            kind,
            backends,
            settings.balance,
            settings.outlier,
            self.stats(service, kind),
        )
    }

    fn backend(
        &mut self,
        service: &str,
        pool: PoolKind,
        spec: &BackendSpec,
        settings: &PoolSettings<'_>,
    ) -> Arc<Backend> {
        let key = BackendKey {
            service: service.to_string(),
            pool,
            addr: spec.addr.clone(),
            timeouts: settings.timeouts,
            health_check: settings.health_check.cloned(),
        };
        if let Some(existing) = self.backends.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let backend = Arc::new(Backend::new(
            &spec.addr,
            settings.timeouts,
            self.stats(service, pool),
        ));
        if let Some(check) = settings.health_check {
            settings
                .spawner
                .spawn(health_check_loop(Arc::downgrade(&backend), check.clone()));
        }
        self.backends.insert(key, Arc::downgrade(&backend));
        backend
    }
}

/// What a pool is built with.
pub struct PoolSettings<'a> {
    pub balance: Balance,
    pub outlier: Outlier,
    pub timeouts: Timeouts,
    pub health_check: Option<&'a HealthCheck>,
    /// Where background tasks (health checks) run: the data plane's runtime.
    pub spawner: &'a tokio::runtime::Handle,
}

/// Probes a backend until it is dropped (its last snapshot is gone).
async fn health_check_loop(backend: Weak<Backend>, check: HealthCheck) {
    let mut passes = 0u32;
    let mut failures = 0u32;
    loop {
        let Some(target) = backend.upgrade() else {
            return;
        };
        let ok = probe(&target, &check).await;
        if ok {
            passes += 1;
            failures = 0;
            if passes >= check.healthy {
                target.set_healthy(true);
            }
        } else {
            failures += 1;
            passes = 0;
            if failures >= check.unhealthy {
                target.set_healthy(false);
            }
        }
        drop(target);
        tokio::time::sleep(check.interval).await;
    }
}

/// One health check: `GET path` on a fresh connection; 2xx and 3xx pass.
async fn probe(backend: &Backend, check: &HealthCheck) -> bool {
    let attempt = async {
        let mut connection = backend.connect().await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: cutover-health-check\r\nconnection: close\r\n\r\n",
            check.path, backend.addr
        );
        connection.write_head(request.as_bytes()).await.ok()?;
        let head = connection.read_head(&Method::GET).await.ok()?;
        Some(head.status.is_success() || head.status.is_redirection())
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32], balance: Balance) -> Pool {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    Arc::new(Backend::new(
                        &format!("127.0.0.1:{}", 10_000 + i),
                        Timeouts::default(),
                        Arc::new(PoolStats::default()),
                    )),
                    *w,
                )
            })
            .collect();
        Pool::new(
            PoolKind::Old,
            backends,
            balance,
            Outlier::default(),
            Arc::new(PoolStats::default()),
        )
    }

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
        let sequence = smooth_weighted_sequence(&[5, 1, 1]);
        assert_eq!(sequence, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_sequence(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn long_cycles_are_scaled_down_but_keep_every_backend() {
        let sequence = smooth_weighted_sequence(&[1000; 30]);
        assert_eq!(sequence.len(), 30);
        let sequence = smooth_weighted_sequence(&[999, 1, 997]);
        assert!(sequence.len() <= 10_000);
        assert!(sequence.contains(&1));
    }

    #[test]
    fn round_robin_spreads_by_weight() {
        let pool = pool(&[3, 1], Balance::RoundRobin);
        let mut hits = [0; 2];
        for _ in 0..400 {
            hits[pool.pick(&[], 0).unwrap()] += 1;
        }
        assert_eq!(hits, [300, 100]);
    }

    #[test]
    fn pick_skips_tried_and_unavailable_backends() {
        for balance in [Balance::RoundRobin, Balance::Random, Balance::LeastRequest] {
            let pool = pool(&[1, 1, 1], balance);
            pool.backends[1].set_healthy(false);
            for _ in 0..50 {
                assert_eq!(pool.pick(&[0], 0), Some(2), "{balance:?}");
            }
            assert_eq!(pool.pick(&[0, 2], 0), None, "{balance:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_backend() {
        let pool = pool(&[1, 1], Balance::LeastRequest);
        let _busy: Vec<InFlight> = (0..5).map(|_| pool.backends[0].start_request(0)).collect();
        for _ in 0..50 {
            assert_eq!(pool.pick(&[], 0), Some(1));
        }
    }

    #[test]
    fn outlier_ejection_respects_max_ejected() {
        let pool = pool(&[1, 1, 1, 1], Balance::RoundRobin);
        let now = 1_000;
        let threshold = Outlier::default().consecutive_failures;
        for i in 0..4 {
            for _ in 0..threshold {
                pool.backends[i].record_failure(&pool, now);
            }
        }
        // 50% of four: two ejected, the other two kept whatever they do.
        let ejected = pool.backends.iter().filter(|b| b.is_ejected(now)).count();
        assert_eq!(ejected, 2);
        let later = now + Outlier::default().eject_for.as_millis() as u64;
        assert!(pool.backends.iter().all(|b| !b.is_ejected(later)));
    }

    #[test]
    fn a_lone_backend_is_never_ejected_and_success_resets() {
        let pool = pool(&[1], Balance::RoundRobin);
        for _ in 0..100 {
            assert!(!pool.backends[0].record_failure(&pool, 5));
        }
        let pool = self::pool(&[1, 1], Balance::RoundRobin);
        for _ in 0..Outlier::default().consecutive_failures - 1 {
            pool.backends[0].record_failure(&pool, 5);
        }
        pool.backends[0].record_success();
        assert!(!pool.backends[0].record_failure(&pool, 5));
    }
}

//! One backend server: where it is, its idle connections, whether it may take traffic,
//! and how many requests it has in flight.
//!
//! Getting a connection and sending on it are separate steps, which is what the retry
//! rule needs: a connect failure means nothing was sent, so the request may go to another
//! backend. An idle connection is checked with the kernel before reuse: one the backend
//! has closed, or that holds bytes nobody asked for, is dropped (docs/design.md, "Backend
//! connections").
//!
//! A backend takes at most `max_connections` requests at once (each holds one connection;
//! idle connections are only ever made by those, so they stay within it too). A request
//! beyond it waits, up to the connect timeout, for one to finish: the counter is one
//! atomic, and only a request that has to wait touches the `Notify`.
//!
//! The idle pool is a lock-free queue per data-plane runtime (`runtimes`): a connection is
//! taken up only by the runtime whose poller it is registered with. It goes back only once
//! its response body has been read to the end; dropped early, it closes. A queue's memory
//! follows what it holds: a backend without idle connections costs none.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::connection::Connection;
use super::idle::{IdleConnection, IdleQueue, IDLE_CAPACITY, MIN_IDLE_PER_RUNTIME};
use super::outlier::{Ejections, OutlierState};
use super::pool::Pool;
use crate::config::Timeouts;
use crate::stats::PoolStats;

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

/// One backend server: where it is, its connections, and whether it may take traffic.
pub struct Backend {
    pub addr: Arc<str>,
    /// `host:port`, for the Host header of health checks.
    pub authority: HeaderValue,
    resolved: Option<SocketAddr>,
    timeouts: Timeouts,
    /// The counters of the pool this backend belongs to.
    pub stats: Arc<PoolStats>,
    /// One queue per data-plane runtime, made when that runtime first returns a
    /// connection: a runtime that never uses the backend costs it a pointer.
    idle: Box<[OnceLock<Box<IdleQueue>>]>,
    /// Each queue's cap.
    idle_cap: usize,
    /// Set by active health checks; true when none are configured.
    healthy: AtomicBool,
    /// Passive outlier detection: consecutive failures and ejection.
    pub(super) outlier: OutlierState,
    in_flight: AtomicU32,
    max_in_flight: u32,
    /// Requests waiting for one in flight to finish, and how they are woken.
    waiting: AtomicU32,
    slot_freed: Notify,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Backend {
    pub fn new(
        addr: &str,
        timeouts: Timeouts,
        stats: Arc<PoolStats>,
        ejections: Arc<Ejections>,
        max_connections: u32,
        runtimes: usize,
    ) -> Backend {
        Backend {
            addr: Arc::from(addr),
            authority: HeaderValue::from_str(addr).unwrap_or(HeaderValue::from_static("localhost")),
            resolved: addr.parse().ok(),
            timeouts,
            stats,
            idle: (0..runtimes.max(1)).map(|_| OnceLock::new()).collect(),
            // The places are shared out: more cores do not mean more idle connections.
            idle_cap: (IDLE_CAPACITY / runtimes.max(1)).max(MIN_IDLE_PER_RUNTIME),
            healthy: AtomicBool::new(true),
            outlier: OutlierState::new(ejections),
            in_flight: AtomicU32::new(0),
            max_in_flight: max_connections.max(1),
            waiting: AtomicU32::new(0),
            slot_freed: Notify::new(),
        }
    }

    #[inline]
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.healthy.load(Relaxed) && !self.outlier.is_ejected(now_ms)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.outlier.is_ejected(now_ms)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// A pooled connection if one is alive, else a new one.
    pub async fn connection(&self, now_ms: u64) -> Result<Connection, ConnectError> {
        if let Some(connection) = self.pooled(now_ms) {
            return Ok(connection);
        }
        self.new_connection().await
    }

    /// A new connection for a request in flight, within `max_connections`.
    ///
    /// Each runtime keeps its own idle connections, which another runtime's requests cannot
    /// take: a runtime without one opens a connection while others sit idle elsewhere.
    /// So that the backend's open connections stay within `max_connections` (the requests
    /// in flight, this one included, and the idle ones), other runtimes' idle connections
    /// are closed first where they would not. Only on the way to a new connection: taking
    /// a pooled one costs nothing more.
    pub async fn new_connection(&self) -> Result<Connection, ConnectError> {
        let queues = || self.idle.iter().filter_map(OnceLock::get);
        let idle: usize = queues().map(|queue| queue.len()).sum();
        let open = self.in_flight.load(Relaxed) as usize + idle;
        let mut over = open.saturating_sub(self.max_in_flight as usize);
        for queue in queues() {
            while over > 0 && queue.pop().is_some() {
                over -= 1;
            }
        }
        self.connect().await
    }

    /// A pooled connection that is still open, clean and not idle for too long.
    ///
    /// Every connection is checked with the kernel as it is taken out, however recently
    /// it was used: one that holds unread bytes is closed, never reused (see
    /// [`Connection::is_clean`]). Should the backend close it just after this check, a
    /// request without a body is sent again (see `proxy::attempt`).
    pub fn pooled(&self, now_ms: u64) -> Option<Connection> {
        let max_idle = self.timeouts.idle.as_millis() as u64;
        let idle_here = self.idle_here().get()?;
        while let Some(idle) = idle_here.pop() {
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
        self.idle_here()
            .get_or_init(|| Box::new(IdleQueue::new(self.idle_cap)))
            .push(idle);
    }

    /// Closes the idle connections unused for `timeouts.idle`, on every runtime. Taking a
    /// connection checks its age too; this is for a backend that no request picks any
    /// more (OLD after a cutover), whose connections would otherwise stay open for good.
    pub fn close_expired(&self, now_ms: u64) {
        let max_idle = self.timeouts.idle.as_millis() as u64;
        for queue in self.idle.iter().filter_map(OnceLock::get) {
            queue.close_expired(now_ms, max_idle);
        }
    }

    /// How long an unused connection is kept (`timeouts.idle`).
    pub fn idle_timeout(&self) -> Duration {
        self.timeouts.idle
    }

    /// The idle connections of this thread's runtime: the ones registered with its poller.
    #[inline]
    fn idle_here(&self) -> &OnceLock<Box<IdleQueue>> {
        // A thread of no data-plane runtime (the controller's) has slot 0, as does every
        // thread when the backend was made for one runtime.
        &self.idle[crate::runtimes::slot().min(self.idle.len() - 1)]
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

    /// Marks one more request in flight, unless `max_connections` are; the guard undoes it.
    #[inline]
    pub fn try_start_request(self: &Arc<Self>, now_ms: u64) -> Option<InFlight> {
        let mut current = self.in_flight.load(Relaxed);
        loop {
            if current >= self.max_in_flight {
                return None;
            }
            match self
                .in_flight
                .compare_exchange_weak(current, current + 1, SeqCst, Relaxed)
            {
                Ok(_) => {
                    return Some(InFlight {
                        backend: self.clone(),
                        started_ms: now_ms,
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Like [`Backend::try_start_request`], waiting up to `wait` for a request in flight
    /// to finish when the backend is at its limit. `None`: still at its limit.
    pub async fn start_request(self: &Arc<Self>, now_ms: u64, wait: Duration) -> Option<InFlight> {
        if let Some(in_flight) = self.try_start_request(now_ms) {
            return Some(in_flight);
        }
        let deadline = tokio::time::Instant::now() + wait;
        self.waiting.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.slot_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(in_flight) = self.try_start_request(now_ms) {
                return Some(in_flight);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_start_request(now_ms);
            }
        }
    }

    #[inline]
    pub fn record_success(&self) {
        self.outlier.record_success();
    }

    /// Counts a failure; returns true when this one got the backend ejected.
    pub fn record_failure(&self, pool: &Pool, now_ms: u64) -> bool {
        let peers = pool.backends.iter().map(|backend| &backend.outlier);
        let ejected = self.outlier.record_failure(peers, &pool.outlier, now_ms);
        if ejected {
            tracing::warn!(backend = %self.addr, eject_for = ?pool.outlier.eject_for, "backend ejected after consecutive failures");
        }
        ejected
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Relaxed) != healthy {
            if healthy {
                tracing::info!(backend = %self.addr, "backend is healthy again");
            } else {
                tracing::warn!(backend = %self.addr, "backend failed its health checks");
                // Its pooled connections are suspect too.
                for queue in self.idle.iter().filter_map(OnceLock::get) {
                    while queue.pop().is_some() {}
                }
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

    /// Returns a connection whose response was read to the end to the backend's pool.
    #[inline]
    pub fn check_in(&self, connection: Connection) {
        self.backend.check_in(connection, self.started_ms);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let backend = &self.backend;
        backend.in_flight.fetch_sub(1, SeqCst);
        if backend.waiting.load(SeqCst) > 0 {
            backend.slot_freed.notify_one();
        }
    }
}

/// Counts a request as waiting for a slot while it lives.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtimes::set_slot;

    /// A backend for `runtimes` at an address that accepts connections and holds them
    /// open, saying nothing; and the task that accepts.
    async fn silent_backend(runtimes: usize) -> (Backend, tokio::task::JoinHandle<()>) {
        silent_backend_of(runtimes, 64).await
    }

    /// The same, with `max_connections`.
    async fn silent_backend_of(
        runtimes: usize,
        max_connections: u32,
    ) -> (Backend, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let stats = Arc::new(PoolStats::default());
        let ejections = Arc::new(Ejections::default());
        let timeouts = Timeouts::default();
        let backend = Backend::new(&addr, timeouts, stats, ejections, max_connections, runtimes);
        (backend, accepting)
    }

    #[tokio::test]
    async fn an_idle_connection_serves_only_the_runtime_that_returned_it() {
        let (backend, accepting) = silent_backend(2).await;
        set_slot(1);
        let connection = backend.connect().await.unwrap();
        backend.check_in(connection, 0);
        set_slot(0);
        assert!(
            backend.pooled(1).is_none(),
            "runtime 0 took runtime 1's connection"
        );
        set_slot(1);
        let connection = backend
            .pooled(1)
            .expect("runtime 1 gets its connection back");
        backend.check_in(connection, 1);
        // A backend that fails its health checks (noticed on runtime 0) drops the idle
        // connections of every runtime.
        set_slot(0);
        backend.set_healthy(false);
        set_slot(1);
        assert!(backend.pooled(2).is_none());
        set_slot(0);
        accepting.abort();
    }

    #[tokio::test]
    async fn expired_connections_close_on_every_runtime_and_the_others_stay() {
        let (backend, accepting) = silent_backend(2).await;
        let idle_ms = backend.idle_timeout().as_millis() as u64;
        // Runtime 1 returns one connection at 0 ms and a burst's ten at 100 ms; runtime
        // 0 one at 0 ms.
        set_slot(1);
        let old = backend.connect().await.unwrap();
        backend.check_in(old, 0);
        for _ in 0..10 {
            let recent = backend.connect().await.unwrap();
            backend.check_in(recent, 100);
        }
        set_slot(0);
        let old = backend.connect().await.unwrap();
        backend.check_in(old, 0);
        let held = |backend: &Backend| -> Vec<usize> {
            let queues = backend.idle.iter().map(OnceLock::get);
            queues.map(|queue| queue.map_or(0, |q| q.len())).collect()
        };
        assert_eq!(held(&backend), [1, 11]);
        backend.close_expired(idle_ms - 1);
        assert_eq!(held(&backend), [1, 11], "closed before the idle timeout");
        backend.close_expired(idle_ms + 50);
        assert_eq!(held(&backend), [0, 10]);
        set_slot(1);
        let connection = backend.pooled(idle_ms + 50);
        assert!(connection.is_some(), "the ones kept are still in use");
        set_slot(0);
        accepting.abort();
    }

    /// A runtime cannot take another's idle connections: before it opens one of its own,
    /// those are closed where the backend would exceed `max_connections`.
    #[tokio::test]
    async fn a_new_connection_on_another_runtime_stays_within_max_connections() {
        let (backend, accepting) = silent_backend_of(2, 1).await;
        let backend = Arc::new(backend);
        set_slot(1);
        let first = backend.try_start_request(0).unwrap();
        first.check_in(backend.connection(0).await.unwrap());
        drop(first);
        set_slot(0);
        let second = backend.try_start_request(1).unwrap();
        let _connection = backend.connection(1).await.unwrap();
        set_slot(1);
        assert!(
            backend.pooled(2).is_none(),
            "runtime 1's idle one is closed"
        );
        set_slot(0);
        drop(second);
        accepting.abort();
    }
}

//! Listeners: bind, accept, limits, drain. Each accepted connection is served by
//! `connection` (TLS, protocol choice, HTTP/1 or HTTP/2).
//!
//! - Clear-text listeners serve HTTP/1.1 and HTTP/2 with prior knowledge (h2c): the first
//!   bytes are read once and handed to the protocol they show (HTTP/1 through the framing
//!   guard, which checks them as any other), so that hyper's first read needs no call.
//! - TLS listeners pick the protocol by ALPN (`h2`, else HTTP/1.1) and the certificate by
//!   SNI (see `tls.rs`). The acceptor sits behind an `ArcSwap` so a reload can change the
//!   certificates of a listener without closing it.
//! - Slowloris: a connection must finish its TLS handshake, its protocol preface and each
//!   request head within `header_read_timeout`; `max_header_bytes` bounds a head;
//!   `max_connections` bounds connections across all listeners (the rest wait in the
//!   kernel's backlog, as with HAProxy's `maxconn`).
//! - Drain: stopping a listener closes its socket and asks each of its connections to
//!   finish what is in flight and close (HTTP/1 `Connection: close`, HTTP/2 `GOAWAY`).
//!   Upgraded tunnels are separate tasks and are not cut by a reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicI64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::connection::{Accepted, Connection};
use super::parked::{watch_idle, IdleSet};
use super::stop_requested;
use crate::config::{Limits, Listener};
use crate::routing::SharedSnapshot;

/// What every connection of every listener shares.
struct Shared {
    snapshot: SharedSnapshot,
    limits: ArcSwap<Limits>,
    connection_slots: Arc<Semaphore>,
    /// The configured `max_connections`, to resize the semaphore on reload.
    slots_configured: AtomicUsize,
    open_connections: AtomicUsize,
    all_closed: Notify,
}

/// One listener as it runs.
pub struct ListenerState {
    pub name: String,
    pub local_addr: SocketAddr,
    /// `local_addr` as a `Host` value, for requests that name no host (HTTP/1.0).
    pub(super) reached: http::HeaderValue,
    tls: ArcSwap<Option<TlsAcceptor>>,
    /// `cutover_connections_active{listener}`.
    pub active: AtomicI64,
    /// Its HTTP/1 connections, for their idle watch.
    pub(super) idle: IdleSet,
    /// Its accept loops still running, one per data-plane runtime: connections may still
    /// come (each loop's `Accepting` decrements it, `Release`, when dropped; the idle watch
    /// ends only after the last and the last connection).
    accepting: AtomicUsize,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for ListenerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerState")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The running listeners. Owned by the controller, which applies each config to it.
pub(crate) struct Listeners {
    /// The data plane's runtimes (`runtimes`), the main one first: every listener accepts
    /// on each.
    runtimes: Arc<[tokio::runtime::Handle]>,
    shared: Arc<Shared>,
    running: HashMap<String, Arc<ListenerState>>,
    /// Read by `/metrics`; replaced whole when listeners change.
    registry: Arc<Mutex<Vec<Arc<ListenerState>>>>,
    /// Sockets bound before the config was applied (a takeover binds its ports before the
    /// process it replaces lets go of the state), by configured address; used once.
    adopted: Mutex<HashMap<String, std::net::TcpListener>>,
}

/// A listener socket bound ahead of a config change, so a port that cannot be had fails
/// the reload before anything else changes.
pub(crate) struct Bound {
    name: String,
    listener: std::net::TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot set up TLS for {addr}: {source}")]
    Tls { addr: String, source: rustls::Error },
}

impl Listeners {
    /// `runtimes`: the main runtime, then the worker threads' (none on one core).
    pub(crate) fn new(
        runtimes: Vec<tokio::runtime::Handle>,
        snapshot: SharedSnapshot,
        limits: &Limits,
    ) -> Listeners {
        assert!(!runtimes.is_empty(), "listeners need a runtime");
        Listeners {
            runtimes: runtimes.into(),
            shared: Arc::new(Shared {
                snapshot,
                limits: ArcSwap::from_pointee(limits.clone()),
                connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
                slots_configured: AtomicUsize::new(limits.max_connections),
                open_connections: AtomicUsize::new(0),
                all_closed: Notify::new(),
            }),
            running: HashMap::new(),
            registry: Arc::default(),
            adopted: Mutex::default(),
        }
    }

    /// Sockets already bound (`bind_listener`) for some configured addresses: `prepare`
    /// uses them instead of binding again.
    pub(crate) fn adopt(&self, sockets: Vec<(String, std::net::TcpListener)>) {
        if let Ok(mut adopted) = self.adopted.lock() {
            adopted.extend(sockets);
        }
    }

    /// A new listener may share a port only with a listener of this process (an address
    /// change for the same port, applied by a reload).
    fn sharing_for(&self, addr: SocketAddr) -> PortSharing {
        let ours = self
            .running
            .values()
            .any(|running| running.local_addr.port() == addr.port());
        if ours {
            PortSharing::Shared
        } else {
            PortSharing::Exclusive
        }
    }

    /// The listener states, for metrics.
    pub(crate) fn registry(&self) -> Arc<Mutex<Vec<Arc<ListenerState>>>> {
        self.registry.clone()
    }

    /// Where each listener is bound, by its configured address.
    pub(crate) fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let mut addrs: Vec<_> = self
            .running
            .values()
            .map(|l| (l.name.clone(), l.local_addr))
            .collect();
        addrs.sort();
        addrs
    }

    /// Binds the addresses `listeners` has that are not running yet, and checks TLS.
    pub(crate) fn prepare(&self, listeners: &[Listener]) -> Result<Vec<Bound>, ListenError> {
        let _runtime = self.runtimes[0].enter();
        let mut bound = Vec::new();
        for listener in listeners {
            if let Some(tls) = &listener.tls {
                crate::tls::server_config(tls).map_err(|source| ListenError::Tls {
                    addr: listener.addr_text.clone(),
                    source,
                })?;
            }
            if self.running.contains_key(&listener.addr_text) {
                continue;
            }
            let adopted = self
                .adopted
                .lock()
                .ok()
                .and_then(|mut adopted| adopted.remove(&listener.addr_text));
            let socket = match adopted {
                Some(socket) => socket,
                None => bind_listener(listener.addr, self.sharing_for(listener.addr)).map_err(
                    |source| ListenError::Bind {
                        addr: listener.addr_text.clone(),
                        source,
                    },
                )?,
            };
            bound.push(Bound {
                name: listener.addr_text.clone(),
                listener: socket,
            });
        }
        Ok(bound)
    }

    /// Makes the running listeners those of `listeners`: new ones start, kept ones take
    /// their new TLS settings, removed ones stop accepting and drain.
    pub(crate) fn apply(&mut self, listeners: &[Listener], bound: Vec<Bound>, limits: &Limits) {
        self.apply_limits(limits);
        let mut bound: HashMap<String, std::net::TcpListener> =
            bound.into_iter().map(|b| (b.name, b.listener)).collect();
        let wanted: Vec<&str> = listeners.iter().map(|l| l.addr_text.as_str()).collect();
        self.running.retain(|name, state| {
            let keep = wanted.contains(&name.as_str());
            if !keep {
                tracing::info!(listener = %name, "listener removed: draining its connections");
                state.stop.send_replace(true);
            }
            keep
        });
        for listener in listeners {
            let acceptor = listener
                .tls
                .as_ref()
                .and_then(|tls| crate::tls::server_config(tls).ok())
                .map(TlsAcceptor::from);
            if let Some(state) = self.running.get(&listener.addr_text) {
                state.tls.store(Arc::new(acceptor));
                continue;
            }
            let Some(socket) = bound.remove(&listener.addr_text) else {
                tracing::error!(listener = %listener.addr_text, "listener was not bound before apply");
                continue;
            };
            let local_addr = socket.local_addr().unwrap_or(listener.addr);
            let (stop, stopped) = watch::channel(false);
            let state = Arc::new(ListenerState {
                name: listener.addr_text.clone(),
                local_addr,
                reached: http::HeaderValue::try_from(local_addr.to_string())
                    .expect("an address is a valid header value"),
                tls: ArcSwap::from_pointee(acceptor),
                active: AtomicI64::new(0),
                idle: IdleSet::default(),
                accepting: AtomicUsize::new(self.runtimes.len()),
                stop,
            });
            tracing::info!(listener = %listener.addr_text, %local_addr, tls = listener.tls.is_some(), "listening");
            let (watched, stopped_watch) = (state.clone(), stopped.clone());
            let (runtimes, next) = (self.runtimes.clone(), AtomicUsize::new(0));
            self.runtimes[0].spawn(async move {
                let drained =
                    || watched.accepting.load(Acquire) == 0 && watched.active.load(Relaxed) == 0;
                // A woken connection goes to the runtimes in turn, so that connections that
                // park do not gather on the watch's runtime.
                let resume = |cold, state| {
                    let runtime = &runtimes[next.fetch_add(1, Relaxed) % runtimes.len()];
                    drop(runtime.spawn(Connection::resume(cold, state)));
                };
                watch_idle(&watched.idle, resume, drained, stopped_watch).await
            });
            for runtime in self.runtimes.iter() {
                // Each runtime polls its own copy of the listening socket; the kernel
                // gives a new connection to whichever accepts first.
                let accepting = Accepting(state.clone());
                let socket = match socket.try_clone() {
                    Ok(socket) => socket,
                    Err(err) => {
                        // Dropping `accepting` counts this runtime's loop as ended.
                        tracing::error!(listener = %state.name, error = %err, "cannot accept on every core: this one is left out");
                        continue;
                    }
                };
                runtime.spawn(accept_loop(
                    socket,
                    accepting,
                    self.shared.clone(),
                    stopped.clone(),
                ));
            }
            self.running.insert(listener.addr_text.clone(), state);
        }
        if let Ok(mut registry) = self.registry.lock() {
            *registry = self.running.values().cloned().collect();
        }
    }

    fn apply_limits(&self, limits: &Limits) {
        self.shared.limits.store(Arc::new(limits.clone()));
        let before = self
            .shared
            .slots_configured
            .swap(limits.max_connections, Relaxed);
        if limits.max_connections > before {
            self.shared
                .connection_slots
                .add_permits(limits.max_connections - before);
        } else if limits.max_connections < before {
            // Permits held by open connections are retired as those close.
            let excess = before - limits.max_connections;
            let shared = self.shared.clone();
            self.runtimes[0].spawn(async move {
                if let Ok(permits) = shared.connection_slots.acquire_many(excess as u32).await {
                    permits.forget();
                }
            });
        }
    }

    /// Stops every listener and waits, at most `grace`, for their connections to finish.
    /// Returns how many connections were still open at the end.
    pub(crate) async fn shutdown(&mut self, grace: Duration) -> usize {
        for state in self.running.values() {
            state.stop.send_replace(true);
        }
        let shared = self.shared.clone();
        let drained = async {
            loop {
                let notified = shared.all_closed.notified();
                if shared.open_connections.load(Relaxed) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, drained).await;
        self.shared.open_connections.load(Relaxed)
    }
}

/// A listening socket on `addr` with `SO_REUSEPORT`, so that a successor process can bind
/// the same port and queue connections while this one still serves (see
/// `docs/restarts.md`). Needs a runtime context.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    sharing: PortSharing,
) -> std::io::Result<std::net::TcpListener> {
    if sharing == PortSharing::Exclusive && addr.port() != 0 {
        ensure_port_is_free(addr)?;
    }
    let socket = new_socket(addr)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // `listen` needs a runtime only to register the socket; convert back to std so the
    // accept loop can register it with the data plane's runtime.
    let listener = socket.listen(4096)?;
    listener.into_std()
}

/// Whether a listening socket may share its port with one that is already there.
///
/// Every listener sets `SO_REUSEPORT`, so that a new cutover can serve beside the one it
/// replaces (`CUTOVER_TAKEOVER=1`, see docs/restarts.md). The kernel would then also let a
/// second cutover started by mistake on the same port take half of the connections,
/// silently. So only a takeover, or a listener of this process moving to another address
/// on a port it already holds, may share; anything else must find the port free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortSharing {
    Exclusive,
    Shared,
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// Fails with `AddrInUse` when something listens on `addr`'s port, even with
/// `SO_REUSEPORT`: a socket without that option cannot bind beside a listening one.
fn ensure_port_is_free(addr: SocketAddr) -> std::io::Result<()> {
    new_socket(addr)?.bind(addr).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                err.kind(),
                format!(
                    "{addr} is in use by another process (to replace a running cutover \
                     without refusing requests, start the new one with CUTOVER_TAKEOVER=1)"
                ),
            )
        } else {
            err
        }
    })
}

/// One of a listener's accept loops, counted in its `accepting` until it ends, or until it
/// is dropped without ever running (its runtime stopped first).
struct Accepting(Arc<ListenerState>);

impl Drop for Accepting {
    fn drop(&mut self) {
        // Every connection the loop took is counted in `active` by now.
        self.0.accepting.fetch_sub(1, Release);
    }
}

/// A listener's accept loop on one runtime; once every one has returned, its idle watch
/// may end (`accepting`).
async fn accept_loop(
    socket: std::net::TcpListener,
    accepting: Accepting,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) {
    accept(socket, &accepting.0, &shared, stopped).await;
}

/// Takes connections, each once a connection slot is free, until the listener is told to
/// stop.
///
/// A loop waits for a connection before it takes a slot, and takes one before it accepts:
/// a connection beyond the limit waits in the kernel's backlog, and a quiet listener's
/// loops (one per runtime) hold no slot that another listener's connections could use.
async fn accept(
    socket: std::net::TcpListener,
    state: &Arc<ListenerState>,
    shared: &Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match socket.set_nonblocking(true).and_then(|()| {
        let listener = mio::net::TcpListener::from_std(socket);
        // SAFETY: the listener owns its descriptor, and nothing replaces or closes it
        // while the `AsyncFd` holds it.
        Ok(unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE)? })
    }) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(listener = %state.name, error = %err, "cannot start accepting");
            return;
        }
    };
    loop {
        // The stop first: once told, the loop takes no more connections.
        let mut ready = tokio::select! {
            biased;
            _ = stop_requested(&mut stopped) => return,
            ready = listener.readable() => match ready {
                Ok(ready) => ready,
                Err(err) => {
                    tracing::error!(listener = %state.name, error = %err, "cannot wait for connections");
                    return;
                }
            },
        };
        let permit = tokio::select! {
            biased;
            _ = stop_requested(&mut stopped) => return,
            permit = shared.connection_slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        // Another runtime may have taken the connection meanwhile: then wait again, and the
        // slot goes back.
        let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) else {
            continue;
        };
        let accepted = accepted.and_then(|(stream, peer)| {
            let stream = TcpStream::from_std(std::net::TcpStream::from(stream))?;
            Ok((stream, peer))
        });
        match accepted {
            Ok((stream, peer)) => {
                let accepted = Accepted {
                    stream,
                    peer,
                    limits: shared.limits.load_full(),
                    tls: state.tls.load_full(),
                    snapshot: shared.snapshot.clone(),
                    open: ClientConnection::open(state, shared, permit),
                };
                tokio::spawn(Connection::new(accepted, stopped.clone()));
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %state.name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// An open client connection: counted while it lives.
pub(super) struct ClientConnection {
    pub(super) listener: Arc<ListenerState>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl ClientConnection {
    fn open(
        listener: &Arc<ListenerState>,
        shared: &Arc<Shared>,
        permit: OwnedSemaphorePermit,
    ) -> ClientConnection {
        listener.active.fetch_add(1, Relaxed);
        shared.open_connections.fetch_add(1, Relaxed);
        ClientConnection {
            listener: listener.clone(),
            shared: shared.clone(),
            _permit: permit,
        }
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.listener.active.fetch_sub(1, Relaxed);
        if self.shared.open_connections.fetch_sub(1, Relaxed) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

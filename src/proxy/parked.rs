//! What an HTTP/1 connection's parts share about its idleness (`IdleState`), the HTTP/1
//! connections of a listener (`IdleSet`), and the listener's watch over them
//! (`watch_idle`): it asks idle connections to park, closes those that have not completed
//! a request head `header_read_timeout` after their last answer, parked or not, and,
//! when the listener stops, asks every one to finish (see `idle`, which uses them).
//!
//! A parked clear-text connection leaves the runtime ([`ColdSocket`]): its task ends, and
//! its socket moves from the runtime's poller to the listener's own, which the watch waits
//! on too. The runtime keeps 256 bytes for each socket it polls, as for each task (both
//! cache-line padded); a parked connection then costs its entry here, its state and its
//! context. When the socket becomes readable, the watch hands the connection to a new
//! task (`resume`).

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::Duration;

use mio::unix::SourceFd;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;

use super::handler::ConnContext;
use crate::config::Limits;

/// How often the listener's watch looks for idleness: a connection parks after between
/// one and two of these without a response.
pub(crate) const PARK_CHECK: Duration = Duration::from_millis(250);

/// What the serve loop, hyper's IO, the responses and the listener's watch of one
/// connection share.
#[derive(Debug)]
pub(super) struct IdleState {
    /// Requests handed to the handler.
    pub(super) started: AtomicUsize,
    /// Responses hyper is done with (their body dropped: written whole, or abandoned).
    pub(super) finished: AtomicUsize,
    /// The watch asks the IO to end hyper's session at the next request boundary.
    pub(super) park: AtomicBool,
    /// The IO did so: hyper's end is a parking, not the client's.
    pub(super) parked: AtomicBool,
    /// The connection waits parked, for its socket: the watch wakes it only to close it.
    pub(super) waiting: AtomicBool,
    /// No request head came within `header_read_timeout` of the quiet time's start: the
    /// session, or the parked wait, ends and the connection closes.
    pub(super) expired: AtomicBool,
    /// The listener stops: a session finishes what is in flight, a parked wait ends.
    pub(super) stopping: AtomicBool,
    /// Wakes the connection's task for any of the above (kept by its first session).
    pub(super) task: OnceLock<Waker>,
    /// Its place in its listener's set (`usize::MAX`: not in one).
    key: AtomicUsize,
    /// Since when the connection has waited for a request, in milliseconds from `born`
    /// (set by the watch when it sees a response finish).
    quiet_since_ms: AtomicU64,
    born: Instant,
}

impl IdleState {
    pub(super) fn new() -> IdleState {
        IdleState::since(Instant::now())
    }

    /// The state of a connection waiting for its first request since `born`.
    fn since(born: Instant) -> IdleState {
        IdleState {
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            park: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            task: OnceLock::new(),
            key: AtomicUsize::new(usize::MAX),
            quiet_since_ms: AtomicU64::new(0),
            born,
        }
    }

    /// This state for a connection parked out of the runtime, to be served again in a new
    /// task: no waker, and its quiet time goes on.
    fn without_waker(&self) -> IdleState {
        let state = IdleState::new();
        state.stopping.store(self.stopping.load(Relaxed), Relaxed);
        state
            .quiet_since_ms
            .store(self.quiet_since_ms.load(Relaxed), Relaxed);
        IdleState {
            born: self.born,
            ..state
        }
    }

    pub(super) fn quiet(&self) -> bool {
        self.started.load(Relaxed) == self.finished.load(Relaxed)
    }

    fn set_quiet_since(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.born).as_millis();
        self.quiet_since_ms.store(ms as u64, Relaxed);
    }

    pub(super) fn quiet_since(&self) -> Instant {
        self.born + Duration::from_millis(self.quiet_since_ms.load(Relaxed))
    }

    /// Sets `flag` and wakes the connection's task to act on it; whether there was a task
    /// to wake (none before the connection's first session is polled).
    fn raise(&self, flag: &AtomicBool) -> bool {
        flag.store(true, Relaxed);
        let task = self.task.get();
        if let Some(task) = task {
            task.wake_by_ref();
        }
        task.is_some()
    }
}

/// The HTTP/1 connections of one listener, for its watch (`watch_idle`).
///
/// One watch for all of them. Each connection once had a task with a timer of its own and
/// a stop waiter (a spawn, a timer entry, their removal and the waiter's registration for
/// every connection, some 2,500 instructions, and 256 bytes while it was busy), and each
/// parked connection a timer and a stop waiter. The lock is taken when a connection opens
/// and when it closes, and by the watch, which walks the whole slab every `PARK_CHECK`:
/// about 5 µs for 10,000 idle connections, caches warm. A slab keeps its size, so after a
/// burst the watch walks empty slots until the set is empty and it is freed.
#[derive(Debug, Default)]
pub(crate) struct IdleSet {
    entries: Mutex<Slab<Entry>>,
    /// The listener stops: connections that open now are told so.
    stopping: AtomicBool,
    /// The listener's own poller, for parked clear-text connections (set by the watch;
    /// without it they wait in their tasks).
    cold: OnceLock<mio::Registry>,
}

/// A parked clear-text connection out of the runtime: no task, and its socket registered
/// with its listener's poller, under its key in the set. Its entry holds it; closing the
/// socket takes it out of the poller.
pub(super) struct ColdSocket {
    pub(super) socket: std::net::TcpStream,
    pub(super) context: Arc<ConnContext>,
    pub(super) limits: Arc<Limits>,
}

impl fmt::Debug for ColdSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColdSocket")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// The size above which an empty set gives its slab back.
const SHRINK_ABOVE: usize = 1024;

#[derive(Debug)]
struct Entry {
    state: Arc<IdleState>,
    header_timeout: Duration,
    /// The count of finished responses at the watch's last look.
    seen: usize,
    /// Not looked at yet: not asked to park at the first look, which may come right after
    /// it opened (its deadline holds from the start all the same).
    fresh: bool,
    /// Told the listener stops, with its task woken.
    told: bool,
    /// Parked out of the runtime: the set holds the connection (its member left nothing).
    cold: Option<ColdSocket>,
}

impl IdleSet {
    fn lock(&self) -> MutexGuard<'_, Slab<Entry>> {
        // A panic while the lock was held left nothing half-done: a slab entry is whole.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters a connection's state, until it leaves. On a listener that stops, the state
    /// is told so too (its session finishes what it has begun), and it is watched as any.
    fn enter(&self, state: &Arc<IdleState>, header_timeout: Duration) {
        let mut entries = self.lock();
        // Read under the lock that `stop_all` sets it under: a connection either sees it
        // here or is in the set when the watch stops them all.
        if self.stopping.load(Relaxed) {
            state.stopping.store(true, Relaxed);
        }
        let entry = entries.vacant_entry();
        state.key.store(entry.key(), Relaxed);
        entry.insert(Entry {
            state: state.clone(),
            header_timeout,
            seen: 0,
            fresh: true,
            told: false,
            cold: None,
        });
    }

    /// Starts the listener's own poller, for its parked clear-text connections, which
    /// from now on leave the runtime's; `None` when the system refuses one (they then wait
    /// in their tasks).
    fn start_cold(&self) -> Option<AsyncFd<mio::Poll>> {
        let started = mio::Poll::new().and_then(|poll| {
            let registry = poll.registry().try_clone()?;
            // SAFETY: a `mio::Poll` owns its epoll descriptor for its whole life and
            // always gives that one; the watch only polls it.
            let poll =
                unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE)? };
            Ok((registry, poll))
        });
        match started {
            Ok((registry, poll)) => {
                self.cold.set(registry).ok()?;
                Some(poll)
            }
            Err(err) => {
                tracing::warn!(error = %err, "no poller for parked connections: they wait in their tasks");
                None
            }
        }
    }

    /// Parked connections may leave the runtime (`freeze`).
    pub(super) fn takes_cold(&self) -> bool {
        self.cold.get().is_some()
    }

    /// Parks a connection out of the runtime: its entry keeps `cold`, its socket
    /// registered with the listener's poller, and the member that entered it leaves
    /// nothing when it drops. On a listener that stops, the connection is closed instead
    /// (its member leaves as usual). `Err`: the poller refused the socket, which waits in
    /// its task then.
    pub(super) fn freeze(&self, state: &IdleState, cold: ColdSocket) -> Result<(), ColdSocket> {
        let Some(registry) = self.cold.get() else {
            return Err(cold);
        };
        let mut entries = self.lock();
        let key = state.key.load(Relaxed);
        let Some(entry) = entries.get_mut(key) else {
            return Err(cold);
        };
        if self.stopping.load(Relaxed) {
            drop(entries);
            drop(cold);
            return Ok(());
        }
        let fd = cold.socket.as_raw_fd();
        let interest = mio::Interest::READABLE;
        if let Err(err) = registry.register(&mut SourceFd(&fd), mio::Token(key), interest) {
            tracing::debug!(error = %err, "cannot park a connection out of the runtime");
            return Err(cold);
        }
        entry.cold = Some(cold);
        // A state of its own: this one keeps the waker of the task that ends, and with
        // it the task's cell. Its quiet time goes on.
        let cold_state = Arc::new(state.without_waker());
        cold_state.key.store(key, Relaxed);
        entry.state = cold_state;
        state.key.store(usize::MAX, Relaxed);
        Ok(())
    }

    /// Takes back the parked connections whose sockets became readable (by key), each
    /// with its state (no task's waker in it yet) for the new task that serves it. Their
    /// entries stay in the set, for their new members.
    fn thaw(&self, keys: impl Iterator<Item = usize>) -> Vec<(ColdSocket, Arc<IdleState>)> {
        let Some(registry) = self.cold.get() else {
            return Vec::new();
        };
        let mut thawed = Vec::new();
        let mut entries = self.lock();
        for key in keys {
            let Some(entry) = entries.get_mut(key) else {
                continue;
            };
            let Some(cold) = entry.cold.take() else {
                continue;
            };
            // Before the runtime's poller takes the socket: both would wake for it.
            let _ = registry.deregister(&mut SourceFd(&cold.socket.as_raw_fd()));
            entry.seen = entry.state.finished.load(Relaxed);
            entry.fresh = true;
            entry.told = false;
            thawed.push((cold, entry.state.clone()));
        }
        thawed
    }

    fn leave(&self, state: &Arc<IdleState>) {
        let key = state.key.swap(usize::MAX, Relaxed);
        if key == usize::MAX {
            return;
        }
        let mut entries = self.lock();
        let ours = entries
            .get(key)
            .is_some_and(|entry| Arc::ptr_eq(&entry.state, state));
        debug_assert!(ours, "a connection's entry was not its own");
        if ours {
            entries.remove(key);
        }
    }

    /// One look at every connection; the earliest `header_read_timeout` still to come.
    ///
    /// A response finished since the last look starts the quiet time (so it starts at
    /// most one look late). Otherwise a quiet connection (no request in flight) is asked
    /// to park, or, past its deadline, to close. Once the listener stops, a connection
    /// that had no task to wake when told (its session had not kept its waker yet, and
    /// may have read the flag just before it was set) is told again at each look until
    /// one is woken.
    ///
    /// A connection parked out of the runtime is closed here, at its deadline or when the
    /// listener stops (after the lock is let go).
    fn look(&self, now: Instant) -> Option<Instant> {
        let mut due: Option<Instant> = None;
        let stopping = self.stopping.load(Relaxed);
        let mut closed = Vec::new();
        let mut entries = self.lock();
        entries.retain(|_, entry| {
            let state = &entry.state;
            if entry.cold.is_some() {
                let deadline = state.quiet_since() + entry.header_timeout;
                if stopping || now >= deadline {
                    closed.push(entry.cold.take());
                    return false;
                }
                due = Some(due.map_or(deadline, |due| due.min(deadline)));
                return true;
            }
            if stopping && !entry.told {
                entry.told = state.raise(&state.stopping);
            }
            let fresh = std::mem::replace(&mut entry.fresh, false);
            let finished = state.finished.load(Relaxed);
            let answered = finished != entry.seen;
            if answered {
                entry.seen = finished;
                state.set_quiet_since(now);
            }
            if !state.quiet() {
                return true;
            }
            let deadline = state.quiet_since() + entry.header_timeout;
            if now >= deadline {
                state.raise(&state.expired);
                return true;
            }
            due = Some(due.map_or(deadline, |due| due.min(deadline)));
            if !answered && !fresh && !state.waiting.load(Relaxed) {
                state.raise(&state.park);
            }
            true
        });
        if entries.is_empty() && entries.capacity() > SHRINK_ABOVE {
            // Nothing refers to the old slots: every key left with its entry.
            *entries = Slab::new();
        }
        drop(entries);
        drop(closed);
        due
    }

    /// Tells every connection the listener stops; closes those parked out of the runtime.
    fn stop_all(&self) {
        let mut closed = Vec::new();
        let mut entries = self.lock();
        self.stopping.store(true, Relaxed);
        entries.retain(|_, entry| {
            if entry.cold.is_some() {
                closed.push(entry.cold.take());
                return false;
            }
            entry.told = entry.state.raise(&entry.state.stopping);
            true
        });
        drop(entries);
        drop(closed);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.lock().capacity()
    }
}

/// A connection's place in its listener's set, with its state: it leaves when this drops
/// (the connection closes, however its task ends).
pub(super) struct Member {
    pub(super) state: Arc<IdleState>,
    pub(super) context: Arc<ConnContext>,
}

impl Member {
    /// `since`: when the connection began to wait for its first request head (it opened,
    /// or its TLS handshake ended), from which `header_timeout` counts.
    pub(super) fn enter(
        context: Arc<ConnContext>,
        header_timeout: Duration,
        since: Instant,
    ) -> Member {
        let state = Arc::new(IdleState::since(since));
        context.idle().enter(&state, header_timeout);
        Member { state, context }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.context.idle().leave(&self.state);
    }
}

/// A listener's watch over its HTTP/1 connections: every `PARK_CHECK`, and at the
/// earliest `header_read_timeout` to come, one look at all of them (`IdleSet::look`).
/// When the listener stops, every connection is asked to finish, and the watch goes on,
/// keeping their `header_read_timeout` through the drain, until `drained` says the
/// listener takes no more connections and has none open (those still in their set-up
/// included).
///
/// The close comes never before `header_read_timeout` after the last answer (or the
/// connection's start), and at most one `PARK_CHECK` after it.
///
/// It also waits on the listener's own poller, for the parked clear-text connections out
/// of the runtime, and hands each whose socket becomes readable to `resume`, with its new
/// state, to be served in a new task.
pub(crate) async fn watch_idle(
    set: &IdleSet,
    resume: impl Fn(ColdSocket, Arc<IdleState>),
    drained: impl Fn() -> bool,
    mut stopped: watch::Receiver<bool>,
) {
    let timer = tokio::time::sleep(PARK_CHECK);
    tokio::pin!(timer);
    let stop = super::stop_requested(&mut stopped);
    tokio::pin!(stop);
    let mut stopping = false;
    // However the watch ends (the runtime shuts down, the drain is over), the parked
    // connections only it could wake or close are closed with it.
    let _close_parked = CloseParked(set);
    let mut poller = set.start_cold();
    let mut events = mio::Events::with_capacity(256);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop, if !stopping => {
                stopping = true;
                set.stop_all();
            }
            ready = readable(&mut poller) => {
                let Ok(mut ready) = ready else {
                    // The runtime shuts down.
                    return;
                };
                loop {
                    if let Err(err) = ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        if err.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        tracing::warn!(error = %err, "the parked connections' poller failed");
                    }
                    if events.is_empty() {
                        ready.clear_ready();
                        break;
                    }
                    let keys = events.iter().map(|event| event.token().0);
                    for (cold, state) in set.thaw(keys) {
                        resume(cold, state);
                    }
                }
            }
            _ = &mut timer => {
                if stopping && drained() {
                    return;
                }
                let now = Instant::now();
                let next = now + PARK_CHECK;
                let due = set.look(now).map_or(next, |due| due.min(next));
                timer.as_mut().reset(due);
            }
        }
    }
}

/// Stops a listener's connections when dropped: closes its parked ones.
struct CloseParked<'a>(&'a IdleSet);

impl Drop for CloseParked<'_> {
    fn drop(&mut self) {
        self.0.stop_all();
    }
}

/// The listener's poller, once it has ready sockets (never without one).
async fn readable(
    poller: &mut Option<AsyncFd<mio::Poll>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, mio::Poll>> {
    match poller {
        Some(poller) => poller.readable_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "parked_tests.rs"]
mod tests;

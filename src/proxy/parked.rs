//! What an HTTP/1 connection's parts share about its idleness (`IdleState`), the parked
//! connections of a listener, and the sweep that closes them: at `header_read_timeout`,
//! or all at once when the listener stops (see `idle`, which uses them).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::Duration;

use slab::Slab;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// How often a connection's serve loop looks for idleness: a connection parks after
/// between one and two of these without a response.
pub(crate) const PARK_CHECK: Duration = Duration::from_millis(250);

/// What the serve loop, hyper's IO, the responses and the idle watch of one connection
/// share.
#[derive(Debug)]
pub(super) struct IdleState {
    /// Requests handed to the handler.
    pub(super) started: AtomicUsize,
    /// Responses hyper is done with (their body dropped: written whole, or abandoned).
    pub(super) finished: AtomicUsize,
    /// The serve loop asks the IO to end hyper's session at the next request boundary.
    pub(super) park: AtomicBool,
    /// The IO did so: hyper's end is a parking, not the client's.
    pub(super) parked: AtomicBool,
    /// No request head came within `header_read_timeout` of the quiet time's start: the
    /// session ends and the connection closes.
    pub(super) expired: AtomicBool,
    /// The listener's sweep ends the connection's parked wait: `header_read_timeout`
    /// reached while parked, or the listener stops.
    pub(super) swept: AtomicBool,
    /// Wakes the connection's task when the idle watch asks it to park.
    pub(super) task: OnceLock<Waker>,
    /// Since when the connection has waited for a request, in milliseconds from `born`
    /// (set by the idle watch when it sees a response finish).
    quiet_since_ms: AtomicU64,
    born: Instant,
}

impl IdleState {
    pub(super) fn new() -> IdleState {
        IdleState {
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            park: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            task: OnceLock::new(),
            quiet_since_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    pub(super) fn quiet(&self) -> bool {
        self.started.load(Relaxed) == self.finished.load(Relaxed)
    }

    pub(super) fn set_quiet_since(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.born).as_millis();
        self.quiet_since_ms.store(ms as u64, Relaxed);
    }

    /// Ends a parked wait (see `parked::ParkedSet`).
    pub(super) fn sweep(&self) {
        self.swept.store(true, Relaxed);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }

    pub(super) fn quiet_since(&self) -> Instant {
        self.born + Duration::from_millis(self.quiet_since_ms.load(Relaxed))
    }
}

/// The parked connections of one listener, with the time each must close by.
///
/// A parked connection waits for its socket only. Its `header_read_timeout` and its
/// listener's stop come from the listener's sweep (`sweep_parked`), which looks at the set
/// every `PARK_CHECK`: a timer and a stop waiter in each parked connection would cost it
/// 256 bytes. The lock is taken when a connection parks and when it wakes (so for the
/// first request after 250–500 ms of quiet, never for those of a busy connection), and by
/// the sweep, which walks the whole slab: 5.5 µs for 10,000, caches warm. A slab keeps its
/// size, so after a burst the sweep walks empty slots until the set is empty and it is
/// freed.
#[derive(Debug, Default)]
pub(crate) struct ParkedSet {
    entries: Mutex<Slab<Parked>>,
    /// The listener stops: nothing parks any more.
    stopping: AtomicBool,
}

/// The size above which an empty set gives its slab back.
const SHRINK_ABOVE: usize = 1024;

/// A parked connection's place in the set: not `Copy`, so that it leaves once.
#[derive(Debug)]
pub(super) struct ParkedKey(usize);

#[derive(Debug)]
struct Parked {
    state: Arc<IdleState>,
    deadline: Instant,
}

impl ParkedSet {
    fn lock(&self) -> MutexGuard<'_, Slab<Parked>> {
        // A panic while the lock was held left nothing half-done: a slab entry is whole.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters a parked connection, until it [`leave`](Self::leave)s with the key returned.
    /// `None`: the listener stops, and the connection closes instead of parking.
    pub(super) fn enter(&self, state: &Arc<IdleState>, deadline: Instant) -> Option<ParkedKey> {
        let mut entries = self.lock();
        // Read under the lock that `close_all` sets it under: a connection either sees it
        // here or is in the set when the sweep closes them all.
        if self.stopping.load(Relaxed) {
            return None;
        }
        let state = state.clone();
        Some(ParkedKey(entries.insert(Parked { state, deadline })))
    }

    /// A connection woke or ended: the sweep no longer looks at it.
    pub(super) fn leave(&self, key: ParkedKey) {
        let removed = self.lock().try_remove(key.0);
        debug_assert!(removed.is_some(), "a parked connection left twice");
    }

    /// Closes the parked connections whose deadline has come.
    fn close_due(&self, now: Instant) {
        let mut entries = self.lock();
        for (_, parked) in entries.iter() {
            if now >= parked.deadline {
                parked.state.sweep();
            }
        }
        if entries.is_empty() && entries.capacity() > SHRINK_ABOVE {
            // No entry is out (each holds its key until it leaves): nothing refers to
            // the old slots.
            *entries = Slab::new();
        }
    }

    fn close_all(&self) {
        let entries = self.lock();
        self.stopping.store(true, Relaxed);
        for (_, parked) in entries.iter() {
            parked.state.sweep();
        }
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

/// A listener's sweep of its parked connections: every `PARK_CHECK`, those whose
/// `header_read_timeout` has run out close (at most one `PARK_CHECK` late, as for a
/// connection in a session); when the listener stops, all of them at once.
pub(crate) async fn sweep_parked(set: &ParkedSet, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(PARK_CHECK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = super::stop_requested(&mut stopped) => break,
            _ = ticks.tick() => set.close_due(Instant::now()),
        }
    }
    set.close_all();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_sweep_closes_only_what_is_due_and_everything_when_stopping() {
        let set = ParkedSet::default();
        let (due, later) = (Arc::new(IdleState::new()), Arc::new(IdleState::new()));
        let now = Instant::now();
        let first = set.enter(&due, now + Duration::from_secs(1)).unwrap();
        let second = set.enter(&later, now + Duration::from_secs(5)).unwrap();
        assert_eq!(set.len(), 2);

        set.close_due(now + Duration::from_millis(999));
        assert!(!due.swept.load(Relaxed), "swept before its deadline");
        set.close_due(now + Duration::from_secs(1));
        assert!(due.swept.load(Relaxed));
        assert!(!later.swept.load(Relaxed));

        set.leave(first);
        assert_eq!(set.len(), 1, "a woken connection leaves the set");
        set.close_all();
        assert!(later.swept.load(Relaxed));
        assert!(
            set.enter(&Arc::new(IdleState::new()), now).is_none(),
            "parked on a stopped listener"
        );
        set.leave(second);
        assert_eq!(set.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_set_gives_back_its_slab_after_a_burst() {
        let set = ParkedSet::default();
        let state = Arc::new(IdleState::new());
        let later = Instant::now() + Duration::from_secs(60);
        let burst: Vec<_> = (0..2000)
            .map(|_| set.enter(&state, later).unwrap())
            .collect();
        let last = set.enter(&state, later).unwrap();
        for key in burst {
            set.leave(key);
        }
        set.close_due(Instant::now());
        assert!(set.capacity() >= 2000, "shrunk while an entry was out");
        set.leave(last);
        set.close_due(Instant::now());
        assert_eq!(set.capacity(), 0);
        // And parks again as before.
        let again = set.enter(&state, later).unwrap();
        assert_eq!(set.len(), 1);
        set.leave(again);
        assert_eq!(set.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_runs_every_park_check_and_closes_all_when_the_listener_stops() {
        let set = Arc::new(ParkedSet::default());
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(IdleState::new());
        let deadline = Instant::now() + Duration::from_millis(600);
        let entry = set.enter(&state, deadline).unwrap();
        let sweep = tokio::spawn({
            let set = set.clone();
            async move { sweep_parked(&set, stopped).await }
        });
        tokio::time::sleep(Duration::from_millis(590)).await;
        assert!(!state.swept.load(Relaxed), "closed before its deadline");
        // Due at 600 ms: the check at 750 ms closes it.
        tokio::time::sleep(Duration::from_millis(170)).await;
        assert!(
            state.swept.load(Relaxed),
            "not closed one check after its deadline"
        );
        set.leave(entry);

        let other = Arc::new(IdleState::new());
        set.enter(&other, Instant::now() + Duration::from_secs(60))
            .unwrap();
        stop.send(true).unwrap();
        sweep.await.unwrap();
        assert!(other.swept.load(Relaxed), "left parked after the stop");
    }
}

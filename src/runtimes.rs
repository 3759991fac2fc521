//! The data plane's runtimes: one single-threaded tokio runtime per core, as nginx runs a
//! worker process per core.
//!
//! Every listener accepts on every runtime (each with its own copy of the listening
//! socket), and a connection is served to its end on the runtime that accepted it: its
//! tasks never move between threads, and nothing of it is shared with another core but
//! the counters. The first runtime is the main thread's and also runs what is not a
//! connection (health checks, the parked connections' watch, the admin API).
//!
//! A backend's idle connections are kept per runtime ([`slot`]): a connection is
//! registered with the poller of the runtime that opened it, and one taken up by a task
//! of another runtime would wait for that runtime's thread to see its events.
//!
//! The multi-thread runtime this replaces cost about 1 µs more CPU per request on two
//! cores, and up to 3 µs in some rounds (work stealing, wake-ups across threads): see
//! `docs/performance.md`.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// How many data-plane runtimes the process has (1 until `DataPlane::build` says more).
static SLOTS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's runtime among the data plane's: 0 on any thread that runs none.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many data-plane runtimes there are: the number of per-runtime slots to keep.
pub(crate) fn slots() -> usize {
    SLOTS.load(Relaxed)
}

/// The data-plane runtime this thread runs, `0..slots()`.
#[inline]
pub(crate) fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// Makes this thread count as runtime `slot`'s.
#[cfg(test)]
pub(crate) fn set_slot(slot: usize) {
    SLOT.with(|s| s.set(slot));
}

/// The main runtime and the worker threads' runtimes.
pub(crate) struct DataPlane {
    main: Runtime,
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("runtimes", &(self.workers.len() + 1))
            .finish()
    }
}

impl DataPlane {
    /// `threads` runtimes: the main thread's, and `threads - 1` worker threads.
    pub(crate) fn build(threads: usize) -> std::io::Result<DataPlane> {
        let threads = threads.max(1);
        SLOTS.store(threads, Relaxed);
        let main = Builder::new_current_thread().enable_all().build()?;
        let mut workers = Vec::with_capacity(threads - 1);
        for slot in 1..threads {
            workers.push(Worker::spawn(slot)?);
        }
        Ok(DataPlane { main, workers })
    }

    /// The main thread's runtime.
    pub(crate) fn main(&self) -> &Runtime {
        &self.main
    }

    /// The worker threads' runtimes, where listeners accept too.
    pub(crate) fn workers(&self) -> Vec<Handle> {
        self.workers.iter().map(|w| w.handle.clone()).collect()
    }
}

impl Worker {
    fn spawn(slot: usize) -> std::io::Result<Worker> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cutover-worker".into())
            .spawn(move || {
                SLOT.with(|s| s.set(slot));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Whatever is left had its grace from the shutdown that stopped this.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Worker {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl DataPlane {
    /// Stops the worker threads' runtimes, then the main one, each waiting at most
    /// `timeout` for its tasks: the shutdown's grace is over by then.
    pub(crate) fn shutdown_timeout(self, timeout: Duration) {
        let DataPlane { main, mut workers } = self;
        for worker in &mut workers {
            worker.stop.take().map(|stop| stop.send(()));
        }
        drop(workers);
        main.shutdown_timeout(timeout);
    }
}

impl Drop for Worker {
    /// Stops its runtime and waits for its thread.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_thread_knows_its_slot_and_stops_with_the_data_plane() {
        let plane = DataPlane::build(3).unwrap();
        assert_eq!(slots(), 3);
        let seen: Vec<usize> = plane
            .workers()
            .iter()
            .map(|handle| {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.spawn(async move { tx.send(slot()).unwrap() });
                rx.recv_timeout(Duration::from_secs(5)).unwrap()
            })
            .collect();
        assert_eq!(seen, [1, 2]);
        assert_eq!(plane.main().block_on(async { slot() }), 0);
        let handle = plane.workers()[0].clone();
        plane.shutdown_timeout(Duration::from_secs(1));
        // Stopped and joined: what is spawned on a worker's runtime now never runs.
        let after = Builder::new_current_thread().build().unwrap();
        let spawned = after.block_on(handle.spawn(async {}));
        assert!(spawned.unwrap_err().is_cancelled());
    }
}

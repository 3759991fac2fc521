//! The data plane's runtimes: one single-threaded tokio runtime per core, as nginx runs a
//! worker process per core.
//!
//! Every listener accepts on every runtime (each with its own copy of the listening
//! socket), and a connection is served on the runtime that accepted it until it parks
//! (`proxy::parked`): its tasks never move between threads, and nothing of it is shared
//! with another core but counters. A parked connection that wakes is served on the next
//! runtime in turn. The first runtime is the main thread's and also runs what is not a
//! connection (health checks, the parked connections' watch, the admin API).
//!
//! A backend's idle connections are kept per runtime ([`slot`]), as are a shadow
//! copier's: a connection is registered with the poller of the runtime that opened it,
//! and one taken up by a task of another runtime would wait for that runtime's thread to
//! see its events.
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

/// Makes `workers` (single-threaded runtimes) runtimes 1, 2, … of the data plane, the
/// current thread's being 0: each of their threads learns its slot before this returns.
/// `DataPlane::build` numbers its own threads as it starts them; this is for runtimes
/// made elsewhere (`app::Options::workers`).
pub(crate) fn number(workers: &[Handle]) {
    SLOTS.store(workers.len() + 1, Relaxed);
    for (index, handle) in workers.iter().enumerate() {
        let (told, learnt) = std::sync::mpsc::channel();
        drop(handle.spawn(async move {
            SLOT.with(|s| s.set(index + 1));
            let _ = told.send(());
        }));
        // A stopped runtime drops the task, and with it the sender: no wait forever.
        let _ = learnt.recv();
    }
}

/// Makes this thread count as runtime `slot`'s.
#[cfg(test)]
pub(crate) fn set_slot(slot: usize) {
    SLOT.with(|s| s.set(slot));
}

/// The main runtime and the worker threads' runtimes.
pub(crate) struct DataPlane {
    main: Runtime,
    workers: Vec<RuntimeThread>,
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
            workers.push(RuntimeThread::spawn("cutover-worker", slot)?);
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

    /// Stops the worker threads' runtimes (each waits at most a second for its tasks), then
    /// the main one, which waits at most `timeout`: the shutdown's grace is over by then.
    pub(crate) fn shutdown_timeout(self, timeout: Duration) {
        let DataPlane { main, mut workers } = self;
        for worker in &mut workers {
            worker.thread.tell();
        }
        drop(workers);
        main.shutdown_timeout(timeout);
    }
}

/// A single-threaded runtime on a thread of its own, which counts as runtime `slot`;
/// dropping it stops the runtime and waits for the thread.
#[derive(Debug)]
pub(crate) struct RuntimeThread {
    handle: Handle,
    thread: StoppingThread,
}

impl RuntimeThread {
    pub(crate) fn spawn(name: &str, slot: usize) -> std::io::Result<RuntimeThread> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let thread = StoppingThread::spawn(name, move |stopped| {
            SLOT.with(|s| s.set(slot));
            runtime.block_on(async {
                let _ = stopped.await;
            });
            // Whatever is left had its grace from the shutdown that stopped this.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(RuntimeThread { handle, thread })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// A thread that runs until told to stop (its closure gets the signal); dropping this
/// tells it and waits for it to end.
#[derive(Debug)]
pub(crate) struct StoppingThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StoppingThread {
    pub(crate) fn spawn(
        name: &str,
        run: impl FnOnce(oneshot::Receiver<()>) + Send + 'static,
    ) -> std::io::Result<StoppingThread> {
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(stopped))?;
        Ok(StoppingThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop, without waiting for it.
    fn tell(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for StoppingThread {
    fn drop(&mut self) {
        self.tell();
        if let Some(thread) = self.thread.take() {
            let name = thread.thread().name().unwrap_or("unnamed").to_string();
            if thread.join().is_err() {
                tracing::error!(thread = %name, "a thread of cutover's panicked");
            }
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
        let handle = plane.workers()[0].clone();
        plane.shutdown_timeout(Duration::from_secs(1));
        // Stopped and joined: what is spawned on a worker's runtime now never runs.
        let after = Builder::new_current_thread().build().unwrap();
        let spawned = after.block_on(handle.spawn(async {}));
        assert!(spawned.unwrap_err().is_cancelled());
    }
}

//! Data-plane runtimes for other cores, as `cutover run` makes them (`runtimes`): a
//! single-threaded runtime on a thread of its own each, stopped when dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Cores {
    pub handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Cores {
    /// `n` runtimes beside the test's own.
    pub fn start(n: usize) -> Cores {
        let mut cores = Cores {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for _ in 0..n {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                handle_tx.send(runtime.handle().clone()).unwrap();
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            });
            cores.handles.push(handle_rx.recv().unwrap());
            cores.stops.push(stop);
            cores.threads.push(thread);
        }
        cores
    }

    /// Tasks alive on each runtime, in order.
    pub fn tasks(&self) -> Vec<usize> {
        self.handles
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .collect()
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        // Joined on a thread of its own: the test's runtime may be the one dropping this.
        let threads: Vec<_> = self.threads.drain(..).collect();
        std::thread::spawn(move || threads.into_iter().for_each(|t| drop(t.join())));
    }
}

//! A backend's idle connections on one runtime: a fixed queue where the steady state
//! stays, and a growing one for what a burst leaves behind, which closes once unused for
//! the idle timeout.

use crossbeam_queue::{ArrayQueue, SegQueue};

use super::connection::Connection;

pub(super) struct IdleConnection {
    pub(super) connection: Connection,
    pub(super) idle_since_ms: u64,
}

/// Idle connections kept per backend, shared out among the runtimes (at least
/// `MIN_IDLE_PER_RUNTIME` each).
pub(super) const IDLE_CAPACITY: usize = 512;
pub(super) const MIN_IDLE_PER_RUNTIME: usize = 16;

/// Idle connections a runtime keeps for a backend in its fixed queue; more wait in a queue
/// that grows and shrinks with them.
const NEAR: usize = 8;

/// One runtime's idle connections to a backend, up to `cap`.
///
/// Two queues: a fixed one of `NEAR` places, which the steady state never leaves, and one
/// that grows and shrinks in blocks of 31 places as it fills and empties, for the
/// connections a burst leaves behind. One fixed queue of 512 places (48 KiB, written
/// whole at the start) made two pools of 1,000 backends cost 100 MB of RSS, nearly all of
/// it empty; a growing queue alone cost 350 instructions per request (allocating and
/// zeroing blocks as the queue moves on, and counting its length). Connections are taken
/// from the fixed queue first: steady traffic leaves a burst's leftovers alone, and they
/// close once unused for the idle timeout ([`IdleQueue::close_expired`]). The cap is checked before a push, so two threads returning
/// connections at once may exceed it by one.
pub(super) struct IdleQueue {
    near: ArrayQueue<IdleConnection>,
    far: SegQueue<IdleConnection>,
    cap: usize,
}

impl IdleQueue {
    pub(super) fn new(cap: usize) -> IdleQueue {
        IdleQueue {
            near: ArrayQueue::new(NEAR),
            far: SegQueue::new(),
            cap,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.near.len() + self.far.len()
    }

    #[inline]
    pub(super) fn pop(&self) -> Option<IdleConnection> {
        self.near.pop().or_else(|| self.far.pop())
    }

    /// Drops the connections unused for `max_idle` milliseconds or more, going once
    /// through each queue: the others go back one by one, so that at most one is out at a
    /// time while the queue's runtime may be taking from it. Each queue on its own: steady
    /// traffic keeps the fixed queue's connections fresh, and the ones a burst left in the
    /// growing queue behind them, which that traffic never takes, still close.
    pub(super) fn close_expired(&self, now_ms: u64, max_idle: u64) {
        let fresh = |idle: &IdleConnection| now_ms.saturating_sub(idle.idle_since_ms) < max_idle;
        for _ in 0..self.near.len() {
            match self.near.pop() {
                Some(idle) if fresh(&idle) => self.push(idle),
                Some(_) => {}
                None => break,
            }
        }
        for _ in 0..self.far.len() {
            match self.far.pop() {
                Some(idle) if fresh(&idle) => self.far.push(idle),
                Some(_) => {}
                None => break,
            }
        }
    }

    /// Keeps `idle` unless the queues are full, when it is dropped (and its connection
    /// closed): more idle connections than that will not be reused.
    #[inline]
    pub(super) fn push(&self, idle: IdleConnection) {
        if let Err(idle) = self.near.push(idle) {
            if NEAR + self.far.len() < self.cap {
                self.far.push(idle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` connections to a listener that holds them open, saying nothing; and the task
    /// that accepts.
    async fn connections(n: usize) -> (Vec<Connection>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut connections = Vec::new();
        for _ in 0..n {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            connections.push(Connection::new(stream));
        }
        (connections, accepting)
    }

    #[tokio::test]
    async fn a_burst_leaves_idle_connections_up_to_the_cap_and_no_more() {
        let cap = 20;
        let (mut connections, accepting) = connections(cap + 5).await;
        let queue = IdleQueue::new(cap);
        for connection in connections.drain(..) {
            queue.push(IdleConnection {
                connection,
                idle_since_ms: 0,
            });
        }
        // The fixed queue's 8 and 12 more; the last 5 were closed.
        assert_eq!(queue.near.len(), NEAR);
        let mut kept = 0;
        while queue.pop().is_some() {
            kept += 1;
        }
        assert_eq!(kept, cap);
        accepting.abort();
    }

    /// Steady traffic keeps the fixed queue's connections fresh; the ones a burst left in
    /// the growing queue behind them, which it never takes, still close.
    #[tokio::test]
    async fn a_bursts_leftovers_close_behind_connections_in_use() {
        let (connections, accepting) = connections(20).await;
        let queue = IdleQueue::new(32);
        for connection in connections {
            let idle_since_ms = 0;
            queue.push(IdleConnection {
                connection,
                idle_since_ms,
            });
        }
        let max_idle = 90_000;
        let now = 10 * max_idle;
        for _ in 0..NEAR {
            let idle = queue.pop().unwrap();
            queue.push(IdleConnection {
                connection: idle.connection,
                idle_since_ms: now,
            });
        }
        queue.close_expired(now, max_idle);
        assert_eq!((queue.near.len(), queue.far.len()), (NEAR, 0));
        accepting.abort();
    }
}

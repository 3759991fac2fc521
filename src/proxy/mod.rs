//! The data path: listeners (`server`), one client connection (`connection`), idle HTTP/1
//! connections (`idle`) and their listener's watch over them (`parked`), the request path
//! (`handler`), retries and failover (`attempt`), the one place a request's result is
//! recorded (`outcome`), upgrades and tunnels (`forward`), HTTP/1 framing checks
//! (`framing`), response bodies (`body`) and the errors the proxy answers with (`error`).

/// The `AsyncWrite` methods of a client connection's IO wrapper that writes straight
/// through to its `inner` (all but `poll_shutdown`, which each wrapper writes itself), each
/// result checked by its `send` (`limits.send_timeout`).
macro_rules! forward_writes {
    (within send_timeout) => {
        forward_writes!(|this, cx, polled| this.send.check(cx, polled));
    };
    (|$this:ident, $cx:ident, $polled:ident| $check:expr) => {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            $cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let $this = self.get_mut();
            let $polled = std::pin::Pin::new(&mut $this.inner).poll_write($cx, buf);
            $check
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            $cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let $this = self.get_mut();
            let $polled = std::pin::Pin::new(&mut $this.inner).poll_write_vectored($cx, bufs);
            $check
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            $cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let $this = self.get_mut();
            let $polled = std::pin::Pin::new(&mut $this.inner).poll_flush($cx);
            $check
        }
    };
}

mod attempt;
pub(crate) mod body;
mod connection;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod framing;
pub(crate) mod handler;
mod idle;
mod outcome;
mod parked;
mod send_timeout;
pub(crate) mod server;

pub(crate) use server::{ListenError, ListenerState, Listeners};

/// Resolves once the listener is told to stop (or is gone): what the accept loop, the
/// idle watch of its HTTP/1 connections and an h2 connection each wait for.
///
/// A loop over `changed`, not `wait_for`: the same, in a future a third smaller.
async fn stop_requested(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

//! `limits.send_timeout`, nginx's `send_timeout`: how long writes to a client may make no
//! progress. A client that stops reading its answer would otherwise hold it, and the
//! backend connection and `max_connections` slot the answer comes from, for good: the
//! answer's own stall timer runs only while hyper polls the body, which it stops doing when
//! the client's window is full.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A client connection's write deadline, armed when a write cannot go on and disarmed by
/// the next that does.
pub(super) struct SendTimeout {
    after: Duration,
    /// Made at the first stall, re-armed at the next ones.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl SendTimeout {
    pub(super) fn new(after: Duration) -> SendTimeout {
        SendTimeout {
            after,
            timer: None,
            stalled: false,
        }
    }

    /// `polled`, a write's (or flush's) result; a `TimedOut` error instead once writes
    /// have made no progress for `send_timeout`.
    #[inline]
    pub(super) fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        self.wait(cx)
    }

    #[cold]
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.after;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of its answer for limits.send_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_for_the_timeout_fails_and_progress_disarms_it() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut send = SendTimeout::new(Duration::from_secs(60));
        let pending = || Poll::<io::Result<usize>>::Pending;
        assert!(send.check(&mut cx, pending()).is_pending());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(send.check(&mut cx, pending()).is_pending());
        // Progress: the next stall has a minute of its own.
        assert!(matches!(
            send.check(&mut cx, Poll::Ready(Ok(1))),
            Poll::Ready(Ok(1))
        ));
        assert!(send.check(&mut cx, pending()).is_pending());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(send.check(&mut cx, pending()).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        match send.check(&mut cx, pending()) {
            Poll::Ready(Err(err)) => assert_eq!(err.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
    }
}

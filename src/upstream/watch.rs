//! Looking at the client while its backend is quiet.
//!
//! hyper serves HTTP/1 clients with `half_close` on: it does not read a client's socket
//! while the client's request is in flight. So a client that closes its sending side once
//! its request is out (`nc -N`, some HTTP/1.0 tools) still gets its answer, and no request
//! pays for a read that only looks for an early end (about 780 instructions each, of which
//! this watch takes back some 240: `docs/performance.md`). What that read noticed, a
//! client gone while its backend works or while a streamed answer is quiet (server-sent
//! events, a long poll), is noticed here: a wait on a backend that lasts a second looks at
//! the client's socket (`poll` for `POLLRDHUP`, the peer's end of its stream, with no
//! wait), and again every second after.
//! The end of its stream or an error, and the wait ends: the backend connection closes,
//! as when hyper dropped the request. Unread bytes do not hide the end: a TLS client
//! that leaves sends `close_notify` before its FIN, and no one reads it mid-request. A
//! half-closed client whose answer is that slow looks the same and is let go. At the
//! deadline the client is looked at first: a client gone is not the backend's timeout.
//!
//! The wait's one timer serves both: it wakes for the next look or the deadline, whichever
//! comes first, so a fast answer still costs one timer reset, as the deadline alone did.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long a wait lasts before the client is looked at, and between looks.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The client socket a request came on, to look at while its backend is quiet; or none
/// (HTTP/2, whose streams hyper ends itself, and the proxy's own requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientWatch(Option<RawFd>);

impl ClientWatch {
    pub(crate) const NONE: ClientWatch = ClientWatch(None);

    /// Watches `socket`. Only for a socket that outlives every wait that looks at it: an
    /// HTTP/1 connection's, whose requests and answers hyper polls in its own task.
    pub(crate) fn of(socket: &impl AsRawFd) -> ClientWatch {
        ClientWatch(Some(socket.as_raw_fd()))
    }

    /// Whether the client has gone: its stream ended (or the socket failed), even with
    /// bytes it sent before its end still unread. Bytes alone (a pipelined request) say
    /// it is still there.
    pub(crate) fn gone(self) -> bool {
        let Some(fd) = self.0 else {
            return false;
        };
        let mut socket = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd of a socket that is open for as long as the request
        // it came with (see `of`); a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut socket, 1, 0) };
        // A failed poll (EINTR) says nothing of the client: it is looked at again later.
        ready > 0
            && socket.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL)
                != 0
    }
}

/// How a wait on a backend ended, other than with the backend's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The deadline passed.
    Deadline,
    /// The client went away.
    ClientGone,
}

/// A wait on a backend: until `deadline`, looking at `client` each second from `since`.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub since: Instant,
    pub deadline: Instant,
    pub client: ClientWatch,
}

impl Wait {
    /// A wait that only ends at `deadline`.
    pub(crate) fn until(deadline: Instant) -> Wait {
        Wait {
            since: deadline,
            deadline,
            client: ClientWatch::NONE,
        }
    }

    /// When the timer first wakes: the first look, or the deadline if it comes first.
    pub(crate) fn first_alarm(&self) -> Instant {
        match self.client.0 {
            Some(_) => (self.since + LOOK_EVERY).min(self.deadline),
            None => self.deadline,
        }
    }

    /// Polls `timer` (armed for [`Wait::first_alarm`]) until the deadline passes or a look
    /// finds the client gone, re-arming it for each next look.
    pub(crate) fn poll(&self, mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<Waited> {
        loop {
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            if self.client.gone() {
                return Poll::Ready(Waited::ClientGone);
            }
            if now >= self.deadline {
                return Poll::Ready(Waited::Deadline);
            }
            timer.as_mut().reset((now + LOOK_EVERY).min(self.deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn a_client_is_gone_once_its_stream_ends_and_not_while_it_waits_or_sends() {
        let (mut client, server) = pair().await;
        let watch = ClientWatch::of(&server);
        assert!(!watch.gone(), "a quiet client is still there");
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        client.flush().await.unwrap();
        server.readable().await.unwrap();
        assert!(!watch.gone(), "a client with bytes waiting is still there");
        // The client leaves with its bytes unread (as a TLS client's `close_notify` is):
        // they do not hide its end.
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !watch.gone() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a client that closed is gone");
        assert!(!ClientWatch::NONE.gone());
    }

    /// Waits from now for at most `lasting`, watching `client`: how it ended, and when.
    async fn wait_for(
        timer: &mut Pin<Box<Sleep>>,
        lasting: Duration,
        client: ClientWatch,
    ) -> (Waited, Duration) {
        let since = Instant::now();
        let wait = Wait {
            since,
            deadline: since + lasting,
            client,
        };
        timer.as_mut().reset(wait.first_alarm());
        let ended = poll_fn(|cx| wait.poll(timer.as_mut(), cx)).await;
        (ended, Instant::now() - since)
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_looks_each_second_and_ends_at_its_deadline_or_when_the_client_leaves() {
        let (client, server) = pair().await;
        let watched = ClientWatch::of(&server);
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let first = Wait {
            since: now,
            deadline,
            client: watched,
        };
        assert_eq!(first.first_alarm(), now + LOOK_EVERY);
        // Nothing to look at: the timer wakes once, at the deadline.
        assert_eq!(Wait::until(deadline).first_alarm(), deadline);

        let mut timer = Box::pin(tokio::time::sleep_until(now));
        let lasting = Duration::from_millis(3500);
        assert_eq!(
            wait_for(&mut timer, lasting, watched).await,
            (Waited::Deadline, lasting),
            "a client still there: the looks let the wait run to its deadline"
        );

        // The client leaves: the next look, not the deadline, ends the wait. (Its end is
        // awaited in real time first: the paused clock would reach the look at once.)
        drop(client);
        for _ in 0..500 {
            if watched.gone() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(
            wait_for(&mut timer, Duration::from_secs(60), watched).await,
            (Waited::ClientGone, LOOK_EVERY)
        );
        // At a deadline before the first look the client is looked at first: gone, it is
        // not a timeout.
        let lasting = Duration::from_millis(300);
        assert_eq!(
            wait_for(&mut timer, lasting, watched).await,
            (Waited::ClientGone, lasting)
        );
    }
}

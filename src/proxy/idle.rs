//! HTTP/1 client connections that wait for their next request without hyper's state.
//!
//! hyper keeps, for each connection it serves, an 8 KiB read buffer (reserved again before
//! every read, also while it waits for the next request), an 8 KiB write buffer and its
//! connection state, for as long as the connection lives. An idle keep-alive connection
//! would cost some 30 KiB that way, where nginx needs well under one.
//!
//! So a connection that stays idle is *parked*: every `PARK_CHECK` its listener's watch
//! (`parked::watch_idle`, one task for all its HTTP/1 connections, so that the request
//! path polls no timer) looks at whether a response finished since its last look. When
//! none did and none is in flight, it asks the connection's IO ([`Parking`]) to end
//! hyper's session if hyper is waiting for the start of a request: the next read hyper
//! makes there, with the socket empty, returns the end of the stream. hyper takes that for
//! a client that closed between requests and finishes cleanly (flushing what it wrote);
//! the IO ignores hyper's shutdown, and the serve loop takes the socket back
//! (`into_parts`) and drops hyper's connection with its buffers; the loop itself ends and
//! hands the socket out ([`Parked`]). A clear-text connection then leaves the runtime: its
//! task ends, and its socket waits with its listener's own poller, in its entry of the
//! listener's set (`parked::ColdSocket`), with its context and a few shared counters: some
//! 350 bytes in all, where a task and a registration with the runtime take 256 bytes each.
//! A TLS connection waits in its task ([`ServeParking`]). Neither keeps a timer or a stop
//! waiter of its own. When the socket becomes readable, a new framing guard and hyper
//! session start on it (for a clear-text connection, in a new task).
//!
//! The same watch keeps `header_read_timeout`, in place of hyper's timer: a connection
//! that has not completed a request head that long after its last response (or after it
//! opened) is closed, parked or not, whether the client sent nothing or dribbles a head
//! (slowloris). hyper's own timer costs a boxed sleep, a timer-wheel entry and its removal
//! for every request: about 2,100 instructions of 22,600, with the wheel's work; the watch
//! costs nothing per request, and a connection's entry in its listener's set (taken when
//! it opens, left when it closes) a lock twice. The close comes never earlier than
//! hyper's would, and at most one `PARK_CHECK` later. A listener that drains asks every
//! session to finish what is in flight and closes a parked connection at once. A
//! connection that is busy never parks, and one that parks pays for a new hyper session on
//! its next request only.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::FutureExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::body::ProxyBody;
use super::framing::{serve_held, FramingGuard};
use super::handler::{self, ConnContext};
use super::parked::{ColdSocket, IdleState, Member};
use super::send_timeout::SendTimeout;
use crate::config::Limits;

/// A client connection's socket, to wait for its next request while parked.
pub(super) trait Socket: Sized {
    fn tcp(&self) -> &TcpStream;

    /// Parks the connection out of the runtime, its task ending (`parked::ColdSocket`),
    /// or closes it; `Err`: it waits in its task.
    fn freeze(parked: Parked<Self>) -> Result<(), Parked<Self>> {
        Err(parked)
    }
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn freeze(parked: Parked<TcpStream>) -> Result<(), Parked<TcpStream>> {
        let Parked {
            socket,
            member,
            limits,
        } = parked;
        let set = member.context.idle();
        if !set.takes_cold() {
            return Err(Parked {
                socket,
                member,
                limits,
            });
        }
        let socket = match socket.into_std() {
            Ok(socket) => socket,
            Err(err) => {
                tracing::debug!(error = %err, "cannot park a connection out of the runtime: closing it");
                return Ok(());
            }
        };
        let context = member.context.clone();
        let cold = ColdSocket {
            socket,
            context,
            limits,
        };
        let Err(cold) = set.freeze(&member.state, cold) else {
            return Ok(());
        };
        // Refused by the listener's poller: back to the runtime's, to wait in its task.
        let Some(socket) = back_to_runtime(cold.socket) else {
            return Ok(());
        };
        Err(Parked {
            socket,
            member,
            limits: cold.limits,
        })
    }
}

/// A socket that waited out of the runtime, registered with it again; `None` (logged):
/// the runtime refused it, and dropping it closes the connection.
fn back_to_runtime(socket: std::net::TcpStream) -> Option<TcpStream> {
    TcpStream::from_std(socket)
        .inspect_err(|err| {
            tracing::debug!(error = %err, "cannot serve a parked connection again: closing it");
        })
        .ok()
}

impl Socket for Box<TlsStream<TcpStream>> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// hyper's IO: the framing guard, which can end hyper's session between requests.
pub(crate) struct Parking<S> {
    inner: FramingGuard<S>,
    state: Arc<IdleState>,
    /// Bytes hyper had read but not parsed when its session ended (none in practice: it
    /// ends only at a request boundary); served before the socket's.
    leftover: Vec<u8>,
    send: SendTimeout,
}

impl<S: AsyncRead + Unpin> AsyncRead for Parking<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.leftover.is_empty() {
            serve_held(buf, &mut this.leftover);
            return Poll::Ready(Ok(()));
        }
        if this.state.park.load(Relaxed) && this.inner.between_requests() && this.state.quiet() {
            // hyper reads here only to wait for the next request: with nothing there, the
            // end of the stream ends its session cleanly.
            let read = Pin::new(&mut this.inner).poll_read(cx, buf);
            if read.is_pending() {
                this.state.parked.store(true, Relaxed);
                return Poll::Ready(Ok(()));
            }
            return read;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Parking<S> {
    forward_writes!(within send_timeout);

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.parked.load(Relaxed) {
            // hyper flushed before this; the connection goes on without it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A response body that tells the connection when hyper is done with it.
pub(crate) struct Tracked {
    body: ProxyBody,
    state: Arc<IdleState>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.state.finished.fetch_add(1, Relaxed);
    }
}

impl Body for Tracked {
    type Data = <ProxyBody as Body>::Data;
    type Error = <ProxyBody as Body>::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One serve loop of an HTTP/1 connection: hyper sessions until the connection ends
/// (`None`) or parks (`Some`: the socket and what serving it again needs, for
/// [`ServeParking`] to wait with). `read`: bytes already read from `io`, checked and
/// passed on first.
///
/// Not an `async fn`: the future of one keeps room for its arguments after they are moved
/// (here, the framing guard into [`Parking`]).
fn serve_h1<S>(
    io: S,
    read: Vec<u8>,
    member: Member,
    limits: Arc<Limits>,
) -> impl Future<Output = Option<Parked<S>>> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    let mut io = Parking {
        inner: FramingGuard::new(io, limits.max_header_bytes, read),
        state: member.state.clone(),
        leftover: Vec::new(),
        send: SendTimeout::new(limits.send_timeout),
    };
    async move {
        let ended = loop {
            {
                let state = io.state.clone();
                let service = {
                    let (context, state) = (member.context.clone(), state.clone());
                    service_fn(move |request| {
                        state.started.fetch_add(1, Relaxed);
                        let state = state.clone();
                        handler::handle(request, context.clone()).map(move |response| {
                            Ok::<_, Infallible>(response?.map(|body| Tracked { body, state }))
                        })
                    })
                };
                // Boxed, so that a parked connection's task does not carry hyper's state.
                let mut connection = Box::new(
                    h1_builder(&limits)
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades(),
                );
                // Boxed in a statement of its own: an unboxed session future, even moved
                // out, would keep its room in this loop's future (and so in every parked
                // connection).
                let serving = Box::pin(session(Pin::new(&mut *connection), &state));
                if let Err(error) = serving.await {
                    break Err(error);
                }
                if !state.parked.swap(false, Relaxed) {
                    break Ok(());
                }
                // In a block of its own, so that nothing of hyper's outlives it: a box
                // whose contents were moved out is freed at the end of its binding's
                // scope, and the rest of hyper's parts (its service) with them.
                {
                    let Some(parts) = ({ connection }).into_parts() else {
                        break Ok(());
                    };
                    io = parts.io.into_inner();
                    if !parts.read_buf.is_empty() {
                        // A copy: the bytes hyper hands back keep its whole read buffer
                        // alive.
                        io.leftover = parts.read_buf.to_vec();
                    }
                }
            }
            io.state.park.store(false, Relaxed);
            if !io.leftover.is_empty() {
                continue;
            }
            // Parked: hyper's session and this loop end here.
            return Some(Parked {
                socket: io.inner.into_parked(),
                member,
                limits,
            });
        };
        log_connection_end(ended);
        None
    }
}

/// A parked HTTP/1 connection, out of its serve loop: the socket and what serving it again
/// needs. The framing guard is built again on wake: a connection parks only between
/// requests, where its guard equals a new one.
pub(super) struct Parked<S> {
    socket: S,
    member: Member,
    limits: Arc<Limits>,
}

impl<S: Socket> Parked<S> {
    /// The parked wait: `true` when the socket has something to read, `false` when the
    /// listener's watch closes the connection (its `header_read_timeout`, or the listener
    /// stops). Readiness is polled, not awaited as `readable()`: that future keeps a
    /// waiter of its own, which every parked connection would carry.
    ///
    /// Readiness first: a head that came before the deadline is served even when the
    /// watch got there before this task ran (as a session serves a head complete by the
    /// time it looks).
    fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let state = &self.member.state;
        // The watch wakes the waker kept by the connection's first session: this wait
        // must run in the same task.
        debug_assert!(state.task.get().is_some_and(|t| t.will_wake(cx.waker())));
        match self.socket.tcp().poll_read_ready(cx) {
            Poll::Ready(ready) => Poll::Ready(ready.is_ok()),
            Poll::Pending if state.expired.load(Relaxed) || state.stopping.load(Relaxed) => {
                Poll::Ready(false)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Serves an HTTP/1 connection to its end: its serve loops, each boxed, and between them
/// the parked waits of TLS connections, held here (a clear-text connection parks out of
/// its task: its socket moves to its listener's set, see `parked::ColdSocket`). A parked
/// TLS connection is this and its entry in the listener's set: no serve loop, no timer,
/// no stop waiter (the listener's watch wakes it for either, see `parked::IdleSet`).
///
/// Written by hand: as an `async` block in the connection's task, rustc's layout of the
/// nested futures made the task's cell 640 bytes (docs/performance.md).
pub(crate) struct ServeParking<S> {
    phase: Phase<S>,
}

enum Phase<S> {
    Serving(Pin<Box<ServeLoop<S>>>),
    Parked(Parked<S>),
    Done,
}

type ServeLoop<S> = dyn Future<Output = Option<Parked<S>>> + Send;

impl<S> ServeParking<S>
where
    S: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    /// `read`: bytes already read from `io` (the protocol sniff's); `since`: when the
    /// connection began to wait for its first request head, from which
    /// `header_read_timeout` counts.
    pub(crate) fn new(
        io: S,
        read: Vec<u8>,
        context: Arc<ConnContext>,
        limits: Arc<Limits>,
        since: Instant,
    ) -> ServeParking<S> {
        let member = Member::enter(context, limits.header_read_timeout, since);
        let serving = Box::pin(serve_h1(io, read, member, limits));
        ServeParking {
            phase: Phase::Serving(serving),
        }
    }
}

impl ServeParking<TcpStream> {
    /// A woken connection, served again by a new guard and hyper session. `None`: the
    /// runtime refused the socket, and the connection closes.
    pub(super) fn resume(woken: Woken) -> Option<Self> {
        let Woken {
            socket,
            limits,
            member,
        } = woken;
        let socket = back_to_runtime(socket)?;
        let serving = Box::pin(serve_h1(socket, Vec::new(), member, limits));
        Some(ServeParking {
            phase: Phase::Serving(serving),
        })
    }
}

/// A connection parked out of the runtime whose socket became readable, on its way back
/// to a runtime: a member of its listener's set again, with the new state its entry now
/// has, so that it leaves the set however it ends, before it is served too.
pub(super) struct Woken {
    socket: std::net::TcpStream,
    limits: Arc<Limits>,
    member: Member,
}

impl Woken {
    pub(super) fn new(cold: ColdSocket, state: Arc<IdleState>) -> Woken {
        let ColdSocket {
            socket,
            context,
            limits,
        } = cold;
        Woken {
            socket,
            limits,
            member: Member { state, context },
        }
    }
}

impl<S> Future for ServeParking<S>
where
    S: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Serving(serving) => {
                    let Some(parked) = ready!(serving.as_mut().poll(cx)) else {
                        this.phase = Phase::Done;
                        return Poll::Ready(());
                    };
                    let parked = match S::freeze(parked) {
                        Ok(()) => {
                            this.phase = Phase::Done;
                            return Poll::Ready(());
                        }
                        Err(parked) => parked,
                    };
                    let state = &parked.member.state;
                    state.waiting.store(true, Relaxed);
                    // Read after `waiting` is set: the listener's watch raises it and then
                    // wakes the task, which sees it in `poll_wake` if not here.
                    if state.stopping.load(Relaxed) {
                        this.phase = Phase::Done;
                        return Poll::Ready(());
                    }
                    this.phase = Phase::Parked(parked);
                }
                Phase::Parked(parked) => {
                    let woke = ready!(parked.poll_wake(cx));
                    let Phase::Parked(parked) = std::mem::replace(&mut this.phase, Phase::Done)
                    else {
                        return Poll::Ready(());
                    };
                    if !woke {
                        return Poll::Ready(());
                    }
                    parked.member.state.waiting.store(false, Relaxed);
                    // A new guard and a new hyper session on the socket.
                    let Parked {
                        socket,
                        member,
                        limits,
                    } = parked;
                    let serving = serve_h1(socket, Vec::new(), member, limits);
                    this.phase = Phase::Serving(Box::pin(serving));
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

/// How a client connection's HTTP/1 or h2 serving ended, for the debug log.
pub(super) fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "client connection ended with an error");
    }
}

/// hyper's settings for one session. Made for each, rather than kept by a parked
/// connection: `header_read_timeout` is kept by the idle watch (see the module's header).
///
/// `half_close`: hyper does not read the client while its request is in flight, so a
/// client that closes its sending side after its request still gets the answer; a client
/// gone meanwhile is noticed by `upstream::watch` once its backend is quiet for a second.
fn h1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .half_close(true)
        .keep_alive(true);
    builder
}

/// One hyper session: until hyper ends or is parked. The quiet time it ends with (from
/// which a parked connection's `header_read_timeout` counts) is in `state`.
///
/// The idle checks are the listener's (`parked::watch_idle`), so that the session's
/// polls, several per request, touch no timer and no waker: they read a few flags.
async fn session<C>(mut connection: Pin<&mut C>, state: &Arc<IdleState>) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>> + Graceful,
{
    // The quiet time is not restarted here: a session that starts because a parked socket
    // became readable (a head's first byte, or a TLS record with no request in it) still
    // has to complete a head within `header_read_timeout` of the last answer.
    state.expired.store(false, Relaxed);
    let mut stopping = false;
    std::future::poll_fn(|cx| {
        // Sessions are awaited in place by their connection's task, whose waker does
        // not change: it is kept once, for the connection's life.
        state.task.get_or_init(|| cx.waker().clone());
        if !stopping && state.stopping.load(Relaxed) {
            stopping = true;
            connection.as_mut().graceful();
        }
        let polled = connection.as_mut().poll(cx);
        if polled.is_pending() {
            // Parking is tried on this poll only: later, hyper may be between a response
            // and a request the client is about to send.
            state.park.store(false, Relaxed);
            // After hyper has read what the socket holds: a head that is complete by now
            // is served, not cut off.
            if state.expired.load(Relaxed) {
                if state.quiet() {
                    tracing::debug!("no complete request head within header_read_timeout: closing");
                    return Poll::Ready(Ok(()));
                }
                // A request came in after all (a thread of the runtime was quicker).
                state.expired.store(false, Relaxed);
            }
        }
        polled
    })
    .await
}

/// hyper's graceful shutdown, for the session loop.
trait Graceful {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: Body + 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

//! One client connection, from accept to close: TLS handshake or protocol sniffing, then
//! HTTP/1 (through the framing guard, parked while idle: `idle`) or HTTP/2, and the drain
//! when its listener stops.
//!
//! The futures of this file live as long as their connection, so every state that is
//! large and short-lived (the TLS handshake, the sniff, a session) is boxed in a statement
//! of its own: an idle connection's task holds only what it needs while it waits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::framing::serve_held;
use super::handler::{self, ConnContext};
use super::idle::{log_connection_end, ServeParking, Socket, Woken};
use super::parked::{ColdSocket, IdleState};
use super::send_timeout::SendTimeout;
use super::server::ClientConnection;
use super::stop_requested;
use crate::config::Limits;
use crate::http1::Scheme;
use crate::routing::SharedSnapshot;
use crate::upstream::ClientWatch;

/// A client connection as accepted, with what serving it needs from its listener.
pub(super) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub limits: Arc<Limits>,
    /// The listener's TLS acceptor, as it was when the connection came in.
    pub tls: Arc<Option<TlsAcceptor>>,
    pub snapshot: SharedSnapshot,
    /// Counts the connection as open while it lives (and any tunnel it becomes).
    pub open: ClientConnection,
}

/// A connection after its set-up, served to its end.
enum Serving {
    /// Clear-text HTTP/1, inline; parked, it leaves its task (`parked::ColdSocket`).
    Parking(ServeParking<TcpStream>),
    /// TLS HTTP/1 and h2, boxed (a TLS connection's state is on the heap anyway: its
    /// stream is boxed by the handshake).
    Boxed(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// Serves one client connection to its end: the future of its task, which lives as long
/// as the connection does.
///
/// The set-up (TLS handshake or protocol sniff, with their buffers and timers) runs boxed
/// and is freed when done. Written by hand: an `async` block here kept room for the
/// set-up's result beside the serving future (176 bytes against 88, and a task cell of
/// 384 bytes instead of 256).
pub(super) struct Connection(Stage);

enum Stage {
    SettingUp(Pin<Box<dyn Future<Output = Option<Serving>> + Send>>),
    /// A parked connection woken, taken back by the runtime that first polls it (boxed: the
    /// stage is rare, and every connection's task would carry its room).
    Resuming(Box<Woken>),
    Serving(Serving),
    Done,
}

impl Connection {
    pub(super) fn new(accepted: Accepted, stopped: watch::Receiver<bool>) -> Connection {
        Connection(Stage::SettingUp(Box::pin(set_up(accepted, stopped))))
    }

    /// A clear-text HTTP/1 connection that was parked out of the runtime and has something
    /// to read: its next request is served in a new task, this, on the runtime it is
    /// spawned on.
    pub(super) fn resume(cold: ColdSocket, state: Arc<IdleState>) -> Connection {
        Connection(Stage::Resuming(Box::new(Woken::new(cold, state))))
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let stage = &mut self.get_mut().0;
        loop {
            match stage {
                Stage::SettingUp(setting_up) => match ready!(setting_up.as_mut().poll(cx)) {
                    Some(serving) => *stage = Stage::Serving(serving),
                    None => *stage = Stage::Done,
                },
                Stage::Resuming(_) => {
                    let Stage::Resuming(woken) = std::mem::replace(stage, Stage::Done) else {
                        unreachable!("matched above");
                    };
                    if let Some(serving) = ServeParking::resume(*woken) {
                        *stage = Stage::Serving(Serving::Parking(serving));
                    }
                }
                Stage::Serving(Serving::Parking(serving)) => {
                    ready!(Pin::new(serving).poll(cx));
                    *stage = Stage::Done;
                }
                Stage::Serving(Serving::Boxed(serving)) => {
                    ready!(serving.as_mut().poll(cx));
                    *stage = Stage::Done;
                }
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

/// The TLS handshake or the protocol sniff; `None` when the connection ends there.
async fn set_up(accepted: Accepted, stopped: watch::Receiver<bool>) -> Option<Serving> {
    let Accepted {
        mut stream,
        peer,
        limits,
        tls,
        snapshot,
        open,
    } = accepted;
    let _ = stream.set_nodelay(true);
    // Built once the scheme and protocol are known: after the handshake or the sniff, so a
    // failed one costs nothing. An HTTP/1 client's socket is looked at while its backend
    // is quiet (`upstream::watch`); h2 streams are ended by hyper.
    let watch = ClientWatch::of(&stream);
    let context_for = |scheme, protocol| {
        let client = match protocol {
            Protocol::Http1 => watch,
            Protocol::Http2 => ClientWatch::NONE,
        };
        Arc::new(ConnContext::new(
            peer, scheme, snapshot, open, &limits, client,
        ))
    };
    match tls.as_ref().as_ref() {
        Some(acceptor) => {
            // Boxed: inline, rustls' handshake (some 2 KiB) would make the set-up of every
            // connection, clear-text ones too, that large.
            let handshake = Box::pin(tls_handshake(stream, peer, acceptor, &limits));
            let (stream, protocol) = handshake.await?;
            let context = context_for(Scheme::Https, protocol);
            // The handshake had a `header_read_timeout` of its own; the first head has one
            // from its end.
            let since = Instant::now();
            let serving = serving(
                stream,
                protocol,
                Vec::new(),
                context,
                limits,
                stopped,
                since,
            );
            Some(Serving::Boxed(serving))
        }
        None => {
            // The sniff reads the first head's first bytes: its time counts against the
            // head's `header_read_timeout`, not as one of its own before it.
            let opened = Instant::now();
            let (protocol, read) = sniff(&mut stream, limits.header_read_timeout).await?;
            let context = context_for(Scheme::Http, protocol);
            Some(match protocol {
                Protocol::Http1 => {
                    Serving::Parking(ServeParking::new(stream, read, context, limits, opened))
                }
                Protocol::Http2 => Serving::Boxed(serving(
                    stream, protocol, read, context, limits, stopped, opened,
                )),
            })
        }
    }
}

/// The TLS handshake, within `header_read_timeout`, and the protocol ALPN chose.
///
/// The stream comes out boxed (rustls' state, some 1.2 KiB): what holds it, hyper's
/// session or a parked connection's wait, then holds a pointer, and the HTTP/1 serving
/// (which keeps room for either) is not sized for the stream while hyper holds it too.
async fn tls_handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    limits: &Limits,
) -> Option<(Box<TlsStream<TcpStream>>, Protocol)> {
    let stream =
        match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    Some((Box::new(stream), protocol))
}

#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes: the HTTP/2 connection preface, or anything else (HTTP/1, which
/// hyper then parses and answers), with the bytes read, which the chosen protocol reads
/// first. `None` when the client sends nothing in time or closes.
///
/// Read rather than peeked: a peek costs a system call of its own, and the read takes the
/// whole first request head in the common case, so hyper's first read needs none.
async fn sniff(stream: &mut TcpStream, within: Duration) -> Option<(Protocol, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; SNIFF_READ];
    loop {
        // An async read, not `try_read`: a short read clears the socket's readiness, so
        // hyper's next read waits for the client instead of making a call that finds
        // nothing.
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let compared = got.len().min(H2_PREFACE.len());
        if got[..compared] != H2_PREFACE[..compared] {
            return Some((Protocol::Http1, got));
        }
        if compared == H2_PREFACE.len() {
            return Some((Protocol::Http2, got));
        }
        // A prefix of the preface: the rest is on its way.
    }
}

/// How much the sniff reads at once: a typical request head, whole.
const SNIFF_READ: usize = 2048;

/// An HTTP/2 connection's IO: the bytes the sniff read, then the socket.
struct Prefixed<S> {
    prefix: Vec<u8>,
    inner: S,
    send: SendTimeout,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            serve_held(buf, &mut this.prefix);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    forward_writes!(within send_timeout);

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves a client connection in the protocol it speaks: HTTP/1 through the framing
/// guard (the request-smuggling checks hyper does not make), parked while idle
/// (`idle`), or h2.
fn serving<S>(
    io: S,
    protocol: Protocol,
    read: Vec<u8>,
    context: Arc<ConnContext>,
    limits: Arc<Limits>,
    mut stopped: watch::Receiver<bool>,
    since: Instant,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => Box::pin(ServeParking::new(io, read, context, limits, since)),
        Protocol::Http2 => {
            let service = service_fn(move |request| handler::handle(request, context.clone()));
            let io = Prefixed {
                prefix: read,
                inner: io,
                send: SendTimeout::new(limits.send_timeout),
            };
            let connection = http2_builder(&limits).serve_connection(TokioIo::new(io), service);
            Box::pin(
                async move { drive(connection, |c| c.graceful_shutdown(), &mut stopped).await },
            )
        }
    }
}

fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.header_read_timeout);
    builder
}

/// Serves a connection to its end; when the listener is told to stop, it finishes the
/// requests in flight and closes (HTTP/1: after the current response; h2: GOAWAY).
async fn drive<C>(
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    stopped: &mut watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_connection_end(result),
        _ = stop_requested(stopped) => {
            graceful_shutdown(connection.as_mut());
            log_connection_end(connection.await);
        }
    }
}

//! One client connection, from accept to close: TLS handshake or protocol sniffing, then
//! HTTP/1 (through the framing guard, parked while idle: `idle`) or HTTP/2, and the drain
//! when its listener stops.
//!
//! The futures of this file live as long as their connection, so every state that is
//! large and short-lived (the TLS handshake, the sniff, a session) is boxed in a statement
//! of its own: an idle connection's task holds only what it needs while it waits.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::framing::FramingGuard;
use super::handler::{self, ConnContext};
use super::idle::{self, Socket};
use crate::config::Limits;
use crate::http1::Scheme;
use crate::routing::SharedSnapshot;

/// A client connection as accepted, with what serving it needs from its listener.
pub(super) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub limits: Arc<Limits>,
    /// The listener's TLS acceptor, as it was when the connection came in.
    pub tls: Arc<Option<TlsAcceptor>>,
    pub snapshot: SharedSnapshot,
    /// Counts the connection as open while it lives (and any tunnel it becomes).
    pub open: Arc<dyn Send + Sync>,
}

/// Serves one client connection to its end.
pub(super) async fn serve(accepted: Accepted, stopped: watch::Receiver<bool>) {
    let Accepted {
        stream,
        peer,
        limits,
        tls,
        snapshot,
        open,
    } = accepted;
    let _ = stream.set_nodelay(true);
    // Built once the scheme is known: after the handshake, so a failed one costs nothing.
    let context_for = |scheme| Arc::new(ConnContext::new(peer, scheme, snapshot, open, &limits));
    match tls.as_ref().as_ref() {
        Some(acceptor) => {
            // Boxed, and in a statement of its own: inline, rustls' connection state (some
            // 2 KiB) would make the task of every connection, clear-text ones too, that
            // large.
            let tls = Box::pin(serve_tls(
                stream,
                peer,
                acceptor,
                context_for,
                &limits,
                stopped,
            ));
            tls.await;
        }
        None => {
            let context = context_for(Scheme::Http);
            // Boxed: its timer and buffer would otherwise stay in the task for the
            // connection's whole life.
            let sniffed = {
                let sniffing = Box::pin(sniff(&stream, limits.header_read_timeout));
                sniffing.await
            };
            if let Some(protocol) = sniffed {
                serve_protocol(stream, protocol, context, &limits, stopped).await;
            }
        }
    }
}

/// A TLS connection: the handshake, then the protocol ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    context_for: impl FnOnce(Scheme) -> Arc<ConnContext>,
    limits: &Limits,
    stopped: watch::Receiver<bool>,
) {
    if let Some((stream, protocol)) = tls_handshake(stream, peer, acceptor, limits).await {
        serve_protocol(
            stream,
            protocol,
            context_for(Scheme::Https),
            limits,
            stopped,
        )
        .await;
    }
}

/// The TLS handshake, within `header_read_timeout`, and the protocol ALPN chose.
async fn tls_handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    limits: &Limits,
) -> Option<(TlsStream<TcpStream>, Protocol)> {
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
    Some((stream, protocol))
}

enum Protocol {
    Http1,
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes: the HTTP/2 connection preface, or anything else (HTTP/1,
/// which hyper then parses and answers). `None` when the client sends nothing in time.
async fn sniff(stream: &TcpStream, within: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // A prefix of the preface: the rest is on its way (peek would return at once).
        tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(2)))
            .await
            .ok()?;
    }
}

/// Serves a client connection in the protocol it speaks: HTTP/1 through the framing
/// guard (the request-smuggling checks hyper does not make), parked while idle
/// (`idle`), or h2. Both boxed: the task of an idle connection is as large as its
/// largest state.
async fn serve_protocol<S>(
    io: S,
    protocol: Protocol,
    context: Arc<ConnContext>,
    limits: &Limits,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            let guarded = FramingGuard::new(io, limits.max_header_bytes);
            let served = Box::pin(idle::serve_h1(guarded, context, limits, &mut stopped));
            log_connection_end(served.await);
        }
        Protocol::Http2 => {
            let service = service_fn(move |request| handler::handle(request, context.clone()));
            let connection = http2_builder(limits).serve_connection(TokioIo::new(io), service);
            Box::pin(drive(connection, |c| c.graceful_shutdown(), &mut stopped)).await;
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

/// Resolves once the listener is told to stop (or is gone).
pub(super) async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "client connection ended with an error");
    }
}

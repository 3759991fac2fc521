//! A connection to a backend, driven inside the request's own task: send the request,
//! read the response head.
//!
//! Design note: hyper's client runs each connection as a separate task and talks to it
//! through channels; on the proxy's hot path those hops cost more CPU than everything
//! else cutover does per request (measured: bare hyper forwarding spends ~3.4 µs/request
//! on its client side against 0.9 µs for hyper's server side). Here a pooled connection
//! is just a socket and a read buffer that the request future (and then the response
//! body, which hyper's server polls) uses directly. The wire format is `http1`'s.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{Method, StatusCode};
use hyper::body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::request_body::RequestBody;
use super::watch::{Wait, Waited};
use crate::http1::encode::{encode_chunk, encode_last_chunk, BodyKind};
use crate::http1::parse::{parse_response_head, Invalid, ResponseHead};
use crate::http1::{Framing, MAX_HEAD};

const READ_CHUNK: usize = 8 * 1024;

/// A connection to a backend: the socket and what has been read but not yet used.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    pub(super) buf: BytesMut,
    /// Responses this connection has carried; 0 for a fresh one.
    served: u32,
    /// The request timeout (and the looks at the client, `watch`), re-armed for each
    /// exchange rather than created anew.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The client's request body failed; the backend is not to blame.
    #[error("reading the client's request body: {0}")]
    ClientBody(hyper::Error),
    #[error("backend connection failed: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before sending a single byte of response.
    #[error("backend closed the connection without answering")]
    ClosedEarly,
    #[error("backend sent an invalid response: {0}")]
    Protocol(&'static str),
}

impl ExchangeError {
    /// On a reused connection, these before any byte of the answer most likely mean the
    /// backend had closed it while idle (or that it died on the request: only an
    /// idempotent request may be sent again, `proxy::attempt`).
    pub fn is_stale_connection(&self) -> bool {
        match self {
            ExchangeError::ClosedEarly => true,
            ExchangeError::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// How the request body is framed towards the backend.
impl From<Invalid> for ExchangeError {
    fn from(Invalid(what): Invalid) -> ExchangeError {
        ExchangeError::Protocol(what)
    }
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            served: 0,
            timer: None,
        }
    }

    pub fn is_reused(&self) -> bool {
        self.served > 0
    }

    /// Whether an idle connection can carry another request: the backend has neither
    /// closed it nor sent a single byte since its last response ended.
    ///
    /// This asks the kernel (`recv` with `MSG_PEEK | MSG_DONTWAIT`), not tokio's readiness
    /// flag: the flag lags until the reactor next polls, and a byte that arrived unasked
    /// (a body after a HEAD, 204 or 304 answer, more body than Content-Length said, data
    /// after a chunked body's end) would otherwise be read as the next client's response.
    pub fn is_clean(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = 0u8;
        // SAFETY: recv(2) on a socket this connection owns, into a one-byte local buffer;
        // MSG_PEEK leaves the socket's data untouched.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut probe as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    /// Writes a request head (with no body to follow).
    pub async fn write_head(&mut self, head: &[u8]) -> io::Result<()> {
        self.stream.write_all(head).await
    }

    /// Writes the request head and body (trailers are dropped: see `request_body`).
    pub async fn send(
        &mut self,
        head: &[u8],
        body: &mut RequestBody,
        kind: BodyKind,
    ) -> Result<(), ExchangeError> {
        self.stream.write_all(head).await?;
        if kind == BodyKind::Empty {
            return Ok(());
        }
        for data in body.buffered() {
            self.write_data(data, kind).await?;
        }
        if let Some(rest) = body.rest() {
            while let Some(frame) = poll_fn(|cx| Pin::new(&mut *rest).poll_frame(cx)).await {
                let frame = frame.map_err(ExchangeError::ClientBody)?;
                if let Ok(data) = frame.into_data() {
                    self.write_data(&data, kind).await?;
                }
            }
        }
        if kind == BodyKind::Chunked {
            self.stream.write_all(encode_last_chunk()).await?;
        }
        Ok(())
    }

    async fn write_data(&mut self, data: &[u8], kind: BodyKind) -> io::Result<()> {
        match kind {
            BodyKind::Chunked if data.is_empty() => Ok(()),
            BodyKind::Chunked => self.stream.write_all(&encode_chunk(data)).await,
            _ => self.stream.write_all(data).await,
        }
    }

    /// Sends the request and reads the response head, unless the wait ends first: its
    /// deadline passes, or its client goes away.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &mut RequestBody,
        kind: BodyKind,
        method: &Method,
        wait: Wait,
    ) -> Result<Result<ResponseHead, ExchangeError>, Waited> {
        let alarm = wait.first_alarm();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(alarm)));
        timer.as_mut().reset(alarm);
        let mut timer = self.timer.take();
        let outcome = {
            let work = async {
                match self.send(head, body, kind).await {
                    Ok(()) => self.read_head(method).await,
                    Err(ExchangeError::Io(error)) if kind != BodyKind::Empty => {
                        self.early_answer(method, error).await
                    }
                    Err(error) => Err(error),
                }
            };
            tokio::pin!(work);
            poll_fn(|cx| {
                if let Poll::Ready(result) = work.as_mut().poll(cx) {
                    return Poll::Ready(Ok(result));
                }
                match timer.as_mut().map(|t| wait.poll(t.as_mut(), cx)) {
                    Some(Poll::Ready(waited)) => Poll::Ready(Err(waited)),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        self.timer = timer;
        outcome
    }

    /// After sending a request body failed: the backend's answer if it had answered early
    /// and closed without reading the rest (a 413 to a large upload, as hyper's and Go's
    /// servers and many applications do), on a connection that is not kept; else the
    /// sending's error. The connection is closed or reset, so the read ends at once.
    async fn early_answer(
        &mut self,
        method: &Method,
        error: io::Error,
    ) -> Result<ResponseHead, ExchangeError> {
        match self.read_head(method).await {
            Ok(mut head) if !head.status.is_informational() => {
                head.keep_alive = false;
                Ok(head)
            }
            _ => Err(ExchangeError::Io(error)),
        }
    }

    /// Reads the response head, skipping interim (1xx) responses other than 101.
    pub async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, ExchangeError> {
        // Once a byte of the answer (an interim one included) has come, the backend had the
        // request: an end or a failure of the connection is then never a stale one.
        let mut answered = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_response_head(&mut self.buf, method)? {
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    self.served += 1;
                    // Nothing may follow an answer without a body: we never pipeline,
                    // so such bytes are the backend framing wrongly (a body after HEAD,
                    // 204 or 304). Nothing has reached the client yet: make it a 502.
                    if head.framing == Framing::None
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                        && !self.buf.is_empty()
                    {
                        return Err(ExchangeError::Protocol(
                            "bytes after a response that has no body",
                        ));
                    }
                    return Ok(head);
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(ExchangeError::Protocol("response head too large"));
                }
            }
            self.buf.reserve(READ_CHUNK);
            let read = poll_fn(|cx| poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf));
            match read.await {
                Ok(0) if !answered => return Err(ExchangeError::ClosedEarly),
                Ok(0) => return Err(ExchangeError::Protocol("response head cut short")),
                Ok(_) => answered = true,
                Err(_) if answered => {
                    return Err(ExchangeError::Protocol(
                        "connection lost in the response head",
                    ))
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The socket and any bytes already read past the response head (for tunnels).
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Polls more bytes into the buffer; `Ok(0)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_connection_errors() {
        assert!(ExchangeError::ClosedEarly.is_stale_connection());
        assert!(
            ExchangeError::Io(io::Error::from(io::ErrorKind::ConnectionReset))
                .is_stale_connection()
        );
        assert!(!ExchangeError::Protocol("x").is_stale_connection());
        assert!(!ExchangeError::Io(io::Error::from(io::ErrorKind::TimedOut)).is_stale_connection());
    }
}

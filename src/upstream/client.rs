//! A small HTTP/1.1 client for backends, driven inside the request's own task.
//!
//! Design note: hyper's client runs each connection as a separate task and talks to it
//! through channels; on the proxy's hot path those hops cost more CPU than everything
//! else cutover does per request (measured: bare hyper forwarding spends ~3.4 µs/request
//! on its client side against 0.9 µs for hyper's server side). Here a pooled connection
//! is just a socket and a read buffer that the request future (and then the response
//! body, which hyper's server polls) uses directly.
//!
//! - The request head is encoded once, straight from the client's `HeaderMap`, dropping
//!   hop-by-hop headers in the same pass and adding the forwarding headers (SPEC §7). A
//!   retry on another backend reuses the same bytes.
//! - The response head is parsed with httparse; header values are zero-copy slices of
//!   the read buffer. Hop-by-hop headers are left out as the map is built.
//! - The body is framed per RFC 9112 §6.3 (no body / Content-Length / chunked / until
//!   close). At its end the connection goes back to the pool if both sides allow it.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::proxy::forward::Scheme;

const READ_CHUNK: usize = 8 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// A connection to a backend: the socket and what has been read but not yet used.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    /// Responses this connection has carried; 0 for a fresh one.
    served: u32,
    /// The request timeout, re-armed for each exchange rather than created anew.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The backend did not answer before the deadline.
#[derive(Debug)]
pub struct Elapsed;

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
    /// On a reused connection, these mean the backend had closed it while idle: the
    /// request was never processed and may be sent again if it had no body.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

impl BodyKind {
    /// From the client request: its Content-Length, else chunked if a body may follow.
    pub fn of(headers: &HeaderMap, body: &Incoming) -> BodyKind {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match length {
            Some(n) => BodyKind::Length(n),
            None if body.is_end_stream() => BodyKind::Empty,
            None => BodyKind::Chunked,
        }
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

    /// Writes the request head and body.
    pub async fn send(
        &mut self,
        head: &[u8],
        body: &mut Incoming,
        kind: BodyKind,
    ) -> Result<(), ExchangeError> {
        self.stream.write_all(head).await?;
        if kind == BodyKind::Empty {
            return Ok(());
        }
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            let frame = frame.map_err(ExchangeError::ClientBody)?;
            match frame.into_data() {
                Ok(data) if kind == BodyKind::Chunked => {
                    if data.is_empty() {
                        continue;
                    }
                    let mut size = format!("{:x}\r\n", data.len()).into_bytes();
                    size.extend_from_slice(&data);
                    size.extend_from_slice(b"\r\n");
                    self.stream.write_all(&size).await?;
                }
                Ok(data) => self.stream.write_all(&data).await?,
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        if kind == BodyKind::Chunked {
            let mut end = b"0\r\n".to_vec();
            for (name, value) in trailers.iter().flatten() {
                end.extend_from_slice(name.as_str().as_bytes());
                end.extend_from_slice(b": ");
                end.extend_from_slice(value.as_bytes());
                end.extend_from_slice(b"\r\n");
            }
            end.extend_from_slice(b"\r\n");
            self.stream.write_all(&end).await?;
        }
        Ok(())
    }

    /// Sends the request and reads the response head, unless `deadline` passes first.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &mut Incoming,
        kind: BodyKind,
        method: &Method,
        deadline: tokio::time::Instant,
    ) -> Result<Result<ResponseHead, ExchangeError>, Elapsed> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().reset(deadline);
        let mut timer = self.timer.take();
        let outcome = {
            let work = async {
                self.send(head, body, kind).await?;
                self.read_head(method).await
            };
            tokio::pin!(work);
            poll_fn(|cx| {
                if let Poll::Ready(result) = work.as_mut().poll(cx) {
                    return Poll::Ready(Ok(result));
                }
                match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(Elapsed)),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        self.timer = timer;
        outcome
    }

    /// Reads the response head, skipping interim (1xx) responses other than 101.
    pub async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, ExchangeError> {
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
                if self.buf.len() > MAX_RESPONSE_HEAD {
                    return Err(ExchangeError::Protocol("response head too large"));
                }
            }
            self.buf.reserve(READ_CHUNK);
            let before = self.buf.len();
            let n =
                poll_fn(|cx| poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)).await?;
            if n == 0 {
                return Err(if before == 0 {
                    ExchangeError::ClosedEarly
                } else {
                    ExchangeError::Protocol("response head cut short")
                });
            }
        }
    }

    /// The socket and any bytes already read past the response head (for tunnels).
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Polls more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// What the client told us and how it reached us, for the forwarding headers.
pub struct Forwarded<'a> {
    pub client_ip: &'a HeaderValue,
    pub scheme: Scheme,
}

/// Encodes the request head for an HTTP/1.1 backend (see the module notes).
pub fn encode_request_head(
    parts: &Parts,
    forwarded: &Forwarded<'_>,
    body: BodyKind,
    upgrade: bool,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256 + parts.headers.len() * 48);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    let target = match parts.uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => pq.as_str(),
        _ => "/",
    };
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let headers = &parts.headers;
    let connection_tokens = headers.contains_key(header::CONNECTION);
    let mut cookies = 0;
    for (name, value) in headers {
        if !forwarded_as_is(name, upgrade)
            || (connection_tokens && named_by_connection(headers, name, upgrade))
        {
            continue;
        }
        if name == header::COOKIE {
            cookies += 1;
            continue;
        }
        push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if cookies > 0 {
        // HTTP/2 splits cookies into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
        out.extend_from_slice(b"cookie: ");
        for (i, value) in headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    let host = match headers.get(header::HOST) {
        Some(host) => Some(host.as_bytes()),
        None => parts.uri.authority().map(|a| a.as_str().as_bytes()),
    };
    if let Some(host) = host {
        push_header(&mut out, b"host", host);
        push_header(&mut out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in headers.get_all(X_FORWARDED_FOR) {
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(forwarded.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(match forwarded.scheme {
        Scheme::Http => b"x-forwarded-proto: http\r\n".as_slice(),
        Scheme::Https => b"x-forwarded-proto: https\r\n".as_slice(),
    });
    match body {
        BodyKind::Empty => {}
        BodyKind::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(&mut out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// False for headers the encoder drops or writes itself.
fn forwarded_as_is(name: &HeaderName, upgrade: bool) -> bool {
    !(is_hop_by_hop(name, upgrade)
        || name == header::CONTENT_LENGTH
        || name == header::HOST
        || name == header::EXPECT
        || matches!(
            name.as_str(),
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
        ))
}

/// Hop-by-hop headers (SPEC §7); `Upgrade` is kept on upgrades.
pub fn is_hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || (name == header::UPGRADE && !upgrade)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Whether `Connection` names `name` (as hop-by-hop for this hop only).
fn named_by_connection(headers: &HeaderMap, name: &HeaderName, upgrade: bool) -> bool {
    if upgrade && name == header::UPGRADE {
        return false;
    }
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|token| {
            token
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

fn push_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head, ready for the client.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// Without hop-by-hop headers (and without Content-Length when the body is framed
    /// by its size, which hyper writes back from the body's exact size).
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it; `None` if incomplete.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, ExchangeError> {
    // Positions of names and values in the head, so the head can be split off and its
    // values shared without copying.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, status, version, count) = {
        // Uninitialized: zeroing 128 headers for every response costs more than parsing.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Protocol("too many response headers"))
            }
            Err(_) => return Err(ExchangeError::Protocol("malformed response head")),
        };
        let base = buf.as_ptr() as usize;
        for (span, h) in spans.iter_mut().zip(response.headers.iter()) {
            // Within a head of at most MAX_RESPONSE_HEAD bytes: these fit in u32.
            *span = (
                (h.name.as_ptr() as usize - base) as u32,
                h.name.len() as u32,
                (h.value.as_ptr() as usize - base) as u32,
                h.value.len() as u32,
            );
        }
        (
            len,
            response.code.unwrap_or(0),
            response.version.unwrap_or(1),
            response.headers.len(),
        )
    };
    let status =
        StatusCode::from_u16(status).map_err(|_| ExchangeError::Protocol("invalid status code"))?;
    let head = buf.split_to(len).freeze();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;

    // One pass: framing and connection headers are read, hop-by-hop headers left out,
    // everything else shared with the head's bytes.
    let mut headers = HeaderMap::with_capacity(count);
    let mut connection_close = version == 0;
    let mut connection_tokens: Option<Bytes> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut content_length: Option<(u64, Bytes)> = None;
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, name_len) = (name_at as usize, name_len as usize);
        let (value_at, value_len) = (value_at as usize, value_len as usize);
        let Ok(name) = HeaderName::from_bytes(&head[name_at..name_at + name_len]) else {
            return Err(ExchangeError::Protocol("invalid header name"));
        };
        let value = head.slice(value_at..value_at + value_len);
        if name == header::CONNECTION {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    connection_close = false;
                }
            }
            connection_tokens = Some(value);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONTENT_LENGTH {
            let parsed = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ExchangeError::Protocol("invalid Content-Length"))?;
            if content_length
                .as_ref()
                .is_some_and(|(previous, _)| *previous != parsed)
            {
                return Err(ExchangeError::Protocol("conflicting Content-Length values"));
            }
            content_length = Some((parsed, value));
        } else if !is_hop_by_hop(&name, switching) {
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| ExchangeError::Protocol("invalid header value"))?;
            headers.append(name, value);
        }
    }
    if let Some(tokens) = connection_tokens {
        remove_connection_named(&mut headers, &tokens, switching);
    }

    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (no_body, transfer_encoding, &content_length) {
        (true, _, _) => Framing::None,
        (false, true, _) if chunked => Framing::Chunked,
        (false, true, _) => Framing::UntilClose,
        (false, false, Some((n, _))) => Framing::Length(*n),
        (false, false, None) => Framing::UntilClose,
    };
    // Both framings at once: answer it, but never reuse the connection (smuggling risk).
    let keep_alive = !connection_close
        && framing != Framing::UntilClose
        && !(transfer_encoding && content_length.is_some());
    // A body framed by its length gets Content-Length back from hyper (the body's exact
    // size); answers without a body keep the backend's (a HEAD says how long a GET is).
    if let (Framing::None, Some((_, value))) = (framing, content_length) {
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            headers.insert(header::CONTENT_LENGTH, value);
        }
    }
    if switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(Some(ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Drops the headers a response's `Connection` names (hop-by-hop for this hop only).
fn remove_connection_named(headers: &mut HeaderMap, tokens: &[u8], switching: bool) {
    for token in tokens.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            if !(switching && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
}

/// Why a response body could not be relayed in full.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("backend connection failed mid-body: {0}")]
    Io(#[from] io::Error),
    #[error("backend closed the connection mid-body")]
    Truncated,
    #[error("backend sent a malformed chunked body")]
    Chunked,
    #[error("backend sent nothing for {0:?} mid-body")]
    Stalled(Duration),
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { size: u64, digits: u8 },
    Extension { size: u64 },
    SizeLf { size: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// What decoding the buffered bytes gave.
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

/// Decodes as much of a chunked body as `buf` holds, consuming it.
fn decode_chunked(buf: &mut BytesMut, state: &mut Chunk) -> Result<Decoded, BodyError> {
    loop {
        if let Chunk::Data { remaining } = *state {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let take = remaining.min(buf.len() as u64) as usize;
            *state = if take as u64 == remaining {
                Chunk::DataCr
            } else {
                Chunk::Data {
                    remaining: remaining - take as u64,
                }
            };
            return Ok(Decoded::Data(buf.split_to(take).freeze()));
        }
        if *state == Chunk::Trailers {
            return decode_trailers(buf);
        }
        let Some(&byte) = buf.first() else {
            return Ok(Decoded::NeedMore);
        };
        buf.advance(1);
        *state = match (*state, byte) {
            (Chunk::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err(BodyError::Chunked);
                }
                let digit = (b as char).to_digit(16).unwrap_or(0);
                Chunk::Size {
                    size: size * 16 + u64::from(digit),
                    digits: digits + 1,
                }
            }
            (Chunk::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                Chunk::Extension { size }
            }
            (Chunk::Size { size, digits }, b'\r') if digits > 0 => Chunk::SizeLf { size },
            (Chunk::Size { size, digits }, b'\n') if digits > 0 => after_size(size),
            (Chunk::Extension { size }, b'\r') => Chunk::SizeLf { size },
            (Chunk::Extension { size }, b'\n') => after_size(size),
            (Chunk::Extension { size }, _) => Chunk::Extension { size },
            (Chunk::SizeLf { size }, b'\n') => after_size(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
            _ => return Err(BodyError::Chunked),
        };
    }
}

fn after_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailers
    } else {
        Chunk::Data { remaining: size }
    }
}

/// The trailer section after the last chunk: fields, then an empty line.
fn decode_trailers(buf: &mut BytesMut) -> Result<Decoded, BodyError> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Decoded::End);
    }
    if buf.starts_with(b"\n") {
        buf.advance(1);
        return Ok(Decoded::End);
    }
    if buf.len() < 2 {
        return Ok(Decoded::NeedMore);
    }
    let mut fields = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut trailers = HeaderMap::new();
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes());
                let value = HeaderValue::from_bytes(field.value);
                if let (Ok(name), Ok(value)) = (name, value) {
                    if !is_hop_by_hop(&name, false) {
                        trailers.append(name, value);
                    }
                }
            }
            buf.advance(len);
            Ok(Decoded::Trailers(trailers))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_HEAD => Ok(Decoded::NeedMore),
        _ => Err(BodyError::Chunked),
    }
}

/// What happens to the connection when a response body is over.
pub trait Release: Send + Sync + Unpin + 'static {
    /// The body ended cleanly on a connection that may carry another request.
    fn release(&self, connection: Connection);
    /// The body could not be relayed in full.
    fn failed(&self, error: &BodyError);
}

/// A response body streamed from a backend connection.
pub struct ResponseBody<R: Release> {
    connection: Option<Connection>,
    decoder: Decoder,
    keep_alive: bool,
    owner: R,
    stall_timeout: Duration,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<R: Release> ResponseBody<R> {
    pub fn new(
        connection: Connection,
        head: &ResponseHead,
        owner: R,
        stall_timeout: Duration,
    ) -> ResponseBody<R> {
        let decoder = match head.framing {
            Framing::None | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::Size { size: 0, digits: 0 }),
            Framing::UntilClose => Decoder::UntilClose,
        };
        let mut body = ResponseBody {
            connection: Some(connection),
            decoder,
            keep_alive: head.keep_alive,
            owner,
            stall_timeout,
            stall: None,
        };
        if body.decoder == Decoder::Done {
            body.finish();
        }
        body
    }

    /// The body is complete: hand the connection back if it is clean and reusable.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(connection) = self.connection.take() {
            if self.keep_alive && connection.buf.is_empty() {
                self.owner.release(connection);
            }
        }
    }

    fn fail(&mut self) {
        self.decoder = Decoder::Done;
        self.connection = None;
    }

    /// Reads more from the backend, bounded by the stall timeout.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, BodyError>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        match connection.poll_fill(cx) {
            Poll::Ready(result) => {
                self.stall = None;
                Poll::Ready(result.map_err(BodyError::Io))
            }
            Poll::Pending => {
                let timeout = self.stall_timeout;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stall.as_mut().poll(cx));
                Poll::Ready(Err(BodyError::Stalled(timeout)))
            }
        }
    }

    fn poll_decode(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Length(remaining) => {
                    if !connection.buf.is_empty() {
                        let take = remaining.min(connection.buf.len() as u64);
                        let data = connection.buf.split_to(take as usize).freeze();
                        if take == remaining {
                            self.finish();
                        } else {
                            self.decoder = Decoder::Length(remaining - take);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(BodyError::Truncated)));
                    }
                }
                Decoder::Chunked(mut state) => {
                    let decoded = decode_chunked(&mut connection.buf, &mut state)?;
                    self.decoder = Decoder::Chunked(state);
                    match decoded {
                        Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Decoded::Trailers(trailers) => {
                            self.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Decoded::End => {
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Decoded::NeedMore => {
                            if ready!(self.poll_fill(cx))? == 0 {
                                return Poll::Ready(Some(Err(BodyError::Truncated)));
                            }
                        }
                    }
                }
                Decoder::UntilClose => {
                    if !connection.buf.is_empty() {
                        let data = connection.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.fail();
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }
}

impl<R: Release> Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = this.poll_decode(cx);
        if let Poll::Ready(Some(Err(error))) = &polled {
            this.owner.failed(error);
            this.fail();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.decoder == Decoder::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

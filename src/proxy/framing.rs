//! Rejects HTTP/1 requests whose framing is ambiguous, before hyper parses them.
//!
//! Design note: a request carrying both `Content-Length` and `Transfer-Encoding` is the
//! classic request-smuggling vector. hyper accepts it (it drops `Content-Length`, decodes
//! chunked and closes the connection afterwards), and by the time the handler runs the
//! conflict is invisible. SPEC §7 wants a 400 and nothing forwarded, so this wrapper
//! watches the bytes hyper reads. It follows the request framing (heads, fixed-length and
//! chunked bodies) and, when a head carries both headers, overwrites the head's final
//! byte (always in the read that completed it, so hyper has not parsed it yet) with a
//! byte no header line may hold. hyper's parser then fails on that very head, answers
//! `400 Bad Request` and closes the connection: the request never reaches the handler.
//!
//! The guard holds for every request of a connection; it never stops watching while the
//! connection may still carry requests:
//! - After a request asking to switch protocols (`Upgrade`, `CONNECT`), the bytes that
//!   follow it are held back until hyper writes the answer: a `101` (or hyper's upgrade)
//!   makes them a tunnel, which is no longer watched; any other answer means they are
//!   requests again, and they are inspected like the first.
//! - Framing it cannot follow (a malformed head or chunked body, an oversized head) is
//!   never left to chance: a malformed head is poisoned so hyper refuses it, and the
//!   connection reads nothing more (an error, which closes it).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::chunked::{self, Chunk};
use crate::http1::parse::{self, RequestBody, RequestHead};
use crate::http1::Framing;

/// Replaces the final byte of a poisoned head: not a line ending, not a header-name byte.
const POISON: u8 = b'@';
/// Replaces a byte of a head the guard cannot parse: no request line or header holds it.
const POISON_ANY: u8 = 0;
/// `HTTP/1.1 101`: how long a status line must be before its code is known.
const STATUS_LINE_PREFIX: usize = 12;

pub(crate) struct FramingGuard<S> {
    inner: S,
    state: State,
    /// A request head split across reads, kept until it is complete.
    partial_head: Vec<u8>,
    max_head: usize,
    /// A request asked to switch protocols and its answer is not written yet.
    switch_asked: bool,
    /// What followed that request, held back until the answer says what it is.
    held: Vec<u8>,
    /// The start of the answer being written, until its status code is known.
    answer_start: Vec<u8>,
    /// The connection's task, waiting for the answer to release `held`.
    reader: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body {
        remaining: u64,
    },
    Chunked(Chunk),
    /// A tunnel: not watching any more.
    Off,
    /// Framing the guard could not follow: nothing more is read from this connection.
    Broken,
}

impl<S> FramingGuard<S> {
    /// `read`: bytes already read from `inner` (the protocol sniff's), to be checked and
    /// passed on first.
    pub(crate) fn new(inner: S, max_head: usize, read: Vec<u8>) -> Self {
        FramingGuard {
            inner,
            state: State::Head,
            partial_head: Vec::new(),
            max_head,
            switch_asked: false,
            held: read,
            answer_start: Vec::new(),
            reader: None,
        }
    }

    /// The socket of a guard that waits for the next request (`between_requests`): a new
    /// guard on it goes on where this one stops.
    pub(crate) fn into_parked(self) -> S {
        debug_assert!(self.between_requests() && self.answer_start.is_empty());
        self.inner
    }

    /// Whether every byte read so far belongs to a complete request (head and body), so a
    /// read now waits for the start of the next one: where an idle connection may be parked.
    pub(crate) fn between_requests(&self) -> bool {
        self.state == State::Head
            && self.partial_head.is_empty()
            && self.held.is_empty()
            && !self.switch_asked
    }

    /// Whether the request that asked to switch protocols has been read whole, and what
    /// follows it waits for the answer.
    fn awaiting_answer(&self) -> bool {
        self.switch_asked && self.state == State::Head
    }

    /// Follows the framing through freshly read bytes, poisoning a conflicting head.
    /// Returns how many of them go to hyper now: the rest waits for the answer to a
    /// request that asked to switch protocols, or is dropped when the framing broke.
    fn inspect(&mut self, bytes: &mut [u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if self.awaiting_answer() {
                return at;
            }
            at += match self.state {
                State::Off => return bytes.len(),
                State::Broken => return at,
                State::Head => self.head(bytes, at),
                State::Body { remaining } => {
                    let take = remaining.min((bytes.len() - at) as u64);
                    self.state = if take == remaining {
                        State::Head
                    } else {
                        State::Body {
                            remaining: remaining - take,
                        }
                    };
                    take as usize
                }
                State::Chunked(chunk) => self.chunked(chunk, &bytes[at..]),
            };
        }
        at
    }

    /// Consumes head bytes from `bytes[at..]`; returns how many.
    fn head(&mut self, bytes: &mut [u8], at: usize) -> usize {
        let fresh = &bytes[at..];
        let (status, buffered) = if self.partial_head.is_empty() {
            (parse::request_head(fresh), 0)
        } else {
            let buffered = self.partial_head.len();
            self.partial_head.extend_from_slice(fresh);
            (parse::request_head(&self.partial_head), buffered)
        };
        match status {
            RequestHead::Partial => {
                if self.partial_head.is_empty() {
                    self.partial_head.extend_from_slice(fresh);
                }
                if self.partial_head.len() > self.max_head {
                    // hyper answers 431 by itself, and closes.
                    self.break_off();
                }
                fresh.len()
            }
            RequestHead::Invalid => {
                // The error is in these fresh bytes (the earlier ones parsed as a
                // partial head), so hyper has not got past this byte yet.
                bytes[at] = POISON_ANY;
                self.break_off();
                bytes.len() - at
            }
            RequestHead::Complete { len, body } => {
                self.partial_head.clear();
                let consumed = len - buffered;
                let framing = match body {
                    RequestBody::Conflict => {
                        bytes[at + consumed - 1] = POISON;
                        self.break_off();
                        return consumed;
                    }
                    RequestBody::Framed(framing) => framing,
                    RequestBody::Tunnel(framing) => {
                        self.switch_asked = true;
                        framing
                    }
                };
                self.state = match framing {
                    Framing::None | Framing::Length(0) => State::Head,
                    Framing::Length(n) => State::Body { remaining: n },
                    Framing::Chunked => State::Chunked(Chunk::START),
                    // Requests are never delimited by the end of the connection.
                    Framing::UntilClose => State::Broken,
                };
                consumed
            }
        }
    }

    /// Follows a chunked body through `bytes`; returns how many bytes it consumed.
    fn chunked(&mut self, mut chunk: Chunk, bytes: &[u8]) -> usize {
        match chunked::follow(&mut chunk, bytes) {
            Ok(used) if chunk == Chunk::End => {
                self.state = State::Head;
                used
            }
            Ok(used) => {
                self.state = State::Chunked(chunk);
                used
            }
            Err(_) => {
                // hyper fails such a body by itself; should it not, it reads no further.
                self.break_off();
                0
            }
        }
    }

    fn break_off(&mut self) {
        self.state = State::Broken;
        self.partial_head = Vec::new();
        self.held = Vec::new();
    }

    /// Watches the start of the answer to a request that asked to switch protocols.
    fn written(&mut self, mut bufs: &[io::IoSlice<'_>], mut n: usize) {
        while n > 0 && self.answer_start.len() < STATUS_LINE_PREFIX {
            let Some((first, rest)) = bufs.split_first() else {
                break;
            };
            let take = first.len().min(n);
            let want = STATUS_LINE_PREFIX - self.answer_start.len();
            self.answer_start
                .extend_from_slice(&first[..take.min(want)]);
            n -= take;
            bufs = rest;
        }
        if self.answer_start.len() < STATUS_LINE_PREFIX {
            return;
        }
        let code = &self.answer_start[9..STATUS_LINE_PREFIX];
        if code.starts_with(b"1") && code != b"101" {
            // An interim answer (`100 Continue`), written whole: the final one follows.
            self.answer_start.clear();
            return;
        }
        if code == b"101" {
            self.state = State::Off;
        }
        self.switch_asked = false;
        self.answer_start.clear();
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
    }
}

/// Copies as much of `bytes` as `buf` has room for; how much that was.
fn put_some(buf: &mut ReadBuf<'_>, bytes: &[u8]) -> usize {
    let n = bytes.len().min(buf.remaining());
    buf.put_slice(&bytes[..n]);
    n
}

/// Moves as much of `held` (bytes read before the socket's) into `buf` as fits. Once
/// `held` is empty its buffer is freed: it is not kept for the connection's life.
pub(super) fn serve_held(buf: &mut ReadBuf<'_>, held: &mut Vec<u8>) {
    let n = put_some(buf, held);
    held.drain(..n);
    if held.is_empty() {
        *held = Vec::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.awaiting_answer() {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let before = buf.filled().len();
        if !this.held.is_empty() {
            serve_held(buf, &mut this.held);
        } else if this.state == State::Broken {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request framing the proxy cannot follow",
            )));
        } else {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        if this.state == State::Off || buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        let fresh = &mut buf.filled_mut()[before..];
        let pass = this.inspect(fresh);
        if pass < fresh.len() {
            if this.state != State::Broken {
                let rest = fresh[pass..].to_vec();
                this.held.splice(0..0, rest);
            }
            buf.set_filled(before + pass);
            if pass == 0 {
                // Nothing to give hyper yet; an empty read would look like the end.
                if this.state == State::Broken {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request framing the proxy cannot follow",
                    )));
                }
                this.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if this.switch_asked {
            this.written(&[io::IoSlice::new(buf)], n);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if this.switch_asked {
            this.written(bufs, n);
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;

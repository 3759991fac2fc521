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
//! It stops watching (and leaves everything to hyper) after an `Upgrade`/`CONNECT`
//! request, whose bytes may become a tunnel, and whenever the framing is broken in a way
//! hyper rejects by itself.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::chunked::{self, Chunk};
use crate::http1::parse::{self, RequestBody, RequestHead};
use crate::http1::Framing;

/// Replaces the final byte of a poisoned head: not a line ending, not a header-name byte.
const POISON: u8 = b'@';

pub(crate) struct FramingGuard<S> {
    inner: S,
    state: State,
    /// A request head split across reads, kept until it is complete.
    partial_head: Vec<u8>,
    max_head: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body {
        remaining: u64,
    },
    Chunked(Chunk),
    /// Not watching any more; hyper alone decides.
    Off,
}

impl<S> FramingGuard<S> {
    pub(crate) fn new(inner: S, max_head: usize) -> Self {
        FramingGuard {
            inner,
            state: State::Head,
            partial_head: Vec::new(),
            max_head,
        }
    }

    /// Follows the framing through freshly read bytes, poisoning a conflicting head.
    fn inspect(&mut self, bytes: &mut [u8]) {
        let mut at = 0;
        while at < bytes.len() {
            at += match self.state {
                State::Off => return,
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
                    // hyper answers 431 by itself.
                    self.state = State::Off;
                    self.partial_head = Vec::new();
                }
                fresh.len()
            }
            RequestHead::Invalid => {
                self.state = State::Off;
                self.partial_head = Vec::new();
                fresh.len()
            }
            RequestHead::Complete { len, body } => {
                self.partial_head.clear();
                let consumed = len - buffered;
                self.state = match body {
                    RequestBody::Conflict => {
                        bytes[at + consumed - 1] = POISON;
                        State::Off
                    }
                    RequestBody::Framed(Framing::None | Framing::Length(0)) => State::Head,
                    RequestBody::Framed(Framing::Length(n)) => State::Body { remaining: n },
                    RequestBody::Framed(Framing::Chunked) => State::Chunked(Chunk::START),
                    // Requests are never delimited by the end of the connection.
                    RequestBody::Framed(Framing::UntilClose) | RequestBody::Tunnel => State::Off,
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
                // Broken chunked framing: hyper fails the body by itself.
                self.state = State::Off;
                bytes.len()
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.state != State::Off {
            let fresh = &mut buf.filled_mut()[before..];
            this.inspect(fresh);
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
mod tests {
    use super::*;

    /// Feeds `input` in reads of `step` bytes; returns what hyper would have received.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, State) {
        let mut guard = FramingGuard::new((), 64 * 1024);
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut piece = piece.to_vec();
            if guard.state != State::Off {
                guard.inspect(&mut piece);
            }
            out.extend_from_slice(&piece);
        }
        (out, guard.state)
    }

    const SMUGGLE: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn a_conflicting_head_is_poisoned_at_its_last_byte() {
        for step in [1, 2, 7, SMUGGLE.len()] {
            let (out, state) = run(SMUGGLE, step);
            let head_end = SMUGGLE.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(out[head_end - 1], POISON, "step {step}");
            assert_eq!(&out[..head_end - 1], &SMUGGLE[..head_end - 1]);
            assert_eq!(state, State::Off);
        }
    }

    #[test]
    fn a_conflict_after_keep_alive_requests_is_found() {
        let mut input = Vec::new();
        input.extend_from_slice(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        input.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        input.extend_from_slice(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n");
        let clean_len = input.len();
        input.extend_from_slice(SMUGGLE);
        for step in [1, 3, 16, input.len()] {
            let (out, _) = run(&input, step);
            assert_eq!(&out[..clean_len], &input[..clean_len], "step {step}");
            assert!(out[clean_len..].contains(&POISON), "step {step}");
        }
    }

    #[test]
    fn bodies_that_look_like_heads_are_not_parsed_as_heads() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        let mut chunked =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        for input in [input, chunked] {
            for step in [1, 5, input.len()] {
                let (out, state) = run(&input, step);
                assert_eq!(out, input, "step {step}");
                assert_eq!(state, State::Head);
            }
        }
    }

    #[test]
    fn upgrades_stop_the_watch() {
        let input = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello";
        let (out, state) = run(input, 4);
        assert_eq!(out, input);
        assert_eq!(state, State::Off);
    }

    #[test]
    fn invalid_heads_are_left_to_hyper() {
        let input = b"GET / HTTP/1.1\r\nBad Header\r\n\r\n";
        let (out, state) = run(input, input.len());
        assert_eq!(out, input);
        assert_eq!(state, State::Off);
    }

    #[test]
    fn oversized_heads_stop_the_watch() {
        let mut guard = FramingGuard::new((), 100);
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 200));
        guard.inspect(&mut head);
        assert_eq!(guard.state, State::Off);
        assert!(guard.partial_head.is_empty());
    }
}

//! A response body streamed from a backend connection, framed per RFC 9112 §6.3 (no body,
//! Content-Length, chunked, until close).
//!
//! The body owns the connection it came on. At its end the connection goes to its
//! `Release` owner (back to the backend's pool) if both sides allow reuse and nothing
//! unread is left; dropped early or failed, the connection closes with it, since its
//! state is unknown.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::connection::Connection;
use super::watch::{ClientWatch, Wait, Waited};
use crate::http1::chunked::{self, Chunk, Decoded, Malformed};
use crate::http1::parse::ResponseHead;
use crate::http1::Framing;

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
    /// Not the backend's failure: the client left while the answer was quiet.
    #[error("the client went away while the answer was quiet")]
    ClientGone,
}

impl From<Malformed> for BodyError {
    fn from(Malformed: Malformed) -> BodyError {
        BodyError::Chunked
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoder {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// What happens to the connection when a response body is over.
pub(crate) trait Release: Send + Sync + Unpin + 'static {
    /// The body ended cleanly on a connection that may carry another request.
    fn release(&self, connection: Connection);
    /// The body could not be relayed in full.
    fn failed(&self, error: &BodyError);
}

/// A response body streamed from a backend connection.
pub(crate) struct ResponseBody<R: Release> {
    connection: Option<Connection>,
    decoder: Decoder,
    keep_alive: bool,
    owner: R,
    stall_timeout: Duration,
    /// The client, looked at while the backend is quiet (`watch`).
    client: ClientWatch,
    stall: Option<(Pin<Box<tokio::time::Sleep>>, Wait)>,
}

impl<R: Release> ResponseBody<R> {
    pub(crate) fn new(
        connection: Connection,
        head: &ResponseHead,
        owner: R,
        stall_timeout: Duration,
        client: ClientWatch,
    ) -> ResponseBody<R> {
        let decoder = match head.framing {
            Framing::None | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::START),
            Framing::UntilClose => Decoder::UntilClose,
        };
        let mut body = ResponseBody {
            connection: Some(connection),
            decoder,
            keep_alive: head.keep_alive,
            owner,
            stall_timeout,
            client,
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

    /// Reads more from the backend, bounded by the stall timeout, and by the client while
    /// the backend is quiet.
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
                let (timeout, client) = (self.stall_timeout, self.client);
                let (timer, wait) = self.stall.get_or_insert_with(|| {
                    let since = tokio::time::Instant::now();
                    let deadline = since + timeout;
                    let wait = Wait {
                        since,
                        deadline,
                        client,
                    };
                    (Box::pin(tokio::time::sleep_until(wait.first_alarm())), wait)
                });
                Poll::Ready(Err(match ready!(wait.poll(timer.as_mut(), cx)) {
                    Waited::Deadline => BodyError::Stalled(timeout),
                    Waited::ClientGone => BodyError::ClientGone,
                }))
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
                    let decoded = chunked::decode(&mut connection.buf, &mut state)?;
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
            if !matches!(error, BodyError::ClientGone) {
                this.owner.failed(error);
            }
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

//! A client's request body as it goes to a backend: the part read ahead before the
//! backend was chosen, then (for a body larger than the buffer) the rest, streamed.
//!
//! Request trailers are never forwarded (as nginx): a trailer is a header field the
//! client adds after the checks on its head were made (`Host`, say), and no backend
//! needs them from a proxy. Chunked framing is kept only for a body that streams; a body
//! read whole goes out with its exact Content-Length.

use std::future::poll_fn;
use std::pin::Pin;

use bytes::Bytes;
use hyper::body::{Body, Incoming};

/// What the request path hands the backend client.
#[derive(Debug, Default)]
pub struct RequestBody {
    /// Read before a backend was chosen; kept, so a request that a stale connection
    /// swallowed can be sent again.
    buffered: Vec<Bytes>,
    buffered_len: u64,
    /// The rest of the body, still coming from the client. `None`: read whole.
    rest: Option<Incoming>,
}

impl RequestBody {
    /// A body that is sent as it arrives, nothing read ahead.
    pub(crate) fn streamed(body: Incoming) -> RequestBody {
        RequestBody {
            rest: Some(body),
            ..RequestBody::default()
        }
    }

    /// A body cutover has whole (a shadow copy's, a smoke request's).
    pub(crate) fn whole(body: Bytes) -> RequestBody {
        let mut read = RequestBody::default();
        read.push(body);
        read
    }

    /// Reads frames from the client until the body ends or `limit` bytes are buffered.
    /// Trailers are dropped. Whoever calls this bounds it in time.
    pub(crate) async fn read_ahead(
        mut body: Incoming,
        limit: usize,
    ) -> Result<RequestBody, hyper::Error> {
        let mut read = RequestBody::default();
        while read.buffered_len < limit as u64 {
            let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await else {
                return Ok(read);
            };
            if let Ok(data) = frame?.into_data() {
                read.push(data);
            }
        }
        if !body.is_end_stream() {
            read.rest = Some(body);
        }
        Ok(read)
    }

    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.buffered_len += data.len() as u64;
            self.buffered.push(data);
        }
    }

    /// The body's exact length, when it was read whole.
    pub(crate) fn whole_len(&self) -> Option<u64> {
        self.rest.is_none().then_some(self.buffered_len)
    }

    pub(crate) fn buffered(&self) -> &[Bytes] {
        &self.buffered
    }

    /// The part of the body still to come from the client, if any.
    pub(crate) fn rest(&mut self) -> Option<&mut Incoming> {
        self.rest.as_mut()
    }
}

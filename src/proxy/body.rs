//! The body of a response cutover sends: streamed from a backend, or generated.
//!
//! A streamed body owns the backend connection it came on (see `upstream::body`): at
//! its end the connection goes back to the backend's pool; dropped early (the client went
//! away), the connection closes with it, since its state is unknown. The in-flight guard
//! keeps `least_request` honest until the body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::access_log::Entry;
use crate::upstream::{BodyError, InFlight, ResponseBody};

pub(crate) enum ProxyBody {
    Upstream(ResponseBody<InFlight>),
    Full(Option<Bytes>),
    /// With the access log on: the body, counted, and its line written when it is dropped.
    Logged(Box<Logged>),
}

pub(crate) struct Logged {
    body: ProxyBody,
    entry: Entry,
    failed: bool,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let complete = !self.failed && self.body.is_end_stream();
        self.entry.finish(complete);
    }
}

impl ProxyBody {
    pub(crate) fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody::Full(Some(bytes))
    }

    pub(crate) fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// This body, logged as `entry` when it ends.
    pub(crate) fn logged(self, entry: Entry) -> ProxyBody {
        ProxyBody::Logged(Box::new(Logged {
            body: self,
            entry,
            failed: false,
        }))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Logged(logged) => {
                let polled = Pin::new(&mut logged.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        logged.entry.sent(frame.data_ref().map_or(0, Bytes::len));
                    }
                    Poll::Ready(Some(Err(_))) => logged.failed = true,
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Logged(logged) => logged.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Logged(logged) => logged.body.size_hint(),
        }
    }
}

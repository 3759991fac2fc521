//! One keep-alive HTTP/1.1 connection, used for one request at a time.
//!
//! The load generator owns one of these per pool slot. It connects lazily,
//! reconnects after any failure, and reads every response body to the end so
//! that latency covers the whole response and the connection can be reused.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderName;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::target::Target;

/// A request that failed below HTTP: no status code was received.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// TCP connect or HTTP handshake failed (refused, unreachable, ...).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection broke while sending or receiving (reset, closed early,
    /// malformed response).
    #[error("io: {0}")]
    Io(String),
}

/// What came back for one request.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    /// Value of the header being tallied (`--count-header`), if asked for and
    /// present.
    pub counted_header: Option<String>,
    /// When the request was handed to the connection (after any wait for a
    /// connection and any connect time).
    pub sent_at: Instant,
}

/// A lazily (re)connected HTTP/1.1 client connection to one target.
pub struct Connection {
    target: Arc<Target>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    /// Forgets the current connection. Used after a timeout: the connection
    /// is mid-request and HTTP/1.1 cannot cancel a request and keep going.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends one request and reads the whole response.
    ///
    /// `sent_at` is set as soon as the request is handed to hyper, so a
    /// caller that cancels this future (timeout) still knows whether the
    /// request went out.
    pub async fn exchange(
        &mut self,
        count_header: Option<&HeaderName>,
        sent_at: &mut Option<Instant>,
    ) -> Result<Exchange, TransportError> {
        let mut request = self.target.request();
        // A keep-alive connection can be closed by the server at any moment
        // between requests. If hyper tells us the request was never written,
        // retrying once on a fresh connection is safe and avoids reporting
        // our own pooling race as a server error.
        let mut retried = false;
        loop {
            let sender = self.ready_sender().await?;
            let attempt_at = Instant::now();
            *sent_at = Some(attempt_at);
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return self.finish(response, count_header, attempt_at).await;
                }
                Err(mut failure) => {
                    self.sender = None;
                    match failure.take_message() {
                        Some(unsent) if !retried => {
                            *sent_at = None;
                            retried = true;
                            request = unsent;
                        }
                        _ => return Err(TransportError::Io(failure.into_error().to_string())),
                    }
                }
            }
        }
    }

    /// Returns a connection that is ready for a request, connecting if there
    /// is none or the old one was closed.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, TransportError> {
        let reusable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.sender = Some(self.connect().await?);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| TransportError::Connect("no connection".into()))
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, TransportError> {
        let stream = TcpStream::connect(self.target.connect_addr())
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        // Requests are small and latency-sensitive; Nagle would add delay.
        stream
            .set_nodelay(true)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        // The connection task ends by itself when `sender` is dropped or the
        // peer closes; its errors also surface through `sender`.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn finish(
        &mut self,
        response: Response<Incoming>,
        count_header: Option<&HeaderName>,
        sent_at: Instant,
    ) -> Result<Exchange, TransportError> {
        let status = response.status();
        let counted_header = count_header.map(|name| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        });
        let mut body = response.into_body();
        // Read frame by frame and drop the data: we want the timing of the
        // full body, not a copy of it.
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                self.sender = None;
                return Err(TransportError::Io(e.to_string()));
            }
        }
        Ok(Exchange {
            status,
            counted_header: counted_header.filter(|v| !v.is_empty()),
            sent_at,
        })
    }
}

//! One request to one backend over HTTP/1.1, the answer read whole.
//!
//! Never over the proxy's pools, so that a probe never takes a pooled socket from live
//! traffic and a misbehaving backend cannot leave a poisoned one behind for clients. Smoke
//! requests and the benchmark use a fresh connection each; shadow copies, which come at the
//! rate of live traffic, keep connections of their own alive (`Reuse`), since a connection
//! per copy costs the proxy more than the copy itself (a handshake and a teardown, and a
//! socket in TIME_WAIT).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Idle connections kept per backend by one `Reuse`.
const MAX_IDLE: usize = 64;
/// How long a finished exchange may take to leave its connection ready for the next.
const READY_WITHIN: Duration = Duration::from_millis(100);

/// What a backend answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// At most the limit given to `exchange`.
    pub body: Bytes,
    /// The body went on past the limit (and was not read further).
    pub truncated: bool,
}

#[cfg(test)]
impl Answer {
    /// A whole answer with one `content-type`, for the comparison and smoke tests.
    pub(crate) fn of(status: u16, content_type: &str, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", content_type.parse().unwrap());
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
            truncated: false,
        }
    }
}

/// Sends `request` to `addr` (`host:port`) and reads the answer; every failure is a
/// sentence naming what went wrong. `deadline` bounds the whole exchange.
pub(crate) async fn exchange(
    addr: &str,
    request: Request<Full<Bytes>>,
    connect: Duration,
    deadline: Duration,
    max_body: usize,
) -> Result<Answer, String> {
    match tokio::time::timeout(deadline, exchange_inner(addr, request, connect, max_body)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no complete answer within {}",
            humantime::format_duration(deadline)
        )),
    }
}

async fn exchange_inner(
    addr: &str,
    request: Request<Full<Bytes>>,
    connect: Duration,
    max_body: usize,
) -> Result<Answer, String> {
    let mut open = open(addr, connect).await?;
    open.send(request, max_body)
        .await
        .map_err(Failure::into_message)
}

/// Why an exchange failed.
#[derive(Debug)]
enum Failure {
    /// The connection closed before the backend answered anything: on a kept connection,
    /// the backend closed it while idle and never saw the request.
    Unsent(String),
    Other(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Unsent(message) | Failure::Other(message) => message,
        }
    }
}

/// Keep-alive connections to backends, a copier's own.
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    idle: Mutex<HashMap<String, Vec<Open>>>,
}

impl Reuse {
    /// `exchange` over an idle connection to `addr` when there is one; the connection is
    /// kept for the next when the answer was read whole and it is ready again.
    ///
    /// A kept connection the backend closed just as it was taken fails before any answer;
    /// the request (made again by `request`) then goes once more on a new connection, so
    /// that a backend's idle timeout is never counted as its error.
    pub(crate) async fn exchange(
        &self,
        addr: &str,
        request: impl Fn() -> Request<Full<Bytes>>,
        connect: Duration,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Answer, String> {
        let exchanged = async {
            let (mut open, answer) = match self.take(addr) {
                Some(mut kept) => match kept.send(request(), max_body).await {
                    Err(Failure::Unsent(_)) => {
                        let mut fresh = open(addr, connect).await?;
                        let answer = fresh.send(request(), max_body).await;
                        (fresh, answer)
                    }
                    answer => (kept, answer),
                },
                None => {
                    let mut fresh = open(addr, connect).await?;
                    let answer = fresh.send(request(), max_body).await;
                    (fresh, answer)
                }
            };
            let answer = answer.map_err(Failure::into_message)?;
            if !answer.truncated {
                let ready = tokio::time::timeout(READY_WITHIN, open.sender.ready()).await;
                if let Ok(Ok(())) = ready {
                    self.put(addr, open);
                }
            }
            Ok(answer)
        };
        match tokio::time::timeout(deadline, exchanged).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no complete answer within {}",
                humantime::format_duration(deadline)
            )),
        }
    }

    fn take(&self, addr: &str) -> Option<Open> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(addr)?;
        while let Some(open) = list.pop() {
            if open.sender.is_ready() {
                return Some(open);
            }
        }
        None
    }

    fn put(&self, addr: &str, open: Open) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < MAX_IDLE {
            list.push(open);
        }
    }
}

/// A connection to a backend: the request side, and its task (aborted when dropped).
#[derive(Debug)]
pub(crate) struct Open {
    sender: SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn open(addr: &str, connect: Duration) -> Result<Open, String> {
    let stream = match tokio::time::timeout(connect, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(format!("cannot connect: {err}")),
        Err(_) => {
            return Err(format!(
                "cannot connect within {}",
                humantime::format_duration(connect)
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Open { sender, task })
}

impl Open {
    /// Sends `request` and reads the answer, at most `max_body` bytes of its body. A
    /// truncated answer leaves the connection mid-body: the caller drops it.
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, Failure> {
        let response = self.sender.send_request(request).await.map_err(|err| {
            let message = format!("request failed: {err}");
            if err.is_canceled() || err.is_closed() || err.is_incomplete_message() {
                Failure::Unsent(message)
            } else {
                Failure::Other(message)
            }
        })?;
        let (parts, mut body) = response.into_parts();
        let mut read = BytesMut::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|err| Failure::Other(format!("reading the body failed: {err}")))?;
            if let Ok(data) = frame.into_data() {
                if read.len() + data.len() > max_body {
                    truncated = true;
                    break;
                }
                read.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: read.freeze(),
            truncated,
        })
    }
}

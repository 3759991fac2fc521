//! One request to one backend over HTTP/1.1, the answer read whole, with the live path's
//! own backend client (`upstream::Connection` and `ResponseBody`: one wire code for both).
//!
//! Never over the proxy's pools, so that a probe never takes a pooled socket from live
//! traffic and a misbehaving backend cannot leave a poisoned one behind for clients. Smoke
//! requests and the benchmark use a fresh connection each; shadow copies, which come at the
//! rate of live traffic, keep connections of their own alive (`Reuse`), since a connection
//! per copy costs the proxy more than the copy itself (a handshake and a teardown, and a
//! socket in TIME_WAIT).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpStream;

use crate::http1::encode::{encode_own_request_head, BodyKind};
use crate::upstream::{BodyError, ClientWatch, Connection, RequestBody, ResponseBody, Wait};

/// Idle connections kept per backend by one `Reuse`.
const MAX_IDLE: usize = 64;

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

/// A request cutover sends on its own behalf, encoded once and sendable to any backend.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    method: Method,
    head: Bytes,
    body: Bytes,
}

impl Outgoing {
    /// `target` in origin form (`/path?query`); `host` is the `Host` header when `headers`
    /// has none. Hop-by-hop headers and any framing in `headers` are dropped: the framing
    /// follows from `body`.
    pub(crate) fn new(
        method: Method,
        target: &str,
        headers: &HeaderMap,
        host: Option<&[u8]>,
        body: Bytes,
    ) -> Outgoing {
        let kind = body_kind(&method, &body);
        let head = encode_own_request_head(&method, target, headers, host, kind);
        Outgoing { method, head, body }
    }
}

/// `path` as a request target in origin form (`/path?query`), or why it is not one.
pub(crate) fn origin_form(path: &str) -> Result<PathAndQuery, String> {
    match PathAndQuery::try_from(path) {
        Ok(target) if path.starts_with('/') => Ok(target),
        _ => Err(format!("`{path}` is not a request path (`/path?query`)")),
    }
}

/// A body, or a method whose requests normally carry one, is sent with its length.
fn body_kind(method: &Method, body: &Bytes) -> BodyKind {
    if body.is_empty() && !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        BodyKind::Empty
    } else {
        BodyKind::Length(body.len() as u64)
    }
}

/// Sends `request` to `addr` (`host:port`) on a new connection and reads the answer; every
/// failure is a sentence naming what went wrong. `deadline` bounds the whole exchange.
pub(crate) async fn exchange(
    addr: &str,
    request: &Outgoing,
    connect: Duration,
    deadline: Duration,
    max_body: usize,
) -> Result<Answer, String> {
    within(deadline, async {
        let connection = open(addr, connect).await?;
        send(connection, request, deadline, max_body, Close)
            .await
            .map_err(Failure::into_message)
    })
    .await
}

async fn within(
    deadline: Duration,
    work: impl std::future::Future<Output = Result<Answer, String>>,
) -> Result<Answer, String> {
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no complete answer within {}",
            humantime::format_duration(deadline)
        )),
    }
}

/// Why an exchange failed.
#[derive(Debug)]
enum Failure {
    /// A kept connection closed before the backend answered anything: the backend closed
    /// it while idle and never saw the request.
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

/// Keep-alive connections to backends, a copier's own, per data-plane runtime: a
/// connection serves only the runtime whose poller it is registered with (`runtimes`).
#[derive(Debug)]
pub(crate) struct Reuse {
    idle: Box<[Mutex<IdleByBackend>]>,
}

/// One runtime's idle connections, by backend address.
type IdleByBackend = HashMap<Arc<str>, Vec<Connection>>;

impl Default for Reuse {
    fn default() -> Reuse {
        Reuse {
            idle: (0..crate::runtimes::slots())
                .map(|_| Mutex::default())
                .collect(),
        }
    }
}

impl Reuse {
    /// This thread's runtime's idle connections.
    fn here(&self) -> &Mutex<IdleByBackend> {
        &self.idle[crate::runtimes::slot().min(self.idle.len() - 1)]
    }

    /// `exchange` over an idle connection to `addr` when there is one; the connection is
    /// kept for the next when the answer ended cleanly on a connection both sides keep.
    ///
    /// A kept connection the backend closed just as it was taken fails before any answer;
    /// the request then goes once more on a new connection, so that a backend's idle
    /// timeout is never counted as its error.
    pub(crate) async fn exchange(
        self: &Arc<Self>,
        addr: &Arc<str>,
        request: &Outgoing,
        connect: Duration,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Answer, String> {
        let keep = || Keep {
            reuse: self.clone(),
            addr: addr.clone(),
        };
        within(deadline, async {
            if let Some(kept) = self.take(addr) {
                match send(kept, request, deadline, max_body, keep()).await {
                    Err(Failure::Unsent(_)) => {}
                    answer => return answer.map_err(Failure::into_message),
                }
            }
            let fresh = open(addr, connect).await?;
            send(fresh, request, deadline, max_body, keep())
                .await
                .map_err(Failure::into_message)
        })
        .await
    }

    /// An idle connection to `addr` that is still clean (see `Connection::is_clean`).
    fn take(&self, addr: &str) -> Option<Connection> {
        let mut idle = self.here().lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(addr)?;
        while let Some(connection) = list.pop() {
            if connection.is_clean() {
                return Some(connection);
            }
        }
        None
    }

    fn put(&self, addr: &Arc<str>, connection: Connection) {
        let mut idle = self.here().lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr.clone()).or_default();
        if list.len() < MAX_IDLE {
            list.push(connection);
        }
    }
}

/// A copy's connection goes back to its `Reuse` when the answer ended cleanly.
#[derive(Debug)]
struct Keep {
    reuse: Arc<Reuse>,
    addr: Arc<str>,
}

impl crate::upstream::Release for Keep {
    fn release(&self, connection: Connection) {
        self.reuse.put(&self.addr, connection);
    }

    fn failed(&self, _: &BodyError) {}
}

/// Smoke and benchmark connections carry one request.
#[derive(Debug)]
struct Close;

impl crate::upstream::Release for Close {
    fn release(&self, _: Connection) {}

    fn failed(&self, _: &BodyError) {}
}

async fn open(addr: &str, connect: Duration) -> Result<Connection, String> {
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
    Ok(Connection::new(stream))
}

/// Sends `request` and reads the answer, at most `max_body` bytes of its body. The
/// connection goes to `owner` if the answer ended cleanly; a truncated answer leaves it
/// mid-body, and it is closed.
async fn send(
    mut connection: Connection,
    request: &Outgoing,
    deadline: Duration,
    max_body: usize,
    owner: impl crate::upstream::Release,
) -> Result<Answer, Failure> {
    let kept = connection.is_reused();
    let mut body = RequestBody::whole(request.body.clone());
    let kind = body_kind(&request.method, &request.body);
    let due = tokio::time::Instant::now() + deadline;
    let head = match connection
        .exchange(
            &request.head,
            &mut body,
            kind,
            &request.method,
            Wait::until(due),
        )
        .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(err)) if kept && err.is_stale_connection() => {
            return Err(Failure::Unsent(format!("request failed: {err}")))
        }
        Ok(Err(err)) => return Err(Failure::Other(format!("request failed: {err}"))),
        Err(_) => {
            return Err(Failure::Other(format!(
                "no answer within {}",
                humantime::format_duration(deadline)
            )))
        }
    };
    let mut response = ResponseBody::new(connection, &head, owner, deadline, ClientWatch::NONE);
    let mut read = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = response.frame().await {
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
        status: head.status,
        headers: head.headers,
        body: read.freeze(),
        truncated,
    })
}

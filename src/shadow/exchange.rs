//! One request to one backend over a fresh HTTP/1.1 connection, the answer read whole.
//!
//! A fresh connection (not the proxy's pool) so that a probe never takes a pooled socket
//! from live traffic and a misbehaving backend cannot leave a poisoned one behind.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("request failed: {err}"));
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            connection.abort();
            return Err(err);
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut read = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| format!("reading the body failed: {err}"))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > max_body {
                truncated = true;
                break;
            }
            read.extend_from_slice(&data);
        }
    }
    // A truncated answer leaves the connection mid-body: close it rather than drain it.
    connection.abort();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: read.freeze(),
        truncated,
    })
}

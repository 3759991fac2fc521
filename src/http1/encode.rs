//! Encoding the request head for an HTTP/1.1 backend, once per request.
//!
//! The head is built straight from the client's `HeaderMap`, dropping hop-by-hop headers
//! (and those the client's `Connection` names) in the same pass and adding the forwarding
//! headers (SPEC §7). A retry on another backend reuses the same bytes.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Method;
use hyper::body::{Body, Incoming};

use super::tokens::{has_token, is_hop_by_hop};
use super::Scheme;

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

/// What the client told us and how it reached us, for the forwarding headers.
pub(crate) struct Forwarded<'a> {
    pub client_ip: &'a HeaderValue,
    pub scheme: Scheme,
    /// The address the client reached (the listener's): the `Host` of a request that
    /// names none, as HTTP/1.0 allows and HTTP/1.1, which the backend is sent, does not.
    pub reached: &'a HeaderValue,
}

/// Encodes the request head for an HTTP/1.1 backend (see the module notes).
#[inline]
pub(crate) fn encode_request_head(
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

    push_end_to_end(&mut out, &parts.headers, upgrade);
    push_forwarding(&mut out, parts, forwarded);
    push_framing(&mut out, body, upgrade);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// The head of a request cutover sends on its own behalf (a shadow copy, a smoke or
/// benchmark request), in origin form: `headers` as given, minus hop-by-hop ones (those
/// `Connection` names too) and any framing (which follows from `body`), an HTTP/2
/// client's cookies on one line, as the live path sends them; `Host: host` first when
/// `headers` has none.
pub(crate) fn encode_own_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: Option<&[u8]>,
    body: BodyKind,
) -> Bytes {
    let mut out = BytesMut::with_capacity(128 + headers.len() * 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let (Some(host), false) = (host, headers.contains_key(header::HOST)) {
        push_header(&mut out, b"host", host);
    }
    let connection_tokens = headers.contains_key(header::CONNECTION);
    for (name, value) in headers {
        let dropped = is_hop_by_hop(name, false)
            || name == header::CONTENT_LENGTH
            || name == header::COOKIE
            || (connection_tokens && named_by_connection(headers, name, false));
        if !dropped {
            push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if headers.contains_key(header::COOKIE) {
        push_cookies(&mut out, headers);
    }
    push_framing(&mut out, body, false);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// The client's headers that go to the backend as they are (one `cookie` line).
#[inline]
fn push_end_to_end(out: &mut BytesMut, headers: &HeaderMap, upgrade: bool) {
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
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if cookies > 0 {
        push_cookies(out, headers);
    }
}

/// Every `cookie` field as one line: HTTP/2 splits cookies into several fields, HTTP/1.1
/// wants one (RFC 9113 §8.2.3).
#[inline]
fn push_cookies(out: &mut BytesMut, headers: &HeaderMap) {
    out.extend_from_slice(b"cookie: ");
    for (i, value) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `Host` and the forwarding headers (SPEC §7).
#[inline]
fn push_forwarding(out: &mut BytesMut, parts: &Parts, forwarded: &Forwarded<'_>) {
    let headers = &parts.headers;
    // The authority that routed the request (see `proxy::handler`): the URI's wins.
    let host = match parts.uri.authority() {
        Some(authority) => Some(host_of(authority).as_bytes()),
        None => headers.get(header::HOST).map(HeaderValue::as_bytes),
    };
    match host {
        Some(host) => {
            push_header(out, b"host", host);
            push_header(out, b"x-forwarded-host", host);
        }
        None => push_header(out, b"host", forwarded.reached.as_bytes()),
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
}

/// `host[:port]` of an authority, without any `userinfo@`.
pub(crate) fn host_of(authority: &http::uri::Authority) -> &str {
    let text = authority.as_str();
    text.rsplit_once('@').map_or(text, |(_, host)| host)
}

/// How the body follows, and `Connection: upgrade` for upgrades.
#[inline]
fn push_framing(out: &mut BytesMut, body: BodyKind, upgrade: bool) {
    match body {
        BodyKind::Empty => {}
        BodyKind::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
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

/// Whether `Connection` names `name` (as hop-by-hop for this hop only).
fn named_by_connection(headers: &HeaderMap, name: &HeaderName, upgrade: bool) -> bool {
    if upgrade && name == header::UPGRADE {
        return false;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| has_token(value.as_bytes(), name.as_str().as_bytes()))
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

/// One chunk of a chunked request body: size line, data, line end.
pub(crate) fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// The last chunk of a chunked request body. The client's trailers are never forwarded
/// (see `upstream::request_body`).
pub(crate) fn encode_last_chunk() -> &'static [u8] {
    b"0\r\n\r\n"
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;

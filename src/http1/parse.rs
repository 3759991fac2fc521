//! Parsing HTTP/1 heads: a backend's response head, ready for the client, and the framing
//! of a client's request head, for the guard in front of hyper (`proxy::framing`).
//!
//! Response header values are zero-copy slices of the read buffer; hop-by-hop headers
//! are left out as the map is built, in one pass.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::tokens::{is_hop_by_hop, last_token, tokens};
use super::Framing;

const MAX_HEADERS: usize = 128;

/// A head the backend got wrong; what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// A parsed response head, ready for the client.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// Without hop-by-hop headers (and without Content-Length when the body is framed
    /// by its size, which hyper writes back from the body's exact size).
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it; `None` if incomplete.
pub(crate) fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, Invalid> {
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let Some(Located {
        len,
        status,
        version,
        count,
    }) = locate(buf, &mut spans)?
    else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(status).map_err(|_| Invalid("invalid status code"))?;
    let head = buf.split_to(len).freeze();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;

    // One pass: framing and connection headers are read, hop-by-hop headers left out,
    // everything else shared with the head's bytes.
    let mut headers = HeaderMap::with_capacity(count);
    let mut connection_close = version == 0;
    let mut connection_tokens: Option<Bytes> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut content_length: Option<(u64, Bytes)> = None;
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, name_len) = (name_at as usize, name_len as usize);
        let (value_at, value_len) = (value_at as usize, value_len as usize);
        let Ok(name) = HeaderName::from_bytes(&head[name_at..name_at + name_len]) else {
            return Err(Invalid("invalid header name"));
        };
        let value = head.slice(value_at..value_at + value_len);
        if name == header::CONNECTION {
            for token in tokens(&value) {
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    connection_close = false;
                }
            }
            connection_tokens = Some(value);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            chunked = last_token(&value).eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONTENT_LENGTH {
            let parsed = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(Invalid("invalid Content-Length"))?;
            if content_length
                .as_ref()
                .is_some_and(|(previous, _)| *previous != parsed)
            {
                return Err(Invalid("conflicting Content-Length values"));
            }
            content_length = Some((parsed, value));
        } else if !is_hop_by_hop(&name, switching) {
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| Invalid("invalid header value"))?;
            headers.append(name, value);
        }
    }
    if let Some(tokens) = connection_tokens {
        remove_connection_named(&mut headers, &tokens, switching);
    }

    let framing = framing_of(method, status, transfer_encoding, chunked, &content_length);
    // Both framings at once: answer it, but never reuse the connection (smuggling risk).
    let keep_alive = !connection_close
        && framing != Framing::UntilClose
        && !(transfer_encoding && content_length.is_some());
    // A body framed by its length gets Content-Length back from hyper (the body's exact
    // size); answers without a body keep the backend's (a HEAD says how long a GET is).
    if let (Framing::None, Some((_, value))) = (framing, content_length) {
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            headers.insert(header::CONTENT_LENGTH, value);
        }
    }
    if switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(Some(ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Where a complete head ends, what it says in its status line, and where each header's
/// name and value are (`spans`), so the head can be split off the buffer and its values
/// shared without copying.
struct Located {
    len: usize,
    status: u16,
    version: u8,
    count: usize,
}

/// Name offset, name length, value offset, value length: within a head of at most
/// `MAX_HEAD` bytes, these fit in u32.
type Span = (u32, u32, u32, u32);

#[inline]
fn locate(buf: &BytesMut, spans: &mut [Span; MAX_HEADERS]) -> Result<Option<Located>, Invalid> {
    // Uninitialized: zeroing 128 headers for every response costs more than parsing.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many response headers")),
        Err(_) => return Err(Invalid("malformed response head")),
    };
    let base = buf.as_ptr() as usize;
    for (span, h) in spans.iter_mut().zip(response.headers.iter()) {
        *span = (
            (h.name.as_ptr() as usize - base) as u32,
            h.name.len() as u32,
            (h.value.as_ptr() as usize - base) as u32,
            h.value.len() as u32,
        );
    }
    Ok(Some(Located {
        len,
        status: response.code.unwrap_or(0),
        version: response.version.unwrap_or(1),
        count: response.headers.len(),
    }))
}

/// How the response body is delimited (RFC 9112 §6.3).
#[inline]
fn framing_of(
    method: &Method,
    status: StatusCode,
    transfer_encoding: bool,
    chunked: bool,
    content_length: &Option<(u64, Bytes)>,
) -> Framing {
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    match (no_body, transfer_encoding, content_length) {
        (true, _, _) => Framing::None,
        (false, true, _) if chunked => Framing::Chunked,
        (false, true, _) => Framing::UntilClose,
        (false, false, Some((n, _))) => Framing::Length(*n),
        (false, false, None) => Framing::UntilClose,
    }
}

/// Drops the headers a response's `Connection` names (hop-by-hop for this hop only).
fn remove_connection_named(headers: &mut HeaderMap, value: &[u8], switching: bool) {
    for token in tokens(value) {
        if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            if !(switching && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
}

/// What the framing guard needs to know of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestHead {
    Partial,
    /// hyper rejects it by itself.
    Invalid,
    Complete {
        len: usize,
        body: RequestBody,
    },
}

/// How what follows a request head is delimited, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    Framed(Framing),
    /// Both Content-Length and Transfer-Encoding: the request-smuggling vector.
    Conflict,
    /// Upgrade or CONNECT, with the framing of its own body: what follows it may not be
    /// HTTP, if the answer switches protocols.
    Tunnel(Framing),
}

/// Reads the framing of a client's request head at the front of `bytes`.
pub(crate) fn request_head(bytes: &[u8]) -> RequestHead {
    // Uninitialized: zeroing 128 headers per request head costs more than parsing it.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return RequestHead::Partial,
        Err(_) => return RequestHead::Invalid,
    };
    let mut content_length = None;
    let mut transfer_encoding = false;
    let mut upgrade = request.method == Some("CONNECT");
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match parsed {
                Some(n) => content_length = Some(n),
                None => return RequestHead::Invalid,
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let framing = match (content_length, transfer_encoding) {
        (Some(_), true) => {
            return RequestHead::Complete {
                len,
                body: RequestBody::Conflict,
            }
        }
        (None, true) => Framing::Chunked,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::None,
    };
    let body = if upgrade {
        RequestBody::Tunnel(framing)
    } else {
        RequestBody::Framed(framing)
    };
    RequestHead::Complete { len, body }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

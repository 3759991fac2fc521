use super::*;
use http::Request;

fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
    build(Request::builder()).body(()).unwrap().into_parts().0
}

fn encode(p: &Parts, body: BodyKind, upgrade: bool) -> String {
    let ip = HeaderValue::from_static("192.0.2.7");
    let forwarded = Forwarded {
        client_ip: &ip,
        scheme: Scheme::Https,
    };
    String::from_utf8(encode_request_head(p, &forwarded, body, upgrade).to_vec()).unwrap()
}

fn header_lines(head: &str) -> Vec<&str> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn request_head_keeps_host_and_adds_forwarding_headers() {
    let p = parts(|b| {
        b.method("POST")
            .uri("/a/b?c=1")
            .header("host", "api.example.com")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "evil")
            .header("accept", "*/*")
    });
    let head = encode(&p, BodyKind::Length(5), false);
    assert!(head.starts_with("POST /a/b?c=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"));
    let lines = header_lines(&head);
    assert!(lines.contains(&"host: api.example.com"));
    assert!(lines.contains(&"accept: */*"));
    assert!(lines.contains(&"x-forwarded-for: 10.0.0.1, 192.0.2.7"));
    assert!(lines.contains(&"x-forwarded-proto: https"));
    assert!(lines.contains(&"x-forwarded-host: api.example.com"));
    assert!(lines.contains(&"content-length: 5"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("x-forwarded-host"))
            .count(),
        1
    );
}

#[test]
fn request_head_drops_hop_by_hop_and_connection_named_headers() {
    let p = parts(|b| {
        b.uri("/")
            .header("host", "a")
            .header("connection", "keep-alive, X-Secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic x")
            .header("te", "trailers")
            .header("trailer", "x-t")
            .header("transfer-encoding", "chunked")
            .header("upgrade", "h2c")
            .header("expect", "100-continue")
            .header("x-kept", "yes")
    });
    let head = encode(&p, BodyKind::Chunked, false);
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-",
        "te:",
        "trailer",
        "upgrade",
        "expect",
    ] {
        assert!(!head.contains(gone), "{gone} in {head}");
    }
    let lines = header_lines(&head);
    assert!(lines.contains(&"x-kept: yes"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("transfer-encoding"))
            .count(),
        1
    );
    assert!(lines.contains(&"transfer-encoding: chunked"));
}

#[test]
fn request_head_for_upgrades_keeps_upgrade() {
    let p = parts(|b| {
        b.uri("/ws")
            .header("host", "a")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    });
    let lines_owned = encode(&p, BodyKind::Empty, true);
    let lines = header_lines(&lines_owned);
    assert!(lines.contains(&"upgrade: websocket"));
    assert!(lines.contains(&"connection: upgrade"));
    assert!(lines.contains(&"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ=="));
}

#[test]
fn h2_requests_get_host_from_authority_and_one_cookie_line() {
    let p = parts(|b| {
        b.uri("https://api.example.com:8443/x")
            .version(http::Version::HTTP_2)
            .header("cookie", "a=1")
            .header("cookie", "b=2")
    });
    let head = encode(&p, BodyKind::Empty, false);
    assert!(head.starts_with("GET /x HTTP/1.1\r\n"));
    let lines = header_lines(&head);
    assert!(lines.contains(&"host: api.example.com:8443"));
    assert!(lines.contains(&"cookie: a=1; b=2"));
    assert!(!head.contains("content-length"));
}

#[test]
fn decimal_encoding() {
    for n in [0u64, 7, 10, 1234567890, u64::MAX] {
        let mut out = BytesMut::new();
        push_decimal(&mut out, n);
        assert_eq!(&out[..], n.to_string().as_bytes());
    }
}

fn parse(raw: &str, method: &Method) -> Result<Option<ResponseHead>, ExchangeError> {
    let mut buf = BytesMut::from(raw);
    parse_response_head(&mut buf, method)
}

#[test]
fn response_framing() {
    let get = Method::GET;
    let cases = [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
            Framing::Length(12),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Framing::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Framing::UntilClose,
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
        ("HTTP/1.1 204 No Content\r\n\r\n", Framing::None, true),
        (
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            Framing::None,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n",
            Framing::Length(3),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n",
            Framing::Length(3),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n",
            Framing::Length(3),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked,
            false,
        ),
    ];
    for (raw, framing, keep_alive) in cases {
        let head = parse(raw, &get).unwrap().unwrap();
        assert_eq!(head.framing, framing, "{raw}");
        assert_eq!(head.keep_alive, keep_alive, "{raw}");
    }
    let head = parse(
        "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
        &Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.framing, Framing::None);
    assert_eq!(
        head.headers[header::CONTENT_LENGTH],
        "12",
        "HEAD answers keep their length"
    );
}

#[test]
fn response_headers_drop_hop_by_hop_and_length() {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nX-App: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok";
    let mut buf = BytesMut::from(raw);
    let head = parse_response_head(&mut buf, &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    assert_eq!(head.status, StatusCode::OK);
    assert!(!head.headers.contains_key("connection"));
    assert!(!head.headers.contains_key("x-internal"));
    assert!(!head.headers.contains_key("keep-alive"));
    assert!(!head.headers.contains_key("content-length"));
    assert_eq!(head.headers["x-app"], "yes");
    assert_eq!(head.headers.get_all("set-cookie").iter().count(), 2);
}

#[test]
fn switching_protocols_keeps_upgrade() {
    let raw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
    let head = parse(raw, &Method::GET).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(head.headers["upgrade"], "websocket");
    assert_eq!(head.headers["connection"], "upgrade");
    assert_eq!(head.framing, Framing::None);
}

#[test]
fn bad_responses_are_protocol_errors() {
    for raw in [
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(
            matches!(parse(raw, &Method::GET), Err(ExchangeError::Protocol(_))),
            "{raw}"
        );
    }
    assert!(parse("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET)
        .unwrap()
        .is_none());
}

/// Decodes `raw` fed in pieces of `step` bytes; returns the body and trailers.
fn dechunk(raw: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), BodyError> {
    let mut state = Chunk::Size { size: 0, digits: 0 };
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = raw.chunks(step);
    loop {
        match decode_chunked(&mut buf, &mut state)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Trailers(trailers) => return Ok((body, Some(trailers))),
            Decoded::End => {
                assert!(buf.is_empty() || pieces.next().is_none());
                return Ok((body, None));
            }
            Decoded::NeedMore => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Err(BodyError::Truncated),
            },
        }
    }
}

#[test]
fn chunked_bodies_decode_whatever_the_read_sizes() {
    let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
    for step in [1, 2, 3, 5, 8, raw.len()] {
        let (body, trailers) = dechunk(raw, step).unwrap();
        assert_eq!(body, b"hello, world", "step {step}");
        assert!(trailers.is_none());
    }
    let raw = b"A\r\n0123456789\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
    for step in [1, 4, raw.len()] {
        let (body, trailers) = dechunk(raw, step).unwrap();
        assert_eq!(body, b"0123456789");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(trailers["x-other"], "1");
    }
}

#[test]
fn many_small_chunks_in_one_buffer() {
    let mut raw = Vec::new();
    for _ in 0..10_000 {
        raw.extend_from_slice(b"1\r\nx\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (body, _) = dechunk(&raw, raw.len()).unwrap();
    assert_eq!(body.len(), 10_000);
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for raw in [
        &b"zz\r\n"[..],
        b"5\r\nhelloX\r\n",
        b"\r\n",
        b"ffffffffffffffffff\r\n",
    ] {
        assert!(
            matches!(dechunk(raw, raw.len()), Err(BodyError::Chunked)),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(matches!(dechunk(b"5\r\nhel", 3), Err(BodyError::Truncated)));
}

#[test]
fn stale_connection_errors() {
    assert!(ExchangeError::ClosedEarly.is_stale_connection());
    assert!(
        ExchangeError::Io(io::Error::from(io::ErrorKind::ConnectionReset)).is_stale_connection()
    );
    assert!(!ExchangeError::Protocol("x").is_stale_connection());
    assert!(!ExchangeError::Io(io::Error::from(io::ErrorKind::TimedOut)).is_stale_connection());
}

use super::*;
use http::{header, Method, StatusCode};

fn parse(raw: &str, method: &Method) -> Result<Option<ResponseHead>, Invalid> {
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
        assert!(matches!(parse(raw, &Method::GET), Err(Invalid(_))), "{raw}");
    }
    assert!(parse("HTTP/1.1 200 OK\r\ncontent-le", &Method::GET)
        .unwrap()
        .is_none());
}

#[test]
fn request_heads_say_how_their_body_is_framed() {
    let framed = |raw: &[u8]| match request_head(raw) {
        RequestHead::Complete { len, body } => {
            assert_eq!(len, raw.len());
            body
        }
        other => panic!("{other:?}"),
    };
    for (raw, want) in [
        (
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            RequestBody::Framed(Framing::None),
        ),
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"[..],
            RequestBody::Framed(Framing::Length(3)),
        ),
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            RequestBody::Conflict,
        ),
        (
            &b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            RequestBody::Tunnel(Framing::None),
        ),
        (
            &b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n"[..],
            RequestBody::Tunnel(Framing::Length(2)),
        ),
    ] {
        assert_eq!(framed(raw), want, "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(request_head(b"GET / HTTP/1.1\r\nHo"), RequestHead::Partial);
    assert_eq!(
        request_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        RequestHead::Invalid
    );
}

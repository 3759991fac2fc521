use super::*;
use http::Request;

fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
    build(Request::builder()).body(()).unwrap().into_parts().0
}

fn encode(p: &Parts, body: BodyKind, upgrade: bool) -> String {
    let ip = HeaderValue::from_static("192.0.2.7");
    let reached = HeaderValue::from_static("198.51.100.1:443");
    let forwarded = Forwarded {
        client_ip: &ip,
        scheme: Scheme::Https,
        reached: &reached,
    };
    String::from_utf8(encode_request_head(p, &forwarded, body, upgrade).to_vec()).unwrap()
}

fn header_lines(head: &str) -> Vec<&str> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect()
}

/// How many of the lines start with `prefix` (a header written twice shows as 2).
fn starting_with(lines: &[&str], prefix: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(prefix)).count()
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
    assert_eq!(starting_with(&lines, "x-forwarded-host"), 1);
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
    assert_eq!(starting_with(&lines, "transfer-encoding"), 1);
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

#[test]
fn chunks_are_framed_with_hex_sizes_and_no_trailers() {
    assert_eq!(
        encode_chunk(b"hello, world!!!!!"),
        b"11\r\nhello, world!!!!!\r\n"
    );
    assert_eq!(encode_last_chunk(), b"0\r\n\r\n");
}

#[test]
fn own_request_head_drops_hop_by_hop_and_framing_and_adds_host_only_when_missing() {
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("*/*"));
    headers.insert("connection", HeaderValue::from_static("close"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    headers.insert("content-length", HeaderValue::from_static("99"));
    let own = |headers: &HeaderMap, body| {
        let head = encode_own_request_head(&Method::POST, "/q?a=1", headers, Some(b"b:1"), body);
        String::from_utf8(head.to_vec()).unwrap()
    };
    assert_eq!(
        own(&headers, BodyKind::Length(3)),
        "POST /q?a=1 HTTP/1.1\r\nhost: b:1\r\naccept: */*\r\ncontent-length: 3\r\n\r\n"
    );
    headers.insert("host", HeaderValue::from_static("api"));
    assert_eq!(
        own(&headers, BodyKind::Empty),
        "POST /q?a=1 HTTP/1.1\r\naccept: */*\r\nhost: api\r\n\r\n"
    );
    // As the live path: what `Connection` names stays behind, an HTTP/2 client's cookie
    // fields go as one line.
    let mut headers = HeaderMap::new();
    headers.insert("connection", HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    headers.append("cookie", HeaderValue::from_static("a=1"));
    headers.append("cookie", HeaderValue::from_static("b=2"));
    assert_eq!(
        own(&headers, BodyKind::Empty),
        "POST /q?a=1 HTTP/1.1\r\nhost: b:1\r\ncookie: a=1; b=2\r\n\r\n"
    );
}

#[test]
fn a_request_without_host_gets_the_address_the_client_reached() {
    // HTTP/1.0 allows a request without Host; the backend is sent HTTP/1.1, which does not.
    let p = parts(|b| b.method("GET").uri("/").version(http::Version::HTTP_10));
    let head = encode(&p, BodyKind::Empty, false);
    let lines = header_lines(&head);
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    assert_eq!(starting_with(&lines, "host: "), 1, "{head}");
    assert!(lines.contains(&"host: 198.51.100.1:443"), "{head}");
    assert_eq!(starting_with(&lines, "x-forwarded-host"), 0, "{head}");
}

//! Issue 13, defects 5, 6, 8 and 9, from raw sockets: one authority routes and is
//! forwarded, the framing guard holds for every request of a connection, request
//! trailers never reach a backend, CONNECT is refused with 405.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SMUGGLE: &[u8] = b"POST /smuggled HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

/// Two services told apart by host: `api.example.com` and `secret.example.com`.
async fn two_hosts() -> (TestProxy, CountingBackend, CountingBackend) {
    let api = spawn_counting_backend().await;
    let secret = spawn_counting_backend().await;
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\nstate_dir: state\n\
         services:\n\
         \x20 - name: api\n    match: {{ hosts: [api.example.com] }}\n    old: {{ backends: [{{ addr: \"{a}\" }}] }}\n    new: {{ backends: [{{ addr: \"{a}\" }}] }}\n\
         \x20 - name: secret\n    match: {{ hosts: [secret.example.com] }}\n    old: {{ backends: [{{ addr: \"{s}\" }}] }}\n    new: {{ backends: [{{ addr: \"{s}\" }}] }}\n",
        a = api.addr,
        s = secret.addr
    );
    (spawn_proxy(&yaml).await, api, secret)
}

async fn single(backend: &CountingBackend) -> TestProxy {
    spawn_proxy(&simple_config(&[backend.addr], &[backend.addr], "0%", "")).await
}

/// Sends `bytes` on one connection and reads every answer until the proxy closes it.
async fn answers(addr: SocketAddr, bytes: &[u8]) -> String {
    raw(addr, bytes, Duration::from_secs(3)).await
}

fn statuses(answers: &str) -> Vec<&str> {
    answers
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answers[at + 9..at + 12])
        .collect()
}

#[tokio::test]
async fn the_absolute_form_authority_routes_and_is_forwarded() {
    let (proxy, api, secret) = two_hosts().await;
    let answer = answers(
        proxy.addr,
        b"GET http://api.example.com/x HTTP/1.1\r\nHost: secret.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(secret.received().len(), 0);
    let seen = api.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], "api.example.com");
    assert_eq!(seen[0].headers["x-forwarded-host"], "api.example.com");
}

#[tokio::test]
async fn the_h2_authority_routes_and_is_forwarded() {
    let (proxy, api, secret) = two_hosts().await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("http://api.example.com/x")
        .header("host", "secret.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(secret.received().len(), 0);
    assert_eq!(api.received()[0].headers["host"], "api.example.com");
    connection.abort();
}

#[tokio::test]
async fn two_host_headers_are_refused() {
    let (proxy, api, secret) = two_hosts().await;
    let answer = answers(
        proxy.addr,
        b"GET /x HTTP/1.1\r\nHost: api.example.com\r\nHost: secret.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(api.received().len() + secret.received().len(), 0);
}

#[tokio::test]
async fn connect_is_405_whatever_the_route() {
    let (proxy, api, _secret) = two_hosts().await;
    for target in ["api.example.com:443", "nowhere.example:443"] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let answer = answers(proxy.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{target}: {answer}");
    }
    assert_eq!(api.received().len(), 0);
}

/// A request that asks to upgrade but is not upgraded, then a smuggling attempt.
fn upgrade_then_smuggle() -> Vec<u8> {
    let mut bytes =
        b"GET /a HTTP/1.1\r\nHost: api\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(SMUGGLE);
    bytes
}

/// A chunked request whose chunk size has 17 digits, then a smuggling attempt.
fn long_chunk_size_then_smuggle() -> Vec<u8> {
    let mut bytes = b"POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n".to_vec();
    bytes.extend_from_slice(SMUGGLE);
    bytes
}

#[tokio::test]
async fn the_framing_guard_holds_for_pipelined_requests() {
    let backend = spawn_counting_backend().await;
    let proxy = single(&backend).await;
    for bytes in [upgrade_then_smuggle(), long_chunk_size_then_smuggle()] {
        let answer = answers(proxy.addr, &bytes).await;
        let got = statuses(&answer);
        assert_eq!(got.last(), Some(&"400"), "{answer}");
        assert!(!got.contains(&"101"), "{answer}");
    }
    let smuggled = backend
        .received()
        .iter()
        .filter(|r| r.uri == "/smuggled")
        .count();
    assert_eq!(smuggled, 0);
}

#[tokio::test]
async fn the_framing_guard_holds_for_sequential_requests() {
    let backend = spawn_counting_backend().await;
    let proxy = single(&backend).await;
    for bytes in [upgrade_then_smuggle(), long_chunk_size_then_smuggle()] {
        let split = bytes.len() - SMUGGLE.len();
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(&bytes[..split]).await.unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_ne!(&first, b"HTTP/1.1 101");
        // Let the first answer finish before the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(SMUGGLE).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert_eq!(statuses(&rest).last(), Some(&"400"), "{rest}");
    }
    let smuggled = backend
        .received()
        .iter()
        .filter(|r| r.uri == "/smuggled")
        .count();
    assert_eq!(smuggled, 0);
}

#[tokio::test]
async fn websocket_upgrades_still_tunnel() {
    let backend = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[backend.addr], &[backend.addr], "0%", "")).await;
    let mut stream = open_websocket(proxy.addr).await;
    echo(&mut stream, "hello through the guard").await.unwrap();
}

#[tokio::test]
async fn request_trailers_never_reach_the_backend() {
    let backend = spawn_counting_backend().await;
    let yaml = simple_config(&[backend.addr], &[backend.addr], "0%", "").replace(
        "limits:\n  shutdown_grace: 5s\n",
        "limits:\n  shutdown_grace: 5s\n  request_buffer: 0B\n",
    );
    let proxy = spawn_proxy(&yaml).await;
    let answer = answers(
        proxy.addr,
        b"POST /streamed HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nHost: evil.example\r\nX-Sum: 1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Read whole (the default buffer) or streamed, the trailers stay behind.
    let buffered = spawn_proxy(&simple_config(&[backend.addr], &[backend.addr], "0%", "")).await;
    let answer = answers(
        buffered.addr,
        b"POST /buffered HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = backend.received();
    assert_eq!(received.len(), 2);
    for request in received {
        assert_eq!(request.body, Bytes::from_static(b"hello"));
        assert!(request.trailers.is_none(), "{request:?}");
        assert_ne!(request.headers["host"], "evil.example");
    }
}

#[tokio::test]
async fn bytes_sent_right_after_an_upgrade_request_reach_the_tunnel() {
    let backend = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[backend.addr], &[backend.addr], "0%", "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: api\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly bytes")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let arrived = tokio::time::timeout(Duration::from_secs(3), async {
        while !got.windows(11).any(|w| w == b"early bytes") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(arrived.is_ok(), "{text}");
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
}

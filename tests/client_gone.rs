//! Clients that stop sending, or leave, while their backend works: a half-closed client
//! is answered; a client gone frees its backend connection within a couple of seconds
//! and is not counted against the backend (hyper's `half_close`, `upstream::watch`).

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A client may close its sending side once its request is out (`shutdown(SHUT_WR)`, as
/// `nc -N` and some HTTP/1.0 tools do) and still read the answer: it gets it, as from
/// HAProxy (it once got nothing: the end of its sending side ended the exchange).
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let requests: [&[u8]; 2] = [
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    ];
    for request in requests {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the connection ends after the answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    assert_eq!(old.hits(), 2);
}

/// A backend that reads requests and answers none; each accepted connection is handed
/// over once its request has arrived.
async fn silent_backend() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0u8; 4096];
            let _ = stream.read(&mut request).await;
            if tx.send(stream).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Waits for the proxy to close `upstream`, its side of a backend connection; how long.
async fn closed_within(upstream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(within, upstream.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("the backend connection was still held {within:?} on"))
        .ok();
    started.elapsed()
}

/// Frees `upstream` within about two seconds of its client leaving (a look each second).
async fn assert_freed_soon(upstream: &mut TcpStream) {
    let took = closed_within(upstream, Duration::from_secs(4)).await;
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

/// A client that asks `path` of the proxy at `addr`, and the backend connection the
/// request arrived on.
async fn ask(
    addr: std::net::SocketAddr,
    path: &str,
    accepted: &mut tokio::sync::mpsc::Receiver<TcpStream>,
) -> (TcpStream, TcpStream) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    (client, accepted.recv().await.unwrap())
}

/// The backend starts a streamed answer with one event; the client reads its head.
async fn start_streaming(upstream: &mut TcpStream, client: &mut TcpStream) {
    upstream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: 1\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let read = client.read(&mut head).await.unwrap();
    assert!(head[..read].starts_with(b"HTTP/1.1 200"));
}

/// A client that leaves while its backend has not answered (a long poll) frees the
/// backend connection within about two seconds (a look each second), and the request is
/// not the backend's failure: no error, no timeout, no outlier strike.
#[tokio::test]
async fn a_client_that_leaves_before_the_answer_frees_its_backend_and_is_not_its_failure() {
    let (addr, mut accepted) = silent_backend().await;
    let proxy = spawn_proxy(&simple_config(&[addr], &[addr], "0%", "")).await;
    let (client, mut upstream) = ask(proxy.addr, "/poll", &mut accepted).await;
    drop(client);
    assert_freed_soon(&mut upstream).await;
    assert_nothing_counted_against_the_backend(&proxy);
}

/// No error, 5xx or upstream error in the proxy's metrics.
fn assert_nothing_counted_against_the_backend(proxy: &TestProxy) {
    let metrics = proxy.app.metrics.encode();
    for line in metrics.lines().filter(|l| l.starts_with("cutover_")) {
        let counts_a_failure = line.starts_with("cutover_upstream_errors_total")
            || line.contains(r#"code="error""#)
            || line.contains(r#"code="5xx""#);
        if counts_a_failure {
            assert!(
                line.ends_with(" 0"),
                "the client's leaving was counted: {line}"
            );
        }
    }
}

/// The access log says what happened: a 499 for a client gone before any answer began
/// (nginx's number), the backend's status marked incomplete for one gone mid-answer.
#[tokio::test]
async fn the_access_log_says_the_client_left() {
    let (addr, mut accepted) = silent_backend().await;
    let yaml = format!(
        "log_format: json\naccess_log: access.log\n{}",
        simple_config(&[addr], &[addr], "0%", "")
    );
    let proxy = spawn_proxy(&yaml).await;
    for streamed in [false, true] {
        let (mut client, mut upstream) = ask(proxy.addr, "/poll", &mut accepted).await;
        if streamed {
            start_streaming(&mut upstream, &mut client).await;
        }
        drop(client);
        assert_freed_soon(&mut upstream).await;
    }
    let path = proxy.dir.path().join("access.log");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || read().lines().count() >= 2).await,
        "two lines expected: {:?}",
        read()
    );
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["status"], 499, "{}", lines[0]);
    assert_eq!(lines[0]["target"], "/poll");
    assert_eq!(lines[1]["status"], 200, "{}", lines[1]);
    assert_eq!(lines[1]["complete"], false, "{}", lines[1]);
}

/// An HTTPS client that leaves politely sends `close_notify` before its FIN; that record,
/// which no one reads while the request is in flight, does not hide its leaving.
#[tokio::test]
async fn an_https_client_that_closes_cleanly_frees_its_backend() {
    let (addr, mut accepted) = silent_backend().await;
    let (proxy, certs) = tls_proxy(addr, addr).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
    let mut client = tls_connector(&certs[..1]).connect(name, tcp).await.unwrap();
    client
        .write_all(b"GET /poll HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut upstream = accepted.recv().await.unwrap();
    client.shutdown().await.unwrap(); // close_notify, then FIN
    drop(client);
    assert_freed_soon(&mut upstream).await;
    assert_nothing_counted_against_the_backend(&proxy);
}

/// A client that leaves in the middle of a quiet streamed answer (server-sent events, a
/// long poll) frees its backend connection within about two seconds: the answer's wait
/// on the backend looks at the client each second. (Looking at nothing once held the
/// backend connection until the backend next wrote twice.)
#[tokio::test]
async fn a_client_that_leaves_a_quiet_stream_frees_its_backend_connection() {
    let (addr, mut accepted) = silent_backend().await;
    let proxy = spawn_proxy(&simple_config(&[addr], &[addr], "0%", "")).await;
    let (mut client, mut upstream) = ask(proxy.addr, "/events", &mut accepted).await;
    start_streaming(&mut upstream, &mut client).await;
    // The client leaves; the stream stays quiet.
    drop(client);
    assert_freed_soon(&mut upstream).await;
    // The answer broke off because of the client, not the backend.
    assert_nothing_counted_against_the_backend(&proxy);
}

/// A client still there is not let go, however long its answer is quiet: only the
/// service's request timeout ends the wait.
#[tokio::test]
async fn a_client_still_waiting_keeps_its_slow_answer() {
    let old = spawn_backend("old").await;
    old.set_delay(Duration::from_millis(2300));
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let got = send(proxy.addr, get("a", "/")).await;
    assert_eq!(got.status, http::StatusCode::OK);
    assert_eq!(got.body, "old");
}

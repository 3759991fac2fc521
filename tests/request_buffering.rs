//! Unfinished request bodies must not exhaust the backends (issue 13, defect 2): bodies
//! are read ahead before a backend is chosen, a client that stops sending gets 408,
//! each backend takes at most `max_connections` requests, and an h2 connection at most
//! `limits.max_concurrent_streams` streams. A backend's early answer to an upload it did
//! not read reaches the client.

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `simple_config` with the `limits` lines given, OLD only.
fn config(backend: &CountingBackend, limits: &str, extra: &str) -> String {
    simple_config(&[backend.addr], &[backend.addr], "0%", extra).replace(
        "limits:\n  shutdown_grace: 5s\n",
        &format!("limits:\n  shutdown_grace: 5s\n{limits}"),
    )
}

/// A request body that sends one piece and then never ends.
struct Unfinished(Option<Bytes>);

impl Body for Unfinished {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut().0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }
}

async fn probe(addr: std::net::SocketAddr) -> StatusCode {
    let request = Request::post("/probe")
        .header("host", "api")
        .body(Full::new(Bytes::from_static(b"probe")))
        .unwrap();
    send(addr, request).await.status
}

#[tokio::test]
async fn slow_http1_bodies_hold_no_backend_connection_and_get_408() {
    let backend = spawn_counting_backend().await;
    let proxy = spawn_proxy(&config(&backend, "  body_read_timeout: 1s\n", "")).await;
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: api\r\ncontent-length: 4096\r\n\r\nabc")
            .await
            .unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe(proxy.addr).await, StatusCode::OK);
    assert!(
        backend.peak() <= 2,
        "backend connections held by slow bodies: {}",
        backend.peak()
    );
    // The slow clients are answered 408 once the body read timeout passes; the backend
    // never saw them.
    for mut stream in slow {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        let _ = read.await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let uploads = backend
        .received()
        .iter()
        .filter(|r| r.uri == "/upload")
        .count();
    assert_eq!(uploads, 0);
}

#[tokio::test]
async fn held_h2_streams_hold_no_backend_connection() {
    let backend = spawn_counting_backend().await;
    let proxy = spawn_proxy(&config(&backend, "", "")).await;
    let mut connections = Vec::new();
    let mut held = Vec::new();
    for _ in 0..8 {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        connections.push(tokio::spawn(connection));
        for _ in 0..40 {
            let request = Request::post("http://api/held")
                .body(Unfinished(Some(Bytes::from_static(b"part"))))
                .unwrap();
            sender.ready().await.unwrap();
            held.push(tokio::spawn(sender.send_request(request)));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        assert_eq!(probe(proxy.addr).await, StatusCode::OK);
    }
    assert!(
        backend.peak() <= 2,
        "backend connections held by h2 streams: {}",
        backend.peak()
    );
    held.iter().for_each(|task| task.abort());
    connections.iter().for_each(|task| task.abort());
}

#[tokio::test]
async fn h2_connections_advertise_the_stream_limit() {
    let backend = spawn_counting_backend().await;
    let proxy = spawn_proxy(&config(&backend, "  max_concurrent_streams: 7\n", "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    let max_streams = payload
        .chunks(6)
        .find(|setting| setting[..2] == [0, 3])
        .map(|setting| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
    assert_eq!(max_streams, Some(7));
}

#[tokio::test]
async fn bodies_over_the_buffer_stream_and_small_ones_go_with_their_length() {
    let backend = spawn_counting_backend().await;
    let proxy = spawn_proxy(&config(&backend, "  request_buffer: 1KiB\n", "")).await;
    let big = Bytes::from(vec![b'b'; 300 * 1024]);
    let request = Request::post("/big")
        .header("host", "api")
        .body(Full::new(big.clone()))
        .unwrap();
    let got = send(proxy.addr, request).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.len(), big.len());
    // A small chunked body read whole goes out with its exact length.
    let answer = raw(
        proxy.addr,
        b"POST /small HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let small = backend
        .received()
        .into_iter()
        .find(|r| r.uri == "/small")
        .unwrap();
    assert_eq!(small.body, Bytes::from_static(b"hello"));
    assert_eq!(small.headers["content-length"], "5");
    assert!(!small.headers.contains_key("transfer-encoding"));
}

#[tokio::test]
async fn a_backend_takes_at_most_max_connections_requests() {
    let backend = spawn_counting_backend().await;
    let yaml = config(&backend, "", "    timeouts: { connect: 200ms }\n").replace(
        &format!("- addr: \"{}\"\n", backend.addr),
        &format!(
            "- addr: \"{}\"\n          max_connections: 2\n",
            backend.addr
        ),
    );
    let proxy = spawn_proxy(&yaml).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            send(addr, get("api", "/slow")).await.status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(ok + busy, 8, "{statuses:?}");
    assert!((2..8).contains(&ok), "{statuses:?}");
    assert!(backend.peak() <= 2, "peak {}", backend.peak());
    // Once they are done, the backend takes requests again.
    assert_eq!(
        send(proxy.addr, get("api", "/")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_request_waits_briefly_for_a_busy_backend() {
    let backend = spawn_counting_backend().await;
    let yaml = config(&backend, "", "    timeouts: { connect: 2s }\n").replace(
        &format!("- addr: \"{}\"\n", backend.addr),
        &format!(
            "- addr: \"{}\"\n          max_connections: 1\n",
            backend.addr
        ),
    );
    let proxy = spawn_proxy(&yaml).await;
    let addr = proxy.addr;
    let first = tokio::spawn(async move { send(addr, get("api", "/slow")).await.status });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the first (300 ms), within the 2 s wait: served, not refused.
    assert_eq!(
        send(proxy.addr, get("api", "/slow")).await.status,
        StatusCode::OK
    );
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(backend.peak(), 1);
}

/// A backend that answers an upload early and closes without reading the rest (a 413, as
/// hyper's and Go's servers do): its answer reaches the client, not a 502.
#[tokio::test]
async fn an_early_answer_to_a_large_upload_reaches_the_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let _ = stream.read(&mut head).await;
                let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig";
                let _ = stream.write_all(answer).await;
                // Closed with the body unread: the kernel resets the connection.
            });
        }
    });
    let proxy = spawn_proxy(&simple_config(&[addr], &[addr], "0%", "")).await;
    let upload = Request::post("/upload")
        .header("host", "api")
        .body(Full::new(Bytes::from(vec![b'u'; 32 << 20])))
        .unwrap();
    let got = send(proxy.addr, upload).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", got.body);
    assert_eq!(got.body, "big");
}

/// A client that stops reading its answer holds the backend connection, and the backend's
/// `max_connections` slot, only until `limits.send_timeout`.
#[tokio::test]
async fn a_client_that_stops_reading_frees_the_backend_after_send_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut request).await {
                    let big = request[..n].windows(4).any(|w| w == b"/big");
                    let body = if big {
                        vec![b'x'; 64 << 20]
                    } else {
                        b"small".to_vec()
                    };
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let answer = [head.into_bytes(), body].concat();
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let one_slot = format!("- addr: \"{addr}\"\n          max_connections: 1\n");
    let timeouts = "    timeouts: { connect: 300ms, request: 1s }\n";
    let yaml = simple_config(&[addr], &[addr], "0%", timeouts)
        .replace(&format!("- addr: \"{addr}\"\n"), &one_slot)
        .replace("limits:\n", "limits:\n  send_timeout: 1s\n");
    let proxy = spawn_proxy(&yaml).await;
    let mut stuck = TcpStream::connect(proxy.addr).await.unwrap();
    stuck
        .write_all(b"GET /big HTTP/1.1\r\nhost: api\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    stuck.read_exact(&mut first).await.unwrap();
    // ... and reads no more. The backend's one slot is taken meanwhile.
    let busy = send(proxy.addr, get("api", "/small")).await;
    assert_eq!(
        busy.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        busy.body
    );
    let freed = eventually_async(Duration::from_secs(5), || async {
        send(proxy.addr, get("api", "/small")).await.status == StatusCode::OK
    })
    .await;
    assert!(
        freed,
        "the backend is still held by a client that stopped reading"
    );
    drop(stuck);
}

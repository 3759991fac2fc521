//! Which requests go out again when a reused backend connection fails: only idempotent
//! ones, and only when not a byte of the answer came (a backend that processed a request
//! and then died closes the same way as one that had closed the connection while idle).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request head (and its `Content-Length` body) off `stream`; `None` at its end.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let line = line.to_ascii_lowercase();
                    line.strip_prefix("content-length:")?.trim().parse().ok()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4 + length);
                return Some(head);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A backend that answers `/warm` after 100 ms, and on any other path counts the request
/// and then, the first `dies` times, writes `last_words` and closes the connection
/// instead of answering: a handler that died after doing its work.
async fn dying_backend(dies: usize, last_words: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut stream, &mut buf).await {
                    if !head.contains(" /warm ") && seen.fetch_add(1, SeqCst) < dies {
                        let _ = stream.write_all(last_words).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The proxy in front of `backend`, with six idle connections to it: every request that
/// follows goes out on a reused one first.
async fn warm_proxy(backend: SocketAddr) -> TestProxy {
    let proxy = spawn_proxy(&simple_config(&[backend], &[backend], "0%", "")).await;
    let warm = (0..6).map(|_| tokio::spawn(send(proxy.addr, get("api", "/warm"))));
    for warming in warm.collect::<Vec<_>>() {
        assert_eq!(warming.await.unwrap().status, StatusCode::OK);
    }
    proxy
}

fn request(method: Method, path: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

#[tokio::test]
async fn a_post_a_backend_processed_before_it_closed_is_not_sent_again() {
    let (backend, seen) = dying_backend(usize::MAX, b"").await;
    let proxy = warm_proxy(backend).await;
    let got = send(proxy.addr, request(Method::POST, "/charge", b"amount=100")).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    // Five times while every reused connection that closed counted as stale.
    assert_eq!(
        seen.load(SeqCst),
        1,
        "the backend got the POST more than once"
    );
}

#[tokio::test]
async fn an_idempotent_request_goes_out_again_after_a_close_without_answer() {
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (backend, seen) = dying_backend(1, b"").await;
        let proxy = warm_proxy(backend).await;
        let got = send(proxy.addr, request(method.clone(), "/item", b"")).await;
        assert_eq!(got.status, StatusCode::OK, "{method}");
        assert_eq!(seen.load(SeqCst), 2, "{method}");
    }
}

#[tokio::test]
async fn a_request_whose_answer_had_begun_is_not_sent_again() {
    let interim: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
    let cut_head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-len";
    for last_words in [interim, cut_head] {
        let (backend, seen) = dying_backend(1, last_words).await;
        let proxy = warm_proxy(backend).await;
        let got = send(proxy.addr, get("api", "/item")).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            seen.load(SeqCst),
            1,
            "{:?}",
            String::from_utf8_lossy(last_words)
        );
    }
}

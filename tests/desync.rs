//! A misbehaving backend must never make cutover hand one client's response to another.
//!
//! The backend here is a raw socket that breaks HTTP/1.1 framing on purpose: a body with
//! a HEAD, 204 or 304 answer, a Content-Length shorter than the body, bytes after a
//! chunked body's end. The extra bytes are a complete, well-formed response ("INJECTED"):
//! if cutover reused such a connection, the next client would get them, and the client
//! after that the previous client's real answer.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INJECTED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nINJECTED";

/// When the backend sends the bytes that do not belong to the response.
#[derive(Clone, Copy, Debug)]
enum Extra {
    /// In the same write as the response.
    Together,
    /// In a write of its own, 5 ms later.
    Later,
}

/// A keep-alive backend that echoes the request path, except on `/bad/...` paths where
/// it frames its answer wrongly and appends [`INJECTED`].
async fn spawn_raw_backend(extra: Extra) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_raw(stream, extra));
        }
    });
    addr
}

async fn serve_raw(mut stream: TcpStream, extra: Extra) {
    // Without it, Nagle would hold the late bytes back until the proxy's next request
    // carries an ACK: then they arrive after that request was sent, which no HTTP/1.1
    // client can tell from its answer (see docs/design.md, "Backend connections").
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or_default().to_string();
        let (answer, trailing): (Vec<u8>, &[u8]) = match path.as_str() {
            "/bad/head" if method == "HEAD" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n".to_vec(),
                INJECTED,
            ),
            "/bad/204" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), INJECTED),
            "/bad/304" => (b"HTTP/1.1 304 Not Modified\r\n\r\n".to_vec(), INJECTED),
            "/bad/short-length" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nshort".to_vec(),
                INJECTED,
            ),
            "/bad/after-chunked" => (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nchunk\r\n0\r\n\r\n"
                    .to_vec(),
                INJECTED,
            ),
            _ => (
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                    path.len()
                )
                .into_bytes(),
                b"",
            ),
        };
        let written = match extra {
            Extra::Together => stream.write_all(&[answer, trailing.to_vec()].concat()).await,
            Extra::Later => {
                let first = stream.write_all(&answer).await;
                if first.is_ok() && !trailing.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    stream.write_all(trailing).await
                } else {
                    first
                }
            }
        };
        if written.is_err() {
            return;
        }
    }
}

fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Twelve sequential clients, every other one provoking a framing error; every client
/// must get its own answer, and none the injected one.
async fn clients_each_get_their_own_answer(extra: Extra) {
    let backend = spawn_raw_backend(extra).await;
    let proxy = spawn_proxy(&simple_config(&[backend], &[backend], "0%", "")).await;
    let bad: [(Method, &str, StatusCode, &str); 5] = [
        (Method::HEAD, "/bad/head", StatusCode::OK, ""),
        (Method::GET, "/bad/204", StatusCode::NO_CONTENT, ""),
        (Method::GET, "/bad/304", StatusCode::NOT_MODIFIED, ""),
        (Method::GET, "/bad/short-length", StatusCode::OK, "short"),
        (Method::GET, "/bad/after-chunked", StatusCode::OK, "chunk"),
    ];
    let mut wrong = Vec::new();
    for round in 0..3 {
        for (i, (method, path, status, body)) in bad.iter().enumerate() {
            let got = send(proxy.addr, request(method.clone(), path)).await;
            // Its own answer, or a 502 when cutover saw the stray bytes in time.
            let own_or_502 = (got.status == *status && got.body == *body)
                || got.status == StatusCode::BAD_GATEWAY;
            if !own_or_502 {
                wrong.push(format!(
                    "{method} {path}: got {} {:?}",
                    got.status, got.body
                ));
            }
            // Time for the late bytes to arrive before the next client asks.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let own = format!("/client/{round}/{i}");
            let got = send(proxy.addr, request(Method::GET, &own)).await;
            if got.status != StatusCode::OK || got.body != own {
                wrong.push(format!(
                    "GET {own} after {path}: got {} {:?}",
                    got.status, got.body
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{extra:?}: {} answers went to the wrong client:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn bytes_sent_with_a_misframed_response_never_reach_another_client() {
    clients_each_get_their_own_answer(Extra::Together).await;
}

#[tokio::test]
async fn bytes_sent_after_a_misframed_response_never_reach_another_client() {
    clients_each_get_their_own_answer(Extra::Later).await;
}

/// Unasked bytes on an idle connection (a backend answering twice): the connection is
/// closed when taken out of the pool, and the next request goes on a fresh one.
#[tokio::test]
async fn an_idle_connection_holding_unread_bytes_is_not_reused() {
    let backend = spawn_raw_backend(Extra::Later).await;
    let proxy = spawn_proxy(&simple_config(&[backend], &[backend], "0%", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/bad/204".to_string()
        } else {
            format!("/mine/{i}")
        };
        let got = client.send(request(Method::GET, &path)).await.unwrap();
        if i % 2 == 0 {
            assert_eq!(got.status, StatusCode::NO_CONTENT, "{path}: {}", got.body);
        } else {
            assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, &*path));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

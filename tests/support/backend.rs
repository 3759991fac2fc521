//! Scripted backends: answer with their name, count hits, remember what they saw, and
//! change status or delay while the test runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A backend whose behaviour tests can change while it runs.
#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Drops the requests recorded so far, memory and all (for tests that count memory).
    pub fn forget_seen(&self) {
        *self.seen.lock().unwrap() = Vec::new();
    }
}

/// Starts a backend answering 200 with its name as the body and in `x-backend`.
/// `/ws` upgrades to an echo tunnel; `/slow` waits 300 ms; `/big` sends 1 MiB chunked.
pub async fn spawn_backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Backend {
        name,
        addr: listener.local_addr().unwrap(),
        status: Arc::new(AtomicU16::new(200)),
        delay_ms: Arc::new(AtomicU64::new(0)),
        hits: Arc::default(),
        seen: Arc::default(),
    };
    let shared = backend.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let backend = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let backend = backend.clone();
                    async move { Ok::<_, hyper::Error>(backend.answer(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    backend
}

impl Backend {
    async fn answer(&self, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, SeqCst);
        let upgrade = request.uri().path() == "/ws";
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let delay = match parts.uri.path() {
            "/slow" => Duration::from_millis(300),
            _ => Duration::from_millis(self.delay_ms.load(SeqCst)),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(on_upgrade) = on_upgrade {
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("x-backend", self.name)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        let text = match parts.uri.path() {
            "/echo" => body,
            "/big" => Bytes::from(vec![b'x'; 1 << 20]),
            _ => Bytes::from(self.name),
        };
        Response::builder()
            .status(self.status.load(SeqCst))
            .header("x-backend", self.name)
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "should be stripped")
            .body(Full::new(text))
            .unwrap()
    }
}

/// A port nothing listens on, for the rest of the test binary: a socket bound to it and
/// never listening, kept open, refuses connections and keeps the port from being given to
/// another test's listener or client (a port freed at once was taken by one, and a "dead"
/// backend answered a health check).
pub async fn dead_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

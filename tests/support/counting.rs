//! A backend that counts its TCP connections (open now, and the most at once) and keeps
//! each request's trailers: what hardening tests assert on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the counting backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

#[derive(Clone)]
pub struct CountingBackend {
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl CountingBackend {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// The most connections open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Answers 200 with the request body after reading it whole; `/slow` waits 300 ms first.
pub async fn spawn_counting_backend() -> CountingBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = CountingBackend {
        addr: listener.local_addr().unwrap(),
        open: Arc::default(),
        peak: Arc::default(),
        accepted: Arc::default(),
        received: Arc::default(),
    };
    let shared = backend.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, SeqCst);
            let now = shared.open.fetch_add(1, SeqCst) + 1;
            shared.peak.fetch_max(now, SeqCst);
            let guard = OpenGuard(shared.open.clone());
            let backend = shared.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let service = service_fn(move |request| {
                    let backend = backend.clone();
                    async move { Ok::<_, hyper::Error>(backend.answer(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    backend
}

impl CountingBackend {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let (body, trailers) = match body.collect().await {
            Ok(collected) => {
                let trailers = collected.trailers().cloned();
                (collected.to_bytes(), trailers)
            }
            Err(_) => (Bytes::new(), None),
        };
        self.received.lock().unwrap().push(Received {
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body: body.clone(),
            trailers,
        });
        if parts.uri.path() == "/slow" {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        Response::new(Full::new(body))
    }
}

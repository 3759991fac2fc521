//! A backend whose answers a test scripts per request (for shadow comparisons): a
//! closure from method and path to status and JSON body, an optional delay, and a record
//! of what it received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Script = dyn Fn(&str, &str) -> (u16, String) + Send + Sync;

#[derive(Clone)]
pub struct JsonBackend {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    /// Method, path and query, body.
    received: Arc<Mutex<Vec<(String, String, Bytes)>>>,
    /// Requests that came without `X-Forwarded-For`: not through the proxy's data path
    /// (shadow copies, smoke requests).
    direct: Arc<AtomicU64>,
}

impl JsonBackend {
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    pub fn direct(&self) -> u64 {
        self.direct.load(SeqCst)
    }

    pub fn received(&self) -> Vec<(String, String, Bytes)> {
        self.received.lock().unwrap().clone()
    }
}

/// Starts a backend answering `script(method, path_and_query)` as `application/json`.
pub async fn spawn_json_backend(
    script: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static,
) -> JsonBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = JsonBackend {
        addr: listener.local_addr().unwrap(),
        delay_ms: Arc::default(),
        received: Arc::default(),
        direct: Arc::default(),
    };
    let script: Arc<Script> = Arc::new(script);
    let shared = backend.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (backend, script) = (shared.clone(), script.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (backend, script) = (backend.clone(), script.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_string();
                        let method = parts.method.to_string();
                        if !parts.headers.contains_key("x-forwarded-for") {
                            backend.direct.fetch_add(1, SeqCst);
                        }
                        backend
                            .received
                            .lock()
                            .unwrap()
                            .push((method.clone(), path.clone(), body));
                        let delay = backend.delay_ms.load(SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let (status, text) = script(&method, &path);
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    backend
}

//! Test support: scripted backends, a real proxy on 127.0.0.1:0, and clients.
//!
//! Everything binds loopback, uses port 0 and stops with the test's runtime.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cutover::app::{self, App, Options};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A port nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A proxy running the given config, from its own temporary directory.
pub struct TestProxy {
    pub app: App,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestProxy {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cutover.yaml")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr)
    }
}

/// Writes `yaml` to a temporary directory and starts cutover on the current runtime.
pub async fn spawn_proxy(yaml: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    spawn_proxy_in(dir, yaml, false).await
}

pub async fn spawn_proxy_in(dir: tempfile::TempDir, yaml: &str, watch: bool) -> TestProxy {
    let path = dir.path().join("cutover.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = cutover::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let options = Options {
        watch,
        ..Options::default()
    };
    let app = app::start(config, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = app.listeners[0].1;
    TestProxy { app, dir, addr }
}

/// One service named `api`, OLD and NEW as given, NEW at `weight`, plus `extra` lines
/// appended to the service (indented 4 spaces).
pub fn simple_config(old: &[SocketAddr], new: &[SocketAddr], weight: &str, extra: &str) -> String {
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("        - addr: \"{a}\"\n"))
            .collect::<String>()
    };
    format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\nstate_dir: state\nlimits:\n  shutdown_grace: 5s\nservices:\n  - name: api\n    weight: {weight}\n    old:\n      backends:\n{}    new:\n      backends:\n{}{extra}",
        list(old),
        list(new)
    )
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends one request on a fresh HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A keep-alive HTTP/1.1 client on one connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Client { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Got, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Got {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Writes raw bytes, then reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `condition` every 10 ms for up to `within`.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// A self-signed certificate for `names`, written as PEM into `dir`; returns (cert, key).
pub fn certificate(dir: &std::path::Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// The path of the built `cutover` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cutover"))
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read the port, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `cutover run -c CONFIG` process of the real binary, SIGKILLed when dropped.
pub struct Cutover {
    pub child: std::process::Child,
    pub admin: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Drop for Cutover {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cutover {
    /// Starts the binary and waits until its admin API at `admin` answers.
    pub async fn start(config: &std::path::Path, admin: SocketAddr) -> Cutover {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(binary())
            .args(["run", "-c"])
            .arg(config)
            .env("CUTOVER_WORKER_THREADS", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut cutover = Cutover { child, admin, log };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(admin).await.is_err() {
            if let Ok(Some(exit)) = cutover.child.try_wait() {
                panic!("cutover exited with {exit} at start:\n{}", cutover.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no admin API after 10 s:\n{}",
                cutover.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cutover
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// `GET /status` (no token).
    pub async fn status(&self) -> serde_json::Value {
        let got = send(self.admin, get("admin", "/status")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        serde_json::from_str(&got.body).unwrap()
    }
}

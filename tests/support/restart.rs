//! Restarts under load: a `cutover run` process started with extra environment (the
//! takeover), and load that counts what a real HTTP client would count as failed.
//!
//! An HTTP client reconnects when its pooled keep-alive connection was closed by the
//! server before it sent anything, and retries an idempotent request once on a new
//! connection when the server closed a reused idle connection as it was sent (RFC 9112
//! §9.3.1; browsers and hyper-util's pool do both). Such retries are counted apart; a
//! request on a new connection is never retried. A refused connect, a request that got
//! no answer after that, or a non-200 is a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::binary::binary;
use super::client::get;

/// A real `cutover run -c CONFIG` process; SIGKILLed when dropped.
pub struct Process {
    pub child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn spawn(config: &std::path::Path, env: &[(&str, &str)]) -> Process {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(binary())
            .args(["run", "-c"])
            .arg(config)
            .env("CUTOVER_WORKER_THREADS", "1")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Process { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits up to `within` for the log to contain `text`.
    pub async fn wait_for_log(&mut self, text: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.log().contains(text) {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "cutover exited with {exit} before logging {text:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {text:?} in the log within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `within` for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return exit.code();
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Load at a fixed total rate: half the clients keep their connection alive, half open a
/// new connection per request.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    /// Requests retried on a new connection after a reused one was closed under them.
    pub retried: Arc<AtomicUsize>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, per_client: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let retried = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let retried = retried.clone();
                let keep_alive = i % 2 == 0;
                tokio::spawn(async move {
                    let mut pace = tokio::time::interval(Duration::from_secs(1) / per_client);
                    let mut connection = None;
                    while !stop.load(SeqCst) {
                        pace.tick().await;
                        let reused = connection.is_some();
                        let mut result = request(addr, keep_alive, &mut connection).await;
                        if reused
                            && result
                                .as_ref()
                                .is_err_and(|e| e.contains("closed before message completed"))
                        {
                            retried.fetch_add(1, SeqCst);
                            result = request(addr, keep_alive, &mut connection).await;
                        }
                        let kind = if keep_alive {
                            "keep-alive"
                        } else {
                            "new connection"
                        };
                        match result {
                            Ok(()) => drop(ok.fetch_add(1, SeqCst)),
                            Err(e) => failures.lock().unwrap().push(format!("{kind}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            retried,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(SeqCst)
    }

    pub fn retried(&self) -> usize {
        self.retried.load(SeqCst)
    }

    /// Stops; (succeeded, failures).
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(SeqCst), failures)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn request(
    addr: SocketAddr,
    keep_alive: bool,
    connection: &mut Option<Sender>,
) -> Result<(), String> {
    // A pooled connection the server has closed is replaced, as any client does.
    if let Some(sender) = connection.as_mut() {
        if sender.is_closed() || sender.ready().await.is_err() {
            *connection = None;
        }
    }
    let mut sender = match connection.take() {
        Some(sender) => sender,
        None => connect(addr).await?,
    };
    let mut request = get("api.test", "/");
    if !keep_alive {
        request
            .headers_mut()
            .insert("connection", http::HeaderValue::from_static("close"));
    }
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 5s".into()));
    if keep_alive && result.is_ok() {
        *connection = Some(sender);
    }
    result
}

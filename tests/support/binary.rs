//! The real `cutover` binary as a child process, with its admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{get, send};

/// The path of the built `cutover` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cutover"))
}

/// A port that was free a moment ago, for a process to bind: picked at random below the
/// kernel's ephemeral range, so that no client socket (this test's or a test's running
/// beside it) takes it as its own port before the process binds it. A port picked in
/// that range (`bind 127.0.0.1:0`) was taken that way under load: "in use by another
/// process" at the proxy's start. Never the same port twice in one test process: two
/// tests running side by side once drew the same one (12,000 ports, a few dozen drawn).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = ephemeral_from.saturating_sub(12_000).max(1024)..ephemeral_from;
    loop {
        let port = rand::random_range(below.clone());
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
}

/// Whether the admin API at `admin` answers `GET /healthz` with 200.
async fn healthy(admin: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(admin).await else {
        return false;
    };
    let request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
    answer.starts_with(b"HTTP/1.1 200")
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
    /// Starts the binary on one core and waits until its admin API at `admin` answers
    /// (`/healthz`): its listeners are bound by then.
    pub async fn start(config: &std::path::Path, admin: SocketAddr) -> Cutover {
        Cutover::start_on_cores(config, admin, 1).await
    }

    /// The same with a runtime on each of `cores` (`CUTOVER_WORKER_THREADS`).
    pub async fn start_on_cores(
        config: &std::path::Path,
        admin: SocketAddr,
        cores: usize,
    ) -> Cutover {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(binary())
            .args(["run", "-c"])
            .arg(config)
            .env("CUTOVER_WORKER_THREADS", cores.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut cutover = Cutover { child, admin, log };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // The admin socket is bound before the listeners: wait for the API itself, which
        // answers once everything is up.
        while !healthy(admin).await {
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
        let got = send(self.admin, get(&self.admin.to_string(), "/status")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        serde_json::from_str(&got.body).unwrap()
    }
}

impl Cutover {
    /// Starts the binary on `dir/cutover.yaml`.
    pub async fn start_in(dir: &Path, admin: SocketAddr) -> Cutover {
        Cutover::start(&dir.join("cutover.yaml"), admin).await
    }

    /// The first service's part of `/status`.
    pub async fn service_status(&self) -> Value {
        self.status().await["services"][0].clone()
    }

    /// Polls `/status` until `condition` holds for the first service.
    pub async fn wait_for_service(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.service_status().await;
            if condition(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; status: {status:#}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A config template's LISTEN and ADMIN on free loopback ports, its OLD and NEW backends
/// filled in, written to `dir/cutover.yaml`; returns (listen, admin).
pub fn write_config(
    dir: &Path,
    template: &str,
    old: SocketAddr,
    new: SocketAddr,
) -> (SocketAddr, SocketAddr) {
    let port = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
    let (listen, admin) = (port(), port());
    let yaml = template
        .replace("LISTEN", &listen.to_string())
        .replace("ADMIN", &admin.to_string())
        .replace("OLD", &old.to_string())
        .replace("NEW", &new.to_string());
    std::fs::write(dir.join("cutover.yaml"), yaml).unwrap();
    (listen, admin)
}

//! Helpers shared by the integration tests: in-process backends, a tiny
//! HTTP client to poke control endpoints, and scratch directories.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use loadtest::backend::{Backend, BackendConfig};
use loadtest::load::LoadPlan;
use loadtest::target::Target;
use tokio::net::TcpStream;

/// Starts an in-process backend on a free loopback port. The short lifetime
/// is a safety net: tests stop their backends explicitly, and the runtime
/// ending kills them anyway.
pub async fn backend(config: BackendConfig) -> Backend {
    Backend::start(BackendConfig {
        lifetime: Duration::from_secs(30),
        ..config
    })
    .await
    .expect("backend starts")
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// A load plan against `addr` with the given numbers.
pub fn plan(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    connections: usize,
    timeout: Duration,
) -> LoadPlan {
    let target = Target::parse(&url(addr, "/"), "GET", &[]).expect("valid target");
    LoadPlan::new(target, rate, duration, connections, timeout).expect("valid plan")
}

/// One request on a fresh connection; returns status and body.
pub async fn http(method: &str, url: &str) -> (u16, String) {
    let uri: hyper::Uri = url.parse().expect("test URL");
    let authority = uri.authority().expect("authority").to_string();
    let stream = TcpStream::connect(&authority).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().expect("path").as_str())
        .header("host", authority)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("loadtest-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write scratch file");
        path
    }

    /// Names of the files in the directory (to check no temp file is left).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read scratch dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

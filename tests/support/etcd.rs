//! A real etcd (Debian's `etcd-server`) for the fleet tests: 127.0.0.1, free ports, a
//! temporary data dir, killed when dropped.
//!
//! Without the binary a test prints a loud SKIP and returns; with `CI=true` a missing etcd
//! fails the test instead, so CI can never pass by skipping.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpStream;

use super::binary::free_port;

const ETCD: &str = "/usr/bin/etcd";

pub struct Etcd {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts etcd, or returns `None` (after saying so loudly) when it is not installed.
    pub async fn start() -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            super::tools::external_tool("etcd", "etcd-server")?;
        }
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = std::process::Command::new(ETCD)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .args(["--heartbeat-interval=10", "--election-timeout=50"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse().unwrap();
        let etcd = Etcd {
            child,
            addr,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(addr).await.is_ok() && etcd.healthy().await {
                return Some(etcd);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not start within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn healthy(&self) -> bool {
        let got = super::client::send(self.addr, super::client::get("127.0.0.1", "/health")).await;
        got.status == 200 && got.body.contains("true")
    }

    /// SIGSTOP / SIGCONT: etcd unreachable without closing a socket.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

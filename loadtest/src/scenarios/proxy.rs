//! The real `cutover` binary as a child process for one scenario run: its own
//! temporary directory (config, state, log), listener and admin API on
//! 127.0.0.1:0, killed and cleaned up when dropped.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The service every scenario rolls out.
pub const SERVICE: &str = "svc";

/// What the config of one run says about the rollout and its analysis.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// `threshold` or `statistical`.
    pub method: &'static str,
    pub interval: Duration,
    pub window: Duration,
    pub min_requests: u64,
    pub failure_threshold: u32,
}

/// The config file of one run: two OLD and two NEW backends, a rollout that
/// goes to 25% at once and holds there far longer than any run lasts, and the
/// analysis of SPEC §2 on a shorter clock.
pub fn config_yaml(old: &[SocketAddr], new: &[SocketAddr], rollout: &RolloutConfig) -> String {
    let pool = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("{{ addr: \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"listeners:
  - addr: "127.0.0.1:0"
admin:
  addr: "127.0.0.1:0"
state_dir: state
services:
  - name: {SERVICE}
    old: {{ backends: [{old}] }}
    new: {{ backends: [{new}] }}
    rollout:
      start: auto
      steps:
        - weight: 25%
          hold: 1h
        - weight: 100%
      analysis:
        method: {method}
        interval: {interval}ms
        window: {window}ms
        min_requests: {min_requests}
        failure_threshold: {failure_threshold}
        max_error_rate: 1%
        max_error_rate_increase: 0.5%
        max_p99_latency: 500ms
        max_p99_latency_ratio: 1.5
        trip: {{ error_rate: 25%, min_requests: 20, window: 10s }}
"#,
        old = pool(old),
        new = pool(new),
        method = rollout.method,
        interval = rollout.interval.as_millis(),
        window = rollout.window.as_millis(),
        min_requests = rollout.min_requests,
        failure_threshold = rollout.failure_threshold,
    )
}

/// A temporary directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "loadtest-scenario-{}-{n}-{label}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `cutover run -c DIR/cutover.yaml`; SIGKILLed when dropped, so a
/// panicking or cancelled run leaves no process behind.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    log: PathBuf,
    /// The address the (only) listener bound.
    pub listener: SocketAddr,
    /// `state_dir/<service>.history.jsonl`.
    pub history: PathBuf,
}

impl Proxy {
    /// Writes the config, starts the binary and waits (up to `within`) until
    /// it logs the address its listener bound.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        config: &str,
        within: Duration,
    ) -> Result<Proxy, String> {
        let config_path = dir.join("cutover.yaml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let log = dir.join("cutover.log");
        let stderr = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(binary)
            .args(["run", "-c"])
            .arg(&config_path)
            // One worker thread: several proxies share a small machine.
            .env("CUTOVER_WORKER_THREADS", "1")
            .env("CUTOVER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut proxy = Proxy {
            child,
            log,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            history: dir.join("state").join(format!("{SERVICE}.history.jsonl")),
        };
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = listener_addr(&proxy.log_text()) {
                proxy.listener = addr;
                return Ok(proxy);
            }
            if let Ok(Some(exit)) = proxy.child.try_wait() {
                return Err(format!(
                    "cutover exited with {exit} at start:\n{}",
                    proxy.log_text()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "cutover logged no listener address within {within:?}:\n{}",
                    proxy.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bound address from the log line `… serving listener=127.0.0.1:0 addr=127.0.0.1:PORT`.
fn listener_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|line| line.contains(" serving "))
        .find_map(|line| {
            let (_, rest) = line.split_once(" addr=")?;
            rest.split_whitespace().next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listener_in_the_log() {
        let log =
            "2026-01-01T00:00:00Z  INFO listening addr=127.0.0.1:0 local_addr=127.0.0.1:4000\n\
                   2026-01-01T00:00:00Z  INFO serving listener=127.0.0.1:0 addr=127.0.0.1:4000\n";
        assert_eq!(listener_addr(log), "127.0.0.1:4000".parse().ok());
        assert_eq!(
            listener_addr("INFO admin API admin_addr=127.0.0.1:1\n"),
            None
        );
    }
}

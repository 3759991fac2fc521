//! Active health checks: each backend with a `health_check` gets a task that probes it
//! with `GET path` and marks it healthy or not after enough passes or failures in a row.
//! The task holds the backend weakly and ends when the last snapshot using it is gone.

use std::sync::Weak;

use http::Method;

use super::backend::Backend;
use crate::config::HealthCheck;

/// Probes a backend until it is dropped (its last snapshot is gone).
pub(super) async fn health_check_loop(backend: Weak<Backend>, check: HealthCheck) {
    let mut passes = 0u32;
    let mut failures = 0u32;
    loop {
        let Some(target) = backend.upgrade() else {
            return;
        };
        let ok = probe(&target, &check).await;
        if ok {
            passes += 1;
            failures = 0;
            if passes >= check.healthy {
                target.set_healthy(true);
            }
        } else {
            failures += 1;
            passes = 0;
            if failures >= check.unhealthy {
                target.set_healthy(false);
            }
        }
        drop(target);
        tokio::time::sleep(check.interval).await;
    }
}

/// One health check: `GET path` on a fresh connection; 2xx and 3xx pass.
async fn probe(backend: &Backend, check: &HealthCheck) -> bool {
    let attempt = async {
        let mut connection = backend.connect().await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: cutover-health-check\r\nconnection: close\r\n\r\n",
            check.path, backend.addr
        );
        connection.write_head(request.as_bytes()).await.ok()?;
        let head = connection.read_head(&Method::GET).await.ok()?;
        Some(head.status.is_success() || head.status.is_redirection())
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

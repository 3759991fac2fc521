//! Fleet tests' shared parts: a member (a real `cutover` process) of a fleet on a real
//! etcd, its status and metrics, and a backend that fails only some paths (a regression
//! that only one instance's clients hit).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use super::binary::{free_port, Cutover};
use super::client::{admin_get, admin_status};
use super::proxy::sample;

/// One `cutover` process of a fleet.
pub struct FleetMember {
    pub process: Cutover,
    pub proxy: SocketAddr,
    pub name: String,
}

impl FleetMember {
    /// Writes `cutover-<i>.yaml` (instance `i<i>`) from `services` (YAML from `services:`
    /// on) and starts it on free ports.
    pub async fn start(
        dir: &Path,
        i: usize,
        etcd: &str,
        ttl_s: u64,
        services: &str,
    ) -> FleetMember {
        let (proxy, admin) = (free_port(), free_port());
        let path = dir.join(format!("cutover-{i}.yaml"));
        let text = format!(
            r#"listeners: [{{ addr: "127.0.0.1:{proxy}" }}]
admin: {{ addr: "127.0.0.1:{admin}" }}
state_dir: state-{i}
fleet:
  etcd: ["{etcd}"]
  prefix: /cutover/test
  instance: i{i}
  lease_ttl: {ttl_s}s
{services}"#
        );
        std::fs::write(&path, text).unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        FleetMember {
            process: Cutover::start(&path, admin).await,
            proxy: format!("127.0.0.1:{proxy}").parse().unwrap(),
            name: format!("i{i}"),
        }
    }

    pub async fn status(&self) -> Option<Value> {
        admin_status(self.process.admin).await
    }

    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(
            &admin_get(self.process.admin, "/metrics").await.body,
            series,
        )
    }
}

/// The leader all `members` name, once they agree.
pub async fn fleet_leader(members: &[&FleetMember]) -> Option<String> {
    let mut leader: Option<String> = None;
    for member in members {
        let named = member.status().await?["fleet"]["leader"]
            .as_str()?
            .to_string();
        if leader.get_or_insert_with(|| named.clone()) != &named {
            return None;
        }
    }
    leader
}

/// A backend answering 200 with `name`, except 500 to paths starting with `fail_prefix`;
/// with the number of requests it failed.
pub async fn spawn_failing_on_path(
    name: &'static str,
    fail_prefix: &'static str,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failed = Arc::new(AtomicUsize::new(0));
    let counter = failed.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<_>| {
                    let fail = request.uri().path().starts_with(fail_prefix);
                    if fail {
                        counter.fetch_add(1, SeqCst);
                    }
                    let status = if fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    async move {
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(name)))
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
    (addr, failed)
}

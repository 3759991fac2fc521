//! Steady traffic through the proxy while something changes, and a tally of what every
//! client saw: the measure of "no request lost".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinHandle;

use super::client::{get, send, KeepAlive};

/// What the clients of a `Traffic` saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: usize,
    pub old: usize,
    pub new: usize,
    /// Every request that did not get a 200, with what happened instead.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.old += other.old;
        self.new += other.new;
        self.failures.extend(other.failures);
    }

    pub fn total(&self) -> usize {
        self.ok + self.failures.len()
    }

    pub fn assert_no_failures(&self, during: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed {during}; the first ones: {:#?}",
            self.failures.len(),
            self.total(),
            &self.failures[..self.failures.len().min(10)]
        );
    }
}

/// Paced keep-alive clients sending `GET /` until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl Traffic {
    /// `clients` connections, each sending `per_client` requests per second.
    pub fn start(addr: SocketAddr, clients: usize, per_client: u32) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs(1) / per_client;
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut client: Option<KeepAlive> = None;
                    let mut pace = tokio::time::interval(period);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(SeqCst) {
                        pace.tick().await;
                        if client.is_none() {
                            match KeepAlive::connect(addr).await {
                                Ok(c) => client = Some(c),
                                Err(e) => {
                                    tally.failures.push(e);
                                    continue;
                                }
                            }
                        }
                        match client.as_mut().unwrap().get("/").await {
                            Ok((StatusCode::OK, body)) => {
                                tally.ok += 1;
                                match body.as_str() {
                                    "old" => tally.old += 1,
                                    "new" => tally.new += 1,
                                    other => tally.failures.push(format!("200 from {other:?}")),
                                }
                            }
                            Ok((status, body)) => tally.failures.push(format!("{status}: {body}")),
                            Err(e) => {
                                tally.failures.push(e);
                                client = None;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    /// Stops sending (requests in flight finish) and adds up what every client saw.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, SeqCst);
        let mut tally = Tally::default();
        for task in self.tasks {
            match task.await {
                Ok(t) => tally.add(t),
                Err(e) => tally.failures.push(format!("client task died: {e}")),
            }
        }
        tally
    }
}

/// Sends `n` sequential requests on one connection; (to OLD, to NEW), all must be 200.
pub async fn split(addr: SocketAddr, n: usize) -> (usize, usize) {
    let mut client = KeepAlive::connect(addr).await.unwrap();
    let (mut old, mut new) = (0, 0);
    for i in 0..n {
        let (status, body) = client
            .get("/")
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        match body.as_str() {
            "old" => old += 1,
            "new" => new += 1,
            other => panic!("request {i} answered by {other:?}"),
        }
    }
    (old, new)
}

/// One request on a fresh connection; the backend's name.
pub async fn served_by(addr: SocketAddr) -> String {
    let got = send(addr, get("api.test", "/")).await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    got.body
}

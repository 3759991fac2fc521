//! The fleet agent: the one task that talks to etcd, on the fleet's own thread.
//!
//! A session is one connection with one lease: grant the lease, read everything under the
//! prefix, watch it from the revision read, campaign for the leader key, then loop over
//! the watch, the keep-alive and member tick, and the requests of the synchronous side. A
//! compacted or cancelled watch re-reads and watches again; any other failure ends the
//! session (leadership is dropped at once: a leader that cannot reach etcd must not
//! decide), and a new one starts after a short pause. Requests made between sessions are
//! answered "unavailable" at once.
//!
//! A forwarded command is executed by the leader's controller on a task of its own: the
//! controller may itself be waiting for this agent to save a state.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdv3client::grpc::TonicClient;
use etcdv3client::pb;
use etcdv3client::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

mod requests;

use self::requests::unavailable;
use super::keys::Key;
use super::member::{Member, Record};
use super::metrics::FleetMetrics;
use super::{Request, Shared, Stored};

#[cfg(test)]
pub(crate) use self::requests::guarded_put;
use crate::config::Fleet as FleetConfig;
use crate::routing::SharedSnapshot;

type Etcd = Client<TonicClient>;

/// How long one etcd call may take before the session is considered broken.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two sessions.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often members publish their record.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A command forwarded to the leader, as the command key holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    service: String,
    op: String,
    from: String,
}

/// The leader's answer: a JSON `ServiceStatus`, or the error.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: Option<serde_json::Value>,
    error: Option<String>,
}

#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(err: E) -> Failure {
        Failure(err.to_string())
    }
}

pub(crate) struct Agent {
    config: FleetConfig,
    shared: Arc<Shared>,
    snapshot: SharedSnapshot,
    metrics: FleetMetrics,
    boot: String,
    /// Forwarded commands waiting for the leader's answer, by id.
    pending: HashMap<String, oneshot::Sender<Result<Vec<u8>, String>>>,
    /// The current session's client and lease, to revoke on a clean stop.
    lease: Option<(Etcd, i64)>,
    answers_tx: mpsc::UnboundedSender<(String, Answer)>,
    answers_rx: mpsc::UnboundedReceiver<(String, Answer)>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub(crate) fn new(
        config: FleetConfig,
        shared: Arc<Shared>,
        snapshot: SharedSnapshot,
        metrics: FleetMetrics,
    ) -> Agent {
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        metrics.watch(shared.clone());
        Agent {
            config,
            shared,
            snapshot,
            metrics,
            boot: format!("{:016x}", rand::random::<u64>()),
            pending: HashMap::new(),
            lease: None,
            answers_tx,
            answers_rx,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Request>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        loop {
            let ended = tokio::select! {
                ended = self.session(&mut inbox) => ended,
                _ = &mut stopped => {
                    self.resign().await;
                    return;
                }
            };
            match ended {
                Ok(()) => {
                    self.resign().await;
                    return;
                }
                Err(Failure(why)) => {
                    if self.shared.connected.load(Ordering::Acquire) {
                        tracing::warn!(error = %why, "lost etcd: serving the last routing, deciding nothing");
                    } else {
                        tracing::debug!(error = %why, "etcd is unreachable");
                    }
                }
            }
            self.disconnected();
            let pause = tokio::time::sleep(RETRY_AFTER);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = &mut stopped => return,
                    request = inbox.recv() => match request {
                        None => return,
                        Some(request) => unavailable(request, "etcd is unreachable"),
                    },
                }
            }
        }
    }

    fn disconnected(&mut self) {
        self.lease = None;
        self.shared.connected.store(false, Ordering::Release);
        self.shared.leadership.store(0, Ordering::Release);
        self.shared.lease_answered(std::time::Instant::now(), 0);
        self.metrics.connected.set(0);
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err("lost etcd before the leader answered; the command may or may not have been applied".into()));
        }
        self.shared.bump();
    }

    /// Gives the leadership up at once on a clean stop, so that another instance takes over
    /// without waiting for the lease to expire.
    async fn resign(&mut self) {
        if let Some((mut client, lease)) = self.lease.take() {
            let revoke = client
                .lease
                .lease_revoke(pb::LeaseRevokeRequest { id: lease });
            let _ = tokio::time::timeout(CALL_TIMEOUT, revoke).await;
        }
        self.shared.leadership.store(0, Ordering::Release);
    }

    async fn session(
        &mut self,
        inbox: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Result<(), Failure> {
        let channel = channel(&self.config).await?;
        let mut client = Client::with_service(TonicClient::new(channel));
        let ttl = self.config.lease_ttl.as_secs() as i64;
        let sent = std::time::Instant::now();
        let grant = timed(
            client
                .lease
                .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }),
        )
        .await?;
        let lease = grant.id;
        self.shared.lease_answered(sent, grant.ttl);
        self.lease = Some((client.clone(), lease));
        let mut keeper = timed(client.lease.keep_alive(lease)).await?;
        let _ = timed(keeper.message()).await?;
        let revision = self.read_all(&mut client, lease).await?;
        let mut watcher = self.watch_from(&mut client, revision + 1).await?;
        self.shared.connected.store(true, Ordering::Release);
        self.metrics.connected.set(1);
        tracing::info!(instance = %self.shared.instance, prefix = %self.config.prefix, "joined the fleet");
        self.campaign(&mut client, lease).await?;
        self.publish(&mut client, lease).await?;
        let mut published_at = Instant::now();
        let every = (self.config.lease_ttl / 3).min(PUBLISH_EVERY);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = watcher.message() => {
                    let Some(response) = message? else {
                        return Err(Failure("the watch ended".into()));
                    };
                    if response.canceled || response.compact_revision > 0 {
                        tracing::info!(compacted = response.compact_revision, "watch cancelled; reading everything again");
                        let revision = self.read_all(&mut client, lease).await?;
                        watcher = self.watch_from(&mut client, revision + 1).await?;
                        continue;
                    }
                    let mut leader_gone = false;
                    for event in response.events {
                        leader_gone |= self.on_event(event, lease);
                    }
                    if leader_gone {
                        self.campaign(&mut client, lease).await?;
                    }
                }
                _ = tick.tick() => {
                    let sent = std::time::Instant::now();
                    timed(keeper.keep_alive()).await?;
                    // A keep-alive that takes longer than CALL_TIMEOUT ends the session;
                    // leadership lapses at the lease's end before that (`Shared::leads`).
                    match timed(keeper.message()).await? {
                        Some(answer) if answer.ttl > 0 => self.shared.lease_answered(sent, answer.ttl),
                        _ => return Err(Failure("the lease expired".into())),
                    }
                    if published_at.elapsed() >= PUBLISH_EVERY - every / 2 {
                        self.publish(&mut client, lease).await?;
                        published_at = Instant::now();
                    }
                }
                Some((id, answer)) = self.answers_rx.recv() => {
                    let bytes = serde_json::to_vec(&answer)?;
                    let put = pb::PutRequest { key: self.shared.keys.result(&id).into_bytes(), value: bytes, lease, ..Default::default() };
                    timed(client.kv.put(put)).await?;
                }
                request = inbox.recv() => match request {
                    None => return Ok(()),
                    Some(request) => self.serve(&mut client, lease, request).await?,
                },
            }
        }
    }

    /// Reads every key of the fleet; the revision read at.
    async fn read_all(&mut self, client: &mut Etcd, lease: i64) -> Result<i64, Failure> {
        let prefix = self.shared.keys.all().as_bytes().to_vec();
        let request = pb::RangeRequest {
            range_end: prefix_end(&prefix),
            key: prefix,
            ..Default::default()
        };
        let response = timed(client.kv.range(request)).await?;
        let revision = response.header.map_or(0, |h| h.revision);
        let mut leader = None;
        let mut leadership = 0;
        let mut states = std::collections::BTreeMap::new();
        let mut members = std::collections::BTreeMap::new();
        for kv in response.kvs {
            match self.shared.keys.parse(&kv.key) {
                Key::Leader => {
                    leader = Some(String::from_utf8_lossy(&kv.value).into_owned());
                    if kv.lease == lease {
                        leadership = kv.create_revision;
                    }
                }
                Key::State(service) => {
                    states.insert(
                        service.to_string(),
                        Stored {
                            mod_revision: kv.mod_revision,
                            bytes: Some(kv.value),
                        },
                    );
                }
                Key::Member(id) => {
                    if let Ok(record) = serde_json::from_slice::<Record>(&kv.value) {
                        members.insert(
                            id.to_string(),
                            Member {
                                record,
                                seen: Instant::now(),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        if let Ok(mut all) = self.shared.states.lock() {
            *all = states;
        }
        if let Ok(mut all) = self.shared.members.lock() {
            *all = members;
        }
        self.set_leader(leader, leadership);
        Ok(revision)
    }

    async fn watch_from(
        &mut self,
        client: &mut Etcd,
        revision: i64,
    ) -> Result<etcdv3client::Watcher, Failure> {
        let mut watch = client.watch.do_watch(self.shared.keys.all()).with_prefix();
        watch.request.start_revision = revision;
        timed(watch).await
    }

    fn set_leader(&mut self, leader: Option<String>, leadership: i64) {
        let was = self.shared.leadership.swap(leadership, Ordering::AcqRel);
        if (was != 0) != (leadership != 0) {
            if leadership != 0 {
                tracing::info!(instance = %self.shared.instance, "this instance now leads the fleet");
            } else {
                tracing::warn!(instance = %self.shared.instance, "this instance no longer leads the fleet");
            }
        }
        if let Ok(mut current) = self.shared.leader.lock() {
            *current = leader;
        }
        self.shared.bump();
    }

    /// Applies a watched change; true when the leader key went away.
    fn on_event(&mut self, event: pb::Event, lease: i64) -> bool {
        let Some(kv) = event.kv else {
            return false;
        };
        let deleted = event.r#type == pb::event::EventType::Delete as i32;
        match self.shared.keys.parse(&kv.key) {
            Key::Leader if deleted => {
                self.set_leader(None, 0);
                return true;
            }
            Key::Leader => {
                let mine = kv.lease == lease;
                let name = String::from_utf8_lossy(&kv.value).into_owned();
                self.set_leader(Some(name), if mine { kv.create_revision } else { 0 });
            }
            Key::State(service) => {
                if let Ok(mut states) = self.shared.states.lock() {
                    let known = states.get(service).map_or(0, |s| s.mod_revision);
                    if deleted || kv.mod_revision > known {
                        states.insert(
                            service.to_string(),
                            Stored {
                                mod_revision: if deleted { 0 } else { kv.mod_revision },
                                bytes: (!deleted).then_some(kv.value),
                            },
                        );
                    }
                }
                self.shared.bump();
            }
            Key::Member(id) => {
                let id = id.to_string();
                let mut changed = false;
                if let Ok(mut members) = self.shared.members.lock() {
                    if deleted {
                        changed = members.remove(&id).is_some();
                    } else if let Ok(record) = serde_json::from_slice::<Record>(&kv.value) {
                        changed = !members.contains_key(&id);
                        members.insert(
                            id,
                            Member {
                                record,
                                seen: Instant::now(),
                            },
                        );
                    }
                }
                if changed {
                    self.shared.bump();
                }
            }
            Key::Command(id) if !deleted && self.shared.leads() => {
                self.execute(id.to_string(), &kv.value);
            }
            Key::Result(id) if !deleted => {
                if let Some(reply) = self.pending.remove(id) {
                    let answer = serde_json::from_slice::<Answer>(&kv.value)
                        .map_err(|err| err.to_string())
                        .and_then(|answer| match (answer.ok, answer.error) {
                            (Some(ok), _) => serde_json::to_vec(&ok).map_err(|e| e.to_string()),
                            (None, Some(error)) => Err(error),
                            (None, None) => Err("the leader's answer is empty".into()),
                        });
                    let _ = reply.send(answer);
                }
            }
            _ => {}
        }
        false
    }
}

async fn timed<T, E: std::fmt::Display>(
    call: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, call.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Failure(err.to_string())),
        Err(_) => Err(Failure(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// A channel to the configured endpoints, with TLS when configured.
async fn channel(config: &FleetConfig) -> Result<Channel, Failure> {
    let mut endpoints = Vec::new();
    for url in &config.etcd {
        let mut endpoint = Endpoint::from_shared(url.clone())?
            .connect_timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            let mut settings =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                settings = settings.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(settings)?;
        }
        endpoints.push(endpoint);
    }
    match endpoints.len() {
        1 => {
            let endpoint = endpoints.remove(0);
            Ok(timed(endpoint.connect()).await?)
        }
        _ => Ok(Channel::balance_list(endpoints.into_iter())),
    }
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

//! Fleet mode (SPEC §11): several cutover processes, one rollout, coordinated through etcd.
//!
//! The etcd side runs in an agent (`agent.rs`) on a thread and runtime of its own, so a
//! slow or unreachable etcd never takes time from requests or from the controller's loop,
//! and the controller's synchronous `StateStore` calls can wait for it without a deadlock.
//! The rest of cutover meets the fleet only through the controller's seams:
//! `store::FleetStore` (a `StateStore` whose writes are transactions guarded by the
//! leadership) and `traffic::FleetTraffic` (a `TrafficSource` that sums every instance).
//!
//! Keys, all under `prefix/`:
//! - `leader`: the leader's name, under its lease; its create revision is the leadership.
//! - `state/<service>`: the rollout state, as the state file holds it. It also carries the
//!   routing (weight, run id): every instance applies it from its watch.
//! - `members/<instance>`: each instance's record (version, config hash, counters), put
//!   every second under its own lease.
//! - `commands/<id>` and `results/<id>`: operator commands forwarded to the leader.

mod agent;
mod keys;
pub(crate) mod member;
mod metrics;
pub(crate) mod store;
pub(crate) mod traffic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use self::keys::Keys;
use self::member::Member;
use crate::config::{Config, Fleet as FleetConfig};
use crate::rollout::controller::ControllerHandle;
use crate::routing::SharedSnapshot;
use crate::runtimes::StoppingThread;

/// How long the controller waits for etcd on one state read or write.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a forwarded command waits for the leader's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FleetError {
    #[error("etcd is unreachable: {0}")]
    Unavailable(String),
    #[error("refused by etcd: {0}")]
    Refused(String),
    #[error("no answer from the fleet agent within {0:?}")]
    Timeout(Duration),
}

/// What the synchronous side asks of the agent.
pub(crate) enum Request {
    Load {
        service: String,
        reply: std::sync::mpsc::SyncSender<Result<Option<Vec<u8>>, FleetError>>,
    },
    Save {
        service: String,
        bytes: Vec<u8>,
        reply: std::sync::mpsc::SyncSender<Result<(), FleetError>>,
    },
    Forward {
        service: String,
        op: String,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

/// A rollout state as etcd holds it, with its mod revision (0: absent).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored {
    pub mod_revision: i64,
    pub bytes: Option<Vec<u8>>,
}

/// What the agent knows, shared with the synchronous side.
#[derive(Debug)]
pub(crate) struct Shared {
    pub keys: Keys,
    pub instance: String,
    pub connected: AtomicBool,
    /// The create revision of the leader key when this instance holds it; 0 otherwise.
    pub leadership: AtomicI64,
    /// Until when this instance's lease is known to be alive: the moment the last
    /// keep-alive (or the grant) that etcd answered was sent, plus the TTL it answered.
    /// etcd counts the TTL from when it received the request, later, so the lease cannot
    /// have expired in etcd before this. `None` without a session.
    pub lease_until: Mutex<Option<std::time::Instant>>,
    pub leader: Mutex<Option<String>>,
    pub states: Mutex<BTreeMap<String, Stored>>,
    pub members: Mutex<BTreeMap<String, Member>>,
    pub config_hash: Mutex<String>,
    /// Services this instance tripped to weight 0 on its own while cut off from etcd,
    /// until the leader has acted on it: published in its member record.
    /// Service → the run in which this instance tripped it on its own.
    pub local_trips: Mutex<std::collections::BTreeMap<String, String>>,
    /// Bumped whenever a state, the leader or the members change: the controller wakes.
    pub changes: watch::Sender<u64>,
    pub controller: OnceLock<ControllerHandle>,
}

impl Shared {
    fn new(prefix: &str, instance: &str, config_hash: String) -> Shared {
        let (changes, _) = watch::channel(0);
        Shared {
            keys: Keys::new(prefix),
            instance: instance.to_string(),
            connected: AtomicBool::new(false),
            leadership: AtomicI64::new(0),
            lease_until: Mutex::new(None),
            leader: Mutex::new(None),
            states: Mutex::new(BTreeMap::new()),
            members: Mutex::new(BTreeMap::new()),
            config_hash: Mutex::new(config_hash),
            local_trips: Mutex::new(BTreeMap::new()),
            changes,
            controller: OnceLock::new(),
        }
    }

    /// This instance holds the leader key and its lease is known to be alive. A leader
    /// whose keep-alives go unanswered (etcd partitioned or frozen, or this process
    /// stopped for longer than the TTL) stops deciding when the lease may have expired,
    /// before its session times out: by then another instance may lead.
    pub(crate) fn leads(&self) -> bool {
        self.leadership.load(Ordering::Acquire) != 0 && self.lease_alive()
    }

    fn lease_alive(&self) -> bool {
        let until = self.lease_until.lock().ok().and_then(|until| *until);
        until.is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Records a lease answer: `sent` is when the request that etcd answered with `ttl_s`
    /// seconds left was sent.
    pub(crate) fn lease_answered(&self, sent: std::time::Instant, ttl_s: i64) {
        let until = u64::try_from(ttl_s)
            .ok()
            .map(|ttl| sent + std::time::Duration::from_secs(ttl));
        if let Ok(mut lease_until) = self.lease_until.lock() {
            *lease_until = until;
        }
    }

    /// Members whose record is fresh: the ones whose numbers count (`cutover_fleet_instances`).
    pub(crate) fn live_members(&self) -> usize {
        let now = std::time::Instant::now();
        self.members.lock().map_or(0, |members| {
            members
                .values()
                .filter(|m| now.saturating_duration_since(m.seen) <= store::STALE_AFTER)
                .count()
        })
    }

    pub(crate) fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// This process's membership of a fleet.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    /// The agent's thread; dropping the fleet stops it.
    _agent: StoppingThread,
}

impl Fleet {
    /// Starts the agent; it connects (and reconnects) in the background.
    pub(crate) fn start(
        fleet: &FleetConfig,
        config: &Config,
        snapshot: SharedSnapshot,
        metrics: FleetMetrics,
    ) -> std::io::Result<Arc<Fleet>> {
        let shared = Arc::new(Shared::new(
            &fleet.prefix,
            &fleet.instance,
            config_hash(config),
        ));
        let (requests, inbox) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let agent = agent::Agent::new(fleet.clone(), shared.clone(), snapshot, metrics);
        let agent = StoppingThread::spawn("cutover-fleet", move |stopped| {
            runtime.block_on(agent.run(inbox, stopped));
        })?;
        Ok(Arc::new(Fleet {
            shared,
            requests,
            _agent: agent,
        }))
    }

    /// Lets the agent hand forwarded commands to this process's controller.
    pub(crate) fn attach(&self, controller: ControllerHandle) {
        let _ = self.shared.controller.set(controller);
    }

    /// Sends a request and waits for its answer, blocking this thread.
    fn call<T>(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<Result<T, FleetError>>) -> Request,
    ) -> Result<T, FleetError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.requests
            .send(make(reply))
            .map_err(|_| FleetError::Unavailable("the fleet agent has stopped".into()))?;
        answer
            .recv_timeout(REQUEST_TIMEOUT)
            .map_err(|_| FleetError::Timeout(REQUEST_TIMEOUT))?
    }

    pub(crate) fn load(&self, service: &str) -> Result<Option<Vec<u8>>, FleetError> {
        self.call(|reply| Request::Load {
            service: service.to_string(),
            reply,
        })
    }

    pub(crate) fn save(&self, service: &str, bytes: Vec<u8>) -> Result<(), FleetError> {
        self.call(|reply| Request::Save {
            service: service.to_string(),
            bytes,
            reply,
        })
    }

    /// Hands an operator command to the leader through etcd; its answer (a JSON
    /// `ServiceStatus`), or why there is none.
    pub(crate) async fn forward(&self, service: &str, op: String) -> Result<Vec<u8>, String> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Forward {
                service: service.to_string(),
                op,
                reply,
            })
            .map_err(|_| "the fleet agent has stopped".to_string())?;
        match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the fleet agent has stopped".into()),
            Err(_) => Err(format!(
                "the leader did not answer within {FORWARD_TIMEOUT:?}; the command may or may not have been applied: check /status"
            )),
        }
    }

    pub(crate) fn set_config_hash(&self, config: &Config) {
        if let Ok(mut hash) = self.shared.config_hash.lock() {
            *hash = config_hash(config);
        }
    }
}

/// A hash of what decides the rollout (SPEC §11): the services, with their pools, steps,
/// analysis and hooks; not the listeners, the admin API, `state_dir` or `fleet`, which
/// differ between instances by design.
pub(crate) fn config_hash(config: &Config) -> String {
    let text = format!("{:?}", config.services);
    format!("{:016x}", crate::hash::fnv1a(text.as_bytes()))
}

pub(crate) use self::metrics::FleetMetrics;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lease {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn leadership_lapses_with_the_lease_this_instance_knows_of() {
        let shared = Shared::new("/p", "i0", String::new());
        shared.leadership.store(7, Ordering::Release);
        assert!(!shared.leads(), "no lease answered yet");
        shared.lease_answered(Instant::now(), 2);
        assert!(shared.leads());
        // The last answered keep-alive was sent 3 s ago with 2 s left: etcd may have let the
        // lease go, and another instance may lead.
        shared.lease_answered(Instant::now() - Duration::from_secs(3), 2);
        assert!(!shared.leads());
        shared.lease_answered(Instant::now(), 0);
        assert!(!shared.leads(), "an expired lease");
        shared.lease_answered(Instant::now(), 2);
        shared.leadership.store(0, Ordering::Release);
        assert!(!shared.leads(), "a live lease without the leader key");
    }
}

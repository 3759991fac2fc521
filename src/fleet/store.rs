//! The fleet's `StateStore`: rollout state in etcd, written only by the leader, each write
//! one transaction guarded by the leadership, with a local copy in `state_dir`.
//!
//! Reading: etcd's state when there is one. When etcd has none but the local copy exists,
//! the leader imports it (the first start of a fleet from a single process's state). When
//! etcd is unreachable, the local copy is used to start; nothing is written until etcd is
//! back and this instance leads.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Fleet;
use crate::config::{Config, Weight};
use crate::rollout::controller::status::{FleetMember, FleetStatus};
use crate::rollout::controller::{ControlError, Controlled, Op};
use crate::rollout::machine::RolloutState;
use crate::rollout::state::{self, Forwarded, ReportedTrip, StateError, StateFiles, StateStore};

/// A member whose record is older than this is stale: its numbers cannot be trusted.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(crate) struct FleetStore {
    fleet: Arc<Fleet>,
    local: StateFiles,
}

impl FleetStore {
    pub(crate) fn new(fleet: Arc<Fleet>, config: &Config) -> FleetStore {
        FleetStore {
            fleet,
            local: StateFiles::new(&config.state_dir),
        }
    }

    fn key(&self, service: &str) -> String {
        self.fleet.shared.keys.state(service)
    }

    /// Keeps the local copy; a failure is logged, not fatal: etcd holds the state.
    fn keep_local(&self, service: &str, state: &RolloutState) {
        if let Err(err) = self.local.save(service, state) {
            tracing::warn!(service, error = %err, "cannot keep the local copy of the rollout state");
        }
    }
}

impl StateStore for FleetStore {
    fn load(&self, service: &str) -> Result<Option<RolloutState>, StateError> {
        match self.fleet.load(service) {
            Ok(Some(bytes)) => {
                let state = state::decode(service, &bytes, Path::new(&self.key(service)))?;
                self.keep_local(service, &state);
                Ok(Some(state))
            }
            Ok(None) => {
                let local = self.local.load(service)?;
                if let Some(state) = &local {
                    if self.fleet.shared.leads() {
                        self.save(service, state)?;
                        tracing::info!(service, "imported the local rollout state into etcd");
                    }
                }
                Ok(local)
            }
            // A leader resumes from what etcd holds, never from a copy that may be older
            // than the last commit: taking over waits for etcd (and keeps the state it
            // followed meanwhile).
            Err(err) if self.fleet.shared.leads() => Err(StateError::Read {
                path: self.key(service).into(),
                source: std::io::Error::other(err.to_string()),
            }),
            Err(err) => {
                tracing::warn!(service, error = %err, "etcd is unreachable: starting from the local copy of the rollout state");
                self.local.load(service)
            }
        }
    }

    fn save(&self, service: &str, state: &RolloutState) -> Result<(), StateError> {
        let write_error = |detail: String| StateError::Write {
            path: self.key(service).into(),
            source: std::io::Error::other(detail),
        };
        let bytes = state::encode(service, state).map_err(|e| write_error(e.to_string()))?;
        self.fleet
            .save(service, bytes)
            .map_err(|e| write_error(e.to_string()))?;
        self.keep_local(service, state);
        Ok(())
    }

    fn remember(&self, service: &str, state: &RolloutState) {
        self.keep_local(service, state);
    }

    fn location(&self, service: &str) -> String {
        format!("etcd {}", self.key(service))
    }

    fn reconfigured(&self, config: &Config) -> Box<dyn StateStore> {
        self.fleet.set_config_hash(config);
        Box::new(FleetStore::new(self.fleet.clone(), config))
    }

    fn leads(&self) -> bool {
        self.fleet.shared.leads()
    }

    fn blocked(&self) -> Option<String> {
        let shared = &self.fleet.shared;
        let mine = shared.config_hash.lock().ok()?.clone();
        let members = shared.members.lock().ok()?;
        let mut problems = Vec::new();
        for (id, member) in members.iter() {
            if member.record.config_hash != mine {
                problems.push(format!(
                    "instance `{id}` runs config {} and this leader runs {mine}",
                    member.record.config_hash
                ));
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    fn committed(&self) -> Vec<(String, RolloutState)> {
        let Ok(states) = self.fleet.shared.states.lock() else {
            return Vec::new();
        };
        states
            .iter()
            .filter_map(|(service, stored)| {
                let bytes = stored.bytes.as_ref()?;
                match state::decode(service, bytes, Path::new(&self.key(service))) {
                    Ok(state) => Some((service.clone(), state)),
                    Err(err) => {
                        tracing::error!(service, error = %err, "cannot read the state the leader committed");
                        None
                    }
                }
            })
            .collect()
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.fleet.shared.changes.subscribe())
    }

    fn forward(&self, service: &str, op: &Op) -> Option<Forwarded> {
        if self.leads() {
            return None;
        }
        let fleet = self.fleet.clone();
        let service = service.to_string();
        let op = op_to_text(op);
        Some(Box::pin(async move {
            let bytes = fleet
                .forward(&service, op)
                .await
                .map_err(|e| ControlError::Refused(format!("not applied by the fleet: {e}")))?;
            serde_json::from_slice::<Controlled>(&bytes).map_err(|e| {
                ControlError::Refused(format!("the leader's answer cannot be read: {e}"))
            })
        }))
    }

    fn isolated(&self) -> bool {
        !self
            .fleet
            .shared
            .connected
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_local_trip(&self, service: &str, run: Option<&str>) {
        if let Ok(mut trips) = self.fleet.shared.local_trips.lock() {
            match run {
                Some(run) => trips.insert(service.to_string(), run.to_string()),
                None => trips.remove(service),
            };
        }
    }

    fn local_trip(&self, service: &str) -> Option<String> {
        let trips = self.fleet.shared.local_trips.lock().ok()?;
        trips.get(service).cloned()
    }

    fn reported_trips(&self) -> Vec<ReportedTrip> {
        let Ok(members) = self.fleet.shared.members.lock() else {
            return Vec::new();
        };
        members
            .iter()
            .flat_map(|(id, member)| {
                let record = &member.record;
                record.local_trips.iter().map(move |service| ReportedTrip {
                    instance: id.clone(),
                    service: service.clone(),
                    run: record.trip_runs.get(service).cloned(),
                })
            })
            .collect()
    }

    fn fleet_status(&self) -> Option<FleetStatus> {
        let shared = &self.fleet.shared;
        let now = Instant::now();
        let mine = shared.config_hash.lock().ok()?.clone();
        let instances = shared
            .members
            .lock()
            .ok()?
            .values()
            .map(|member| {
                let age = now.saturating_duration_since(member.seen);
                let at = std::time::UNIX_EPOCH + Duration::from_millis(member.record.at_ms);
                FleetMember {
                    id: member.record.id.clone(),
                    last_seen: humantime::format_rfc3339_millis(at).to_string(),
                    age_s: (age.as_millis() as f64) / 1000.0,
                    config_hash: member.record.config_hash.clone(),
                    version: member.record.version.clone(),
                    stale: age > STALE_AFTER,
                    config_agrees: member.record.config_hash == mine,
                    weights: member.record.weights.clone(),
                    local_trips: member.record.local_trips.clone(),
                }
            })
            .collect();
        Some(FleetStatus {
            prefix: shared.keys.all().trim_end_matches('/').to_string(),
            instance: shared.instance.clone(),
            leader: shared.leader.lock().ok()?.clone(),
            connected: shared.connected.load(std::sync::atomic::Ordering::Acquire),
            blocked: if self.leads() { self.blocked() } else { None },
            instances,
        })
    }
}

/// An operator verb as a forwarded command carries it.
pub(crate) fn op_to_text(op: &Op) -> String {
    match op {
        Op::Promote { full: true } => "promote-full".into(),
        Op::SetWeight { weight, force } => {
            let force = if *force { ":force" } else { "" };
            format!("set-weight:{}{force}", weight.basis_points())
        }
        _ => op.verb().into(),
    }
}

pub(crate) fn op_from_text(text: &str) -> Option<Op> {
    Some(match text {
        "start" => Op::Start,
        "pause" => Op::Pause,
        "resume" => Op::Resume,
        "promote" => Op::Promote { full: false },
        "promote-full" => Op::Promote { full: true },
        "rollback" => Op::Rollback,
        "retry" => Op::Retry,
        other => {
            let rest = other.strip_prefix("set-weight:")?;
            let (bp, force) = match rest.strip_suffix(":force") {
                Some(bp) => (bp, true),
                None => (rest, false),
            };
            let weight = Weight::from_basis_points(bp.parse().ok()?)?;
            Op::SetWeight { weight, force }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_survives_forwarding() {
        let ops = [
            Op::Start,
            Op::Pause,
            Op::Resume,
            Op::Promote { full: false },
            Op::Promote { full: true },
            Op::Rollback,
            Op::Retry,
            Op::SetWeight {
                weight: Weight::from_percent(12.5).unwrap(),
                force: false,
            },
            Op::SetWeight {
                weight: Weight::from_percent(3.0).unwrap(),
                force: true,
            },
        ];
        for op in ops {
            assert_eq!(op_from_text(&op_to_text(&op)), Some(op));
        }
        assert_eq!(op_from_text("set-weight:10001"), None);
        assert_eq!(op_from_text("explode"), None);
    }
}

//! The agent's work on etcd besides the session loop: campaigning, publishing this
//! instance's record, running forwarded commands, and the requests of the synchronous side
//! (reads, and the leader's guarded writes).

use std::sync::atomic::Ordering;

use etcdv3client::pb;

use super::{timed, Agent, Answer, Etcd, Failure, Forwarded};
use crate::fleet::member::{Counts, Record};
use crate::fleet::{FleetError, Request, Stored};
use crate::upstream::now_millis;

impl Agent {
    /// The leader runs a forwarded command through its own controller.
    pub(super) fn execute(&self, id: String, value: &[u8]) {
        let Ok(command) = serde_json::from_slice::<Forwarded>(value) else {
            return;
        };
        let Some(controller) = self.shared.controller.get().cloned() else {
            return;
        };
        let answers = self.answers_tx.clone();
        tracing::info!(from = %command.from, service = %command.service, op = %command.op, "command forwarded by a member");
        tokio::spawn(async move {
            let answer = match crate::fleet::store::op_from_text(&command.op) {
                None => Answer {
                    ok: None,
                    error: Some(format!("unknown command `{}`", command.op)),
                },
                Some(op) => match controller.control(&command.service, op).await {
                    Ok(status) => Answer {
                        ok: serde_json::to_value(status).ok(),
                        error: None,
                    },
                    Err(err) => Answer {
                        ok: None,
                        error: Some(err.to_string()),
                    },
                },
            };
            let _ = answers.send((id, answer));
        });
    }

    /// Takes the leader key if nobody holds it.
    pub(super) async fn campaign(&mut self, client: &mut Etcd, lease: i64) -> Result<(), Failure> {
        let key = self.shared.keys.leader().into_bytes();
        let absent = pb::Compare::new(
            key.clone(),
            pb::compare::CompareResult::Equal,
            pb::compare::TargetUnion::CreateRevision(0),
        );
        let put = pb::PutRequest {
            key: key.clone(),
            value: self.shared.instance.clone().into_bytes(),
            lease,
            ..Default::default()
        };
        let get = pb::RangeRequest {
            key,
            ..Default::default()
        };
        let txn = pb::TxnRequest::new()
            .with_if(vec![absent])
            .with_then(vec![put.into()])
            .with_else(vec![get.into()]);
        let response = timed(client.kv.txn(txn)).await?;
        if response.succeeded {
            let revision = response.header.map_or(0, |h| h.revision);
            self.set_leader(Some(self.shared.instance.clone()), revision);
            return Ok(());
        }
        let holder = response
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(pb::response_op::Response::ResponseRange(range)) => {
                    range.kvs.into_iter().next()
                }
                _ => None,
            });
        match holder {
            Some(kv) => {
                let mine = kv.lease == lease;
                let name = String::from_utf8_lossy(&kv.value).into_owned();
                self.set_leader(Some(name), if mine { kv.create_revision } else { 0 });
            }
            None => self.set_leader(None, 0),
        }
        Ok(())
    }

    /// Puts this instance's record under its lease.
    pub(super) async fn publish(&mut self, client: &mut Etcd, lease: i64) -> Result<(), Failure> {
        let snapshot = self.snapshot.load();
        let pools = snapshot
            .routes
            .iter()
            .map(|route| {
                let service = &route.service;
                (
                    service.name.to_string(),
                    [
                        Counts::from(&service.old.stats.counts()),
                        Counts::from(&service.new.stats.counts()),
                    ],
                )
            })
            .collect();
        let config_hash = copied(&self.shared.config_hash);
        let trips = copied(&self.shared.local_trips);
        let record = Record {
            id: self.shared.instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash,
            boot: self.boot.clone(),
            at_ms: now_millis(),
            pools,
            weights: snapshot
                .routes
                .iter()
                .map(|route| (route.service.name.to_string(), route.new_weight.percent()))
                .collect(),
            local_trips: trips.keys().cloned().collect(),
            trip_runs: trips,
        };
        let put = pb::PutRequest {
            key: self.shared.keys.member(&self.shared.instance).into_bytes(),
            value: serde_json::to_vec(&record)?,
            lease,
            ..Default::default()
        };
        timed(client.kv.put(put)).await?;
        Ok(())
    }

    pub(super) async fn serve(
        &mut self,
        client: &mut Etcd,
        lease: i64,
        request: Request,
    ) -> Result<(), Failure> {
        match request {
            Request::Load { service, reply } => {
                let key = self.shared.keys.state(&service).into_bytes();
                let request = pb::RangeRequest {
                    key,
                    ..Default::default()
                };
                let response = match timed(client.kv.range(request)).await {
                    Ok(response) => response,
                    Err(err) => {
                        let _ = reply.send(Err(FleetError::Unavailable(err.0.clone())));
                        return Err(err);
                    }
                };
                let stored = response
                    .kvs
                    .into_iter()
                    .next()
                    .map_or_else(Stored::default, |kv| Stored {
                        mod_revision: kv.mod_revision,
                        bytes: Some(kv.value),
                    });
                let bytes = stored.bytes.clone();
                if let Ok(mut states) = self.shared.states.lock() {
                    states.insert(service, stored);
                }
                let _ = reply.send(Ok(bytes));
            }
            Request::Save {
                service,
                bytes,
                reply,
            } => {
                let result = self.save(client, &service, bytes).await;
                let broken = matches!(result, Err(FleetError::Unavailable(_)));
                let why = result.as_ref().err().map(|e| e.to_string());
                let _ = reply.send(result);
                if broken {
                    return Err(Failure(why.unwrap_or_default()));
                }
            }
            Request::Forward { service, op, reply } => {
                let id = format!("{:016x}", rand::random::<u64>());
                let command = Forwarded {
                    service,
                    op,
                    from: self.shared.instance.clone(),
                };
                let put = pb::PutRequest {
                    key: self.shared.keys.command(&id).into_bytes(),
                    value: serde_json::to_vec(&command)?,
                    lease,
                    ..Default::default()
                };
                match timed(client.kv.put(put)).await {
                    Ok(_) => {
                        self.pending.insert(id, reply);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(format!("cannot reach etcd: {}", err.0)));
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    /// One transaction: the state is written only if this instance still holds the leader
    /// key it won and nobody wrote the state since this instance last saw it.
    pub(super) async fn save(
        &mut self,
        client: &mut Etcd,
        service: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FleetError> {
        let leadership = self.shared.leadership.load(Ordering::Acquire);
        if leadership == 0 {
            return Err(FleetError::Refused(
                "this instance does not lead the fleet".into(),
            ));
        }
        let known = self
            .shared
            .states
            .lock()
            .ok()
            .and_then(|s| s.get(service).map(|s| s.mod_revision))
            .unwrap_or(0);
        let txn = guarded_put(&self.shared.keys, leadership, service, known, bytes.clone());
        let response = timed(client.kv.txn(txn))
            .await
            .map_err(|e| FleetError::Unavailable(e.0))?;
        if !response.succeeded {
            return Err(FleetError::Refused(
                "the write was refused: this instance no longer leads the fleet, or the state changed under it".into(),
            ));
        }
        let revision = response.header.map_or(0, |h| h.revision);
        if let Ok(mut states) = self.shared.states.lock() {
            states.insert(
                service.to_string(),
                Stored {
                    mod_revision: revision,
                    bytes: Some(bytes),
                },
            );
        }
        Ok(())
    }
}

/// The leader's write of a state: guarded by the leadership (the leader key's create
/// revision) and by the state's mod revision as the leader last saw it.
pub(crate) fn guarded_put(
    keys: &crate::fleet::keys::Keys,
    leadership: i64,
    service: &str,
    known: i64,
    bytes: Vec<u8>,
) -> pb::TxnRequest {
    let state = keys.state(service).into_bytes();
    let still_leader = pb::Compare::new(
        keys.leader().into_bytes(),
        pb::compare::CompareResult::Equal,
        pb::compare::TargetUnion::CreateRevision(leadership),
    );
    let unchanged = pb::Compare::new(
        state.clone(),
        pb::compare::CompareResult::Equal,
        pb::compare::TargetUnion::ModRevision(known),
    );
    let put = pb::PutRequest {
        key: state,
        value: bytes,
        ..Default::default()
    };
    pb::TxnRequest::new()
        .with_if(vec![still_leader, unchanged])
        .with_then(vec![put.into()])
}

pub(super) fn unavailable(request: Request, why: &str) {
    match request {
        Request::Load { reply, .. } => {
            let _ = reply.send(Err(FleetError::Unavailable(why.into())));
        }
        Request::Save { reply, .. } => {
            let _ = reply.send(Err(FleetError::Unavailable(why.into())));
        }
        Request::Forward { reply, .. } => {
            let _ = reply.send(Err(format!(
                "{why}; the command was not sent to the leader"
            )));
        }
    }
}

/// A copy of what `shared` holds; the default when a thread panicked holding it.
fn copied<T: Clone + Default>(shared: &std::sync::Mutex<T>) -> T {
    shared.lock().map(|value| value.clone()).unwrap_or_default()
}

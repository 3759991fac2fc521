//! Getting a backend's answer: which backend to try, and what to do when a try fails.
//! It decides and returns; what happened is recorded in `outcome`.
//!
//! - Retries: a connect failure means nothing was sent, so the request goes to another
//!   backend of the same pool, up to the service's `retries` (and never to one already
//!   tried). Once anything was sent, a failure is final.
//! - Failover: NEW's share goes to OLD when NEW has no available backend, or when every
//!   try to connect to NEW failed (nothing was sent, so nothing is lost). Either way the
//!   request counts as a NEW failure, which is what the analysis needs to see.
//! - Stale connections: an idle connection the backend closed just as it was reused
//!   never saw the request; one without a body is sent again, a bounded number of times.
//!
//! - Backend limits: a backend at its `max_connections` is passed over like one that
//!   cannot be reached (nothing was sent), after waiting up to the connect timeout for a
//!   request of its own to finish; it is not a failure of that backend.
//!
//! Each try picks once: running out of backends is learnt from the next pick.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Method;

use super::error::ProxyError;
use super::outcome;
use crate::http1::encode::BodyKind;
use crate::http1::parse::ResponseHead;
use crate::routing::Route;
use crate::upstream::{
    Backend, ClientWatch, Connection, ExchangeError, InFlight, Pool, PoolKind, RequestBody, Wait,
    Waited,
};

/// The request as it goes to a backend: encoded once, sent to whichever backend takes it.
pub(super) struct Outgoing {
    pub head: Bytes,
    pub method: Method,
    pub body: RequestBody,
    pub body_kind: BodyKind,
    pub upgrade: bool,
}

impl Outgoing {
    /// Whether the request may be sent again after a reused connection closed without a
    /// byte of answer. Usually the backend had closed it while idle and never saw the
    /// request; but a backend that processed it and then died closes the same way, so only
    /// an idempotent request (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), as
    /// nginx and Go's client do, and only one whose body is still at hand.
    fn resendable(&self) -> bool {
        !self.upgrade
            && self.method.is_idempotent()
            && (self.body_kind == BodyKind::Empty || self.body.whole_len().is_some())
    }
}

/// A backend's answer, and what it came on.
pub(super) struct Exchange {
    pub head: ResponseHead,
    pub connection: Connection,
    pub backend: Arc<Backend>,
    pub in_flight: InFlight,
    pub kind: PoolKind,
}

/// The most backends one request may try in a pool: the first, plus up to 10 retries.
const MAX_TRIES: usize = 11;
/// Idle connections found closed by their backend on use: not failures, but bounded.
const MAX_STALE: u32 = 4;

/// NEW's share goes to OLD up front when NEW has no available backend.
#[inline]
pub(super) fn first_pool(route: &Route, assigned: PoolKind, now_ms: u64) -> PoolKind {
    let new = &route.service.new;
    if assigned == PoolKind::New && !new.has_available(now_ms) {
        outcome::unserved(new);
        return PoolKind::Old;
    }
    assigned
}

/// Sends the request to a backend of `kind`'s pool, trying others while connecting fails.
/// The error comes with the pool it is charged to. `client` is looked at while the
/// backend is slow to answer (`upstream::watch`).
pub(super) async fn exchange(
    mut outgoing: Outgoing,
    route: &Route,
    mut kind: PoolKind,
    started: Instant,
    now_ms: u64,
    client: ClientWatch,
) -> Result<Exchange, (ProxyError, PoolKind)> {
    let service = &route.service;
    let since = tokio::time::Instant::from_std(started);
    let wait = Wait {
        since,
        deadline: since + service.timeouts.request,
        client,
    };
    let mut tried = [usize::MAX; MAX_TRIES];
    let mut tries = 0;
    let mut stale = 0;
    // The last connect failure in this pool: what OLD answers with once it runs out.
    let mut unreachable: Option<ProxyError> = None;
    loop {
        let pool = route.pool(kind);
        let Some(index) = pick(pool, &tried[..tries], service.retries, now_ms) else {
            if kind == PoolKind::New {
                // Nothing was sent to NEW: OLD serves this one, NEW is charged for it.
                outcome::unserved(pool);
                kind = PoolKind::Old;
                tries = 0;
                unreachable = None;
                continue;
            }
            let label = pool.kind.label();
            let error = unreachable.unwrap_or(ProxyError::NoHealthyBackend { pool: label });
            return Err((error, kind));
        };
        let backend = &pool.backends[index];
        let Some(in_flight) = backend
            .start_request(now_ms, service.timeouts.connect)
            .await
        else {
            tracing::debug!(backend = %backend.addr, "backend at its max_connections");
            unreachable = Some(ProxyError::BackendBusy {
                addr: backend.addr.clone(),
            });
            tried[tries] = index;
            tries += 1;
            continue;
        };
        let connected = if outgoing.upgrade {
            backend.new_connection().await
        } else {
            backend.connection(now_ms).await
        };
        let mut connection = match connected {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, "connect failed");
                let error = ProxyError::Unreachable(error);
                outcome::try_failed(pool, backend, &error, now_ms);
                unreachable = Some(error);
                tried[tries] = index;
                tries += 1;
                continue;
            }
        };

        let sent = connection
            .exchange(
                &outgoing.head,
                &mut outgoing.body,
                outgoing.body_kind,
                &outgoing.method,
                wait,
            )
            .await;
        let failure = match sent {
            Ok(Ok(head)) => {
                return Ok(Exchange {
                    head,
                    connection,
                    backend: backend.clone(),
                    in_flight,
                    kind,
                })
            }
            Ok(Err(error)) => {
                let resend = connection.is_reused() && outgoing.resendable() && stale < MAX_STALE;
                after_failure(error, resend, backend)
            }
            Err(Waited::Deadline) => Failure::Backend(ProxyError::Timeout {
                addr: backend.addr.clone(),
                after: service.timeouts.request,
            }),
            Err(Waited::ClientGone) => Failure::Client(ProxyError::ClientGone),
        };
        match failure {
            Failure::Stale => stale += 1,
            Failure::Client(error) => return Err((error, kind)),
            Failure::Backend(error) => {
                outcome::try_failed(pool, backend, &error, now_ms);
                return Err((error, kind));
            }
        }
    }
}

/// The next backend to try, unless this pool's tries are used up.
#[inline]
fn pick(pool: &Pool, tried: &[usize], retries: u32, now_ms: u64) -> Option<usize> {
    let exhausted = tried.len() > retries as usize || tried.len() == MAX_TRIES;
    if exhausted {
        return None;
    }
    pool.pick(tried, now_ms)
}

/// What a failed exchange means for the request.
enum Failure {
    /// A reused connection closed before any answer, most likely closed by its backend
    /// while idle: the idempotent request goes out again.
    Stale,
    /// The client's request body failed, or the client left: the backend is not to blame.
    Client(ProxyError),
    /// The backend failed: final, since the request may have been processed.
    Backend(ProxyError),
}

/// Classifies a failed exchange; `resend` says whether a stale connection may be retried.
fn after_failure(error: ExchangeError, resend: bool, backend: &Backend) -> Failure {
    match error {
        ExchangeError::ClientBody(error) => Failure::Client(ProxyError::ClientBody(error)),
        error if resend && error.is_stale_connection() => Failure::Stale,
        error => Failure::Backend(ProxyError::upstream(backend.addr.clone(), error)),
    }
}

//! The request path: one straight line, read top to bottom.
//!
//! load snapshot → match service → bucket → OLD or NEW → encode the backend request →
//! backend (retrying connect failures on another one) → record the outcome → respond.
//!
//! It reads the routing snapshot and never decides anything about the rollout: NEW's
//! weight is already in the route. Its only writes are relaxed atomic counters.
//!
//! Failover: NEW's share goes to OLD when NEW has no available backend, or when every
//! attempt to connect to NEW failed (nothing was sent, so nothing is lost). Either way the
//! request counts as a NEW failure, which is what the analysis needs to see.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::body::ProxyBody;
use super::error::{error_response, ProxyError};
use super::forward::{self, Scheme};
use crate::routing::{strip_port, Bucket, Route, SharedSnapshot};
use crate::stats::{CodeClass, UpstreamErrorKind};
use crate::upstream::client::{self, BodyKind, Connection, ExchangeError, Forwarded, ResponseHead};
use crate::upstream::{millis_at, Backend, InFlight, PoolKind};

/// What the request path knows about the connection a request came on.
pub struct ConnContext {
    pub peer: SocketAddr,
    /// The peer's IP, ready for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    pub scheme: Scheme,
    pub snapshot: SharedSnapshot,
    /// Keeps the connection counted as open (for drain and `max_connections`) for as long
    /// as anything uses it, including a tunnel that outlives hyper's handling of it.
    pub open: Arc<dyn Send + Sync>,
}

impl ConnContext {
    pub fn new(
        peer: SocketAddr,
        scheme: Scheme,
        snapshot: SharedSnapshot,
        open: Arc<dyn Send + Sync>,
    ) -> ConnContext {
        let ip = peer.ip().to_canonical();
        ConnContext {
            peer,
            peer_ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            scheme,
            snapshot,
            open,
        }
    }
}

/// Serves one request.
pub async fn handle(
    request: Request<Incoming>,
    conn: Arc<ConnContext>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let route = {
        let snapshot = conn.snapshot.load();
        let host = request_host(&request);
        match snapshot.route(strip_port(host), request.uri().path()) {
            Some(route) => route.clone(),
            None => return Ok(error_response(&ProxyError::NoRoute)),
        }
    };
    if request.method() == Method::CONNECT {
        return Ok(error_response(&ProxyError::MethodNotAllowed));
    }
    Ok(proxy(request, route, &conn, started).await)
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(request: &Request<B>) -> &str {
    request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

async fn proxy(
    mut request: Request<Incoming>,
    route: Route,
    conn: &ConnContext,
    started: Instant,
) -> Response<ProxyBody> {
    let service = &route.service;
    let now_ms = millis_at(started);
    let bucket = service.bucket(request.headers(), conn.peer.ip());
    let mut kind = if bucket.value() < route.new_weight.basis_points() {
        PoolKind::New
    } else {
        PoolKind::Old
    };
    if kind == PoolKind::New && !service.new.has_available(now_ms) {
        service.new.stats.record_unserved();
        kind = PoolKind::Old;
    }

    let upgrade = forward::is_upgrade_request(request.version(), request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let body_kind = BodyKind::of(&parts.headers, &body);
    let forwarded = Forwarded {
        client_ip: &conn.peer_ip,
        scheme: conn.scheme,
    };
    let outgoing = Outgoing {
        head: client::encode_request_head(&parts, &forwarded, body_kind, upgrade),
        method: parts.method,
        body,
        body_kind,
        upgrade,
    };

    match exchange(outgoing, &route, kind, started, now_ms).await {
        Ok(exchange) => respond(exchange, &route, bucket, client_upgrade, started, conn),
        Err((error, kind)) => {
            if error.counts_against_pool() {
                route
                    .pool(kind)
                    .stats
                    .record(CodeClass::Error, started.elapsed());
            }
            tracing::debug!(service = %service.name, pool = kind.label(), %error, "request failed");
            error_response(&error)
        }
    }
}

/// The request as it goes to a backend: encoded once, sent to whichever backend takes it.
struct Outgoing {
    head: Bytes,
    method: Method,
    body: Incoming,
    body_kind: BodyKind,
    upgrade: bool,
}

/// A backend's answer, and what it came on.
struct Exchange {
    head: ResponseHead,
    connection: Connection,
    backend: Arc<Backend>,
    in_flight: InFlight,
    kind: PoolKind,
}

/// The most backends one request may try in a pool: the first, plus up to 10 retries.
const MAX_TRIES: usize = 11;
/// Idle connections found closed by their backend on use: not failures, but bounded.
const MAX_STALE: u32 = 4;

/// Sends the request to a backend of `kind`'s pool, trying others while connecting fails.
async fn exchange(
    mut outgoing: Outgoing,
    route: &Route,
    mut kind: PoolKind,
    started: Instant,
    now_ms: u64,
) -> Result<Exchange, (ProxyError, PoolKind)> {
    let service = &route.service;
    let deadline = tokio::time::Instant::from_std(started) + service.timeouts.request;
    let mut tried = [usize::MAX; MAX_TRIES];
    let mut tries = 0;
    let mut stale = 0;
    loop {
        let pool = route.pool(kind);
        let attempts_exhausted = tries > service.retries as usize || tries == MAX_TRIES;
        let picked = if attempts_exhausted {
            None
        } else {
            pool.pick(&tried[..tries], now_ms)
        };
        let Some(index) = picked else {
            if kind == PoolKind::New {
                // Nothing was sent to NEW: OLD serves this one, NEW is charged for it.
                pool.stats.record_unserved();
                kind = PoolKind::Old;
                tries = 0;
                continue;
            }
            return Err((
                ProxyError::NoHealthyBackend {
                    pool: pool.kind.label(),
                },
                kind,
            ));
        };
        let backend = &pool.backends[index];
        let connected = if outgoing.upgrade {
            backend.connect().await
        } else {
            backend.connection(now_ms).await
        };
        let mut connection = match connected {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, "connect failed");
                pool.stats.record_upstream_error(UpstreamErrorKind::Connect);
                backend.record_failure(pool, now_ms);
                tried[tries] = index;
                tries += 1;
                let retry_possible = tries <= service.retries as usize
                    && tries < MAX_TRIES
                    && pool.pick(&tried[..tries], now_ms).is_some();
                if kind == PoolKind::Old && !retry_possible {
                    return Err((ProxyError::Unreachable(error), kind));
                }
                continue;
            }
        };

        let in_flight = backend.start_request(now_ms);
        let sent = connection
            .exchange(
                &outgoing.head,
                &mut outgoing.body,
                outgoing.body_kind,
                &outgoing.method,
                deadline,
            )
            .await;
        let error = match sent {
            Ok(Ok(head)) => {
                return Ok(Exchange {
                    head,
                    connection,
                    backend: backend.clone(),
                    in_flight,
                    kind,
                })
            }
            Ok(Err(ExchangeError::ClientBody(error))) => {
                return Err((ProxyError::ClientBody(error), kind))
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => {
                pool.stats.record_upstream_error(UpstreamErrorKind::Timeout);
                backend.record_failure(pool, now_ms);
                let addr = backend.addr.clone();
                let after = service.timeouts.request;
                return Err((ProxyError::Timeout { addr, after }, kind));
            }
        };
        let resendable = outgoing.body_kind == BodyKind::Empty && !outgoing.upgrade;
        if connection.is_reused() && error.is_stale_connection() && resendable && stale < MAX_STALE
        {
            // The backend had closed this idle connection: it never saw the request.
            stale += 1;
            continue;
        }
        let upstream_kind = match error {
            ExchangeError::Protocol(_) => UpstreamErrorKind::Protocol,
            _ => UpstreamErrorKind::Reset,
        };
        pool.stats.record_upstream_error(upstream_kind);
        backend.record_failure(pool, now_ms);
        let addr = backend.addr.clone();
        return Err((
            ProxyError::Upstream {
                addr,
                kind: upstream_kind,
                source: error,
            },
            kind,
        ));
    }
}

/// Records the outcome and turns the backend's answer into the client's response.
fn respond(
    exchange: Exchange,
    route: &Route,
    bucket: Bucket,
    client_upgrade: Option<OnUpgrade>,
    started: Instant,
    conn: &ConnContext,
) -> Response<ProxyBody> {
    let Exchange {
        head,
        connection,
        backend,
        in_flight,
        kind,
    } = exchange;
    let pool = route.pool(kind);
    let status = head.status;
    let elapsed = started.elapsed();
    pool.stats
        .record(CodeClass::of_status(status.as_u16()), elapsed);
    if status.is_server_error() {
        backend.record_failure(pool, millis_at(started + elapsed));
    } else {
        backend.record_success();
    }

    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, client_upgrade) {
        (true, Some(client_upgrade)) => {
            let (stream, early) = connection.into_parts();
            let open = conn.open.clone();
            tokio::spawn(async move {
                let _in_flight = in_flight;
                let _open = open;
                forward::tunnel(client_upgrade, stream, early).await;
            });
        }
        (true, None) => {
            // 101 to a request that did not ask for it: the connection is unusable.
            pool.stats
                .record_upstream_error(UpstreamErrorKind::Protocol);
            return error_response(&ProxyError::Upstream {
                addr: backend.addr.clone(),
                kind: UpstreamErrorKind::Protocol,
                source: ExchangeError::Protocol(
                    "101 Switching Protocols without an upgrade request",
                ),
            });
        }
        (false, _) => {
            let stall_timeout = route.service.timeouts.request;
            let body = client::ResponseBody::new(connection, &head, in_flight, stall_timeout);
            *response.body_mut() = ProxyBody::Upstream(body);
        }
    }
    *response.headers_mut() = head.headers;
    if let Bucket::Assigned(value) = bucket {
        if let Some(cookie) = route.service.sticky_cookie(value) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}

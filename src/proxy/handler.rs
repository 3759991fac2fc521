//! The request path: one straight line, read top to bottom.
//!
//! load snapshot → match service → read ahead the request body → bucket → OLD or NEW →
//! encode the backend request → backend (`attempt`: retries, failover) → record the
//! outcome (`outcome`) → respond.
//!
//! One authority per request: the URI's (HTTP/2 `:authority`, HTTP/1 absolute-form)
//! wins over `Host` (RFC 9112 §3.2.2), and the one that routes is the one forwarded.
//! Two `Host` headers are refused.
//!
//! A request body is read ahead, up to `limits.request_buffer` and within
//! `limits.body_read_timeout`, before a backend is chosen (nginx's request buffering):
//! a client that sends its body slowly, or not at all, holds no backend connection.
//! A request without a body skips all of it.
//!
//! It reads the routing snapshot and never decides anything about the rollout: NEW's
//! weight is already in the route. Its only writes are relaxed atomic counters, all of
//! them made through `outcome`, and, with `access_log` on, the request's line handed to
//! the log's writer thread when the response ends (off, the path is compiled without it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::attempt::{self, Exchange, Outgoing};
use super::body::ProxyBody;
use super::error::{error_response, ProxyError};
use super::forward;
use super::outcome;
use super::parked::IdleSet;
use super::server::ClientConnection;
use crate::access_log::{Entry, Note};
use crate::config::Limits;
use crate::http1::encode::{encode_request_head, BodyKind, Forwarded};
use crate::http1::Scheme;
use crate::routing::{strip_port, Bucket, Route, SharedSnapshot, Snapshot};
use crate::upstream::{millis_at, ClientWatch, PoolKind, RequestBody, ResponseBody};

/// What the request path knows about the connection a request came on.
pub(crate) struct ConnContext {
    pub peer: SocketAddr,
    /// The peer's IP, ready for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    pub scheme: Scheme,
    pub snapshot: SharedSnapshot,
    /// Keeps the connection counted as open (for drain and `max_connections`) for as long
    /// as anything uses the context, including a tunnel that outlives hyper's handling of
    /// it. Inline, not an allocation of its own: every connection has one.
    open: ClientConnection,
    /// `limits.request_buffer` and `limits.body_read_timeout`, as the connection opened.
    pub request_buffer: usize,
    pub body_read_timeout: Duration,
    /// The client's socket, looked at while a backend is quiet (HTTP/1 only).
    pub client: ClientWatch,
}

impl ConnContext {
    pub(super) fn new(
        peer: SocketAddr,
        scheme: Scheme,
        snapshot: SharedSnapshot,
        open: ClientConnection,
        limits: &Limits,
        client: ClientWatch,
    ) -> ConnContext {
        ConnContext {
            peer,
            peer_ip: forward::client_ip_header(peer.ip()),
            scheme,
            snapshot,
            open,
            request_buffer: limits.request_buffer,
            body_read_timeout: limits.body_read_timeout,
            client,
        }
    }

    /// The HTTP/1 connections of the listener this one came on.
    pub(super) fn idle(&self) -> &IdleSet {
        &self.open.listener.idle
    }
}

/// Serves one request.
pub(crate) async fn handle(
    request: Request<Incoming>,
    conn: Arc<ConnContext>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let route = {
        let snapshot = conn.snapshot.load();
        if let Some(log) = &snapshot.access_log {
            let (method, uri) = (request.method(), request.uri());
            let entry = log.begin(conn.peer, method, uri, request.version(), started);
            let routed = route(&request, &snapshot);
            drop(snapshot);
            // Boxed: the request future stays as small as it is with the log off.
            return Ok(Box::pin(logged(request, routed, &conn, started, entry)).await);
        }
        match route(&request, &snapshot) {
            Ok(route) => route,
            Err(error) => return Ok(error_response(&error)),
        }
    };
    Ok(proxy(request, route, &conn, started, &mut ()).await)
}

/// `handle` with the access log on: the same request path, noting what it did in `entry`,
/// which is written when the response body ends.
async fn logged(
    request: Request<Incoming>,
    routed: Result<Route, ProxyError>,
    conn: &Arc<ConnContext>,
    started: Instant,
    mut entry: Entry,
) -> Response<ProxyBody> {
    let response = match routed {
        Ok(route) => proxy(request, route, conn, started, &mut entry).await,
        Err(error) => error_response(&error),
    };
    entry.status(response.status().as_u16());
    response.map(|body| body.logged(entry))
}

/// The route a request takes, or why it takes none.
#[inline]
fn route<B>(request: &Request<B>, snapshot: &Snapshot) -> Result<Route, ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    let host = request_host(request);
    match snapshot.route(strip_port(host), request.uri().path()) {
        Some(route) => Ok(route.clone()),
        None => Err(ProxyError::NoRoute),
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form), which wins
/// over `Host` (RFC 9112 §3.2.2), else `Host`. The encoder forwards the same one.
fn request_host<B>(request: &Request<B>) -> &str {
    request
        .uri()
        .authority()
        .map(crate::http1::encode::host_of)
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// Reads the request body ahead, within the connection's limits (see the module notes).
async fn read_ahead(
    body: hyper::body::Incoming,
    conn: &ConnContext,
) -> Result<RequestBody, ProxyError> {
    let after = conn.body_read_timeout;
    let read = RequestBody::read_ahead(body, conn.request_buffer);
    match tokio::time::timeout(after, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) => Err(ProxyError::ClientBody(error)),
        Err(_) => Err(ProxyError::BodyTimeout { after }),
    }
}

async fn proxy(
    mut request: Request<Incoming>,
    route: Route,
    conn: &Arc<ConnContext>,
    mut started: Instant,
    note: &mut impl Note,
) -> Response<ProxyBody> {
    let upgrade = forward::is_upgrade_request(request.version(), request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut body_kind = BodyKind::of(&parts.headers, &body);
    let body = if body_kind == BodyKind::Empty || upgrade {
        RequestBody::streamed(body)
    } else {
        match read_ahead(body, conn).await {
            Ok(body) => {
                // The client's time to send its body is not the backend's latency.
                started = Instant::now();
                if let Some(len) = body.whole_len() {
                    body_kind = BodyKind::Length(len);
                }
                body
            }
            Err(error) => {
                tracing::debug!(service = %route.service.name, %error, "request body not read");
                return error_response(&error);
            }
        }
    };

    let service = &route.service;
    let now_ms = millis_at(started);
    let bucket = service.bucket(&parts.headers, conn.peer.ip());
    let assigned = if bucket.value() < route.new_weight.basis_points() {
        PoolKind::New
    } else {
        PoolKind::Old
    };
    let kind = attempt::first_pool(&route, assigned, now_ms);
    if let (Some(copier), PoolKind::Old) = (&route.shadow, kind) {
        let whole = match body_kind {
            BodyKind::Empty => Some(&[][..]),
            _ => body.whole_len().map(|_| body.buffered()),
        };
        copier.offer(&parts, whole);
    }
    let forwarded = Forwarded {
        client_ip: &conn.peer_ip,
        scheme: conn.scheme,
        reached: &conn.open.listener.reached,
    };
    let outgoing = Outgoing {
        head: encode_request_head(&parts, &forwarded, body_kind, upgrade),
        method: parts.method,
        body,
        body_kind,
        upgrade,
    };

    match attempt::exchange(outgoing, &route, kind, started, now_ms, conn.client).await {
        Ok(exchange) => {
            note.routed(&service.name, exchange.kind);
            note.answered_by(&exchange.backend.addr);
            respond(exchange, &route, bucket, client_upgrade, started, conn)
        }
        Err((error, kind)) => {
            note.routed(&service.name, kind);
            outcome::failed(route.pool(kind), &error, started);
            tracing::debug!(service = %service.name, pool = kind.label(), %error, "request failed");
            error_response(&error)
        }
    }
}

/// Records the outcome and turns the backend's answer into the client's response.
#[inline]
fn respond(
    exchange: Exchange,
    route: &Route,
    bucket: Bucket,
    client_upgrade: Option<OnUpgrade>,
    started: Instant,
    conn: &Arc<ConnContext>,
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
    outcome::answered(pool, &backend, status, started);

    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, client_upgrade) {
        (true, Some(client_upgrade)) => {
            // The tunnel counts as in flight, and its client connection as open (the
            // context holds the count).
            let guards = (in_flight, conn.clone());
            forward::spawn_tunnel(client_upgrade, connection, guards);
        }
        (true, None) => {
            // 101 to a request that did not ask for it: the connection is unusable.
            let error = ProxyError::unrequested_switch(backend.addr.clone());
            outcome::answer_refused(pool, &error);
            return error_response(&error);
        }
        (false, _) => {
            let stall_timeout = route.service.timeouts.request;
            let body = ResponseBody::new(connection, &head, in_flight, stall_timeout, conn.client);
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

//! The admin API (SPEC §5): JSON over HTTP/1.1 on `admin.addr`.
//!
//! ```text
//! GET  /                        the live status page (no token needed: it holds no data)
//! GET  /healthz                 200 "ok"                         (no token needed)
//! GET  /metrics                 OpenMetrics or text 0.0.4 by Accept (no token needed)
//! GET  /status                  every service and the config
//! GET  /services/{name}         one service
//! GET  /services/{name}/shadow  the last shadow step's comparisons and mismatches
//! POST /services/{name}/{start|pause|resume|promote|rollback|retry}   ?full=true for promote
//! POST /services/{name}/weight  {"weight": 30}, {"weight": 10, "force": true} to lower it
//! POST /reload                  200 {version} | 400 {errors: [...]}
//! GET  /services/{name}/history ?since=RFC3339&limit=N: the decision log, a JSON array
//!      (with `limit`, its newest N records)
//! ```
//!
//! With a token configured, everything else needs `Authorization: Bearer <token>`,
//! compared in constant time. Unknown service → 404, refused transition → 409 with the
//! reason, bad body → 400. The API never changes anything itself: it sends commands to
//! the controller and reads the status it publishes.

mod origin;
pub(crate) mod runtime_file;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::config::Weight;
use crate::metrics::Metrics;
use crate::rollout::controller::{
    AdminToken, ControlError, Controlled, ControllerHandle, Op, ReloadSource,
};

const MAX_BODY: usize = 64 * 1024;

struct Admin {
    controller: ControllerHandle,
    metrics: Arc<Metrics>,
    token: AdminToken,
}

/// Serves the admin API on `listener` until the runtime stops.
pub(crate) fn serve(
    listener: TcpListener,
    controller: ControllerHandle,
    metrics: Arc<Metrics>,
    token: AdminToken,
) {
    let admin = Arc::new(Admin {
        controller,
        metrics,
        token,
    });
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(request, peer).await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
                if let Err(err) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %err, "admin connection ended with an error");
                }
            });
        }
    });
}

impl Admin {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let public =
            method == Method::GET && (path == "/" || path == "/healthz" || path == "/metrics");
        if !public && !self.authorized(&request) {
            // One line per 10 s, with a count: a probe must not flood the log.
            if let Some(suppressed) = REFUSED_LOG.admit(crate::upstream::now_millis()) {
                tracing::warn!(%peer, %method, %path, suppressed, "admin request without a valid token (suppressed: refused since the last line)");
            }
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer <token>` is required",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let tokenless = self.token.load().is_none();
        if !public && tokenless && !origin::addressed_to_loopback(request.headers()) {
            // A token-less admin API listens on loopback only; a request for any other host
            // name is a web page that re-pointed its own name at 127.0.0.1 (DNS rebinding),
            // and may read nothing, not even the status.
            tracing::warn!(%peer, %method, %path, "admin request for another host name refused");
            return error(
                StatusCode::FORBIDDEN,
                "a token-less admin API answers requests addressed to localhost or a loopback address only (see docs/operator-tools.md)",
            );
        }
        if method != Method::GET && tokenless && origin::crosses_site(request.headers()) {
            tracing::warn!(%peer, %method, %path, "admin request from another site refused");
            return error(
                StatusCode::FORBIDDEN,
                "a web page may not change rollouts through a token-less admin API (see docs/operator-tools.md)",
            );
        }
        let query = request.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) => status_page(),
            (&Method::GET, ["healthz"]) => {
                text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8")
            }
            (&Method::GET, ["metrics"]) => {
                let accept = request.headers().get(header::ACCEPT);
                let (body, content_type) = self
                    .metrics
                    .encode_for(accept.and_then(|v| v.to_str().ok()));
                text(StatusCode::OK, &body, content_type)
            }
            (&Method::GET, ["status"]) => json_response(StatusCode::OK, &*self.controller.status()),
            (&Method::GET, ["services", name]) => {
                let status = self.controller.status();
                match status.services.iter().find(|s| s.name == *name) {
                    Some(service) => json_response(StatusCode::OK, service),
                    None => error(StatusCode::NOT_FOUND, &format!("no service named `{name}`")),
                }
            }
            (&Method::GET, ["services", name, "history"]) => self.history(name, &query).await,
            (&Method::GET, ["services", name, "shadow"]) => {
                let status = self.controller.status();
                match status.services.iter().find(|s| s.name == *name) {
                    Some(service) => {
                        json_response(StatusCode::OK, &service.shadow.clone().unwrap_or_default())
                    }
                    None => error(StatusCode::NOT_FOUND, &format!("no service named `{name}`")),
                }
            }
            (&Method::POST, ["services", name, "weight"]) => {
                let (weight, force) = match read_weight(request).await {
                    Ok(read) => read,
                    Err(message) => return error(StatusCode::BAD_REQUEST, &message),
                };
                self.control(name, Op::SetWeight { weight, force }, peer)
                    .await
            }
            (&Method::POST, ["services", name, verb]) => {
                let full = query_value(&query, "full").is_some_and(|v| v == "true" || v == "1");
                let op = match *verb {
                    "start" => Op::Start,
                    "pause" => Op::Pause,
                    "resume" => Op::Resume,
                    "promote" => Op::Promote { full },
                    "rollback" => Op::Rollback,
                    "retry" => Op::Retry,
                    _ => return error(StatusCode::NOT_FOUND, &format!("unknown action `{verb}`")),
                };
                self.control(name, op, peer).await
            }
            (&Method::POST, ["reload"]) => match self.controller.reload(ReloadSource::Api).await {
                Ok(version) => json_response(StatusCode::OK, &json!({ "version": version })),
                Err(errors) => json_response(StatusCode::BAD_REQUEST, &json!({ "errors": errors })),
            },
            (_, ["" | "healthz" | "metrics" | "status" | "reload"]) | (_, ["services", ..]) => {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("{method} is not allowed on {path}"),
                )
            }
            _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        }
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let token = self.token.load();
        let Some(expected) = token.as_ref() else {
            return true;
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
    }

    /// The decision log of a service, from `since` on (RFC 3339) or whole; with `limit`,
    /// only the newest that many records of those.
    async fn history(&self, name: &str, query: &str) -> Response<Full<Bytes>> {
        if !self
            .controller
            .status()
            .services
            .iter()
            .any(|s| s.name == name)
        {
            return error(StatusCode::NOT_FOUND, &format!("no service named `{name}`"));
        }
        // `since` or `limit` without a value is an error, not the whole history.
        let since = query_value(query, "since")
            .map(|value| crate::evidence::log::parse_since(&value))
            .transpose();
        let since = match since {
            Ok(since) => since,
            Err(err) => return error(StatusCode::BAD_REQUEST, &err.to_string()),
        };
        // Digits only; a number too large for memory is as good as all of it.
        let digits = |value: &str| !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        let limit = match query_value(query, "limit") {
            None => None,
            Some(value) if digits(&value) && value.bytes().any(|b| b != b'0') => {
                Some(value.parse::<usize>().unwrap_or(usize::MAX))
            }
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`limit` must be a whole number of records, at least 1",
                )
            }
        };
        let path = self.controller.history_path(name);
        // Up to two 16 MiB files: read off the admin's runtime thread.
        let read =
            tokio::task::spawn_blocking(move || crate::evidence::log::read_since(&path, since))
                .await;
        match read {
            Ok(Ok(mut entries)) => {
                if let Some(limit) = limit {
                    entries.drain(..entries.len().saturating_sub(limit));
                }
                json_response(StatusCode::OK, &entries)
            }
            Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        }
    }

    async fn control(&self, service: &str, op: Op, peer: SocketAddr) -> Response<Full<Bytes>> {
        let client = Some(peer.to_string());
        match self.controller.control_from(service, op, client).await {
            Ok(Controlled { status, note: None }) => json_response(StatusCode::OK, &status),
            Ok(Controlled {
                status,
                note: Some(note),
            }) => {
                // The status, with what the operator must know: the verb changed nothing.
                let mut body = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
                if let Some(object) = body.as_object_mut() {
                    object.insert("note".into(), json!(note));
                }
                json_response(StatusCode::OK, &body)
            }
            Err(err @ ControlError::UnknownService(_)) => {
                error(StatusCode::NOT_FOUND, &err.to_string())
            }
            Err(err @ (ControlError::Refused(_) | ControlError::NoRollout(_))) => {
                error(StatusCode::CONFLICT, &err.to_string())
            }
            Err(err @ (ControlError::Persist(_) | ControlError::Gone)) => {
                error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string())
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: serde_json::Value,
    #[serde(default)]
    force: bool,
}

/// `{"weight": 30}`, `{"weight": 0.5}` or `{"weight": "25%"}`, with `"force": true` to
/// lower it.
async fn read_weight(request: Request<Incoming>) -> Result<(Weight, bool), String> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| format!("cannot read the body: {err}"))?
        .to_bytes();
    let parsed: WeightBody = serde_json::from_slice(&body).map_err(|err| {
        format!("expected {{\"weight\": <percent>}} or {{\"weight\": <percent>, \"force\": true}}: {err}")
    })?;
    let percent = match parsed.weight {
        serde_json::Value::Number(n) => n.as_f64().ok_or("the weight is not a number")?,
        serde_json::Value::String(s) => crate::config::parse_percent(&s)?,
        _ => return Err("the weight is a number of percent, like 30".to_string()),
    };
    let weight = Weight::from_percent(percent).ok_or_else(|| weight_hint(percent))?;
    Ok((weight, parsed.force))
}

/// Why a number of percent is not a weight, with the nearest ones that are.
pub(crate) fn weight_hint(percent: f64) -> String {
    if !(0.0..=100.0).contains(&percent) {
        return format!("{percent}% is not a weight: NEW's share is 0..100%");
    }
    let below = (percent * 100.0).floor() / 100.0;
    let above = (percent * 100.0).ceil() / 100.0;
    format!(
        "{percent}% is not a weight: NEW's share is set in steps of 0.01% (a sticky bucket \
         is one of 10000), like {below}% or {above}%"
    )
}

/// The status page: one file, its script and style inline. The policy lets the browser load
/// nothing from elsewhere and talk only to this admin API; no framing, so its buttons cannot
/// be clicked through another site's page.
fn status_page() -> Response<Full<Bytes>> {
    let mut response = text(
        StatusCode::OK,
        include_str!("page.html"),
        "text/html; charset=utf-8",
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn text(status: StatusCode, body: &str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

/// Refused admin requests are logged at most once per this long.
static REFUSED_LOG: LogLimit = LogLimit::new(10_000);

/// Admits one log line per `every_ms`, counting the ones it held back.
#[derive(Debug)]
struct LogLimit {
    every_ms: u64,
    /// When the next line may be written (0: now); `u64::MAX` never happens.
    next_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimit {
    const fn new(every_ms: u64) -> LogLimit {
        LogLimit {
            every_ms,
            next_ms: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    fn admit(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let next = self.next_ms.load(Relaxed);
        let due = now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms + self.every_ms, Relaxed, Relaxed)
                .is_ok();
        if due {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Decodes `%XX` escapes (a `+` in an RFC 3339 offset arrives as `%2B`).
/// The value of the first `name=` in a query string, percent-decoded; `""` for a bare
/// `name`, `None` when it is absent.
fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod log_limit_tests {
    use super::LogLimit;

    #[test]
    fn one_line_per_period_with_the_count_of_the_rest() {
        let limit = LogLimit::new(10_000);
        assert_eq!(limit.admit(5), Some(0));
        let admitted = (0..18_000)
            .filter(|i| limit.admit(6 + i / 10).is_some())
            .count();
        assert_eq!(admitted, 0, "all within the first 10 s");
        assert_eq!(limit.admit(10_005), Some(18_000));
        assert_eq!(limit.admit(10_006), None);
    }
}

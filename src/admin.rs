//! The admin API (SPEC §5): JSON over HTTP/1.1 on `admin.addr`.
//!
//! ```text
//! GET  /healthz                 200 "ok"                         (no token needed)
//! GET  /metrics                 OpenMetrics text                 (no token needed)
//! GET  /status                  every service and the config
//! GET  /services/{name}         one service
//! POST /services/{name}/{start|pause|resume|promote|rollback|retry}   ?full=true for promote
//! POST /services/{name}/weight  {"weight": 30}
//! POST /reload                  200 {version} | 400 {errors: [...]}
//! ```
//!
//! With a token configured, everything else needs `Authorization: Bearer <token>`,
//! compared in constant time. Unknown service → 404, refused transition → 409 with the
//! reason, bad body → 400. The API never changes anything itself: it sends commands to
//! the controller and reads the status it publishes.

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
use crate::rollout::controller::{AdminToken, ControlError, ControllerHandle, Op, ReloadSource};

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
        let public = method == Method::GET && (path == "/healthz" || path == "/metrics");
        if !public && !self.authorized(&request) {
            tracing::warn!(%peer, %method, %path, "admin request without a valid token");
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer <token>` is required",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let query = request.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => {
                text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8")
            }
            (&Method::GET, ["metrics"]) => text(
                StatusCode::OK,
                &self.metrics.encode(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (&Method::GET, ["status"]) => json_response(StatusCode::OK, &*self.controller.status()),
            (&Method::GET, ["services", name]) => {
                let status = self.controller.status();
                match status.services.iter().find(|s| s.name == *name) {
                    Some(service) => json_response(StatusCode::OK, service),
                    None => error(StatusCode::NOT_FOUND, &format!("no service named `{name}`")),
                }
            }
            (&Method::POST, ["services", name, "weight"]) => {
                let weight = match read_weight(request).await {
                    Ok(weight) => weight,
                    Err(message) => return error(StatusCode::BAD_REQUEST, &message),
                };
                self.control(name, Op::SetWeight(weight)).await
            }
            (&Method::POST, ["services", name, verb]) => {
                let full = query
                    .split('&')
                    .any(|pair| pair == "full=true" || pair == "full=1");
                let op = match *verb {
                    "start" => Op::Start,
                    "pause" => Op::Pause,
                    "resume" => Op::Resume,
                    "promote" => Op::Promote { full },
                    "rollback" => Op::Rollback,
                    "retry" => Op::Retry,
                    _ => return error(StatusCode::NOT_FOUND, &format!("unknown action `{verb}`")),
                };
                self.control(name, op).await
            }
            (&Method::POST, ["reload"]) => match self.controller.reload(ReloadSource::Api).await {
                Ok(version) => json_response(StatusCode::OK, &json!({ "version": version })),
                Err(errors) => json_response(StatusCode::BAD_REQUEST, &json!({ "errors": errors })),
            },
            (_, ["healthz" | "metrics" | "status" | "reload"]) | (_, ["services", ..]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not allowed on {path}"),
            ),
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

    async fn control(&self, service: &str, op: Op) -> Response<Full<Bytes>> {
        match self.controller.control(service, op).await {
            Ok(status) => json_response(StatusCode::OK, &status),
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
}

/// `{"weight": 30}`, `{"weight": 0.5}` or `{"weight": "25%"}`.
async fn read_weight(request: Request<Incoming>) -> Result<Weight, String> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| format!("cannot read the body: {err}"))?
        .to_bytes();
    let parsed: WeightBody = serde_json::from_slice(&body)
        .map_err(|err| format!("expected {{\"weight\": <percent>}}: {err}"))?;
    let percent = match parsed.weight {
        serde_json::Value::Number(n) => n.as_f64().ok_or("the weight is not a number")?,
        serde_json::Value::String(s) => crate::config::parse_percent(&s)?,
        _ => return Err("the weight is a number of percent, like 30".to_string()),
    };
    Weight::from_percent(percent)
        .ok_or_else(|| format!("{percent} is not a weight: 0..100 in steps of 0.01"))
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

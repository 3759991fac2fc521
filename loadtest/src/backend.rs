//! A scripted HTTP/1.1 backend: answers every request with a configured
//! status (or a failure status with some probability) after a configured
//! delay, tagged with `X-Backend: <name>` so a load run can tell which pool
//! served it.
//!
//! Its behaviour can be changed while it runs, so a demo can break a "new"
//! pool on demand and watch the proxy roll back:
//!
//! * `POST /__loadtest/fail-rate?value=0.3` – fraction of requests that fail
//! * `POST /__loadtest/delay?value=200ms`   – delay before every answer
//! * `GET  /__loadtest/state`               – current settings and counters
//!
//! It always stops by itself (`lifetime`) so a forgotten demo cannot leave a
//! server running forever, and it refuses non-loopback addresses unless asked.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::duration::{format_duration, parse_duration};

/// Path prefix of the runtime control endpoints.
pub const CONTROL_PREFIX: &str = "/__loadtest/";
/// Header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";
/// Longest delay the control endpoint accepts: longer would only make the
/// backend look dead, and load runs time out well before.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Request bodies are read (so keep-alive works) but only up to this size.
const MAX_REQUEST_BODY: usize = 1 << 20;

/// How the backend behaves at start.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    /// Allow binding an address that is not loopback.
    pub allow_remote: bool,
    pub name: String,
    pub status: u16,
    pub delay: Duration,
    pub fail_rate: f64,
    pub fail_status: u16,
    pub body: String,
    pub lifetime: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_remote: false,
            name: "backend".to_string(),
            status: 200,
            delay: Duration::ZERO,
            fail_rate: 0.0,
            fail_status: 500,
            body: "ok\n".to_string(),
            lifetime: Duration::from_secs(600),
        }
    }
}

/// Why a backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("refusing to listen on non-loopback address {0} (pass --allow-remote if you mean it)")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("--name {0:?} is not a valid header value")]
    Name(String),
    #[error("invalid status code {0}")]
    Status(u16),
    #[error("--fail-rate must be between 0 and 1, got {0}")]
    FailRate(f64),
    #[error("--delay must be at most {}", format_duration(MAX_DELAY))]
    Delay,
}

/// Why the backend stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `stop`/`run_until` was called (or the handle dropped), e.g. on a signal.
    Requested,
    /// `lifetime` ran out.
    Lifetime,
    /// The accept loop panicked (a bug).
    Crashed,
}

/// Counters at the time the backend stopped.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSummary {
    pub requests: u64,
    pub failed: u64,
    pub reason: StopReason,
}

/// A running backend. Dropping the handle stops it too.
pub struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<StopReason>,
}

impl Backend {
    /// Validates the configuration, binds, and starts serving in the
    /// background.
    pub async fn start(config: BackendConfig) -> Result<Self, BackendError> {
        if !config.allow_remote && !config.listen.ip().is_loopback() {
            return Err(BackendError::NotLoopback(config.listen));
        }
        let state = Arc::new(State::new(&config)?);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| BackendError::Bind(config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BackendError::Bind(config.listen, e))?;
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&state),
            config.lifetime,
            stop_rx,
        ));
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that changes the fail rate and delay while the backend runs,
    /// without going through the HTTP control endpoints.
    pub fn control(&self) -> BackendControl {
        BackendControl(Arc::clone(&self.state))
    }

    /// Serves until `stop` completes or the lifetime runs out, whichever is
    /// first, then closes every connection.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> BackendSummary {
        let Backend {
            state,
            stop: stop_tx,
            mut task,
            ..
        } = self;
        let finished = tokio::select! {
            reason = &mut task => Some(reason),
            () = stop => None,
        };
        let reason = match finished {
            Some(reason) => reason,
            None => {
                let _ = stop_tx.send(());
                (&mut task).await
            }
        };
        BackendSummary {
            requests: state.requests.load(Ordering::Relaxed),
            failed: state.failed.load(Ordering::Relaxed),
            reason: reason.unwrap_or(StopReason::Crashed),
        }
    }

    /// Stops now.
    pub async fn stop(self) -> BackendSummary {
        self.run_until(async {}).await
    }
}

/// Changes a running backend's behaviour in process (the scenario runner
/// injects its faults this way); it keeps working after the backend stopped,
/// with no effect.
#[derive(Clone)]
pub struct BackendControl(Arc<State>);

impl BackendControl {
    /// Fraction of requests (0..=1) answered with the failure status.
    pub fn set_fail_rate(&self, rate: f64) -> Result<(), BackendError> {
        self.0.set_fail_rate(rate)
    }

    /// Delay before every answer.
    pub fn set_delay(&self, delay: Duration) -> Result<(), BackendError> {
        self.0.set_delay(delay)
    }
}

/// Settings shared by all connections; the mutable ones are atomics so the
/// control endpoints can change them without locking the request path.
struct State {
    name: HeaderValue,
    status: StatusCode,
    fail_status: StatusCode,
    body: Bytes,
    /// `f64::to_bits` of the failure probability.
    fail_rate_bits: AtomicU64,
    delay_micros: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
}

impl State {
    fn new(config: &BackendConfig) -> Result<Self, BackendError> {
        let name = HeaderValue::from_str(&config.name)
            .map_err(|_| BackendError::Name(config.name.clone()))?;
        let status = parse_status(config.status)?;
        let fail_status = parse_status(config.fail_status)?;
        let state = Self {
            name,
            status,
            fail_status,
            body: Bytes::from(config.body.clone()),
            fail_rate_bits: AtomicU64::new(0),
            delay_micros: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        };
        state.set_fail_rate(config.fail_rate)?;
        state.set_delay(config.delay)?;
        Ok(state)
    }

    fn fail_rate(&self) -> f64 {
        f64::from_bits(self.fail_rate_bits.load(Ordering::Relaxed))
    }

    fn set_fail_rate(&self, rate: f64) -> Result<(), BackendError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(BackendError::FailRate(rate));
        }
        self.fail_rate_bits.store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }

    fn set_delay(&self, delay: Duration) -> Result<(), BackendError> {
        if delay > MAX_DELAY {
            return Err(BackendError::Delay);
        }
        let micros = u64::try_from(delay.as_micros()).map_err(|_| BackendError::Delay)?;
        self.delay_micros.store(micros, Ordering::Relaxed);
        Ok(())
    }
}

fn parse_status(code: u16) -> Result<StatusCode, BackendError> {
    StatusCode::from_u16(code).map_err(|_| BackendError::Status(code))
}

/// Accepts connections until stopped or the lifetime ends. Connection tasks
/// live in a `JoinSet` so that returning from here aborts all of them: a
/// stopped backend really is gone, even with keep-alive clients attached.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    lifetime: Duration,
    mut stop: oneshot::Receiver<()>,
) -> StopReason {
    let deadline = tokio::time::sleep(lifetime);
    tokio::pin!(deadline);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut deadline => return StopReason::Lifetime,
            // Resolves on an explicit stop and when the handle is dropped.
            _ = &mut stop => return StopReason::Requested,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state)));
                }
                Err(e) => {
                    // Usually fd exhaustion; back off instead of spinning.
                    eprintln!("loadtest backend: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| handle(Arc::clone(&state), request));
    // Errors here are clients going away mid-request: normal under load
    // tests with timeouts, and nothing the backend can act on.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(command) = request.uri().path().strip_prefix(CONTROL_PREFIX) {
        return Ok(control(&state, command, request.method(), request.uri()));
    }
    // Read (and discard) the body so the connection can be kept alive.
    let _ = Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await;
    let delay = state.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // random() is in [0, 1): a rate of 0 never fails, 1 always does.
    let failed = rand::random::<f64>() < state.fail_rate();
    state.requests.fetch_add(1, Ordering::Relaxed);
    let status = if failed {
        state.failed.fetch_add(1, Ordering::Relaxed);
        state.fail_status
    } else {
        state.status
    };
    Ok(respond(&state, status, state.body.clone()))
}

/// Handles `/__loadtest/<command>`.
fn control(state: &State, command: &str, method: &Method, uri: &Uri) -> Response<Full<Bytes>> {
    let value = query_value(uri, "value");
    match (command, method) {
        ("state", &Method::GET) => state_response(state),
        ("fail-rate", &Method::POST) => {
            let parsed = value.and_then(|v| v.parse::<f64>().ok());
            match parsed.map(|rate| state.set_fail_rate(rate)) {
                Some(Ok(())) => text(
                    state,
                    StatusCode::OK,
                    format!("fail-rate {}\n", state.fail_rate()),
                ),
                Some(Err(e)) => text(state, StatusCode::BAD_REQUEST, format!("{e}\n")),
                None => text(
                    state,
                    StatusCode::BAD_REQUEST,
                    "expected ?value=0.3\n".into(),
                ),
            }
        }
        ("delay", &Method::POST) => {
            let parsed = value.map(parse_duration);
            match parsed {
                Some(Ok(delay)) => match state.set_delay(delay) {
                    Ok(()) => text(
                        state,
                        StatusCode::OK,
                        format!("delay {}\n", format_duration(delay)),
                    ),
                    Err(e) => text(state, StatusCode::BAD_REQUEST, format!("{e}\n")),
                },
                Some(Err(e)) => text(state, StatusCode::BAD_REQUEST, format!("{e}\n")),
                None => text(
                    state,
                    StatusCode::BAD_REQUEST,
                    "expected ?value=200ms\n".into(),
                ),
            }
        }
        ("state" | "fail-rate" | "delay", _) => text(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            "wrong method\n".into(),
        ),
        _ => text(
            state,
            StatusCode::NOT_FOUND,
            "unknown control endpoint\n".into(),
        ),
    }
}

/// Current settings and counters, for scripts and tests.
fn state_response(state: &State) -> Response<Full<Bytes>> {
    let snapshot = serde_json::json!({
        "name": String::from_utf8_lossy(state.name.as_bytes()),
        "status": state.status.as_u16(),
        "fail_status": state.fail_status.as_u16(),
        "fail_rate": state.fail_rate(),
        "delay_ms": state.delay().as_secs_f64() * 1e3,
        "requests": state.requests.load(Ordering::Relaxed),
        "failed": state.failed.load(Ordering::Relaxed),
    });
    let mut response = respond(state, StatusCode::OK, Bytes::from(snapshot.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(state: &State, status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(state, status, Bytes::from(body))
}

fn respond(state: &State, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(BACKEND_HEADER), state.name.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The raw value of `key` in the query string. No percent-decoding: the
/// values we accept (`0.3`, `200ms`) never need it.
fn query_value<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        let uri: Uri = "/__loadtest/delay?x=1&value=200ms".parse().expect("uri");
        assert_eq!(query_value(&uri, "value"), Some("200ms"));
        assert_eq!(query_value(&uri, "missing"), None);
        let bare: Uri = "/__loadtest/delay".parse().expect("uri");
        assert_eq!(query_value(&bare, "value"), None);
    }

    #[tokio::test]
    async fn rejects_bad_config() {
        let remote = BackendConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..BackendConfig::default()
        };
        assert!(matches!(
            Backend::start(remote).await,
            Err(BackendError::NotLoopback(_))
        ));
        let bad_rate = BackendConfig {
            fail_rate: 1.5,
            ..BackendConfig::default()
        };
        assert!(matches!(
            Backend::start(bad_rate).await,
            Err(BackendError::FailRate(_))
        ));
        let bad_status = BackendConfig {
            status: 1000,
            ..BackendConfig::default()
        };
        assert!(matches!(
            Backend::start(bad_status).await,
            Err(BackendError::Status(1000))
        ));
    }

    #[tokio::test]
    async fn stops_at_end_of_lifetime() {
        let config = BackendConfig {
            lifetime: Duration::from_millis(50),
            ..BackendConfig::default()
        };
        let backend = Backend::start(config).await.expect("start");
        let summary = backend.run_until(std::future::pending()).await;
        assert_eq!(summary.reason, StopReason::Lifetime);
    }
}

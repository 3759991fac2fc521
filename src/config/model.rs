//! Validated configuration: the types the rest of cutover uses.
//!
//! Everything here has been checked by `validate/`: addresses parse, files exist, hooks that
//! steps name are defined, weights are within 0–100%. Values are in the units the code
//! wants (`Weight` in basis points, rates as fractions, `Duration`s), never as written.
//! How values are written (`5%`, `30s`, `64KiB`) is parsed in `units.rs`; default values
//! live in `defaults.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};

pub use super::units::{parse_bytes, parse_duration, parse_percent, Weight, MAX_DURATION};

#[derive(Debug, Clone)]
pub struct Config {
    pub origin: Origin,
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub state_dir: PathBuf,
    pub limits: Limits,
    pub services: Vec<Service>,
    /// Fleet mode (SPEC §11); `None`: one process, state in `state_dir`.
    pub fleet: Option<Fleet>,
    /// `log_format`: how the log and the access log are written (read at start).
    pub log_format: LogFormat,
    /// `access_log`: where a line per request goes; `None`: off, and free.
    pub access_log: Option<AccessLogTarget>,
}

/// `log_format: text | json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `access_log: stdout | stderr | PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Stderr,
    /// Absolute (relative paths are resolved against the config's directory).
    File(PathBuf),
}

/// `fleet:`: several proxies sharing one rollout through etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// `http://host:port` or `https://host:port`.
    pub etcd: Vec<String>,
    /// Without a trailing `/`; every key of the fleet is under `prefix/`.
    pub prefix: String,
    pub instance: String,
    pub lease_ttl: Duration,
    pub tls: Option<FleetTls>,
}

/// PEM bytes, read when the config is loaded so that a missing file is a config error.
#[derive(Clone, PartialEq)]
pub struct FleetTls {
    pub ca: Vec<u8>,
    /// Certificate and key for client authentication, both or neither.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for FleetTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetTls")
            .field("ca_bytes", &self.ca.len())
            .field("client_identity", &self.identity.is_some())
            .finish()
    }
}

/// The files a config was read from, and the hashes that tell whether they changed.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The config file (absolute).
    pub path: PathBuf,
    /// Relative paths in the file are relative to this directory.
    pub dir: PathBuf,
    /// A short hash of the file's bytes.
    pub version: String,
    /// A hash of the file and of every file it reads (certificates, keys, token).
    pub inputs: String,
    /// The files it reads besides itself.
    pub read: Vec<PathBuf>,
}

impl Config {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl Origin {
    /// The directories whose changes may change this config: its own and those of the
    /// files it reads.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        for file in &self.read {
            if let Some(dir) = file.parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        dirs
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    /// As written; listeners are matched across reloads by this text.
    pub addr_text: String,
    pub addr: SocketAddr,
    pub tls: Option<Arc<TlsSettings>>,
}

#[derive(Debug)]
pub struct TlsSettings {
    /// In the file's order; the first is served when the client sends no SNI or an
    /// unknown name.
    pub certificates: Vec<Arc<LoadedCertificate>>,
}

pub struct LoadedCertificate {
    pub cert_path: PathBuf,
    pub key: Arc<rustls::sign::CertifiedKey>,
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<Arc<str>>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Request bodies up to this size are read whole before a backend is chosen.
    pub request_buffer: usize,
    /// How long a client may take to send the buffered part of its request body.
    pub body_read_timeout: Duration,
    /// How long a client may leave the answer unread (between two writes that move): past
    /// it, its connection closes, and with it the backend's.
    pub send_timeout: Duration,
    /// HTTP/2 streams one client connection may have open at once.
    pub max_concurrent_streams: u32,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub matcher: Matcher,
    pub old: PoolSpec,
    pub new: PoolSpec,
    pub balance: Balance,
    pub sticky: Option<Sticky>,
    pub timeouts: Timeouts,
    /// Extra attempts after a connect failure, each on another backend of the pool.
    pub retries: u32,
    pub outlier: Outlier,
    pub health_check: Option<HealthCheck>,
    /// The split when there is no rollout (and before a rollout starts).
    pub weight: Weight,
    pub rollout: Option<RolloutSpec>,
    pub smoke: Vec<SmokeRequest>,
    pub hooks: Vec<Arc<Hook>>,
}

impl Service {
    pub fn hook(&self, name: &str) -> Option<&Arc<Hook>> {
        self.hooks.iter().find(|h| h.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matcher {
    /// Lowercase; empty matches every host.
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub backends: Vec<BackendSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// `host:port` as written; a name is resolved at connect time.
    pub addr: String,
    pub weight: u32,
    /// Requests this backend may have in flight (each holds one connection).
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Random,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sticky {
    Cookie(String),
    Header(HeaderName),
    ClientIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the backend's response headers.
    pub request: Duration,
    /// How long an unused keep-alive connection to a backend is kept.
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
    /// The largest fraction of a pool that may be ejected at once.
    pub max_ejected: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    Auto,
    Manual,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    pub start: StartMode,
    pub steps: Vec<Step>,
    pub analysis: Option<AnalysisSpec>,
    /// Identifies the steps, so a reload or restart can tell that they changed.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub point_of_no_return: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Weight {
        weight: Weight,
        hold: Duration,
    },
    Pause,
    Gate {
        hook: String,
    },
    Run {
        hook: String,
    },
    /// The service's smoke requests against every NEW backend, and or a benchmark of
    /// NEW against OLD (SPEC §9).
    Verify(super::VerifySpec),
    /// Copies of OLD's requests to NEW, answers compared (SPEC §9).
    Shadow(super::ShadowSpec),
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKind::Weight { weight, hold } => {
                write!(
                    f,
                    "weight {weight} hold {}",
                    humantime::format_duration(*hold)
                )
            }
            StepKind::Pause => f.write_str("pause"),
            StepKind::Gate { hook } => write!(f, "gate {hook}"),
            StepKind::Run { hook } => write!(f, "run {hook}"),
            StepKind::Verify(spec) => write!(f, "{spec}"),
            StepKind::Shadow(spec) => write!(f, "{spec}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSpec {
    pub interval: Duration,
    pub window: Duration,
    pub min_requests: u64,
    pub failure_threshold: u32,
    pub rules: AnalysisRules,
    pub trip: Option<TripSpec>,
    /// How checks judge (`analysis.method`, SPEC §10).
    pub method: AnalysisMethod,
    /// How long a step may stay inconclusive before it pauses for "not enough evidence";
    /// `None`: 3 × the step's hold, at least 10 minutes.
    pub max_wait: Option<Duration>,
}

/// The limits a check holds NEW to; `None`: the rule is off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalysisRules {
    /// NEW's error rate, as a fraction.
    pub max_error_rate: Option<f64>,
    /// NEW's error rate minus OLD's, as a fraction.
    pub max_error_rate_increase: Option<f64>,
    pub max_p99_latency: Option<Duration>,
    /// NEW's p99 over OLD's.
    pub max_p99_latency_ratio: Option<f64>,
}

impl AnalysisRules {
    /// Whether any rule is on.
    pub fn any(&self) -> bool {
        self.max_error_rate.is_some()
            || self.max_error_rate_increase.is_some()
            || self.max_p99_latency.is_some()
            || self.max_p99_latency_ratio.is_some()
    }
}

#[cfg(test)]
impl AnalysisSpec {
    /// The analysis of SPEC §2's example (30 s checks over 2 minutes, at least 100
    /// requests, 3 failures; 1% errors, +0.5% over OLD, p99 500 ms and 1.5× OLD), no trip:
    /// the fixture tests start from and change what they are about.
    pub(crate) fn example() -> AnalysisSpec {
        AnalysisSpec {
            interval: Duration::from_secs(30),
            window: Duration::from_secs(120),
            min_requests: 100,
            failure_threshold: 3,
            rules: AnalysisRules {
                max_error_rate: Some(0.01),
                max_error_rate_increase: Some(0.005),
                max_p99_latency: Some(Duration::from_millis(500)),
                max_p99_latency_ratio: Some(1.5),
            },
            method: AnalysisMethod::Threshold,
            max_wait: None,
            trip: None,
        }
    }

    /// SPEC §2's trip: 25% errors over at least 20 requests in 10 s.
    pub(crate) fn example_trip() -> TripSpec {
        TripSpec {
            error_rate: 0.25,
            min_requests: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// `analysis.method`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum AnalysisMethod {
    /// Point estimates against the limits.
    #[default]
    Threshold,
    /// Confidence bounds against the limits; `confidence` is a fraction (0.99).
    Statistical { confidence: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TripSpec {
    pub error_rate: f64,
    pub min_requests: u64,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmokeRequest {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<String>,
    /// Any of these passes.
    pub expect_status: Vec<u16>,
    pub expect_body_contains: Option<String>,
    /// Header name → a substring its value must contain (case-insensitive).
    pub expect_header: Vec<(HeaderName, String)>,
}

#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub action: HookAction,
    pub timeout: Duration,
    /// Gates: how long to wait between attempts.
    pub every: Duration,
    /// Gates: give up after this long.
    pub deadline: Option<Duration>,
    pub on_deadline: OnDeadline,
    /// `run` steps: further attempts after a failure.
    pub retries: u32,
    pub on: Vec<HookEvent>,
    /// Exec hooks: variables set for the hook (`env:`).
    pub env: Vec<(String, String)>,
    /// Exec hooks: cutover's own variables handed on (`pass_env:`), by name or `PREFIX_*`.
    pub pass_env: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum HookAction {
    Exec {
        argv: Vec<String>,
    },
    Http {
        url: Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeadline {
    Pause,
    Rollback,
}

/// The events hooks can subscribe to (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookEvent {
    Started,
    StepStarted,
    StepCompleted,
    CheckFailed,
    Paused,
    Resumed,
    Promoted,
    Rollback,
    Reloaded,
}

names! {
    HookEvent: pub fn as_str, pub const ALL {
        Started => "started",
        StepStarted => "step_started",
        StepCompleted => "step_completed",
        CheckFailed => "check_failed",
        Paused => "paused",
        Resumed => "resumed",
        Promoted => "promoted",
        Rollback => "rollback",
        Reloaded => "reloaded",
    }
}

impl HookEvent {
    pub fn parse(text: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_events_round_trip() {
        for event in HookEvent::ALL {
            assert_eq!(HookEvent::parse(event.as_str()), Some(event));
        }
        assert_eq!(HookEvent::parse("rollbacks"), None);
    }
}

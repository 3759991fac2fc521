//! Validated configuration: the types the rest of cutover uses.
//!
//! Everything here has been checked by `validate/`: addresses parse, files exist, hooks that
//! steps name are defined, weights are within 0–100%. Values are in the units the code
//! wants (`Weight` in basis points, rates as fractions, `Duration`s), never as written.
//! The parsers of how values are written (`5%`, `30s`, `64KiB`) live here too, next to
//! the types they produce; default values live in `defaults.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};

/// NEW's share of traffic, in basis points: 0 ..= 10 000 (0.01% steps).
///
/// A sticky user's bucket `b` (0..9999) goes to NEW iff `b < weight.basis_points()`, which
/// is what makes raising the weight move users only from old to new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u16);

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const FULL: Weight = Weight(10_000);

    pub fn from_basis_points(bp: u16) -> Option<Weight> {
        (bp <= 10_000).then_some(Weight(bp))
    }

    /// From a percentage; `None` when outside 0–100 or finer than 0.01%.
    pub fn from_percent(percent: f64) -> Option<Weight> {
        if !(0.0..=100.0).contains(&percent) {
            return None;
        }
        let bp = percent * 100.0;
        if (bp - bp.round()).abs() > 1e-6 {
            return None;
        }
        Some(Weight(bp.round() as u16))
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

/// In files and JSON a weight is its percentage, like `25` or `0.5`.
impl serde::Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.percent())
    }
}

impl<'de> serde::Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let percent = f64::deserialize(deserializer)?;
        Weight::from_percent(percent).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "weight {percent} is not a percentage in 0..100 with at most two decimals"
            ))
        })
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 100 == 0 {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}%", self.percent())
        }
    }
}

/// `5%`, `0.5%` or a bare number (a percent too); returns the percentage.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(p),
        Ok(_) => Err(format!("`{trimmed}` is outside 0%..100%")),
        Err(_) => Err(format!(
            "`{trimmed}` is not a percentage; write it like `5%` or `0.5%`"
        )),
    }
}

/// The longest duration any setting takes. Deadlines are `Instant + duration`, and an
/// unbounded value overflows that on every request; nothing an operator means lasts longer.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

const DURATION_UNITS: &str = "durations use ms, s, m, h, d (e.g. 30m, 1h30m)";

/// `250ms`, `30s`, `10m`, `2h`, `1d`, `1h30m`: whole numbers with exactly these units, at
/// most `MAX_DURATION`. `30M`, `1y`, `1.5h` and `30 minutes` are refused with a hint rather
/// than read as something the operator did not mean.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {DURATION_UNITS}"));
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{text}` needs a unit, like `{text}s` or `{text}ms`"
        ));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "`{text}`: write durations without spaces; {DURATION_UNITS}"
        ));
    }
    let too_long = || format!("`{text}` is longer than the maximum of 30d");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; {DURATION_UNITS}"));
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let millis: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{text}`: `{number}` needs a unit; {DURATION_UNITS}"
                ))
            }
            _ if unit.starts_with('.') => {
                return Err(format!(
                    "`{text}`: fractions are not accepted; write `1h30m` or `90m` instead of \
                     `1.5h`"
                ))
            }
            _ => return Err(format!("`{text}`: unknown unit `{unit}`; {DURATION_UNITS}")),
        };
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(millis))
            .ok_or_else(too_long)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(too_long)?;
        rest = next;
    }
    if total > MAX_DURATION {
        return Err(too_long());
    }
    Ok(total)
}

/// `65536`, `64KiB`, `1MiB`, `64KB`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1024,
        "KB" | "kB" => 1000,
        "MiB" | "M" => 1024 * 1024,
        "MB" => 1_000_000,
        _ => {
            return Err(format!(
                "`{text}` is not a size; write it like `64KiB` or `65536`"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size; write it like `64KiB` or `65536`"))
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (absolute).
    pub path: PathBuf,
    /// Relative paths in the file are relative to this directory.
    pub dir: PathBuf,
    /// A short hash of the file's bytes.
    pub version: String,
    /// A hash of the file and of every file it reads (certificates, keys, token).
    pub inputs: String,
    /// The files it reads besides itself.
    pub read: Vec<PathBuf>,
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub state_dir: PathBuf,
    pub limits: Limits,
    pub services: Vec<Service>,
    /// Fleet mode (SPEC §11); `None`: one process, state in `state_dir`.
    pub fleet: Option<Fleet>,
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

impl Config {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

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
    /// The service's smoke requests against every NEW backend (SPEC §9).
    Verify,
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
            StepKind::Verify => f.write_str("verify smoke"),
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
    pub max_error_rate: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    pub max_p99_latency: Option<Duration>,
    pub max_p99_latency_ratio: Option<f64>,
    pub trip: Option<TripSpec>,
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

impl HookEvent {
    pub const ALL: [HookEvent; 9] = [
        HookEvent::Started,
        HookEvent::StepStarted,
        HookEvent::StepCompleted,
        HookEvent::CheckFailed,
        HookEvent::Paused,
        HookEvent::Resumed,
        HookEvent::Promoted,
        HookEvent::Rollback,
        HookEvent::Reloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Started => "started",
            HookEvent::StepStarted => "step_started",
            HookEvent::StepCompleted => "step_completed",
            HookEvent::CheckFailed => "check_failed",
            HookEvent::Paused => "paused",
            HookEvent::Resumed => "resumed",
            HookEvent::Promoted => "promoted",
            HookEvent::Rollback => "rollback",
            HookEvent::Reloaded => "reloaded",
        }
    }

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
    fn weight_from_percent_accepts_hundredths_only() {
        assert_eq!(Weight::from_percent(5.0), Some(Weight(500)));
        assert_eq!(Weight::from_percent(0.5), Some(Weight(50)));
        assert_eq!(Weight::from_percent(0.01), Some(Weight(1)));
        assert_eq!(Weight::from_percent(100.0), Some(Weight::FULL));
        assert_eq!(Weight::from_percent(0.005), None);
        assert_eq!(Weight::from_percent(100.5), None);
        assert_eq!(Weight::from_percent(-1.0), None);
    }

    #[test]
    fn weight_displays_as_written() {
        assert_eq!(Weight(500).to_string(), "5%");
        assert_eq!(Weight(50).to_string(), "0.5%");
        assert_eq!(Weight(2550).to_string(), "25.5%");
        assert_eq!(Weight::FULL.to_string(), "100%");
    }

    #[test]
    fn durations_take_exactly_the_documented_units() {
        let ok = [
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("0s", 0),
            (" 30d ", 2_592_000_000),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        let refused = [
            ("30M", "unknown unit `M`; durations use ms, s, m, h, d"),
            ("1y", "unknown unit `y`"),
            ("1.5h", "fractions are not accepted"),
            ("30 minutes", "without spaces"),
            ("30minutes", "unknown unit `minutes`"),
            ("30", "needs a unit"),
            ("1h30", "`30` needs a unit"),
            ("-5s", "not a duration"),
            ("", "empty duration"),
            ("31d", "longer than the maximum of 30d"),
            ("18446744073709551615s", "longer than the maximum"),
            ("18446744073709551615ms", "longer than the maximum"),
            ("99999999999999999999999h", "longer than the maximum"),
        ];
        for (text, hint) in refused {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(hint), "{text}: {err}");
        }
    }

    #[test]
    fn hook_events_round_trip() {
        for event in HookEvent::ALL {
            assert_eq!(HookEvent::parse(event.as_str()), Some(event));
        }
        assert_eq!(HookEvent::parse("rollbacks"), None);
    }
}

//! The serde mirror of the YAML file. Nothing outside `config` uses these types.
//!
//! Every field is optional and keeps its position: what is required, and what a value
//! means, is decided in `validate/`, which reports all problems together. Durations,
//! percentages and names of things are kept as written (`Spanned<String>`) for the same
//! reason. `deny_unknown_fields` is a safety net; the deserializer reports unknown keys
//! itself, every one of them, with a suggestion.

use schemars::JsonSchema;
use serde::Deserialize;

use super::de::{Entries, Present, Spanned};
#[allow(unused_imports)] // named only inside `#[schemars(with = ...)]`
use super::schema::{
    AccessLog, Address, Balance, Duration, Events, HttpMethod, LogFormat, OnDeadline, Percent,
    ServiceName, Size, StartMode, UrlPath,
};

type Text = Option<Spanned<String>>;
type Number = Option<Spanned<u64>>;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub listeners: Option<Spanned<Vec<Spanned<ListenerFile>>>>,
    pub admin: Option<Spanned<AdminFile>>,
    pub state_dir: Text,
    pub limits: Option<LimitsFile>,
    pub services: Option<Spanned<Vec<Spanned<ServiceFile>>>>,
    pub fleet: Option<Spanned<FleetFile>>,
    #[schemars(with = "Option<LogFormat>")]
    pub log_format: Text,
    #[schemars(with = "Option<AccessLog>")]
    pub access_log: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerFile {
    #[schemars(with = "Option<Address>")]
    pub addr: Text,
    pub tls: Option<Spanned<TlsFile>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub certificates: Option<Vec<Spanned<CertFile>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CertFile {
    pub cert: Text,
    pub key: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    #[schemars(with = "Option<Address>")]
    pub addr: Text,
    pub token_file: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    #[schemars(with = "Option<Duration>")]
    pub header_read_timeout: Text,
    #[schemars(with = "Option<Size>")]
    pub max_header_bytes: Text,
    pub max_connections: Number,
    #[schemars(with = "Option<Duration>")]
    pub shutdown_grace: Text,
    #[schemars(with = "Option<Size>")]
    pub request_buffer: Text,
    #[schemars(with = "Option<Duration>")]
    pub body_read_timeout: Text,
    pub max_concurrent_streams: Number,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceFile {
    #[schemars(with = "Option<ServiceName>")]
    pub name: Text,
    #[serde(rename = "match")]
    pub matcher: Option<MatchFile>,
    pub old: Option<Spanned<PoolFile>>,
    pub new: Option<Spanned<PoolFile>>,
    #[schemars(with = "Option<Balance>")]
    pub balance: Text,
    pub sticky: Option<Spanned<StickyFile>>,
    pub timeouts: Option<TimeoutsFile>,
    pub retries: Option<RetriesFile>,
    pub outlier: Option<OutlierFile>,
    pub health_check: Option<Spanned<HealthCheckFile>>,
    #[schemars(with = "Option<Percent>")]
    pub weight: Text,
    pub rollout: Option<Spanned<RolloutFile>>,
    pub smoke: Option<Vec<Spanned<SmokeFile>>>,
    pub hooks: Option<Entries<Spanned<HookFile>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MatchFile {
    pub hosts: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<UrlPath>")]
    pub path_prefix: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolFile {
    pub backends: Option<Vec<Spanned<BackendFile>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendFile {
    #[schemars(with = "Option<Address>")]
    pub addr: Text,
    pub weight: Number,
    pub max_connections: Number,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StickyFile {
    pub cookie: Text,
    pub header: Text,
    pub client_ip: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeoutsFile {
    #[schemars(with = "Option<Duration>")]
    pub connect: Text,
    #[schemars(with = "Option<Duration>")]
    pub request: Text,
    #[schemars(with = "Option<Duration>")]
    pub idle: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetriesFile {
    pub attempts: Number,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OutlierFile {
    pub consecutive_failures: Number,
    #[schemars(with = "Option<Duration>")]
    pub eject_for: Text,
    #[schemars(with = "Option<Percent>")]
    pub max_ejected: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckFile {
    #[schemars(with = "Option<UrlPath>")]
    pub path: Text,
    #[schemars(with = "Option<Duration>")]
    pub interval: Text,
    #[schemars(with = "Option<Duration>")]
    pub timeout: Text,
    pub healthy: Number,
    pub unhealthy: Number,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutFile {
    #[schemars(with = "Option<StartMode>")]
    pub start: Text,
    pub steps: Option<Spanned<Vec<Spanned<StepFile>>>>,
    pub schedule: Option<Spanned<ScheduleFile>>,
    pub analysis: Option<Spanned<AnalysisFile>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StepFile {
    #[schemars(with = "Option<Percent>")]
    pub weight: Text,
    #[schemars(with = "Option<Duration>")]
    pub hold: Text,
    pub gate: Text,
    pub verify: Text,
    pub shadow: Option<Spanned<ShadowFile>>,
    pub run: Text,
    #[serde(default)]
    pub pause: Present,
    pub point_of_no_return: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ShadowFile {
    #[schemars(with = "Option<Percent>")]
    pub percent: Text,
    #[schemars(with = "Option<Duration>")]
    pub hold: Text,
    pub min_requests: Number,
    #[schemars(with = "Option<Percent>")]
    pub max_mismatch: Text,
    pub methods: Option<Vec<Spanned<String>>>,
    pub compare: Option<Spanned<CompareFile>>,
    /// `auto` or `off`.
    pub noise: Text,
    pub max_in_flight: Number,
    #[schemars(with = "Option<Duration>")]
    pub timeout: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompareFile {
    pub status: Option<Spanned<bool>>,
    pub headers: Option<Vec<Spanned<String>>>,
    pub body: Option<Spanned<bool>>,
    pub ignore_json: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<Size>")]
    pub max_body: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleFile {
    #[schemars(with = "Option<Percent>")]
    pub start: Text,
    #[schemars(with = "Option<Percent>")]
    pub step: Text,
    #[schemars(with = "Option<Duration>")]
    pub every: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AnalysisFile {
    #[schemars(with = "Option<Duration>")]
    pub interval: Text,
    #[schemars(with = "Option<Duration>")]
    pub window: Text,
    pub min_requests: Number,
    pub failure_threshold: Number,
    #[schemars(with = "Option<Percent>")]
    pub max_error_rate: Text,
    #[schemars(with = "Option<Percent>")]
    pub max_error_rate_increase: Text,
    #[schemars(with = "Option<Duration>")]
    pub max_p99_latency: Text,
    pub max_p99_latency_ratio: Option<Spanned<f64>>,
    pub trip: Option<Spanned<TripFile>>,
    pub method: Text,
    pub confidence: Text,
    pub max_wait: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TripFile {
    #[schemars(with = "Option<Percent>")]
    pub error_rate: Text,
    pub min_requests: Number,
    #[schemars(with = "Option<Duration>")]
    pub window: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SmokeFile {
    #[schemars(with = "Option<HttpMethod>")]
    pub method: Text,
    #[schemars(with = "Option<UrlPath>")]
    pub path: Text,
    pub headers: Option<Entries<Spanned<String>>>,
    pub body: Text,
    pub expect_status: Option<Spanned<OneOrMany>>,
    pub expect_body_contains: Text,
    pub expect_header: Option<Entries<Spanned<String>>>,
}

/// `expect_status: 200` or `expect_status: [200, 201]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(u64),
    Many(Vec<u64>),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HookFile {
    pub exec: Option<Spanned<Vec<Spanned<String>>>>,
    pub http: Option<Spanned<HttpHookFile>>,
    #[schemars(with = "Option<Duration>")]
    pub timeout: Text,
    #[schemars(with = "Option<Duration>")]
    pub every: Text,
    #[schemars(with = "Option<Duration>")]
    pub deadline: Text,
    #[schemars(with = "Option<OnDeadline>")]
    pub on_deadline: Text,
    pub retries: Number,
    #[schemars(with = "Option<Events>")]
    pub on: Option<Vec<Spanned<String>>>,
    pub env: Option<Entries<Spanned<String>>>,
    pub pass_env: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpHookFile {
    pub url: Text,
    pub headers: Option<Entries<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetFile {
    pub etcd: Option<Spanned<Vec<Spanned<String>>>>,
    pub prefix: Text,
    pub instance: Text,
    #[schemars(with = "Option<Duration>")]
    pub lease_ttl: Text,
    pub tls: Option<Spanned<FleetTlsFile>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetTlsFile {
    pub ca: Text,
    pub cert: Text,
    pub key: Text,
}

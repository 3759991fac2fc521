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
/// A list whose items keep their own positions.
pub(super) type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub listeners: List<ListenerFile>,
    pub admin: Option<Spanned<AdminFile>>,
    pub state_dir: Text,
    pub limits: Option<LimitsFile>,
    pub services: List<ServiceFile>,
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
    #[schemars(with = "Option<Duration>")]
    pub send_timeout: Text,
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
    pub steps: List<StepFile>,
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
    #[schemars(with = "Option<VerifySchema>")]
    pub verify: Option<Spanned<VerifyFile>>,
    pub shadow: Option<Spanned<ShadowFile>>,
    pub run: Text,
    #[serde(default)]
    pub pause: Present,
    pub point_of_no_return: Option<Spanned<bool>>,
}

/// `verify: smoke`, or `verify: { smoke: true, benchmark: {...} }`.
///
/// Read by hand rather than as an untagged enum: serde buffers an untagged enum's input and
/// loses the positions `Spanned` needs. Unknown keys of the long form are kept here (with
/// their positions) for the validator to report, since only a derived struct gets the
/// deserializer's own unknown-key check.
#[derive(Debug, Default)]
pub(super) struct VerifyFile {
    /// The short form's text.
    pub short: Option<String>,
    pub smoke: Option<Spanned<bool>>,
    pub benchmark: Option<Spanned<BenchmarkFile>>,
    pub unknown: Vec<Spanned<String>>,
}

impl<'de> Deserialize<'de> for VerifyFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VerifyVisitor;
        impl<'de> serde::de::Visitor<'de> for VerifyVisitor {
            type Value = VerifyFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`smoke` or a mapping with `smoke` and `benchmark`")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<VerifyFile, E> {
                Ok(VerifyFile {
                    short: Some(text.to_string()),
                    ..VerifyFile::default()
                })
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<VerifyFile, E> {
                self.visit_str(if value { "true" } else { "false" })
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<VerifyFile, E> {
                self.visit_str(&value.to_string())
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<VerifyFile, E> {
                self.visit_str("")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VerifyFile, A::Error> {
                let mut file = VerifyFile::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.value.as_str() {
                        "smoke" => file.smoke = map.next_value()?,
                        "benchmark" => file.benchmark = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            file.unknown.push(key);
                        }
                    }
                }
                Ok(file)
            }
        }
        deserializer.deserialize_any(VerifyVisitor)
    }
}

/// What the JSON Schema says of `verify` (the loader reads [`VerifyFile`] by hand).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
pub(super) enum VerifySchema {
    /// The service's `smoke` requests against every NEW backend.
    Short(VerifyShort),
    Long(VerifyLong),
}

#[derive(JsonSchema)]
#[allow(dead_code)]
pub(super) enum VerifyShort {
    #[serde(rename = "smoke")]
    Smoke,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct VerifyLong {
    /// Send the service's `smoke` requests to every NEW backend (default false).
    smoke: Option<bool>,
    /// The same paced, open-loop load against OLD and NEW backends side by side.
    benchmark: Option<BenchmarkFile>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BenchmarkFile {
    /// Requests a second to each pool (default 50).
    pub rate: Number,
    /// How long the load runs (default 30s).
    #[schemars(with = "Option<Duration>")]
    pub duration: Text,
    /// The request target of the GET requests.
    #[schemars(with = "Option<UrlPath>")]
    pub path: Text,
    /// NEW's p99 / OLD's p99 at most (default 1.5).
    pub max_p99_ratio: Option<Spanned<f64>>,
    /// NEW's error rate at most (default 1%).
    #[schemars(with = "Option<Percent>")]
    pub max_error_rate: Text,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ShadowFile {
    #[schemars(with = "Option<Percent>")]
    pub percent: Text,
    #[schemars(with = "Option<Duration>")]
    pub hold: Text,
    pub min_requests: Number,
    #[schemars(with = "Option<Duration>")]
    pub max_wait: Text,
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
    pub exec: List<String>,
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
    pub etcd: List<String>,
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

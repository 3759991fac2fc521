//! What `GET /status` returns (SPEC §5), shared by the admin API and the CLI.

use serde::{Deserialize, Serialize};

use crate::rollout::analysis::PoolMeasure;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub config: ConfigStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// pending, progressing, waiting (progressing at a gate), paused, promoted,
    /// rolled_back, or static (no rollout).
    pub state: String,
    /// 1-based; 0 before the first step and for static services.
    pub step: usize,
    pub steps: usize,
    pub step_description: Option<String>,
    /// NEW's share, in percent.
    pub weight: f64,
    pub hold_remaining_s: Option<f64>,
    pub next_weight: Option<f64>,
    pub last_check: Option<CheckStatus>,
    pub consecutive_failures: u32,
    pub failure_threshold: Option<u32>,
    pub reason: Option<String>,
    pub rollback_reason: Option<String>,
    pub pause_cause: Option<String>,
    pub point_of_no_return_passed: bool,
    pub run_id: Option<String>,
    pub hooks: Vec<HookStatus>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStatus {
    pub at: String,
    pub passed: bool,
    /// pass, fail or inconclusive.
    pub result: String,
    pub new: PoolMeasure,
    pub old: PoolMeasure,
    pub breaches: Vec<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookStatus {
    pub name: String,
    pub runs: u64,
    pub running: bool,
    /// The event (or `gate` / `run`) of the last run.
    pub last_event: Option<String>,
    /// ok, failed or timeout.
    pub last_result: Option<String>,
    pub last_detail: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub last_at: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStatus {
    pub pool: String,
    pub addr: String,
    /// Takes traffic: healthy and not ejected.
    pub up: bool,
    pub healthy: bool,
    pub ejected: bool,
    pub in_flight: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    pub loaded_at: String,
    pub version: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// RFC 3339 time, to the second.
pub fn timestamp(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

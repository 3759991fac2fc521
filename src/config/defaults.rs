//! Every default value of the config, in one place: what a setting is when the file does
//! not write it (SPEC §2). Validation and the rollout code read these; nothing else should
//! spell a default out again.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::model::{Balance, Limits, OnDeadline, Outlier, StartMode, Timeouts};

/// Loopback only: the admin API needs no token there.
pub const ADMIN_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901));
/// Relative to the config file's directory.
pub const STATE_DIR: &str = "state";
/// Matches every path.
pub const PATH_PREFIX: &str = "/";

/// Extra attempts after a connect failure.
pub const RETRIES: u32 = 2;
pub const BACKEND_WEIGHT: u32 = 1;
/// Requests in flight to one backend, each holding one connection to it.
pub const BACKEND_MAX_CONNECTIONS: u32 = 1024;

pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const HEALTHY_AFTER: u32 = 2;
pub const UNHEALTHY_AFTER: u32 = 3;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a gate waits between attempts; also what a gate step whose hook is gone waits.
pub const GATE_EVERY: Duration = Duration::from_secs(15);
pub const HOOK_RETRIES: u32 = 0;

pub const ANALYSIS_INTERVAL: Duration = Duration::from_secs(30);
pub const ANALYSIS_WINDOW: Duration = Duration::from_secs(120);
/// Below this many requests in the window, analysis is inconclusive.
pub const ANALYSIS_MIN_REQUESTS: u64 = 100;
/// Failed checks in a row before a rollback.
pub const FAILURE_THRESHOLD: u32 = 3;
/// The statistical method's confidence (a fraction).
pub const ANALYSIS_CONFIDENCE: f64 = 0.99;
pub const TRIP_WINDOW: Duration = Duration::from_secs(10);
pub const TRIP_MIN_REQUESTS: u64 = 20;

pub const SMOKE_EXPECT_STATUS: u16 = 200;

pub const BALANCE: Balance = Balance::RoundRobin;
pub const START: StartMode = StartMode::Auto;
pub const ON_DEADLINE: OnDeadline = OnDeadline::Pause;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            request_buffer: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            eject_for: Duration::from_secs(30),
            max_ejected: 0.5,
        }
    }
}

/// How long a fleet instance's lease outlives its last keep-alive (SPEC §11).
pub const FLEET_LEASE_TTL: Duration = Duration::from_secs(10);

/// `shadow` steps (SPEC §9).
pub const SHADOW_MIN_REQUESTS: u64 = 100;
pub const SHADOW_MAX_IN_FLIGHT: u64 = 256;
pub const SHADOW_MAX_BODY: usize = 1024 * 1024;
pub const SHADOW_TIMEOUT: Duration = Duration::from_secs(10);

//! What `GET /status` returns (SPEC §5), for the admin API and the CLI. The types belong to
//! the controller, which builds them (`rollout::controller::status`); this is their public
//! name.

pub use crate::rollout::controller::status::{
    timestamp, BackendStatus, CheckStatus, ConfigStatus, HookStatus, ServiceStatus, Status,
};
pub use crate::shadow::{MismatchSample, ShadowCounts, ShadowReport};

//! cutover: a reverse proxy for moving a live service from an old set of servers to a new
//! one, with zero lost requests.
//!
//! The library exists for the binary and the integration tests: `app` starts a server,
//! `cli` is the command line, `config` loads and validates a config file, `status` is what
//! the admin API reports. Everything else is private to the crate (`pub(crate)` by default,
//! kept so by the `unreachable_pub` lint); the few items the tests reach into are
//! re-exported below.

// First, so that every module below can use their macros.
#[macro_use]
mod names;
#[cfg(test)]
#[macro_use]
mod testing;

mod access_log;
mod admin;
pub mod app;
pub mod cli;
pub mod config;
mod demo;
mod evidence;
mod fleet;
mod hash;
mod hooks;
mod http1;
mod metrics;
mod proxy;
mod report;
mod rollout;
mod routing;
mod runtimes;
mod shadow;
mod stats;
pub mod status;
mod tls;
mod upstream;

pub use rollout::controller::{Op, ReloadSource};
pub use routing::spread_bucket;
pub use stats::CodeClass;
pub use tls::provider as tls_provider;

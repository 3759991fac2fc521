//! cutover: a reverse proxy for moving a live service from an old set of servers to a new
//! one, with zero lost requests.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod hash;
pub mod hooks;
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod rollout;
pub mod routing;
pub mod stats;
pub mod status;
pub mod tls;
pub mod upstream;

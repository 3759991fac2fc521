//! cutover: a reverse proxy for moving a live service from an old set of servers to a new
//! one, with zero lost requests.

pub mod config;
pub mod proxy;
pub mod routing;
pub mod stats;
pub mod tls;
pub mod upstream;

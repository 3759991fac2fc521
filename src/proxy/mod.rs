//! The data path: listeners and connections (`server`), the request path (`handler`),
//! retries and failover (`attempt`), the one place a request's result is recorded
//! (`outcome`), upgrades and tunnels (`forward`), HTTP/1 framing checks (`framing`),
//! response bodies (`body`) and the errors the proxy answers with (`error`).

mod attempt;
pub mod body;
pub mod error;
pub mod forward;
pub mod framing;
pub mod handler;
mod outcome;
pub mod server;

pub use server::{ListenError, ListenerState, Listeners};

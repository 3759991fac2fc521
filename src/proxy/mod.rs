//! The data path: listeners (`server`), one client connection (`connection`), idle HTTP/1
//! connections (`idle`), the request path (`handler`), retries and failover (`attempt`),
//! the one place a request's result is recorded (`outcome`), upgrades and tunnels
//! (`forward`), HTTP/1 framing checks (`framing`), response bodies (`body`) and the errors
//! the proxy answers with (`error`).

mod attempt;
pub(crate) mod body;
mod connection;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod framing;
pub(crate) mod handler;
mod idle;
mod outcome;
pub(crate) mod server;

pub(crate) use server::{ListenError, ListenerState, Listeners};

//! HTTP/1 on the wire, shared by both sides of the proxy: the framing guard in front of
//! hyper's server (`proxy::framing`) and the in-task backend client (`upstream`).
//!
//! - `encode`: the request head cutover sends to a backend (SPEC §7 header rewriting).
//! - `parse`: response heads from backends, and the framing of request heads for the guard.
//! - `chunked`: the one chunked-body state machine, with one set of limits.
//! - `tokens`: comma-separated header tokens and which headers are hop-by-hop.
//!
//! This module knows nothing of pools, routes or the request path: it imports neither
//! `proxy` nor `upstream`.

pub(crate) mod chunked;
pub(crate) mod encode;
pub(crate) mod parse;
pub(crate) mod tokens;

#[cfg(test)]
mod fuzz_tests;

/// The largest head (and trailer section) accepted from a backend.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// `http` or `https`, as the client spoke to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Only responses: the body runs until the backend closes the connection.
    UntilClose,
}

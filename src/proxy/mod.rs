//! The data path: listeners and connections (`server`), the request path (`handler`),
//! header rewriting and tunnels (`forward`), HTTP/1 framing checks (`framing`), response
//! bodies (`body`) and the errors the proxy answers with (`error`).

pub mod body;
pub mod error;
pub mod forward;
pub mod framing;
pub mod handler;
pub mod server;

pub use server::{ListenError, ListenerState, Listeners};

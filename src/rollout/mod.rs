//! Rollouts: the schedule (`schedule`), the analysis (`analysis`), the state machine
//! (`machine`), where its state is kept (`state`: the `StateStore` seam and the state files),
//! and the controller that runs them (`controller`).
//!
//! The first four are pure or nearly so (`state` does files, nothing else); all the
//! sockets, timers and processes are in the controller.

pub(crate) mod analysis;
pub(crate) mod controller;
pub(crate) mod machine;
pub(crate) mod schedule;
pub(crate) mod state;

//! Rollouts: the schedule (`schedule`), the analysis (`analysis`), the state machine
//! (`machine`), where its state is kept (`state`: the `StateStore` seam and the state files),
//! and the controller that runs them (`controller`).
//!
//! The first four are pure or nearly so (`state` does files, nothing else); all the
//! sockets, timers and processes are in the controller.

pub mod analysis;
pub mod controller;
pub mod machine;
pub mod schedule;
pub mod state;

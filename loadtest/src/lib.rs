//! `loadtest`: an honest load and fault-injection tool for measuring cutover
//! (or any HTTP/1.1 server).
//!
//! * [`load`] – open-loop constant-rate load with coordinated-omission
//!   corrected latency;
//! * [`backend`] – a scripted backend whose failure rate and delay can be
//!   changed while it runs;
//! * [`storm`] – the reload-storm scenario (load while the config file is
//!   rewritten and reloaded over and over);
//! * [`scenarios`] – the rollback scenario matrix against the real `cutover`
//!   binary.
//!
//! The binary in `main.rs` is a thin command-line layer over these modules,
//! which the tests drive directly.

pub mod backend;
pub mod client;
pub mod duration;
pub mod load;
pub mod report;
pub mod scenarios;
pub mod storm;
pub mod target;

//! Proving NEW before it takes live traffic (SPEC §9).
//!
//! `exchange` sends one request to one backend and reads its answer whole (up to a
//! limit); `benchmark` compares NEW's latency and errors with OLD's under the same
//! paced load; `smoke` judges answers against a `verify` step's smoke requests; `copier` is a
//! `shadow` step's copier (the only part the request path touches), `compare` what it
//! finds different, `report` what the operator sees of it.

mod benchmark;
mod compare;
mod copier;
mod exchange;
mod report;
mod smoke;

pub(crate) use self::benchmark::run_benchmark;
pub(crate) use self::copier::{Copier, RESULTS};
#[allow(unreachable_pub)] // re-exported by the status module
pub use self::report::{MismatchSample, ShadowCounts, ShadowReport};
pub(crate) use self::smoke::run_smoke;

//! Proving NEW before it takes live traffic (SPEC §9): `exchange` sends one request to one
//! backend and reads its answer whole (up to a limit); `smoke` judges an answer against a
//! smoke request's expectations.
//!
//! Nothing here runs on the request path; the controller drives it.

mod exchange;
mod smoke;

pub(crate) use self::smoke::run_smoke;

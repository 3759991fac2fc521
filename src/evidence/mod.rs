//! The decision log (SPEC §10): every decision the rollout takes, with the numbers behind
//! it, one JSON object a line in `state_dir/<service>.history.jsonl`.
//!
//! `record` holds the format; `log` appends (flushed and fsynced before the decision takes
//! effect), rotates at 16 MiB keeping one old file, and reads back with `since`.
//! Pure types and files only: this room imports nothing from the rest of the crate, so the
//! controller, the admin API, the CLI and the report can all use it.

pub(crate) mod log;
pub(crate) mod record;

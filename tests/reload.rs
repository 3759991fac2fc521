//! Hot reload (SPEC §8).
mod support;

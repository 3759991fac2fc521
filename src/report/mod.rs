//! The migration report.

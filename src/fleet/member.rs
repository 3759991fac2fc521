//! What each instance publishes about itself every second under its lease: who it is, the
//! hash of its config, and the cumulative counters of every pool it serves.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::stats::{PoolCounts, LATENCY_BUCKETS};

/// The record as etcd holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Record {
    pub id: String,
    pub version: String,
    pub config_hash: String,
    /// Changes when the process restarts: its counters started again from zero.
    pub boot: String,
    /// Unix milliseconds when it was published.
    pub at_ms: u64,
    /// Counters by service: `[old, new]`.
    pub pools: BTreeMap<String, [Counts; 2]>,
    /// NEW's share (percent) this instance routes at, by service: what it really applies.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Services this instance tripped to weight 0 on its own while etcd was unreachable.
    #[serde(default)]
    pub local_trips: Vec<String>,
    /// The run each of those trips was made in, by service.
    #[serde(default)]
    pub trip_runs: BTreeMap<String, String>,
}

/// `PoolCounts` in a form that survives JSON and version skew (arrays, not fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Counts {
    pub responses: Vec<u64>,
    pub upstream_errors: Vec<u64>,
    pub latency: Vec<u64>,
    pub latency_sum_us: u64,
}

impl From<&PoolCounts> for Counts {
    fn from(counts: &PoolCounts) -> Counts {
        Counts {
            responses: counts.responses.to_vec(),
            upstream_errors: counts.upstream_errors.to_vec(),
            latency: counts.latency.to_vec(),
            latency_sum_us: counts.latency_sum_us,
        }
    }
}

impl Counts {
    /// `None` when the shape differs from this version's (another build's buckets): such
    /// numbers cannot be summed, and the sample is then incomplete.
    pub(crate) fn to_pool_counts(&self) -> Option<PoolCounts> {
        let mut counts = PoolCounts::default();
        if self.responses.len() != counts.responses.len()
            || self.upstream_errors.len() != counts.upstream_errors.len()
            || self.latency.len() != LATENCY_BUCKETS
        {
            return None;
        }
        counts.responses.copy_from_slice(&self.responses);
        counts
            .upstream_errors
            .copy_from_slice(&self.upstream_errors);
        counts.latency.copy_from_slice(&self.latency);
        counts.latency_sum_us = self.latency_sum_us;
        Some(counts)
    }
}

/// A member as this instance last saw it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub record: Record,
    /// When its last record arrived here (this process's clock: no skew between hosts).
    pub seen: Instant,
}

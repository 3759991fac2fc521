//! The fleet's `TrafficSource`: the counters of every live instance, summed.
//!
//! Each instance publishes cumulative counters; the leader keeps, per instance, the last
//! counters it saw and adds only what grew since. An instance that restarted (a new boot
//! id, or counters that went down) starts from zero again: its new counters are all new
//! traffic. The totals therefore only grow, as the analysis windows expect of a single
//! process's counters. An instance whose record is stale, that lacks the service, or whose
//! counters have another shape makes the sample incomplete, and the check inconclusive.
//!
//! An instance counted for the first time, or again after a gap (stale, or gone), is only
//! taken as a baseline: what it served before, or during the gap, did not happen within
//! the one second the sample covers, and added there it would outweigh (or dilute) the
//! others' numbers of that window. That sample is incomplete too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::store::STALE_AFTER;
use super::Fleet;
use crate::rollout::controller::traffic::{TrafficSample, TrafficSource};
use crate::routing::ServiceRoute;
use crate::stats::PoolCounts;

#[derive(Debug)]
pub(crate) struct FleetTraffic {
    fleet: Arc<Fleet>,
    sums: Mutex<HashMap<String, Sums>>,
}

/// One service's running totals and what each instance had reported.
#[derive(Debug, Default)]
struct Sums {
    total: [PoolCounts; 2],
    last: HashMap<String, Counted>,
}

/// An instance's counters as last added, with its boot id and when they were added.
#[derive(Debug)]
struct Counted {
    boot: String,
    counts: [PoolCounts; 2],
    at: Instant,
}

impl FleetTraffic {
    pub(crate) fn new(fleet: Arc<Fleet>) -> FleetTraffic {
        FleetTraffic {
            fleet,
            sums: Mutex::new(HashMap::new()),
        }
    }
}

impl TrafficSource for FleetTraffic {
    fn sample(&self, route: &ServiceRoute) -> TrafficSample {
        let shared = &self.fleet.shared;
        let now = Instant::now();
        let mut complete = shared.connected.load(std::sync::atomic::Ordering::Acquire);
        let (Ok(members), Ok(mut sums)) = (shared.members.lock(), self.sums.lock()) else {
            return TrafficSample::default();
        };
        let sums = sums.entry(route.name.to_string()).or_default();
        if !members.contains_key(&shared.instance) {
            // Not even this instance's own numbers are in: nothing is known.
            complete = false;
        }
        for (id, member) in members.iter() {
            if now.saturating_duration_since(member.seen) > STALE_AFTER {
                complete = false;
                continue;
            }
            let counts = member
                .record
                .pools
                .get(route.name.as_ref())
                .and_then(|[old, new]| Some([old.to_pool_counts()?, new.to_pool_counts()?]));
            let Some(counts) = counts else {
                complete = false;
                continue;
            };
            if !add_delta(sums, id, &member.record.boot, counts, now) {
                complete = false;
            }
        }
        TrafficSample {
            old: sums.total[0].clone(),
            new: sums.total[1].clone(),
            complete,
        }
    }
}

/// Adds what `id` counted since its last report to the totals; `false` when its counters
/// were only taken as a baseline (never counted before, or not within `STALE_AFTER`).
fn add_delta(sums: &mut Sums, id: &str, boot: &str, counts: [PoolCounts; 2], now: Instant) -> bool {
    let fresh = [PoolCounts::default(), PoolCounts::default()];
    let previous = match sums.last.get(id) {
        Some(last) if now.saturating_duration_since(last.at) > STALE_AFTER => None,
        Some(last)
            if last.boot == boot && (0..2).all(|i| !went_down(&counts[i], &last.counts[i])) =>
        {
            Some(&last.counts)
        }
        // Restarted since it was last counted: its counters are all new.
        Some(_) => Some(&fresh),
        None => None,
    };
    let added = previous.is_some();
    if let Some(previous) = previous {
        for (i, total) in sums.total.iter_mut().enumerate() {
            total.add(&counts[i].minus(&previous[i]));
        }
    }
    let boot = boot.to_string();
    sums.last.insert(
        id.to_string(),
        Counted {
            boot,
            counts,
            at: now,
        },
    );
    added
}

fn went_down(now: &PoolCounts, before: &PoolCounts) -> bool {
    now.requests() < before.requests()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counts(requests: u64, errors: u64) -> PoolCounts {
        let mut counts = PoolCounts::default();
        counts.responses[0] = requests - errors;
        counts.responses[3] = errors;
        counts
    }

    #[test]
    fn deltas_are_summed_per_instance_and_restarts_start_from_zero() {
        let mut sums = Sums::default();
        let now = Instant::now();
        let seen = |sums: &mut Sums, id: &str, boot: &str, counts: [PoolCounts; 2]| {
            add_delta(sums, id, boot, counts, now)
        };
        // First seen: a baseline, whatever they served before.
        assert!(!seen(&mut sums, "a", "1", [counts(10, 0), counts(5, 1)]));
        assert!(!seen(&mut sums, "b", "1", [counts(20, 0), counts(3, 0)]));
        assert_eq!(sums.total[0].requests(), 0);
        // a grows by 5 and 1 (an error); b restarts (new boot) with 2 new requests.
        assert!(seen(&mut sums, "a", "1", [counts(15, 0), counts(6, 2)]));
        assert!(seen(&mut sums, "b", "2", [counts(2, 0), counts(0, 0)]));
        assert_eq!(sums.total[0].requests(), 7);
        // The same boot with counters that went down is a restart too.
        assert!(seen(&mut sums, "a", "1", [counts(4, 0), counts(1, 0)]));
        assert_eq!(sums.total[0].requests(), 11);
        assert_eq!(sums.total[1].requests(), 2);
        assert_eq!(sums.total[1].errors(), 1);
    }

    #[test]
    fn an_instance_back_after_a_gap_is_a_baseline_again() {
        let mut sums = Sums::default();
        let start = Instant::now();
        add_delta(&mut sums, "a", "1", [counts(10, 0), counts(10, 5)], start);
        add_delta(&mut sums, "a", "1", [counts(20, 0), counts(20, 10)], start);
        assert_eq!(sums.total[1].errors(), 5);
        // Ten minutes unseen: 6,000 clean requests to NEW meanwhile, not in one second.
        let back = start + Duration::from_secs(600);
        let after_gap = [counts(3020, 0), counts(6020, 10)];
        assert!(!add_delta(&mut sums, "a", "1", after_gap, back));
        assert_eq!(sums.total[1].requests(), 10);
        let next = [counts(3030, 0), counts(6030, 12)];
        assert!(add_delta(
            &mut sums,
            "a",
            "1",
            next,
            back + Duration::from_secs(1)
        ));
        assert_eq!(sums.total[1].requests(), 20);
        assert_eq!(sums.total[1].errors(), 7);
    }
}

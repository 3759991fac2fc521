//! The fleet's `TrafficSource`: the counters of every live instance, summed.
//!
//! Each instance publishes cumulative counters; the leader keeps, per instance, the last
//! counters it saw and adds only what grew since. An instance that restarted (a new boot
//! id, or counters that went down) starts from zero again: its new counters are all new
//! traffic. The totals therefore only grow, as the analysis windows expect of a single
//! process's counters. An instance whose record is stale, that lacks the service, or whose
//! counters have another shape makes the sample incomplete, and the check inconclusive.

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
    last: HashMap<String, (String, [PoolCounts; 2])>,
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
            add_delta(sums, id, &member.record.boot, counts);
        }
        TrafficSample {
            old: sums.total[0].clone(),
            new: sums.total[1].clone(),
            complete,
        }
    }
}

/// Adds what `id` counted since its last report to the totals.
fn add_delta(sums: &mut Sums, id: &str, boot: &str, counts: [PoolCounts; 2]) {
    let fresh = [PoolCounts::default(), PoolCounts::default()];
    let previous = match sums.last.get(id) {
        Some((seen_boot, last))
            if seen_boot == boot && (0..2).all(|i| !went_down(&counts[i], &last[i])) =>
        {
            last
        }
        _ => &fresh,
    };
    for (i, total) in sums.total.iter_mut().enumerate() {
        total.add(&counts[i].minus(&previous[i]));
    }
    sums.last.insert(id.to_string(), (boot.to_string(), counts));
}

fn went_down(now: &PoolCounts, before: &PoolCounts) -> bool {
    now.requests() < before.requests()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64) -> PoolCounts {
        let mut counts = PoolCounts::default();
        counts.responses[0] = requests - errors;
        counts.responses[3] = errors;
        counts
    }

    #[test]
    fn deltas_are_summed_per_instance_and_restarts_start_from_zero() {
        let mut sums = Sums::default();
        add_delta(&mut sums, "a", "1", [counts(10, 0), counts(5, 1)]);
        add_delta(&mut sums, "b", "1", [counts(20, 0), counts(3, 0)]);
        assert_eq!(sums.total[0].requests(), 30);
        assert_eq!(sums.total[1].requests(), 8);
        // a grows by 5; b restarts (new boot) with 2 new requests.
        add_delta(&mut sums, "a", "1", [counts(15, 0), counts(5, 1)]);
        add_delta(&mut sums, "b", "2", [counts(2, 0), counts(0, 0)]);
        assert_eq!(sums.total[0].requests(), 37);
        // The same boot with counters that went down is a restart too.
        add_delta(&mut sums, "a", "1", [counts(4, 0), counts(1, 0)]);
        assert_eq!(sums.total[0].requests(), 41);
        assert_eq!(sums.total[1].requests(), 9);
        assert_eq!(sums.total[1].errors(), 1);
    }
}

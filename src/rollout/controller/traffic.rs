//! Where the numbers the analysis judges come from: the `TrafficSource` seam.
//!
//! Today that is this process's pool counters (`LocalTraffic`). Fleet mode sums the
//! counters of several processes and may miss some of them: it then says the sample is
//! incomplete, and a check made on it is inconclusive rather than judged on part of the
//! traffic.

use crate::routing::ServiceRoute;
use crate::stats::PoolCounts;

/// Cumulative counts of a service's two pools at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrafficSample {
    pub old: PoolCounts,
    pub new: PoolCounts,
    /// False when some of the traffic could not be counted.
    pub complete: bool,
}

pub(crate) trait TrafficSource: Send {
    fn sample(&self, route: &ServiceRoute) -> TrafficSample;
}

/// The counters of this process's pools, which the request path bumps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalTraffic;

impl TrafficSource for LocalTraffic {
    fn sample(&self, route: &ServiceRoute) -> TrafficSample {
        TrafficSample {
            old: route.old.stats.counts(),
            new: route.new.stats.counts(),
            complete: true,
        }
    }
}

//! `cutover_fleet_*` (SPEC §11). The connection is set where it changes; leadership and
//! the number of live instances are read at each scrape, because both can end by the mere
//! passing of time (a lease nobody renewed, a record gone stale), with no event to react to.

use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::Shared;

#[derive(Debug, Clone, Default)]
pub(crate) struct FleetMetrics {
    pub(super) connected: Gauge,
    /// The fleet this process belongs to, once its agent exists.
    shared: Arc<OnceLock<Weak<Shared>>>,
}

impl FleetMetrics {
    pub(crate) fn register(registry: &mut Registry) -> FleetMetrics {
        let metrics = FleetMetrics::default();
        registry.register(
            "cutover_fleet_connected",
            "1 while this instance's etcd session is up",
            metrics.connected.clone(),
        );
        registry.register_collector(Box::new(Scraped(metrics.shared.clone())));
        metrics
    }

    pub(super) fn watch(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(&shared));
    }
}

/// The gauges read from the fleet's shared state at each scrape.
#[derive(Debug)]
struct Scraped(Arc<OnceLock<Weak<Shared>>>);

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = self.0.get().and_then(Weak::upgrade);
        let leads = shared.as_ref().is_some_and(|shared| shared.leads());
        let live = shared.map_or(0, |shared| shared.live_members());
        for (name, help, value) in [
            (
                "cutover_fleet_leader",
                "1 on the instance that leads the fleet (holds the leader key, its lease known to be alive)",
                i64::from(leads),
            ),
            (
                "cutover_fleet_instances",
                "Live instances of the fleet (a fresh record within 3 s), as this instance sees them",
                live as i64,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

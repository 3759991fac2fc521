//! `cutover_fleet_*` (SPEC §11). Leadership and connection are set where they change;
//! the number of live instances is counted at each scrape, because a member stops being
//! live by the mere passing of time (its record goes stale), with no event to react to.

use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::Shared;

#[derive(Debug, Clone, Default)]
pub(crate) struct FleetMetrics {
    pub(super) leader: Gauge,
    pub(super) connected: Gauge,
    /// The fleet this process belongs to, once its agent exists.
    shared: Arc<OnceLock<Weak<Shared>>>,
}

impl FleetMetrics {
    pub(crate) fn register(registry: &mut Registry) -> FleetMetrics {
        let metrics = FleetMetrics::default();
        registry.register(
            "cutover_fleet_leader",
            "1 on the instance that leads the fleet",
            metrics.leader.clone(),
        );
        registry.register(
            "cutover_fleet_connected",
            "1 while this instance's etcd session is up",
            metrics.connected.clone(),
        );
        registry.register_collector(Box::new(Instances(metrics.shared.clone())));
        metrics
    }

    pub(super) fn watch(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(&shared));
    }
}

#[derive(Debug)]
struct Instances(Arc<OnceLock<Weak<Shared>>>);

impl Collector for Instances {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = self
            .0
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |shared| shared.live_members());
        let gauge = ConstGauge::new(live as i64);
        let metric = encoder.encode_descriptor(
            "cutover_fleet_instances",
            "Live instances of the fleet (a fresh record within 3 s), as this instance sees them",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

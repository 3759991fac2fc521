//! Keeps backends and what each pool shares across routing snapshots: the controller's
//! `UpstreamRegistry` hands the same `Arc<Backend>` to every snapshot while its address
//! and settings are unchanged, so a reload keeps warm connections, health and outlier
//! state; and one set of counters and one ejection count per (service, pool) for the
//! life of the process.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::backend::Backend;
use super::health::health_check_loop;
use super::outlier::Ejections;
use super::pool::Pool;
use super::PoolKind;
use crate::config::{BackendSpec, Balance, HealthCheck, Outlier, PoolSpec, Timeouts};
use crate::stats::PoolStats;

/// Identity of a backend across snapshots: same address and settings, same `Backend`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BackendKey {
    service: String,
    pool: PoolKind,
    addr: String,
    max_connections: u32,
    timeouts: Timeouts,
    health_check: Option<HealthCheck>,
}

/// What every snapshot's copy of one (service, pool) shares.
#[derive(Default)]
struct PoolShared {
    stats: Arc<PoolStats>,
    ejections: Arc<Ejections>,
}

/// Keeps backends and pool counters alive across routing snapshots. Owned by the
/// controller, the only builder of snapshots.
#[derive(Default)]
pub(crate) struct UpstreamRegistry {
    backends: HashMap<BackendKey, Weak<Backend>>,
    pools: HashMap<(String, PoolKind), PoolShared>,
}

impl UpstreamRegistry {
    pub(crate) fn stats(&mut self, service: &str, pool: PoolKind) -> Arc<PoolStats> {
        self.shared(service, pool).stats.clone()
    }

    fn shared(&mut self, service: &str, pool: PoolKind) -> &PoolShared {
        self.pools.entry((service.to_string(), pool)).or_default()
    }

    /// Builds a pool, reusing backends whose settings are unchanged. New backends with a
    /// health check get their checker task.
    pub(crate) fn pool(
        &mut self,
        service: &str,
        kind: PoolKind,
        spec: &PoolSpec,
        settings: PoolSettings<'_>,
    ) -> Pool {
        self.backends
            .retain(|_, backend| backend.strong_count() > 0);
        let backends = spec
            .backends
            .iter()
            .map(|backend| {
                (
                    self.backend(service, kind, backend, &settings),
                    backend.weight,
                )
            })
            .collect();
        Pool::new(
            kind,
            backends,
            settings.balance,
            settings.outlier,
            self.stats(service, kind),
        )
    }

    fn backend(
        &mut self,
        service: &str,
        pool: PoolKind,
        spec: &BackendSpec,
        settings: &PoolSettings<'_>,
    ) -> Arc<Backend> {
        let key = BackendKey {
            service: service.to_string(),
            pool,
            addr: spec.addr.clone(),
            max_connections: spec.max_connections,
            timeouts: settings.timeouts,
            health_check: settings.health_check.cloned(),
        };
        if let Some(existing) = self.backends.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let shared = self.shared(service, pool);
        let backend = Arc::new(Backend::new(
            &spec.addr,
            settings.timeouts,
            shared.stats.clone(),
            shared.ejections.clone(),
            spec.max_connections,
            crate::runtimes::slots(),
        ));
        if let Some(check) = settings.health_check {
            settings
                .spawner
                .spawn(health_check_loop(Arc::downgrade(&backend), check.clone()));
        }
        self.backends.insert(key, Arc::downgrade(&backend));
        backend
    }
}

/// What a pool is built with.
pub(crate) struct PoolSettings<'a> {
    pub balance: Balance,
    pub outlier: Outlier,
    pub timeouts: Timeouts,
    pub health_check: Option<&'a HealthCheck>,
    /// Where background tasks (health checks) run: the data plane's runtime.
    pub spawner: &'a tokio::runtime::Handle,
}

//! The controller's first services: each with its rollout as the store has it, and what
//! each rollout must do first.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::hooks::{hook_names, hook_statuses};
use super::{RolloutMetrics, RolloutRun, ServiceRun, Startup, Startups};
use crate::config::{self, Config, Service};
use crate::rollout::machine::RolloutState;
use crate::rollout::schedule::Plan;
use crate::rollout::state::{StateError, StateStore};
use crate::routing::build_service;
use crate::upstream::UpstreamRegistry;

/// Every service of the first config, with its rollout as the store has it, and what each
/// rollout must do first.
pub(super) fn first_services(
    config: &Config,
    store: &dyn StateStore,
    metrics: &RolloutMetrics,
    registry: &mut UpstreamRegistry,
    data_plane: &tokio::runtime::Handle,
) -> Result<(Vec<ServiceRun>, Startups), StateError> {
    let now = Instant::now();
    let mut services = Vec::new();
    let mut startups = Vec::new();
    for service in &config.services {
        metrics.register_service(&service.name, &hook_names(service));
        let route = build_service(service, registry, data_plane);
        let rollout = match Plan::of(service) {
            None => None,
            Some(plan) => {
                let (run, startup) = load_rollout(store, service, plan, now)?;
                startups.push((service.name.clone(), startup));
                Some(run)
            }
        };
        services.push(ServiceRun {
            hooks: hook_statuses(service, BTreeMap::new()),
            config: service.clone(),
            route,
            rollout,
            shadow: None,
            step_hook: None,
            deferred: Vec::new(),
            rollback_hooks_running: 0,
        });
    }
    Ok((services, startups))
}

/// The state of a service's rollout from the store, or a new one.
pub(super) fn load_rollout(
    store: &dyn StateStore,
    service: &Service,
    plan: Plan,
    now: Instant,
) -> Result<(RolloutRun, Startup), StateError> {
    match store.load(&service.name)? {
        Some(state) => {
            let steps_changed = state.steps_fingerprint != plan.fingerprint;
            tracing::info!(
                service = %service.name, phase = state.phase.label(), step = state.step + 1, weight = %state.weight,
                "rollout state restored from {}", store.location(&service.name)
            );
            Ok((
                RolloutRun::new(plan, state, now),
                Startup::Restored { steps_changed },
            ))
        }
        None => {
            let state = RolloutState::new(&plan, service.weight);
            let startup = if plan.start == config::StartMode::Auto {
                Startup::Start
            } else {
                Startup::Nothing
            };
            Ok((RolloutRun::new(plan, state, now), startup))
        }
    }
}

//! Reloading the config as a diff (sozu's `ConfigState::diff`): compare what runs with the
//! new config, list the small changes, check that every one of them can be made (new
//! rollouts' state is read first, listeners are bound first), then make them. A reload
//! that fails at any point changes nothing.
//!
//! Every service's route is rebuilt from its new config (backends are shared through the
//! upstream registry, so their health and connections survive); what the diff decides is
//! what happens to each rollout: it keeps its place, realigns on new steps, is read from
//! the state store, or is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::hooks::{hook_names, hook_statuses};
use super::status::{timestamp, ConfigStatus};
use super::{
    load_rollout, window_span, Controller, ReloadSource, RolloutRun, ServiceRun, Startup, Startups,
};
use crate::access_log::AccessLog;
use crate::config::watch::WatchTargets;
use crate::config::{self, Config, HookEvent};
use crate::rollout::schedule::Plan;
use crate::rollout::state::{StateError, StateStore};
use crate::routing::build_service;

/// What a reload does to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// Not running before: its rollout, if it has one, is read from the state store.
    Add(String),
    /// Running before and still configured.
    Keep {
        name: String,
        rollout: RolloutChange,
    },
    /// No longer configured; its state file stays.
    Remove(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RolloutChange {
    /// No rollout before or after, or the same steps: the rollout keeps its place.
    Same,
    /// The rollout carries on; it realigns on its new steps.
    StepsChanged,
    /// A rollout where there was none: read from the state store.
    Added,
    /// The service lost its rollout: its split is the static weight again.
    Dropped,
}

/// The changes from what runs (each service with its rollout's steps fingerprint) to `new`,
/// in the new config's order, removals last.
pub(super) fn diff(running: &[(String, Option<String>)], new: &Config) -> Vec<Change> {
    let mut before: HashMap<&str, Option<&str>> = running
        .iter()
        .map(|(name, steps)| (name.as_str(), steps.as_deref()))
        .collect();
    let mut changes: Vec<Change> = new
        .services
        .iter()
        .map(|service| {
            let name = service.name.clone();
            let Some(old_steps) = before.remove(service.name.as_str()) else {
                return Change::Add(name);
            };
            let new_steps = Plan::of(service).map(|plan| plan.fingerprint);
            let rollout = match (old_steps, new_steps.as_deref()) {
                (None, None) => RolloutChange::Same,
                (Some(_), None) => RolloutChange::Dropped,
                (None, Some(_)) => RolloutChange::Added,
                (Some(old), Some(new)) if old == new => RolloutChange::Same,
                (Some(_), Some(_)) => RolloutChange::StepsChanged,
            };
            Change::Keep { name, rollout }
        })
        .collect();
    let mut removed: Vec<&str> = before.into_keys().collect();
    removed.sort_unstable();
    changes.extend(removed.into_iter().map(|n| Change::Remove(n.to_string())));
    changes
}

impl Controller {
    pub(super) fn reload(&mut self, source: ReloadSource) -> Result<String, Vec<String>> {
        let mut new = match config::load(&self.config.origin.path) {
            Ok(new) => new,
            Err(errors) => {
                let errors = errors.0.iter().map(|e| e.to_string()).collect();
                return Err(self.reload_failed(source, errors));
            }
        };
        if source == ReloadSource::Watch && new.origin.inputs == self.config.origin.inputs {
            // What is on disk is what runs (perhaps again, after a broken edit was undone).
            self.config_status.last_error = None;
            self.config_status.last_error_at = None;
            return Ok(new.origin.version);
        }
        if let Err(error) = pin_admin_addr(&self.config.admin, &mut new.admin) {
            return Err(self.reload_failed(source, vec![error]));
        }
        if new.state_dir != self.config.state_dir {
            // Its lock, state files, decision logs and the admin API's reads of them move
            // together, at a restart; moved by a reload, the history served stayed behind.
            tracing::warn!(
                running = %self.config.state_dir.display(),
                configured = %new.state_dir.display(),
                "`state_dir` changed: it takes effect at the next restart"
            );
            new.state_dir.clone_from(&self.config.state_dir);
        }
        let bound = match self.listeners.prepare(&new.listeners) {
            Ok(bound) => bound,
            Err(err) => return Err(self.reload_failed(source, vec![err.to_string()])),
        };
        let access_log = AccessLog::reconfigured(
            self.access_log.as_ref(),
            new.access_log.as_ref(),
            new.log_format,
        );
        let access_log = match access_log {
            Ok(log) => log,
            Err(err) => {
                let error = format!("cannot open the access log: {err}");
                return Err(self.reload_failed(source, vec![error]));
            }
        };
        let changes = diff(&self.running_steps(), &new);
        let store = self.store.reconfigured(&new);
        // Read what new rollouts need first: a bad state file fails the reload before
        // anything changed.
        let loaded = match preload(&new, &changes, store.as_ref()) {
            Ok(loaded) => loaded,
            Err(err) => return Err(self.reload_failed(source, vec![err.to_string()])),
        };
        self.store = store;
        self.access_log = access_log;
        if new.log_format != self.config.log_format {
            tracing::warn!("`log_format` changed: it takes effect at the next restart");
        }
        let startups = self.apply_changes(&new, &changes, loaded);
        self.commit_config(new, source);
        let config = self.config.clone();
        self.listeners
            .apply(&config.listeners, bound, &config.limits);
        self.publish_snapshot();
        for (service, startup) in startups {
            self.restore(&service, startup);
        }
        let version = self.config.origin.version.clone();
        for index in 0..self.services.len() {
            let reason = format!("config {version} loaded");
            self.spawn_event_hooks(index, HookEvent::Reloaded, &reason, None);
        }
        Ok(version)
    }

    /// Each running service with its rollout's steps fingerprint.
    fn running_steps(&self) -> Vec<(String, Option<String>)> {
        self.services
            .iter()
            .map(|s| {
                let steps = s
                    .rollout
                    .as_ref()
                    .map(|r| r.state.steps_fingerprint.clone());
                (s.config.name.clone(), steps)
            })
            .collect()
    }

    /// Rebuilds the services in the new config's order; what each rollout must do first.
    fn apply_changes(
        &mut self,
        new: &Config,
        changes: &[Change],
        mut loaded: HashMap<String, (RolloutRun, Startup)>,
    ) -> Startups {
        let mut previous: HashMap<String, ServiceRun> = self
            .services
            .drain(..)
            .map(|s| (s.config.name.clone(), s))
            .collect();
        let mut startups = Vec::new();
        for (service, change) in new.services.iter().zip(changes) {
            self.metrics
                .register_service(&service.name, &hook_names(service));
            let route = build_service(service, &mut self.registry, &self.data_plane);
            let mut old = previous.remove(&service.name);
            let old_hooks = old.as_ref().map(|o| o.hooks.clone()).unwrap_or_default();
            let shadow = old.as_ref().and_then(|o| o.shadow.clone());
            // A shadow step under way copies to the pools' backends as they are now.
            if let Some(copier) = shadow.as_ref().filter(|c| c.is_active()) {
                copier.set_backends(
                    super::shadow::addrs(&service.old),
                    super::shadow::addrs(&service.new),
                );
            }
            let step_hook = old.as_ref().and_then(|o| o.step_hook.clone());
            let rollback_hooks_running = old.as_ref().map_or(0, |o| o.rollback_hooks_running);
            let deferred = old.as_mut().map(|o| std::mem::take(&mut o.deferred));
            let carried = old.and_then(|o| o.rollout);
            let rollout = match (Plan::of(service), change) {
                (None, _) => None,
                (Some(plan), Change::Keep { rollout, .. }) if *rollout != RolloutChange::Added => {
                    carried.map(|mut run| {
                        run.windows.set_span(window_span(&plan));
                        run.plan = plan;
                        if *rollout == RolloutChange::StepsChanged {
                            startups.push((service.name.clone(), Startup::StepsChanged));
                        }
                        run
                    })
                }
                (Some(_), _) => loaded.remove(&service.name).map(|(run, startup)| {
                    startups.push((service.name.clone(), startup));
                    run
                }),
            };
            self.services.push(ServiceRun {
                hooks: hook_statuses(service, old_hooks),
                config: service.clone(),
                route,
                rollout,
                shadow,
                step_hook,
                deferred: deferred.unwrap_or_default(),
                rollback_hooks_running,
            });
        }
        for change in changes {
            if let Change::Remove(name) = change {
                tracing::info!(service = %name, "service removed from the config; its state file stays");
                self.metrics.forget_service(name);
            }
        }
        startups
    }

    fn commit_config(&mut self, new: Config, source: ReloadSource) {
        self.admin_token.store(Arc::new(new.admin.token.clone()));
        self.config = Arc::new(new);
        let config = self.config.clone();
        self.metrics.reload(true);
        self.config_status = config_status(&config);
        let targets = WatchTargets::of(&config.origin);
        self.targets_tx.send_if_modified(|running| {
            let changed = *running != targets;
            *running = targets;
            changed
        });
        tracing::info!(version = %config.origin.version, trigger = source.label(), "config reloaded");
    }

    fn reload_failed(&mut self, source: ReloadSource, errors: Vec<String>) -> Vec<String> {
        self.metrics.reload(false);
        self.config_status.last_error = Some(errors.join("\n"));
        self.config_status.last_error_at = Some(timestamp(SystemTime::now()));
        tracing::error!(
            trigger = source.label(),
            "config not reloaded; the running config stays:\n{}",
            errors.join("\n")
        );
        errors
    }
}

/// The admin socket stays bound where it is until a restart, so the token it gets must
/// be the one its *running* address requires: a reload that moves `admin.addr` from a
/// public address to loopback and drops `token_file` in the same edit would otherwise
/// leave the public socket open without a token. Such a reload is refused; any other
/// keeps `running.addr` (the truth about the socket) and takes the new token.
pub(super) fn pin_admin_addr(
    running: &config::Admin,
    new: &mut config::Admin,
) -> Result<(), String> {
    if new.addr == running.addr {
        return Ok(());
    }
    if !running.addr.ip().is_loopback() && new.token.is_none() {
        return Err(format!(
            "admin: the admin API keeps listening on {} until cutover restarts (admin.addr \
             changes take effect at the next restart), and that address is reachable from \
             other hosts: keep `token_file` until cutover runs on {}",
            running.addr, new.addr
        ));
    }
    tracing::warn!(
        old = %running.addr, new = %new.addr,
        "admin.addr changes take effect at the next restart"
    );
    new.addr = running.addr;
    Ok(())
}

/// The rollouts the changes read from the store, by service.
fn preload(
    new: &Config,
    changes: &[Change],
    store: &dyn StateStore,
) -> Result<HashMap<String, (RolloutRun, Startup)>, StateError> {
    let mut loaded = HashMap::new();
    for (service, change) in new.services.iter().zip(changes) {
        let from_store = match change {
            Change::Add(_) => true,
            Change::Keep { rollout, .. } => *rollout == RolloutChange::Added,
            Change::Remove(_) => false,
        };
        if let Some(plan) = Plan::of(service).filter(|_| from_store) {
            let run = load_rollout(store, service, plan, Instant::now())?;
            loaded.insert(service.name.clone(), run);
        }
    }
    Ok(loaded)
}

pub(super) fn config_status(config: &Config) -> ConfigStatus {
    ConfigStatus {
        path: config.origin.path.display().to_string(),
        loaded_at: timestamp(SystemTime::now()),
        version: config.origin.version.clone(),
        last_error: None,
        last_error_at: None,
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;

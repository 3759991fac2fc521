//! The controller: the one writer of rollout state and routing (STYLE: "one writer, many
//! readers").
//!
//! It owns the running config, every service's rollout state, the analysis windows, the
//! listeners and the routing snapshot. The admin API, the CLI (through the API), signals
//! and the config watcher send it `Command`s (`handle`); it answers on oneshot channels and
//! publishes `Status` on a watch channel (`status`). The request path only ever reads the
//! snapshot.
//!
//! This file is the loop: wait for a command, a hook's result or the next deadline
//! (`tick`); then every input goes through `apply`: the state machine, then the state
//! store, then the effects (a new weight, a hook, an event). A transition that cannot be
//! saved did not happen (`persist`). Hooks are `hooks`, reloads `reload`.
//!
//! Two seams are held here, each a small trait: where rollout state is stored
//! (`StateStore`) and where the traffic numbers come from (`TrafficSource`).
//!
//! Time comes from tokio, so tests can run a three-hour rollout on a paused clock.

mod evidence;
mod handle;
mod hooks;
pub(crate) mod metrics;
mod persist;
mod reload;
mod role;
mod shadow;
mod startup;
pub(crate) mod status;
mod tick;
pub(crate) mod traffic;
mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub(crate) use self::handle::{AdminToken, Command, ControlError, Controlled, ControllerHandle};
#[allow(unreachable_pub)] // re-exported at the crate root (the lint misses that)
pub use self::handle::{Op, ReloadSource};
use self::hooks::{EventAt, HookDone};
pub(crate) use self::metrics::RolloutMetrics;
use self::startup::{first_services, load_rollout};
use self::status::{HookStatus, ServiceStatus, Status};
use self::tick::Clock;
#[cfg(test)]
use self::traffic::TrafficSample;
pub(crate) use self::traffic::{LocalTraffic, TrafficSource};
use super::analysis::{Check, Windows};
use super::machine::{self, Effect, Input, RolloutState};
use super::schedule::Plan;
use super::state::{StateError, StateStore};
use crate::access_log::AccessLog;
use crate::config::watch::WatchTargets;
use crate::config::{Config, HookEvent, Service};
use crate::proxy::{ListenError, Listeners};
use crate::routing::{Route, ServiceRoute, SharedSnapshot, Snapshot};
use crate::upstream::UpstreamRegistry;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot start fleet mode: {0}")]
    Fleet(String),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
}

struct ServiceRun {
    config: Service,
    route: Arc<ServiceRoute>,
    rollout: Option<RolloutRun>,
    hooks: BTreeMap<String, HookStatus>,
    /// The last shadow step's copier (kept after it ends, for `cutover diff`).
    shadow: Option<Arc<crate::shadow::Copier>>,
    /// The step hook (`run` or `gate`) whose process runs now, if any, whatever the
    /// rollout has done since it started it.
    step_hook: Option<String>,
    /// Rollback hooks waiting for that step hook to end (`hooks::spawn_event_hooks`).
    deferred: Vec<(HookEvent, String, Option<EventAt>)>,
    /// `rollback` hooks running now: when the last ends, the rollout's
    /// `rollback_hooks_pending` is cleared.
    rollback_hooks_running: usize,
}

struct RolloutRun {
    plan: Plan,
    state: RolloutState,
    windows: Windows,
    last_check: Option<(SystemTime, Check)>,
    /// How many checks this rollout has had since the process started: `last_check.seq`.
    checks: u64,
    /// When the next analysis check is due, on the controller's clock.
    next_check: Duration,
    /// When the counters are next sampled, on the controller's clock.
    next_sample: Duration,
    /// Whether the last sample counted all the traffic.
    complete: bool,
    persisted_at: Instant,
    /// A rollback went ahead though its save failed: the save is tried again at every
    /// wake-up until it succeeds, or a crash would resume the weight rolled back from.
    unsaved: bool,
}

impl RolloutRun {
    fn new(plan: Plan, state: RolloutState, now: Instant) -> RolloutRun {
        let windows = Windows::new(window_span(&plan));
        RolloutRun {
            state,
            windows,
            last_check: None,
            checks: 0,
            // A restored rollout is first judged one interval in, on fresh numbers.
            next_check: plan
                .analysis
                .as_ref()
                .map_or(Duration::ZERO, |a| a.interval),
            next_sample: Duration::ZERO,
            complete: true,
            persisted_at: now,
            unsaved: false,
            plan,
        }
    }
}

/// How much history the windows keep: the longest of the analysis window and the trip's.
fn window_span(plan: &Plan) -> Duration {
    plan.analysis.as_ref().map_or(Duration::from_secs(60), |a| {
        a.window
            .max(a.trip.as_ref().map_or(Duration::ZERO, |t| t.window))
            + Duration::from_secs(1)
    })
}

/// What happens first to a rollout when the controller starts running it.
enum Startup {
    Start,
    Restored {
        steps_changed: bool,
    },
    /// A rollout carried over a reload whose steps changed.
    StepsChanged,
    Nothing,
}

/// What each rollout must do first, by service.
type Startups = Vec<(String, Startup)>;

/// What the controller is given by the app that wires it.
pub(crate) struct Parts {
    pub config: Config,
    pub data_plane: tokio::runtime::Handle,
    pub snapshot: SharedSnapshot,
    pub listeners: Listeners,
    pub metrics: RolloutMetrics,
    pub admin_token: AdminToken,
    pub store: Box<dyn StateStore>,
    pub traffic: Box<dyn TrafficSource>,
}

pub(crate) struct Controller {
    config: Arc<Config>,
    services: Vec<ServiceRun>,
    registry: UpstreamRegistry,
    snapshot: SharedSnapshot,
    generation: u64,
    listeners: Listeners,
    store: Box<dyn StateStore>,
    traffic: Box<dyn TrafficSource>,
    metrics: RolloutMetrics,
    data_plane: tokio::runtime::Handle,
    commands: mpsc::Receiver<Command>,
    hook_tx: mpsc::UnboundedSender<HookDone>,
    hook_rx: mpsc::UnboundedReceiver<HookDone>,
    status_tx: watch::Sender<Arc<Status>>,
    /// The running config's files and directories, for the config watcher.
    targets_tx: watch::Sender<WatchTargets>,
    config_status: status::ConfigStatus,
    clock: Clock,
    startups: Startups,
    admin_token: AdminToken,
    /// The store's changes (fleet: the leader's commits, the leadership).
    changes: Option<watch::Receiver<u64>>,
    /// Whether this process decided at its last wake-up (`role`).
    leading: bool,
    /// Why the leader does not advance, while it does not.
    blocked: Option<String>,
    /// The decision log (`evidence`).
    history: evidence::History,
    /// The admin client whose command is being applied, for the decision log.
    client: Option<String>,
    /// `access_log:`, open; routed with every snapshot.
    access_log: Option<Arc<AccessLog>>,
}

impl Controller {
    /// Reads the rollout states, binds the listeners and routes with the saved weights.
    /// Nothing is changed until `run` is polled.
    pub(crate) fn start(parts: Parts) -> Result<(Controller, ControllerHandle), StartError> {
        let Parts {
            config,
            data_plane,
            snapshot,
            listeners,
            metrics,
            admin_token,
            store,
            traffic,
        } = parts;
        let mut registry = UpstreamRegistry::default();
        let now = Instant::now();
        let (services, startups) = first_services(
            &config,
            store.as_ref(),
            &metrics,
            &mut registry,
            &data_plane,
        )?;
        let bound = listeners.prepare(&config.listeners)?;
        let access_log =
            AccessLog::reconfigured(None, config.access_log.as_ref(), config.log_format)
                .map_err(StartError::AccessLog)?;
        let (command_tx, commands) = mpsc::channel(64);
        let (hook_tx, hook_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let (targets_tx, targets_rx) = watch::channel(WatchTargets::of(&config.origin));
        let changes = store.changes();
        let leading = store.leads();
        let mut controller = Controller {
            changes,
            leading,
            blocked: None,
            history: evidence::History::new(config.state_dir.clone()),
            client: None,
            access_log,
            config_status: reload::config_status(&config),
            config: Arc::new(config),
            services,
            registry,
            snapshot,
            generation: 0,
            listeners,
            store,
            traffic,
            metrics,
            data_plane,
            commands,
            hook_tx,
            hook_rx,
            status_tx,
            targets_tx,
            clock: Clock::new(now),
            startups,
            admin_token,
        };
        controller.publish_snapshot();
        let config = controller.config.clone();
        controller
            .listeners
            .apply(&config.listeners, bound, &config.limits);
        controller.publish_status();
        let state_dir = controller.config.state_dir.clone();
        Ok((
            controller,
            ControllerHandle::new(command_tx, status_rx, targets_rx, state_dir),
        ))
    }

    /// The bound listener addresses, by their configured address.
    pub(crate) fn listener_addrs(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.listeners.local_addrs()
    }

    /// Runs until shut down (or until every handle is dropped).
    pub(crate) async fn run(mut self) {
        // In a fleet, what a rollout does first is decided when this process takes over.
        let startups = std::mem::take(&mut self.startups);
        if self.leading {
            for (service, startup) in startups {
                self.restore(&service, startup);
            }
        }
        self.clock = Clock::new(Instant::now());
        self.publish_status();
        loop {
            let deadline = self.wake_at();
            let sleep = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {
                    self.wake();
                    self.publish_status();
                }
                _ = role::changed(&mut self.changes) => {
                    self.wake();
                    self.publish_status();
                }
                Some(done) = self.hook_rx.recv() => {
                    self.wake();
                    self.hook_done(done);
                }
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown { grace, reply }) => {
                        tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight requests");
                        let open = self.listeners.shutdown(grace).await;
                        self.hand_over();
                        let _ = reply.send(open);
                        break;
                    }
                    Some(command) => {
                        self.wake();
                        self.command(command);
                    }
                },
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.config.name == name)
    }

    /// Carries out what a rollout must do when the controller takes it up.
    fn restore(&mut self, service: &str, startup: Startup) {
        let Some(index) = self.index_of(service) else {
            return;
        };
        let inputs = match startup {
            Startup::Nothing => Vec::new(),
            Startup::Start => vec![Input::Start {
                run_id: new_run_id(),
            }],
            Startup::Restored { steps_changed } => {
                // Steps that changed first: the saved step's index means nothing in the new
                // plan, and resuming there could run a hook that now stands at it.
                let mut inputs = Vec::new();
                if steps_changed {
                    inputs.push(Input::StepsChanged {
                        run_id: new_run_id(),
                    });
                }
                inputs.push(Input::Restored);
                inputs
            }
            Startup::StepsChanged => vec![Input::StepsChanged {
                run_id: new_run_id(),
            }],
        };
        for input in inputs {
            if let Err(err) = self.apply(index, input) {
                tracing::error!(service, error = %err, "could not resume the rollout");
            }
        }
        self.resume_rollback_hooks(index);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Control {
                service,
                op,
                client,
                reply,
            } => {
                if let Some(forwarded) = self.store.forward(&service, &op) {
                    tokio::spawn(async move {
                        let _ = reply.send(forwarded.await);
                    });
                    return;
                }
                self.client = Some(client.unwrap_or_else(|| "local".to_string()));
                let result = self.control(&service, op);
                self.client = None;
                self.publish_status();
                let _ = reply.send(result);
            }
            Command::Reload { source, reply } => {
                let result = self.reload(source);
                self.record_reload(source, &result);
                self.changes = self.store.changes();
                self.publish_status();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn control(&mut self, service: &str, op: Op) -> Result<Controlled, ControlError> {
        let index = self
            .index_of(service)
            .ok_or_else(|| ControlError::UnknownService(service.to_string()))?;
        if self.services[index].rollout.is_none() {
            return Err(ControlError::NoRollout(service.to_string()));
        }
        tracing::info!(service, op = ?op, "operator command");
        let set_weight = match &op {
            Op::SetWeight { weight, .. } => Some(*weight),
            _ => None,
        };
        let asked = op.clone();
        let input = match op {
            Op::Start => Input::Start {
                run_id: new_run_id(),
            },
            Op::Pause => Input::Pause,
            Op::Resume => Input::Resume,
            Op::Promote { full } => Input::Promote { full },
            Op::Rollback => Input::Rollback,
            Op::Retry => Input::Retry {
                run_id: new_run_id(),
            },
            Op::SetWeight { weight, force } => Input::SetWeight { weight, force },
        };
        let before = self.services[index]
            .rollout
            .as_ref()
            .map(|run| run.state.clone());
        self.apply_as(index, input, Some(&asked))?;
        let run = self.services[index].rollout.as_ref();
        // The machine accepts a verb whose outcome already holds and changes nothing.
        let note =
            run.filter(|run| Some(&run.state) == before.as_ref())
                .map(|run| match set_weight {
                    Some(weight) => format!("already paused at {weight}"),
                    None => format!("already {}", run.state.phase.label().replace('_', " ")),
                });
        Ok(Controlled {
            status: status::service_status(&self.services[index]),
            note,
        })
    }

    /// Applies an input to a service's rollout: state, then the decision log and the
    /// store, then effects.
    fn apply(&mut self, index: usize, input: Input) -> Result<(), ControlError> {
        self.apply_as(index, input, None)
    }

    /// `apply`, for an operator's verb when `asked` is set: the command is logged too,
    /// accepted or not.
    fn apply_as(
        &mut self,
        index: usize,
        input: Input,
        asked: Option<&Op>,
    ) -> Result<(), ControlError> {
        let now = Instant::now();
        let by = evidence::decided_by(&input, self.client.as_deref());
        let name = self.services[index].config.name.clone();
        let Some(run) = self.services[index].rollout.as_mut() else {
            return Err(ControlError::NoRollout(name));
        };
        let before = run.state.clone();
        let applied = machine::apply(&run.plan, &mut run.state, input);
        let refusal = applied.as_ref().err().map(|r| r.0.as_str());
        self.log_transition(index, &before, &by, asked, refusal)?;
        let effects = applied.map_err(|r| ControlError::Refused(r.0))?;
        let Some(run) = self.services[index].rollout.as_mut() else {
            return Err(ControlError::NoRollout(name));
        };
        if run.state != before {
            persist::persist(self.store.as_ref(), &name, run, &before, &effects, now)?;
        }
        let mut effects = effects;
        if run.unsaved {
            // A rollback that went ahead unsaved. In a fleet, this process trips NEW on its
            // own until the leader acts on it (`role`), and a process that no longer leads
            // leaves the rollback's hooks to the leader: each runs once per fleet.
            self.store.set_local_trip(&name, Some(&run.state.run_id));
            if !self.store.leads() {
                effects.retain(|effect| matches!(effect, Effect::Publish(_)));
            }
        }
        let started = effects.iter().any(|e| {
            matches!(
                e,
                Effect::Event {
                    event: HookEvent::Started,
                    ..
                }
            )
        });
        if started {
            run.windows.clear();
            run.last_check = None;
        }
        self.execute(index, effects);
        Ok(())
    }

    fn execute(&mut self, index: usize, effects: Vec<Effect>) {
        let name = self.services[index].config.name.clone();
        for effect in effects {
            match effect {
                Effect::Publish(weight) => {
                    tracing::info!(service = %name, %weight, "NEW's weight is now {weight}");
                    self.publish_snapshot();
                }
                Effect::RunStepHook {
                    step,
                    hook,
                    attempt,
                } => {
                    tracing::info!(service = %name, step = step + 1, %hook, attempt, "running step hook");
                    self.spawn_step_hook(index, step, &hook);
                }
                Effect::Event {
                    event,
                    reason,
                    step,
                    weight,
                    state,
                } => {
                    // Rollbacks and failed checks are what an operator filtering on
                    // warnings must not miss.
                    if matches!(event, HookEvent::Rollback | HookEvent::CheckFailed) {
                        tracing::warn!(service = %name, event = event.as_str(), "{reason}");
                    } else {
                        tracing::info!(service = %name, event = event.as_str(), "{reason}");
                    }
                    let at = EventAt {
                        step,
                        weight,
                        state,
                    };
                    self.spawn_event_hooks(index, event, &reason, Some(at));
                }
                Effect::RolledBack(reason) => self.metrics.rollback(&name, reason),
            }
        }
        self.sync_shadow(index);
    }

    /// Applies an input that cannot be refused (time, checks); logs if it somehow is.
    fn apply_logged(&mut self, index: usize, input: Input) {
        if let Err(err) = self.apply(index, input) {
            tracing::error!(service = %self.services[index].config.name, error = %err, "rollout input failed");
        }
    }

    /// Routes every service at its current weight.
    fn publish_snapshot(&mut self) {
        self.generation += 1;
        let routes = self
            .services
            .iter()
            .map(|service| Route {
                service: service.route.clone(),
                new_weight: service
                    .rollout
                    .as_ref()
                    .map_or(service.config.weight, |run| run.state.weight),
                shadow: service.shadow.clone().filter(|c| c.is_active()),
            })
            .collect();
        let access_log = self.access_log.clone();
        let snapshot = Snapshot::new(routes, self.generation, access_log);
        self.snapshot.store(Arc::new(snapshot));
    }

    fn publish_status(&mut self) {
        let services: Vec<ServiceStatus> =
            self.services.iter().map(status::service_status).collect();
        for service in &services {
            self.metrics
                .rollout(&service.name, service.weight, service.step, service.state);
        }
        let mut fleet = self.store.fleet_status();
        if let Some(fleet) = &mut fleet {
            fleet.blocked = self.blocked.clone();
        }
        let status = Status {
            services,
            config: self.config_status.clone(),
            fleet,
        };
        self.status_tx.send_replace(Arc::new(status));
    }
}

fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests;

//! The controller: the one writer of rollout state and routing (STYLE: "one writer, many
//! readers").
//!
//! It owns the running config, every service's rollout state, the analysis windows, the
//! listeners and the routing snapshot. The admin API, the CLI (through the API), signals
//! and the config watcher send it `Command`s; it answers on oneshot channels and publishes
//! `Status` on a watch channel. The request path only ever reads the snapshot.
//!
//! Once a second it samples the pools' counters into the windows, advances each rollout's
//! clock, checks the trip, and runs the analysis every `interval`. Every transition is
//! written to disk before its effects (a new weight, a hook, an event) happen.
//!
//! Time comes from tokio, so tests can run a three-hour rollout on a paused clock.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::analysis::{self, Check, Verdict, Windows};
use super::machine::{self, Effect, Input, Phase, RolloutState};
use super::schedule::Plan;
use super::state::{StateError, StateStore};
use crate::config::{self, Config, HookEvent, Service, Weight};
use crate::hooks::{self, HookOutcome, Payload};
use crate::metrics::Metrics;
use crate::proxy::{ListenError, Listeners};
use crate::routing::{build_service, Route, ServiceRoute, SharedSnapshot, Snapshot};
use crate::status::{
    self, BackendStatus, CheckStatus, ConfigStatus, HookStatus, ServiceStatus, Status,
};
use crate::upstream::{now_millis, UpstreamRegistry};

/// Only time counters changed: such a state is written at most this often.
const PERSIST_PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// Output shown per stream in `/status` (the log and the hook keep more).
const STATUS_TAIL: usize = 4 * 1024;

/// What can be asked of the controller.
pub enum Command {
    Control {
        service: String,
        op: Op,
        reply: oneshot::Sender<Result<ServiceStatus, ControlError>>,
    },
    Reload {
        source: ReloadSource,
        reply: Option<oneshot::Sender<Result<String, Vec<String>>>>,
    },
    Shutdown {
        grace: Duration,
        reply: oneshot::Sender<usize>,
    },
}

/// The operator's verbs (SPEC §1, §5).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Start,
    Pause,
    Resume,
    Promote { full: bool },
    Rollback,
    Retry,
    SetWeight(Weight),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    Signal,
    Watch,
    Api,
}

impl ReloadSource {
    fn label(self) -> &'static str {
        match self {
            ReloadSource::Signal => "SIGHUP",
            ReloadSource::Watch => "file change",
            ReloadSource::Api => "admin API",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("no service named `{0}`")]
    UnknownService(String),
    #[error("service `{0}` has no rollout: its split is the static `weight` of its config")]
    NoRollout(String),
    #[error("{0}")]
    Refused(String),
    #[error("the transition was not applied: {0}")]
    Persist(String),
    #[error("the controller has stopped")]
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// How the rest of cutover talks to the controller.
#[derive(Clone)]
pub struct ControllerHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Arc<Status>>,
}

impl ControllerHandle {
    pub async fn control(&self, service: &str, op: Op) -> Result<ServiceStatus, ControlError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Control {
            service: service.to_string(),
            op,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ControlError::Gone)?;
        answer.await.map_err(|_| ControlError::Gone)?
    }

    /// Reloads the config file; the new version, or every error.
    pub async fn reload(&self, source: ReloadSource) -> Result<String, Vec<String>> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Reload {
            source,
            reply: Some(reply),
        };
        let gone = || vec!["the controller has stopped".to_string()];
        self.commands.send(command).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Asks for a reload without waiting for its outcome (signals, the file watcher).
    pub fn request_reload(&self, source: ReloadSource) {
        let _ = self.commands.try_send(Command::Reload {
            source,
            reply: None,
        });
    }

    /// Stops the listeners and waits for connections to finish, up to `grace`; returns
    /// how many were still open.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { grace, reply })
            .await
            .is_err()
        {
            return 0;
        }
        answer.await.unwrap_or(0)
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.borrow().clone()
    }
}

/// Where a rollout was when an event happened.
#[derive(Debug, Clone, Copy)]
struct EventAt {
    step: usize,
    weight: Weight,
    state: &'static str,
}

/// A hook run that finished.
enum HookDone {
    Step {
        service: String,
        step: usize,
        hook: String,
        outcome: HookOutcome,
    },
    Event {
        service: String,
        hook: String,
        event: HookEvent,
        outcome: HookOutcome,
    },
}

struct ServiceRun {
    config: Service,
    route: Arc<ServiceRoute>,
    rollout: Option<RolloutRun>,
    hooks: BTreeMap<String, HookStatus>,
}

struct RolloutRun {
    plan: Plan,
    state: RolloutState,
    windows: Windows,
    last_check: Option<(SystemTime, Check)>,
    /// When the next analysis check is due, on the controller's clock.
    next_check: Duration,
    persisted_at: Instant,
}

impl RolloutRun {
    fn new(plan: Plan, state: RolloutState, now: Instant) -> RolloutRun {
        let windows = Windows::new(window_span(&plan));
        RolloutRun {
            plan,
            state,
            windows,
            last_check: None,
            next_check: Duration::ZERO,
            persisted_at: now,
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

/// What happens first to each rollout when the controller starts running it.
enum Resume {
    Start,
    Restored {
        steps_changed: bool,
    },
    /// A rollout carried over a reload whose steps changed.
    StepsChanged,
    Nothing,
}

pub struct Controller {
    config: Arc<Config>,
    services: Vec<ServiceRun>,
    registry: UpstreamRegistry,
    snapshot: SharedSnapshot,
    generation: u64,
    listeners: Listeners,
    store: StateStore,
    metrics: Arc<Metrics>,
    data_plane: tokio::runtime::Handle,
    commands: mpsc::Receiver<Command>,
    hook_tx: mpsc::UnboundedSender<HookDone>,
    hook_rx: mpsc::UnboundedReceiver<HookDone>,
    status_tx: watch::Sender<Arc<Status>>,
    config_status: ConfigStatus,
    origin: Instant,
    last_tick: Instant,
    resumes: Vec<(String, Resume)>,
    admin_token: crate::admin::Token,
}

/// What starting the controller yields besides the controller itself.
pub struct Started {
    pub handle: ControllerHandle,
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin token, kept current across reloads.
    pub admin_token: crate::admin::Token,
}

impl Controller {
    /// Reads the rollout states, binds the listeners and routes with the saved weights.
    /// Nothing is changed until `run` is polled.
    pub fn start(
        config: Config,
        data_plane: tokio::runtime::Handle,
    ) -> Result<(Controller, Started), StartError> {
        let snapshot: SharedSnapshot = Arc::default();
        let listeners = Listeners::new(data_plane.clone(), snapshot.clone(), &config.limits);
        let metrics = Arc::new(Metrics::new(snapshot.clone(), listeners.registry()));
        let store = StateStore::new(&config.state_dir);
        let mut registry = UpstreamRegistry::default();
        let now = Instant::now();
        let mut services = Vec::new();
        let mut resumes = Vec::new();
        for service in &config.services {
            metrics.register_service(&service.name, &hook_names(service));
            let route = build_service(service, &mut registry, &data_plane);
            let (rollout, resume) = match Plan::of(service) {
                None => (None, Resume::Nothing),
                Some(plan) => {
                    let (run, resume) = load_rollout(&store, service, plan, now)?;
                    (Some(run), resume)
                }
            };
            resumes.push((service.name.clone(), resume));
            services.push(ServiceRun {
                hooks: hook_statuses(service, BTreeMap::new()),
                config: service.clone(),
                route,
                rollout,
            });
        }
        let bound = listeners.prepare(&config.listeners)?;
        let (command_tx, commands) = mpsc::channel(64);
        let (hook_tx, hook_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let config_status = ConfigStatus {
            path: config.path.display().to_string(),
            loaded_at: status::timestamp(SystemTime::now()),
            version: config.version.clone(),
            last_error: None,
            last_error_at: None,
        };
        let mut controller = Controller {
            admin_token: Arc::new(arc_swap::ArcSwap::from_pointee(config.admin.token.clone())),
            config: Arc::new(config),
            services,
            registry,
            snapshot: snapshot.clone(),
            generation: 0,
            listeners,
            store,
            metrics: metrics.clone(),
            data_plane,
            commands,
            hook_tx,
            hook_rx,
            status_tx,
            config_status,
            origin: now,
            last_tick: now,
            resumes,
        };
        controller.publish_snapshot();
        let config = controller.config.clone();
        controller
            .listeners
            .apply(&config.listeners, bound, &config.limits);
        controller.publish_status();
        let started = Started {
            handle: ControllerHandle {
                commands: command_tx,
                status: status_rx,
            },
            snapshot,
            metrics,
            listeners: controller.listeners.local_addrs(),
            admin_token: controller.admin_token.clone(),
        };
        Ok((controller, started))
    }

    /// Runs until shut down (or until every handle is dropped).
    pub async fn run(mut self) {
        for (service, resume) in std::mem::take(&mut self.resumes) {
            self.resume(&service, resume);
        }
        self.publish_status();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        self.last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                Some(done) = self.hook_rx.recv() => self.hook_done(done),
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown { grace, reply }) => {
                        tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight requests");
                        let open = self.listeners.shutdown(grace).await;
                        let _ = reply.send(open);
                        break;
                    }
                    Some(command) => self.command(command),
                },
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.config.name == name)
    }

    fn resume(&mut self, service: &str, resume: Resume) {
        let Some(index) = self.index_of(service) else {
            return;
        };
        let inputs = match resume {
            Resume::Nothing => Vec::new(),
            Resume::Start => vec![Input::Start {
                run_id: new_run_id(),
            }],
            Resume::Restored { steps_changed } => {
                let mut inputs = vec![Input::Restored];
                if steps_changed {
                    inputs.push(Input::StepsChanged {
                        run_id: new_run_id(),
                    });
                }
                inputs
            }
            Resume::StepsChanged => vec![Input::StepsChanged {
                run_id: new_run_id(),
            }],
        };
        for input in inputs {
            if let Err(err) = self.apply(index, input) {
                tracing::error!(service, error = %err, "could not resume the rollout");
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Control { service, op, reply } => {
                let result = self.control(&service, op);
                self.publish_status();
                let _ = reply.send(result);
            }
            Command::Reload { source, reply } => {
                let result = self.reload(source);
                self.publish_status();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn control(&mut self, service: &str, op: Op) -> Result<ServiceStatus, ControlError> {
        let index = self
            .index_of(service)
            .ok_or_else(|| ControlError::UnknownService(service.to_string()))?;
        if self.services[index].rollout.is_none() {
            return Err(ControlError::NoRollout(service.to_string()));
        }
        tracing::info!(service, op = ?op, "operator command");
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
            Op::SetWeight(weight) => Input::SetWeight(weight),
        };
        self.apply(index, input)?;
        Ok(self.service_status(index))
    }

    /// Applies an input to a service's rollout: state, then disk, then effects.
    fn apply(&mut self, index: usize, input: Input) -> Result<(), ControlError> {
        let now = Instant::now();
        let service = &mut self.services[index];
        let name = service.config.name.clone();
        let Some(run) = service.rollout.as_mut() else {
            return Err(ControlError::NoRollout(name));
        };
        let before = run.state.clone();
        let effects = machine::apply(&run.plan, &mut run.state, input)
            .map_err(|r| ControlError::Refused(r.0))?;
        if run.state != before {
            let progress_only = same_but_progress(&before, &run.state);
            let due = now.duration_since(run.persisted_at) >= PERSIST_PROGRESS_EVERY;
            if !progress_only || due {
                match self.store.save(&name, &run.state) {
                    Ok(()) => run.persisted_at = now,
                    Err(err) => {
                        let rolling_back =
                            effects.iter().any(|e| matches!(e, Effect::RolledBack(_)));
                        tracing::error!(service = %name, error = %err, "cannot save the rollout state");
                        if !rolling_back && !progress_only {
                            // Not written, so not done: the state stays as it was on disk.
                            run.state = before;
                            return Err(ControlError::Persist(err.to_string()));
                        }
                    }
                }
            }
        }
        if effects.iter().any(|e| {
            matches!(
                e,
                Effect::Event {
                    event: HookEvent::Started,
                    ..
                }
            )
        }) {
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
                    tracing::info!(service = %name, event = event.as_str(), "{reason}");
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
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick);
        self.last_tick = now;
        let at = now.duration_since(self.origin);
        for index in 0..self.services.len() {
            self.tick_service(index, at, elapsed);
        }
        self.publish_status();
    }

    fn tick_service(&mut self, index: usize, at: Duration, elapsed: Duration) {
        let service = &mut self.services[index];
        let Some(run) = service.rollout.as_mut() else {
            return;
        };
        run.windows.record(
            at,
            service.route.old.stats.counts(),
            service.route.new.stats.counts(),
        );
        if run.state.phase == Phase::Progressing {
            self.apply_logged(index, Input::Tick(elapsed));
        }
        let Some(run) = self.services[index].rollout.as_mut() else {
            return;
        };
        let Some(analysis) = run.plan.analysis.clone() else {
            return;
        };
        if !run.state.is_watched() {
            run.next_check = at + analysis.interval;
            return;
        }
        if let Some(reason) = analysis
            .trip
            .as_ref()
            .and_then(|t| analysis::trip(t, &run.windows))
        {
            tracing::warn!(service = %self.services[index].config.name, "{reason}");
            self.apply_logged(index, Input::Trip { reason });
        }
        let Some(run) = self.services[index].rollout.as_mut() else {
            return;
        };
        // Ticks jitter by milliseconds: a check due within half a tick is due now.
        if at + Duration::from_millis(500) < run.next_check || !run.state.is_watched() {
            return;
        }
        run.next_check = (run.next_check + analysis.interval).max(at + analysis.interval / 2);
        let check = analysis::evaluate(&analysis, &run.windows.over(analysis.window));
        run.last_check = Some((SystemTime::now(), check.clone()));
        let name = self.services[index].config.name.clone();
        self.metrics.check(&name, check.verdict.label());
        let summary = check.summary();
        match check.verdict {
            Verdict::Fail => tracing::warn!(service = %name, "check {summary}"),
            _ => tracing::info!(service = %name, "check {summary}"),
        }
        let verdict = check.verdict;
        self.apply_logged(index, Input::Check { verdict, summary });
    }

    /// Applies an input that cannot be refused (time, checks); logs if it somehow is.
    fn apply_logged(&mut self, index: usize, input: Input) {
        if let Err(err) = self.apply(index, input) {
            tracing::error!(service = %self.services[index].config.name, error = %err, "rollout input failed");
        }
    }

    /// The hook payload; `at` overrides step, weight and state with an event's own.
    fn payload(&self, index: usize, event: &str, reason: &str, at: Option<EventAt>) -> Payload {
        let service = &self.services[index];
        let (state, step, weight, run_id, analysis) = match &service.rollout {
            Some(run) => (
                at.map_or_else(|| run.state.display_state(&run.plan), |a| a.state)
                    .to_string(),
                at.map_or((run.state.step + 1).min(run.plan.steps.len()), |a| a.step),
                at.map_or(run.state.weight, |a| a.weight),
                run.state.run_id.clone(),
                run.last_check
                    .as_ref()
                    .and_then(|(at, check)| serde_json::to_value(check_status(*at, check)).ok())
                    .unwrap_or(serde_json::Value::Null),
            ),
            None => (
                "static".into(),
                0,
                service.config.weight,
                String::new(),
                serde_json::Value::Null,
            ),
        };
        Payload {
            service: service.config.name.clone(),
            event: event.to_string(),
            step,
            weight,
            state,
            reason: reason.to_string(),
            run_id,
            timestamp: status::timestamp(SystemTime::now()),
            analysis,
        }
    }

    fn runner(&self) -> hooks::Runner {
        hooks::Runner {
            dir: Arc::from(self.config.dir.as_path()),
        }
    }

    fn spawn_step_hook(&mut self, index: usize, step: usize, hook_name: &str) {
        let service = &self.services[index];
        let Some(hook) = service.config.hook(hook_name).cloned() else {
            return;
        };
        let kind = match service
            .rollout
            .as_ref()
            .and_then(|r| r.plan.steps.get(step))
        {
            Some(planned) if matches!(planned.kind, super::schedule::PlannedKind::Gate { .. }) => {
                "gate"
            }
            _ => "run",
        };
        let reason = format!("step {}: {kind} {hook_name}", step + 1);
        let payload = self.payload(index, kind, &reason, None);
        let name = service.config.name.clone();
        self.mark_running(index, hook_name, kind);
        let hook_name = hook_name.to_string();
        self.runner()
            .spawn(hook, payload, self.hook_tx.clone(), move |outcome| {
                HookDone::Step {
                    service: name,
                    step,
                    hook: hook_name,
                    outcome,
                }
            });
    }

    fn spawn_event_hooks(
        &mut self,
        index: usize,
        event: HookEvent,
        reason: &str,
        at: Option<EventAt>,
    ) {
        let subscribed: Vec<_> = self.services[index]
            .config
            .hooks
            .iter()
            .filter(|h| h.on.contains(&event))
            .cloned()
            .collect();
        for hook in subscribed {
            let payload = self.payload(index, event.as_str(), reason, at);
            let service = self.services[index].config.name.clone();
            let hook_name = hook.name.clone();
            self.mark_running(index, &hook_name, event.as_str());
            self.runner()
                .spawn(hook, payload, self.hook_tx.clone(), move |outcome| {
                    HookDone::Event {
                        service,
                        hook: hook_name,
                        event,
                        outcome,
                    }
                });
        }
    }

    fn mark_running(&mut self, index: usize, hook: &str, event: &str) {
        let status = self.services[index]
            .hooks
            .entry(hook.to_string())
            .or_default();
        status.name = hook.to_string();
        status.running = true;
        status.last_event = Some(event.to_string());
    }

    fn hook_done(&mut self, done: HookDone) {
        let (service, hook, label, outcome) = match &done {
            HookDone::Step {
                service,
                hook,
                outcome,
                ..
            } => (service.clone(), hook.clone(), "step", outcome),
            HookDone::Event {
                service,
                hook,
                event,
                outcome,
            } => (service.clone(), hook.clone(), event.as_str(), outcome),
        };
        self.metrics.hook_run(
            &service,
            &hook,
            outcome.result,
            outcome.duration.as_secs_f64(),
        );
        let tail = |text: &str| HookOutcome::tail(text, 512).trim_end().to_string();
        if outcome.ok() {
            tracing::info!(service = %service, %hook, on = label, detail = %outcome.detail, duration = ?outcome.duration, "hook succeeded");
        } else {
            tracing::warn!(
                service = %service, %hook, on = label, detail = %outcome.detail, duration = ?outcome.duration,
                stdout = %tail(&outcome.stdout), stderr = %tail(&outcome.stderr), "hook failed"
            );
        }
        let Some(index) = self.index_of(&service) else {
            return;
        };
        let status = self.services[index].hooks.entry(hook.clone()).or_default();
        status.name = hook.clone();
        status.runs += 1;
        status.running = false;
        status.last_result = Some(outcome.result.label().to_string());
        status.last_detail = Some(outcome.detail.clone());
        status.last_duration_ms = Some(outcome.duration.as_millis() as u64);
        status.last_at = Some(status::timestamp(outcome.finished_at));
        status.stdout_tail = HookOutcome::tail(&outcome.stdout, STATUS_TAIL).to_string();
        status.stderr_tail = HookOutcome::tail(&outcome.stderr, STATUS_TAIL).to_string();
        if let HookDone::Step {
            step,
            hook,
            outcome,
            ..
        } = done
        {
            let input = Input::HookFinished {
                step,
                hook,
                ok: outcome.ok(),
                detail: outcome.detail,
            };
            self.apply_logged(index, input);
        }
        self.publish_status();
    }

    fn reload(&mut self, source: ReloadSource) -> Result<String, Vec<String>> {
        let new = match config::load(&self.config.path) {
            Ok(new) => new,
            Err(errors) => {
                return Err(
                    self.reload_failed(source, errors.0.iter().map(|e| e.to_string()).collect())
                )
            }
        };
        if source == ReloadSource::Watch && new.inputs == self.config.inputs {
            // What is on disk is what runs (perhaps again, after a broken edit was undone).
            self.config_status.last_error = None;
            self.config_status.last_error_at = None;
            return Ok(new.version);
        }
        let bound = match self.listeners.prepare(&new.listeners) {
            Ok(bound) => bound,
            Err(err) => return Err(self.reload_failed(source, vec![err.to_string()])),
        };
        let store = StateStore::new(&new.state_dir);
        let now = Instant::now();
        // Read what new rollouts need from disk first: a bad state file fails the reload
        // before anything changed.
        let mut loaded = HashMap::new();
        for service in &new.services {
            let existing = self
                .index_of(&service.name)
                .and_then(|i| self.services[i].rollout.as_ref())
                .is_some();
            if let (Some(plan), false) = (Plan::of(service), existing) {
                match load_rollout(&store, service, plan, now) {
                    Ok(run) => {
                        loaded.insert(service.name.clone(), run);
                    }
                    Err(err) => return Err(self.reload_failed(source, vec![err.to_string()])),
                }
            }
        }
        if new.admin.addr != self.config.admin.addr {
            tracing::warn!(
                old = %self.config.admin.addr, new = %new.admin.addr,
                "admin.addr changes take effect at the next restart"
            );
        }

        let mut previous: HashMap<String, ServiceRun> = self
            .services
            .drain(..)
            .map(|s| (s.config.name.clone(), s))
            .collect();
        let mut resumes = Vec::new();
        for service in &new.services {
            self.metrics
                .register_service(&service.name, &hook_names(service));
            let route = build_service(service, &mut self.registry, &self.data_plane);
            let old = previous.remove(&service.name);
            let old_hooks = old.as_ref().map(|o| o.hooks.clone()).unwrap_or_default();
            let rollout = match (Plan::of(service), old.and_then(|o| o.rollout)) {
                (None, _) => None,
                (Some(plan), Some(mut run)) => {
                    let changed = plan.fingerprint != run.state.steps_fingerprint;
                    run.windows.set_span(window_span(&plan));
                    run.plan = plan;
                    if changed {
                        resumes.push((service.name.clone(), Resume::StepsChanged));
                    }
                    Some(run)
                }
                (Some(_), None) => loaded.remove(&service.name).map(|(run, resume)| {
                    resumes.push((service.name.clone(), resume));
                    run
                }),
            };
            self.services.push(ServiceRun {
                hooks: hook_statuses(service, old_hooks),
                config: service.clone(),
                route,
                rollout,
            });
        }
        for removed in previous.keys() {
            tracing::info!(service = %removed, "service removed from the config; its state file stays");
        }
        self.admin_token.store(Arc::new(new.admin.token.clone()));
        self.config = Arc::new(new);
        self.store = store;
        let config = self.config.clone();
        self.listeners
            .apply(&config.listeners, bound, &config.limits);
        self.publish_snapshot();
        self.metrics.reload(true);
        self.config_status = ConfigStatus {
            path: config.path.display().to_string(),
            loaded_at: status::timestamp(SystemTime::now()),
            version: config.version.clone(),
            last_error: None,
            last_error_at: None,
        };
        tracing::info!(version = %config.version, trigger = source.label(), "config reloaded");
        for (service, resume) in resumes {
            self.resume(&service, resume);
        }
        for index in 0..self.services.len() {
            self.spawn_event_hooks(
                index,
                HookEvent::Reloaded,
                &format!("config {} loaded", config.version),
                None,
            );
        }
        Ok(config.version.clone())
    }

    fn reload_failed(&mut self, source: ReloadSource, errors: Vec<String>) -> Vec<String> {
        self.metrics.reload(false);
        self.config_status.last_error = Some(errors.join("\n"));
        self.config_status.last_error_at = Some(status::timestamp(SystemTime::now()));
        tracing::error!(
            trigger = source.label(),
            "config not reloaded; the running config stays:\n{}",
            errors.join("\n")
        );
        errors
    }

    /// Routes every service at its current weight.
    fn publish_snapshot(&mut self) {
        self.generation += 1;
        let routes = self
            .services
            .iter()
            .map(|service| Route {
                service: service.route.clone(),
                new_weight: current_weight(service),
            })
            .collect();
        self.snapshot.store(Arc::new(Snapshot {
            routes,
            generation: self.generation,
        }));
    }

    fn publish_status(&mut self) {
        let services = (0..self.services.len())
            .map(|i| self.service_status(i))
            .collect::<Vec<_>>();
        for service in &services {
            self.metrics
                .rollout(&service.name, service.weight, service.step, &service.state);
        }
        let status = Status {
            services,
            config: self.config_status.clone(),
        };
        self.status_tx.send_replace(Arc::new(status));
    }

    fn service_status(&self, index: usize) -> ServiceStatus {
        let service = &self.services[index];
        let now_ms = now_millis();
        let backends = [&service.route.old, &service.route.new]
            .into_iter()
            .flat_map(|pool| {
                pool.backends.iter().map(move |b| BackendStatus {
                    pool: pool.kind.label().to_string(),
                    addr: b.addr.to_string(),
                    up: b.is_available(now_ms),
                    healthy: b.is_healthy(),
                    ejected: b.is_ejected(now_ms),
                    in_flight: b.in_flight(),
                })
            })
            .collect();
        let hooks = service.hooks.values().cloned().collect();
        let Some(run) = &service.rollout else {
            return ServiceStatus {
                name: service.config.name.clone(),
                state: "static".to_string(),
                weight: service.config.weight.percent(),
                hooks,
                backends,
                ..ServiceStatus::default()
            };
        };
        let state = &run.state;
        let started = state.phase != Phase::Pending;
        ServiceStatus {
            name: service.config.name.clone(),
            state: state.display_state(&run.plan).to_string(),
            step: if started {
                (state.step + 1).min(run.plan.steps.len())
            } else {
                0
            },
            steps: run.plan.steps.len(),
            step_description: run
                .plan
                .steps
                .get(state.step)
                .filter(|_| started)
                .map(|s| s.describe()),
            weight: state.weight.percent(),
            hold_remaining_s: state.hold_remaining(&run.plan).map(|d| d.as_secs_f64()),
            next_weight: run
                .plan
                .next_weight(state.step, state.weight)
                .map(|w| w.percent()),
            last_check: run
                .last_check
                .as_ref()
                .map(|(at, check)| check_status(*at, check)),
            consecutive_failures: state.consecutive_failures,
            failure_threshold: run.plan.analysis.as_ref().map(|a| a.failure_threshold),
            reason: state.reason.clone(),
            rollback_reason: state.rollback_reason.map(|r| r.label().to_string()),
            pause_cause: state.pause_cause.map(|c| format!("{c:?}").to_lowercase()),
            point_of_no_return_passed: state.point_of_no_return_passed,
            run_id: Some(state.run_id.clone()).filter(|id| !id.is_empty()),
            hooks,
            backends,
        }
    }
}

fn hook_names(service: &Service) -> Vec<String> {
    service.hooks.iter().map(|h| h.name.clone()).collect()
}

fn current_weight(service: &ServiceRun) -> Weight {
    service
        .rollout
        .as_ref()
        .map_or(service.config.weight, |run| run.state.weight)
}

/// The state of a service's rollout from disk, or a new one.
fn load_rollout(
    store: &StateStore,
    service: &Service,
    plan: Plan,
    now: Instant,
) -> Result<(RolloutRun, Resume), StateError> {
    match store.load(&service.name)? {
        Some(state) => {
            let steps_changed = state.steps_fingerprint != plan.fingerprint;
            tracing::info!(
                service = %service.name, phase = state.phase.label(), step = state.step + 1, weight = %state.weight,
                "rollout state restored from {}", store.path(&service.name).display()
            );
            Ok((
                RolloutRun::new(plan, state, now),
                Resume::Restored { steps_changed },
            ))
        }
        None => {
            let state = RolloutState::new(&plan, service.weight);
            let resume = if plan.start == config::StartMode::Auto {
                Resume::Start
            } else {
                Resume::Nothing
            };
            Ok((RolloutRun::new(plan, state, now), resume))
        }
    }
}

/// Hook statuses for every hook of the service, keeping what is known of existing ones.
fn hook_statuses(
    service: &Service,
    mut known: BTreeMap<String, HookStatus>,
) -> BTreeMap<String, HookStatus> {
    service
        .hooks
        .iter()
        .map(|hook| {
            let status = known.remove(&hook.name).unwrap_or_else(|| HookStatus {
                name: hook.name.clone(),
                ..HookStatus::default()
            });
            (hook.name.clone(), status)
        })
        .collect()
}

fn check_status(at: SystemTime, check: &Check) -> CheckStatus {
    CheckStatus {
        at: status::timestamp(at),
        passed: check.verdict == Verdict::Pass,
        result: check.verdict.label().to_string(),
        new: check.new,
        old: check.old,
        breaches: check.breaches.iter().map(|b| b.text.clone()).collect(),
        note: check.note.clone(),
    }
}

/// True when only the counters of elapsed time differ.
fn same_but_progress(a: &RolloutState, b: &RolloutState) -> bool {
    let mut a = a.clone();
    a.hold_observed_ms = b.hold_observed_ms;
    a.gate_elapsed_ms = b.gate_elapsed_ms;
    a.gate_wait_ms = b.gate_wait_ms;
    a == *b
}

fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

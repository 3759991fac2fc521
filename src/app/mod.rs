//! The server process: runtimes, the controller, the admin API, signals, the config watcher.
//!
//! `run` is `cutover run`: it blocks until SIGTERM or SIGINT, then stops accepting, lets
//! in-flight requests finish within `shutdown_grace` and returns. `start` brings the same
//! pieces up on the current runtime, for the demo and the tests.
//!
//! Runtimes: the data plane gets a single-threaded tokio runtime per CPU (`runtimes`): the
//! main thread's, and a worker thread's for each further CPU. The controller runs on a
//! thread and runtime of its own, so writing state files and spawning hooks never takes
//! time from requests.
//!
//! Restarts and upgrades without a refused request (the state lock, the takeover) are
//! `handover`.

mod handover;
mod memory;

pub use memory::Allocator;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::admin;
use crate::config::{self, watch::ConfigWatcher, Config, ConfigErrors, LogFormat};
use crate::fleet::store::FleetStore;
use crate::fleet::traffic::FleetTraffic;
use crate::fleet::{Fleet, FleetMetrics};
use crate::metrics::Metrics;
use crate::proxy::server::{bind_listener, PortSharing};
use crate::proxy::Listeners;
use crate::rollout::controller::TrafficSource;
use crate::rollout::controller::{
    AdminToken, Controller, ControllerHandle, LocalTraffic, Parts, ReloadSource, RolloutMetrics,
    StartError,
};
use crate::rollout::state::{StateFiles, StateStore};
use crate::routing::SharedSnapshot;
use crate::runtimes::{DataPlane, RuntimeThread};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on the admin address {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    StateLock(String),
    #[error("cannot take over from pid {pid}: {source}")]
    Takeover { pid: i32, source: std::io::Error },
}

impl From<std::io::Error> for StartError {
    fn from(err: std::io::Error) -> StartError {
        StartError::Fleet(err.to_string())
    }
}

/// A running cutover.
pub struct App {
    pub controller: ControllerHandle,
    /// Bound listener addresses, by their configured address.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub snapshot: SharedSnapshot,
    shutdown_grace: Duration,
    _watcher: Option<ConfigWatcher>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listeners", &self.listeners)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct Options {
    /// Reload when the config file's directory changes.
    pub watch: bool,
    /// Where the controller runs; the current runtime when `None`.
    pub controller_runtime: Option<tokio::runtime::Handle>,
    /// Record the admin address and token file next to the config for client commands
    /// (`admin::runtime_file`), before the config watcher starts so that it never sees
    /// the write.
    pub admin_record: Option<Option<std::path::PathBuf>>,
    /// Sockets bound ahead of the start (a takeover), by configured listener address.
    pub bound_listeners: Vec<(String, std::net::TcpListener)>,
    /// The admin socket, bound ahead of the start (a takeover).
    pub bound_admin: Option<std::net::TcpListener>,
    /// The other cores' runtimes, where listeners accept too (`runtimes`); the current
    /// runtime alone when empty.
    pub workers: Vec<tokio::runtime::Handle>,
}

/// Starts cutover on the current runtime.
pub async fn start(config: Config, options: Options) -> Result<App, AppError> {
    let admin_socket = match options.bound_admin {
        Some(socket) => Ok(socket),
        None => bind_listener(config.admin.addr, PortSharing::Exclusive),
    };
    let admin_listener = admin_socket
        .and_then(|socket| {
            socket.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(socket)
        })
        .map_err(|source| AppError::Admin {
            addr: config.admin.addr,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.addr);
    let shutdown_grace = config.limits.shutdown_grace;
    if let Some(token_file) = &options.admin_record {
        record_admin_address(&config.origin.path, admin_addr, token_file.clone());
    }
    let started = wire(config, options.bound_listeners, options.workers)?;
    match &options.controller_runtime {
        Some(runtime) => drop(runtime.spawn(started.controller.run())),
        None => drop(tokio::spawn(started.controller.run())),
    }
    admin::serve(
        admin_listener,
        started.handle.clone(),
        started.metrics.clone(),
        started.admin_token,
    );
    let watcher = if options.watch {
        let handle = started.handle.clone();
        let targets = started.handle.watch_targets();
        match config::watch::watch(targets, move || handle.request_reload(ReloadSource::Watch)) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch the config directory; reload with SIGHUP or POST /reload");
                None
            }
        }
    } else {
        None
    };
    for (name, addr) in &started.listeners {
        tracing::info!(listener = %name, %addr, "serving");
    }
    tracing::info!(%admin_addr, "admin API");
    Ok(App {
        controller: started.handle,
        listeners: started.listeners,
        admin_addr,
        metrics: started.metrics,
        snapshot: started.snapshot,
        shutdown_grace,
        _watcher: watcher,
    })
}

/// The controller and what the rest of the app shares with it.
struct Wired {
    controller: Controller,
    handle: ControllerHandle,
    snapshot: SharedSnapshot,
    metrics: Arc<Metrics>,
    listeners: Vec<(String, SocketAddr)>,
    admin_token: AdminToken,
}

/// Builds the snapshot, listeners, metrics and the controller that runs them.
fn wire(
    config: Config,
    bound: Vec<(String, std::net::TcpListener)>,
    workers: Vec<tokio::runtime::Handle>,
) -> Result<Wired, StartError> {
    let data_plane = tokio::runtime::Handle::current();
    crate::runtimes::number(&workers);
    let snapshot: SharedSnapshot = Arc::default();
    drop(tokio::spawn(crate::routing::close_expired_connections(
        Arc::downgrade(&snapshot),
    )));
    let runtimes = std::iter::once(data_plane.clone()).chain(workers).collect();
    let listeners = Listeners::new(runtimes, snapshot.clone(), &config.limits);
    listeners.adopt(bound);
    let mut metrics = Metrics::new(snapshot.clone(), listeners.registry());
    let rollout_metrics = RolloutMetrics::register(metrics.registry_mut());
    let admin_token: AdminToken =
        Arc::new(arc_swap::ArcSwap::from_pointee(config.admin.token.clone()));
    // Fleet mode swaps the two seams: state in etcd, traffic summed over the fleet.
    let fleet = match &config.fleet {
        None => None,
        Some(settings) => {
            let fleet_metrics = FleetMetrics::register(metrics.registry_mut());
            Some(Fleet::start(
                settings,
                &config,
                snapshot.clone(),
                fleet_metrics,
            )?)
        }
    };
    let (store, traffic): (Box<dyn StateStore>, Box<dyn TrafficSource>) = match &fleet {
        None => (
            Box::new(StateFiles::new(&config.state_dir)),
            Box::new(LocalTraffic),
        ),
        Some(fleet) => (
            Box::new(FleetStore::new(fleet.clone(), &config)),
            Box::new(FleetTraffic::new(fleet.clone())),
        ),
    };
    let parts = Parts {
        store,
        traffic,
        config,
        data_plane,
        snapshot: snapshot.clone(),
        listeners,
        metrics: rollout_metrics,
        admin_token: admin_token.clone(),
    };
    let (controller, handle) = Controller::start(parts)?;
    if let Some(fleet) = &fleet {
        fleet.attach(handle.clone());
    }
    Ok(Wired {
        listeners: controller.listener_addrs(),
        controller,
        handle,
        snapshot,
        metrics: Arc::new(metrics),
        admin_token,
    })
}

impl App {
    /// The bound address of the listener configured as `name`.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting, waits for in-flight requests up to the grace period; returns how
    /// many connections were still open.
    pub async fn shutdown(&self) -> usize {
        self.controller.shutdown(self.shutdown_grace).await
    }
}

/// `cutover run -c FILE`.
pub fn run(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "cutover: the config has {} error(s); not starting",
                errors.0.len()
            );
            return ExitCode::from(1);
        }
    };
    init_logging(config.log_format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cutover: {err}");
            ExitCode::from(1)
        }
    }
}

fn serve(config: Config) -> Result<(), AppError> {
    let config_path = config.origin.path.clone();
    // Read now, while the file is the one that was validated; it may be edited later.
    let token_file = config::load::admin_settings(&config_path)
        .ok()
        .and_then(|(_, token_file)| token_file);
    let data_plane = data_plane().map_err(AppError::Runtime)?;
    let workers = data_plane.workers();
    let (state_lock, bound) = {
        let _context = data_plane.main().enter();
        take_state_dir(&config)?
    };
    // The controller's own thread and single-threaded runtime (slot 0: it counts as no
    // data-plane runtime's).
    let controller = RuntimeThread::spawn("cutover-controller", 0).map_err(AppError::Runtime)?;
    let options = Options {
        watch: true,
        admin_record: Some(token_file),
        controller_runtime: Some(controller.handle().clone()),
        bound_listeners: bound.listeners,
        bound_admin: bound.admin,
        workers: workers.clone(),
    };
    let result = data_plane.main().block_on(async {
        // Installed before anything is served or recorded: a SIGTERM that comes early is a
        // clean stop too, never the default action that kills the process.
        let signals = Signals::install();
        let app = start(config, options).await?;
        // Each thread's allocator hands back its own freed pages.
        drop(tokio::spawn(memory::return_unused()));
        for worker in &workers {
            drop(worker.spawn(memory::return_unused()));
        }
        wait_for_signals(&app, signals).await;
        let open = app.shutdown().await;
        if open > 0 {
            tracing::warn!(
                open,
                "connections still open after the grace period are closed"
            );
        } else {
            tracing::info!("all connections finished");
        }
        Ok(())
    });
    admin::runtime_file::remove(&config_path, std::process::id());
    drop(controller);
    // The controller wrote its last state: a successor may read it now.
    drop(state_lock);
    data_plane.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Tells client commands where this process serves its admin API, so that they can reach
/// it even when the config file no longer parses (see `admin::runtime_file`).
fn record_admin_address(
    config_path: &Path,
    admin: SocketAddr,
    token_file: Option<std::path::PathBuf>,
) {
    let info = admin::runtime_file::RuntimeInfo {
        pid: std::process::id(),
        admin,
        token_file,
        config: config_path.to_path_buf(),
        started_at: crate::status::timestamp(std::time::SystemTime::now()),
    };
    match admin::runtime_file::write(config_path, &info) {
        Ok(path) => tracing::debug!(path = %path.display(), "admin address recorded"),
        Err(err) => tracing::warn!(
            error = %err,
            "cannot record the admin address next to the config; client commands will need a config that parses or --admin"
        ),
    }
}

/// The signals `cutover run` handles.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Some(Signals {
            hangup: signal(SignalKind::hangup()).ok()?,
            terminate: signal(SignalKind::terminate()).ok()?,
            interrupt: signal(SignalKind::interrupt()).ok()?,
        })
    }
}

/// Sockets a takeover binds before the process it replaces lets go.
#[derive(Debug, Default)]
struct Bound {
    listeners: Vec<(String, std::net::TcpListener)>,
    admin: Option<std::net::TcpListener>,
}

/// Takes the state directory's lock; with `CUTOVER_TAKEOVER=1` and another cutover
/// holding it, binds every port first, asks the holder to stop, and waits for it.
fn take_state_dir(config: &Config) -> Result<(handover::StateLock, Bound), AppError> {
    use handover::{LockError, StateLock};
    let pid = match StateLock::try_acquire(&config.state_dir) {
        Ok(lock) => return Ok((lock, Bound::default())),
        Err(LockError::Held { pid, .. })
            if std::env::var(handover::TAKEOVER_VAR).is_ok_and(|v| v == "1") =>
        {
            pid
        }
        Err(err) => return Err(AppError::StateLock(err.to_string())),
    };
    // The admin socket first: a port that cannot be shared (a running cutover from before
    // SO_REUSEPORT) fails here, before any client connection was queued in this process.
    let admin = bind_listener(config.admin.addr, PortSharing::Shared).map_err(|source| {
        AppError::Admin {
            addr: config.admin.addr,
            source,
        }
    })?;
    let mut bound = Bound {
        listeners: Vec::new(),
        admin: Some(admin),
    };
    for listener in &config.listeners {
        let socket = bind_listener(listener.addr, PortSharing::Shared).map_err(|source| {
            AppError::Takeover {
                pid,
                source: std::io::Error::new(
                    source.kind(),
                    format!("cannot bind {}: {source}", listener.addr_text),
                ),
            }
        })?;
        if let Err(err) = handover::steer_new_connections_here(&socket) {
            // Without it the kernel spreads connections over both processes: still no
            // refusal, except for the few in the old one's queue at the moment it closes.
            tracing::warn!(listener = %listener.addr_text, error = %err, "cannot steer new connections to this process");
        }
        bound.listeners.push((listener.addr_text.clone(), socket));
    }
    tracing::info!(
        pid,
        "takeover: listening beside pid {pid}; asking it to finish its requests and stop"
    );
    handover::terminate(pid).map_err(|source| AppError::Takeover { pid, source })?;
    let within = config.limits.shutdown_grace + Duration::from_secs(10);
    let lock = StateLock::wait(&config.state_dir, pid, within)
        .map_err(|err| AppError::StateLock(err.to_string()))?;
    tracing::info!(pid, "takeover: pid {pid} released the state directory");
    Ok((lock, bound))
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn wait_for_signals(app: &App, signals: Option<Signals>) {
    let Some(Signals {
        mut hangup,
        mut terminate,
        mut interrupt,
    }) = signals
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => app.controller.request_reload(ReloadSource::Signal),
            _ = terminate.recv() => { tracing::info!("SIGTERM received"); return; }
            _ = interrupt.recv() => { tracing::info!("SIGINT received"); return; }
        }
    }
}

/// One runtime per core (`runtimes`); `CUTOVER_WORKER_THREADS` sets how many.
fn data_plane() -> std::io::Result<DataPlane> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = runtime_count(std::env::var("CUTOVER_WORKER_THREADS").ok(), cpus);
    tracing::info!(runtimes = threads, cpus, "data plane");
    DataPlane::build(threads)
}

/// How many runtimes: `configured` (`CUTOVER_WORKER_THREADS`) when it is a whole number
/// above 0, else one per CPU; either way said in the log where it is unusual.
fn runtime_count(configured: Option<String>, cpus: usize) -> usize {
    let Some(value) = configured else {
        return cpus;
    };
    let Some(threads) = value.trim().parse::<usize>().ok().filter(|&n| n > 0) else {
        tracing::warn!(%value, cpus, "CUTOVER_WORKER_THREADS is not a whole number above 0; one runtime per CPU");
        return cpus;
    };
    if threads > cpus {
        tracing::warn!(
            threads,
            cpus,
            "more runtimes than CPUs this process may use: each new connection wakes every idle one"
        );
    }
    threads
}

/// Logs to stderr in `format`; `CUTOVER_LOG` (or `RUST_LOG`) sets the filter, `info` by
/// default. The format is read once: a reload that changes `log_format` says so and
/// keeps the running one.
pub fn init_logging(format: LogFormat) {
    let filter = std::env::var("CUTOVER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::runtime_count;

    #[test]
    fn worker_threads_from_the_environment_or_one_per_cpu() {
        let count = |value: Option<&str>| runtime_count(value.map(str::to_string), 4);
        assert_eq!(count(None), 4);
        assert_eq!(count(Some("2")), 2);
        assert_eq!(count(Some(" 3\n")), 3);
        assert_eq!(
            count(Some("8")),
            8,
            "more than the CPUs: warned about, kept"
        );
        for bad in ["0", "-1", "two", ""] {
            assert_eq!(count(Some(bad)), 4, "{bad:?}");
        }
    }
}

//! A real proxy (`app::start`) on 127.0.0.1:0 from a temporary directory, the configs
//! tests give it, and what tests read back from it: the snapshot, the controller's status,
//! metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cutover::app::{self, App, Options};
use cutover::status::{HookStatus, ServiceStatus};
use cutover::ReloadSource;

use super::eventually;

/// A proxy running the given config, from its own temporary directory.
pub struct TestProxy {
    pub app: App,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestProxy {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cutover.yaml")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr)
    }
}

/// Writes `yaml` to a temporary directory and starts cutover on the current runtime.
pub async fn spawn_proxy(yaml: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    spawn_proxy_in(dir, yaml, false).await
}

pub async fn spawn_proxy_in(dir: tempfile::TempDir, yaml: &str, watch: bool) -> TestProxy {
    let options = Options {
        watch,
        ..Options::default()
    };
    spawn_proxy_with(dir, yaml, options).await
}

/// Starts cutover on the current runtime and, when given, on the other cores' runtimes
/// (`Cores`), as `cutover run` does on a machine with that many cores.
pub async fn spawn_proxy_on_cores(yaml: &str, cores: &super::Cores) -> TestProxy {
    let options = Options {
        workers: cores.handles.clone(),
        ..Options::default()
    };
    spawn_proxy_with(tempfile::tempdir().unwrap(), yaml, options).await
}

async fn spawn_proxy_with(dir: tempfile::TempDir, yaml: &str, options: Options) -> TestProxy {
    let path = dir.path().join("cutover.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = cutover::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let app = app::start(config, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = app.listeners[0].1;
    TestProxy { app, dir, addr }
}

/// One service named `api`, OLD and NEW as given, NEW at `weight`, plus `extra` lines
/// appended to the service (indented 4 spaces).
pub fn simple_config(old: &[SocketAddr], new: &[SocketAddr], weight: &str, extra: &str) -> String {
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("        - addr: \"{a}\"\n"))
            .collect::<String>()
    };
    format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\nstate_dir: state\nlimits:\n  shutdown_grace: 5s\nservices:\n  - name: api\n    weight: {weight}\n    old:\n      backends:\n{}    new:\n      backends:\n{}{extra}",
        list(old),
        list(new)
    )
}

/// The listener block `simple_config` writes; tests that need other listeners replace it.
pub const DEFAULT_LISTENERS: &str = "listeners:\n  - addr: \"127.0.0.1:0\"\n";

/// `yaml` with its listeners replaced by `block` (a whole `listeners:` section).
pub fn with_listeners(yaml: &str, block: &str) -> String {
    assert!(
        yaml.starts_with(DEFAULT_LISTENERS),
        "simple_config no longer starts with the listener block this file expects:\n{yaml}"
    );
    yaml.replacen(DEFAULT_LISTENERS, block, 1)
}

/// Two clear-text listeners: the default one and `127.0.0.1:{port}`.
pub fn two_listeners(yaml: &str, port: u16) -> String {
    with_listeners(
        yaml,
        &format!("listeners:\n  - addr: \"127.0.0.1:0\"\n  - addr: \"127.0.0.1:{port}\"\n"),
    )
}

pub const RELOADS_OK: &str = "cutover_config_reloads_total{result=\"ok\"}";
pub const RELOADS_ERROR: &str = "cutover_config_reloads_total{result=\"error\"}";

/// NEW's weight in the routing snapshot the data path reads, in percent.
pub fn routed_weight(proxy: &TestProxy) -> f64 {
    proxy.app.snapshot.load().routes[0].new_weight.percent()
}

pub fn snapshot_generation(proxy: &TestProxy) -> u64 {
    proxy.app.snapshot.load().generation
}

pub fn running_version(proxy: &TestProxy) -> String {
    proxy.app.controller.status().config.version.clone()
}

/// (state, 1-based step, steps, weight) of the first service.
pub fn rollout(proxy: &TestProxy) -> (String, usize, usize, f64) {
    let status = proxy.app.controller.status();
    let s = &status.services[0];
    (s.state.to_string(), s.step, s.steps, s.weight)
}

/// Reloads through the controller (what `POST /reload` does) and insists it worked.
pub async fn reload_ok(proxy: &TestProxy) -> String {
    proxy
        .app
        .controller
        .reload(ReloadSource::Api)
        .await
        .unwrap_or_else(|errors| panic!("reload refused: {errors:#?}"))
}

/// The value of one series in the proxy's `/metrics`, 0 when absent.
pub fn metric(proxy: &TestProxy, series: &str) -> f64 {
    metric_in(&proxy.app.metrics.encode(), series)
}

/// The value of `series` (name and labels, as written) in a metrics text, 0 when absent.
pub fn metric_in(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// The value of the sample whose line is `series` (name and labels) and a value.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse::<f64>().ok()
    })
}

pub fn service(proxy: &TestProxy) -> ServiceStatus {
    proxy.app.controller.status().services[0].clone()
}

pub fn hook(proxy: &TestProxy, name: &str) -> HookStatus {
    let service = service(proxy);
    service
        .hooks
        .iter()
        .find(|h| h.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no hook `{name}` in the status: {service:#?}"))
}

/// Polls `condition` for up to `within`; on failure, panics with the service's status.
pub async fn wait_for(
    proxy: &TestProxy,
    what: &str,
    within: Duration,
    condition: impl FnMut() -> bool,
) {
    if !eventually(within, condition).await {
        panic!(
            "waited {within:?} for {what}; the service is now: {:#?}",
            service(proxy)
        );
    }
}

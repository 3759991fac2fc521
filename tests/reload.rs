//! Hot reload (SPEC §8) against a real proxy: reload storms under traffic, invalid files,
//! SIGHUP, `POST /reload`, the file watcher (editor saves and Kubernetes ConfigMap symlink
//! swaps), WebSockets and in-flight requests across reloads, listeners added and removed,
//! rollouts whose steps change, and renewed certificates.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover::rollout::controller::ReloadSource;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The listener block `simple_config` writes; tests that need other listeners replace it.
const DEFAULT_LISTENERS: &str = "listeners:\n  - addr: \"127.0.0.1:0\"\n";

/// `yaml` with its listeners replaced by `block` (a whole `listeners:` section).
fn with_listeners(yaml: &str, block: &str) -> String {
    assert!(
        yaml.starts_with(DEFAULT_LISTENERS),
        "simple_config no longer starts with the listener block this file expects:\n{yaml}"
    );
    yaml.replacen(DEFAULT_LISTENERS, block, 1)
}

/// Two clear-text listeners: the default one and `127.0.0.1:{port}`.
fn two_listeners(yaml: &str, port: u16) -> String {
    with_listeners(
        yaml,
        &format!("listeners:\n  - addr: \"127.0.0.1:0\"\n  - addr: \"127.0.0.1:{port}\"\n"),
    )
}

/// Saves the way editors do: a temporary file in the same directory renamed over the file.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Rewrites the file in place (truncate, write).
fn save_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The version cutover gives the file as it is on disk now.
fn version_on_disk(path: &Path) -> String {
    cutover::config::load(path)
        .unwrap_or_else(|e| panic!("the test wrote an invalid config: {e}"))
        .version
}

/// The value of one series in the proxy's `/metrics`, 0 when absent.
fn metric(proxy: &TestProxy, series: &str) -> f64 {
    metric_in(&proxy.app.metrics.encode(), series)
}

fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

const RELOADS_OK: &str = "cutover_config_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "cutover_config_reloads_total{result=\"error\"}";

/// NEW's weight in the routing snapshot the data path reads, in percent.
fn routed_weight(proxy: &TestProxy) -> f64 {
    proxy.app.snapshot.load().routes[0].new_weight.percent()
}

fn snapshot_generation(proxy: &TestProxy) -> u64 {
    proxy.app.snapshot.load().generation
}

fn running_version(proxy: &TestProxy) -> String {
    proxy.app.controller.status().config.version.clone()
}

/// (state, 1-based step, steps, weight) of the first service.
fn rollout(proxy: &TestProxy) -> (String, usize, usize, f64) {
    let status = proxy.app.controller.status();
    let s = &status.services[0];
    (s.state.to_string(), s.step, s.steps, s.weight)
}

/// Reloads through the controller (what `POST /reload` does) and insists it worked.
async fn reload_ok(proxy: &TestProxy) -> String {
    proxy
        .app
        .controller
        .reload(ReloadSource::Api)
        .await
        .unwrap_or_else(|errors| panic!("reload refused: {errors:#?}"))
}

/// One admin API call: status and JSON body (Null when the body is not JSON).
async fn admin(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(addr, request).await;
    let json = serde_json::from_str(&got.body).unwrap_or(serde_json::Value::Null);
    (got.status, json)
}

/// True when `text` holds `{path}:LINE:COL: ` with numbers for LINE and COL.
fn has_location(text: &str, path: &Path) -> bool {
    let prefix = format!("{}:", path.display());
    text.match_indices(&prefix).any(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or("");
        let col = parts.next().unwrap_or("");
        !line.is_empty()
            && !col.is_empty()
            && line.bytes().all(|b| b.is_ascii_digit())
            && col.bytes().all(|b| b.is_ascii_digit())
            && parts.next().is_some()
    })
}

/// Polls an async condition every 20 ms for up to `within`.
async fn eventually_async<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keep-alive HTTP/1.1 connection whose failures are values, not panics.
struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> Result<KeepAlive, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(KeepAlive { sender })
    }

    /// GET `path`: the status and the body.
    async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("ready: {e}"))?;
            let response = self
                .sender
                .send_request(get("api.test", path))
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer within 5s".to_string()))
    }
}

/// What the clients of a `Traffic` saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    old: usize,
    new: usize,
    /// Every request that did not get a 200, with what happened instead.
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.old += other.old;
        self.new += other.new;
        self.failures.extend(other.failures);
    }

    fn total(&self) -> usize {
        self.ok + self.failures.len()
    }

    fn assert_no_failures(&self, during: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed {during}; the first ones: {:#?}",
            self.failures.len(),
            self.total(),
            &self.failures[..self.failures.len().min(10)]
        );
    }
}

/// Paced keep-alive clients sending `GET /` until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl Traffic {
    /// `clients` connections, each sending `per_client` requests per second.
    fn start(addr: SocketAddr, clients: usize, per_client: u32) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs(1) / per_client;
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut client: Option<KeepAlive> = None;
                    let mut pace = tokio::time::interval(period);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(SeqCst) {
                        pace.tick().await;
                        if client.is_none() {
                            match KeepAlive::connect(addr).await {
                                Ok(c) => client = Some(c),
                                Err(e) => {
                                    tally.failures.push(e);
                                    continue;
                                }
                            }
                        }
                        match client.as_mut().unwrap().get("/").await {
                            Ok((StatusCode::OK, body)) => {
                                tally.ok += 1;
                                match body.as_str() {
                                    "old" => tally.old += 1,
                                    "new" => tally.new += 1,
                                    other => tally.failures.push(format!("200 from {other:?}")),
                                }
                            }
                            Ok((status, body)) => tally.failures.push(format!("{status}: {body}")),
                            Err(e) => {
                                tally.failures.push(e);
                                client = None;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    /// Stops sending (requests in flight finish) and adds up what every client saw.
    async fn stop(self) -> Tally {
        self.stop.store(true, SeqCst);
        let mut tally = Tally::default();
        for task in self.tasks {
            match task.await {
                Ok(t) => tally.add(t),
                Err(e) => tally.failures.push(format!("client task died: {e}")),
            }
        }
        tally
    }
}

/// Sends `n` sequential requests on one connection; (to OLD, to NEW), all must be 200.
async fn split(addr: SocketAddr, n: usize) -> (usize, usize) {
    let mut client = KeepAlive::connect(addr).await.unwrap();
    let (mut old, mut new) = (0, 0);
    for i in 0..n {
        let (status, body) = client
            .get("/")
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        match body.as_str() {
            "old" => old += 1,
            "new" => new += 1,
            other => panic!("request {i} answered by {other:?}"),
        }
    }
    (old, new)
}

/// One request on a fresh connection; the backend's name.
async fn served_by(addr: SocketAddr) -> String {
    let got = send(addr, get("api.test", "/")).await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    got.body
}

// ---------------------------------------------------------------------------------------
// (1) A reload storm under traffic
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_five_reloads_under_300_rps_lose_no_request_and_end_at_the_last_weight() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: u32| simple_config(&[old.addr], &[new.addr], &format!("{w}%"), "");
    let proxy = spawn_proxy(&yaml(0)).await;
    let path = proxy.config_path();

    // 44 weights that all differ from their neighbour, then 80% and finally 30%.
    let mut weights: Vec<u32> = (0..44).map(|i| (i * 37 + 11) % 101).collect();
    weights.extend([80, 30]);
    assert!(weights.windows(2).all(|w| w[0] != w[1]));

    // 6 keep-alive clients × 50/s = 300 requests per second.
    let traffic = Traffic::start(proxy.addr, 6, 50);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let storm_started = Instant::now();
    let mut versions = vec![running_version(&proxy)];
    for (i, weight) in weights.iter().enumerate() {
        // Both ways of writing a file must work.
        if i % 2 == 0 {
            save_by_rename(&path, &yaml(*weight));
        } else {
            save_in_place(&path, &yaml(*weight));
        }
        let version = reload_ok(&proxy).await;
        assert_ne!(
            Some(&version),
            versions.last(),
            "reload {i} (weight {weight}%) kept the previous version"
        );
        assert_eq!(
            routed_weight(&proxy),
            f64::from(*weight),
            "after reload {i} the routing snapshot does not have the file's weight"
        );
        versions.push(version);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let storm = storm_started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tally = traffic.stop().await;

    eprintln!(
        "{} reloads in {storm:?}; {} requests ({} old, {} new), {} failed",
        weights.len(),
        tally.total(),
        tally.old,
        tally.new,
        tally.failures.len()
    );
    tally.assert_no_failures(&format!("during {} reloads", weights.len()));
    let rate = tally.total() as f64 / (storm + Duration::from_millis(400)).as_secs_f64();
    assert!(
        rate >= 150.0 && tally.total() >= 300,
        "the clients sent only {} requests ({rate:.0}/s) over a {storm:?} storm: \
         the storm was not exercised under traffic",
        tally.total()
    );
    assert!(
        tally.old > 0 && tally.new > 0,
        "traffic under changing weights should reach both pools: {tally:?}"
    );
    assert_eq!(
        metric(&proxy, RELOADS_OK),
        weights.len() as f64,
        "every reload should be counted as ok"
    );
    assert_eq!(metric(&proxy, RELOADS_ERROR), 0.0);

    // The last file says 30%: the status, the snapshot and the traffic agree.
    assert_eq!(running_version(&proxy), version_on_disk(&path));
    assert_eq!(proxy.app.controller.status().services[0].weight, 30.0);
    assert_eq!(routed_weight(&proxy), 30.0);
    let (_, to_new) = split(proxy.addr, 1000).await;
    assert!(
        (285..=315).contains(&to_new),
        "after the storm NEW served {to_new} of 1000 requests; the last weight is 30%"
    );
}

// ---------------------------------------------------------------------------------------
// (2) An invalid file keeps the running config and is reported
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_running_config_and_is_reported() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let valid = simple_config(&[old.addr], &[new.addr], "20%", "");
    let proxy = spawn_proxy(&valid).await;
    let path = proxy.config_path();
    let version = running_version(&proxy);
    let generation = snapshot_generation(&proxy);

    // An unknown key at a known place, a value out of range, and broken YAML.
    let unknown_key = simple_config(&[old.addr], &[new.addr], "20%", "    colour: blue\n");
    let colour_line = unknown_key
        .lines()
        .position(|l| l.contains("colour"))
        .unwrap()
        + 1;
    let out_of_range = simple_config(&[old.addr], &[new.addr], "150%", "");
    let broken_yaml = format!("{valid}    old: [\n");
    let variants = [
        ("an unknown key", unknown_key, Some((colour_line, 5))),
        ("a weight of 150%", out_of_range, None),
        ("broken YAML", broken_yaml, None),
    ];

    let traffic = Traffic::start(proxy.addr, 4, 50);
    for (n, (what, text, exact)) in variants.iter().enumerate() {
        save_by_rename(&path, text);
        let (status, body) = admin(proxy.app.admin_addr, "POST", "/reload").await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "POST /reload with {what} should be refused: {body}"
        );
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("400 body without an `errors` list for {what}: {body}"));
        assert!(!errors.is_empty(), "{what}: empty `errors`");
        assert!(
            errors
                .iter()
                .all(|e| has_location(e.as_str().unwrap_or(""), &path)),
            "{what}: every error should start with {}:LINE:COL: {errors:#?}",
            path.display()
        );
        if let Some((line, col)) = exact {
            let at = format!("{}:{line}:{col}", path.display());
            assert!(
                errors
                    .iter()
                    .any(|e| e.as_str().unwrap_or("").contains(&at)),
                "{what}: expected an error at {at}: {errors:#?}"
            );
        }

        let (status, report) = admin(proxy.app.admin_addr, "GET", "/status").await;
        assert_eq!(status, StatusCode::OK);
        let last_error = report["config"]["last_error"].as_str().unwrap_or_else(|| {
            panic!(
                "{what}: /status has no config.last_error: {}",
                report["config"]
            )
        });
        assert!(
            has_location(last_error, &path),
            "{what}: config.last_error lacks file:line:col: {last_error}"
        );
        assert_eq!(
            report["config"]["version"], version,
            "{what}: the running version changed"
        );
        assert_eq!(
            metric(&proxy, RELOADS_ERROR),
            (n + 1) as f64,
            "{what}: cutover_config_reloads_total{{result=\"error\"}} should count it"
        );
        assert_eq!(
            snapshot_generation(&proxy),
            generation,
            "{what}: a routing snapshot was published"
        );
        assert_eq!(routed_weight(&proxy), 20.0, "{what}: the weight changed");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let tally = traffic.stop().await;
    tally.assert_no_failures("while invalid configs were refused");
    assert!(
        tally.total() >= 50,
        "too little traffic to tell whether it was affected: {tally:?}"
    );
    assert_eq!(metric(&proxy, RELOADS_OK), 0.0);

    // Fixing the file reloads and clears the error.
    save_by_rename(&path, &simple_config(&[old.addr], &[new.addr], "60%", ""));
    let (status, body) = admin(proxy.app.admin_addr, "POST", "/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = proxy.app.controller.status();
    assert_eq!(
        status.config.last_error, None,
        "a good reload should clear it"
    );
    assert_eq!(routed_weight(&proxy), 60.0);
}

#[tokio::test]
async fn an_invalid_file_seen_by_the_watcher_is_reported_and_not_applied() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let valid = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &valid, true).await;
    let path = proxy.config_path();
    let version = running_version(&proxy);

    save_by_rename(
        &path,
        &simple_config(&[old.addr], &[new.addr], "100%", "    colour: blue\n"),
    );
    let reported = eventually(Duration::from_secs(5), || {
        proxy.app.controller.status().config.last_error.is_some()
    })
    .await;
    assert!(
        reported,
        "the watcher did not report the invalid file within 5s"
    );
    let last_error = proxy
        .app
        .controller
        .status()
        .config
        .last_error
        .clone()
        .unwrap();
    assert!(has_location(&last_error, &path), "{last_error}");
    assert!(metric(&proxy, RELOADS_ERROR) >= 1.0);
    assert_eq!(running_version(&proxy), version);
    assert_eq!(routed_weight(&proxy), 0.0);
    assert_eq!(served_by(proxy.addr).await, "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_broken_file_to_the_running_config_clears_the_reported_error() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let valid = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &valid, true).await;
    let path = proxy.config_path();

    save_by_rename(
        &path,
        &simple_config(&[old.addr], &[new.addr], "100%", "    colour: blue\n"),
    );
    let reported = eventually(Duration::from_secs(5), || {
        proxy.app.controller.status().config.last_error.is_some()
    })
    .await;
    assert!(
        reported,
        "the watcher did not report the invalid file within 5s"
    );

    // The operator puts back exactly what runs. The file on disk is valid again and is
    // the running config: /status must stop reporting an error about a line that is gone.
    save_by_rename(&path, &valid);
    let cleared = eventually(Duration::from_secs(3), || {
        proxy.app.controller.status().config.last_error.is_none()
    })
    .await;
    let status = proxy.app.controller.status();
    assert!(
        cleared,
        "3s after the file was reverted to the running config, /status still reports \
         config.last_error = {:?} (version {}, file on disk {})",
        status.config.last_error,
        status.config.version,
        version_on_disk(&path)
    );
}

// ---------------------------------------------------------------------------------------
// (3) SIGHUP (real binary) and POST /reload
// ---------------------------------------------------------------------------------------

async fn admin_status(addr: SocketAddr) -> Option<serde_json::Value> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/status")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (port, admin_port) = (free_port(), free_port());
    let yaml = |w: &str| {
        let text = with_listeners(
            &simple_config(&[old.addr], &[new.addr], w, ""),
            &format!("listeners:\n  - addr: \"127.0.0.1:{port}\"\n"),
        );
        text.replace(
            "admin:\n  addr: \"127.0.0.1:0\"",
            &format!("admin:\n  addr: \"127.0.0.1:{admin_port}\""),
        )
    };
    // The config is a symlink to a file in another directory. The binary always runs its
    // file watcher, which watches the symlink's directory: rewriting the target in place
    // is invisible to it, so only the SIGHUP can make the proxy see the change.
    let tmp = tempfile::tempdir().unwrap();
    let (conf, real) = (tmp.path().join("conf"), tmp.path().join("real"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("cutover.yaml"), yaml("0%")).unwrap();
    std::os::unix::fs::symlink(real.join("cutover.yaml"), conf.join("cutover.yaml")).unwrap();
    let config = conf.join("cutover.yaml");

    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let proxy_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut process = Cutover::start(&config, admin_addr).await;
    let first = process.status().await;
    let v0 = first["config"]["version"].as_str().unwrap().to_string();
    assert_eq!(v0, version_on_disk(&config));
    assert_eq!(served_by(proxy_addr).await, "old");

    std::fs::write(real.join("cutover.yaml"), yaml("100%")).unwrap();
    let v1 = version_on_disk(&config);
    assert_ne!(v0, v1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = admin_status(admin_addr).await.unwrap();
    assert_eq!(
        before["config"]["version"], v0,
        "precondition: the watcher should not see a change outside its directory, \
         or this test cannot tell a SIGHUP reload from a watcher reload"
    );

    process.signal(libc::SIGHUP);
    let reloaded = eventually_async(Duration::from_secs(5), || async {
        admin_status(admin_addr)
            .await
            .is_some_and(|s| s["config"]["version"] == v1)
    })
    .await;
    assert!(
        reloaded,
        "SIGHUP did not reload within 5s:\n{}",
        process.log()
    );
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the process:\n{}",
        process.log()
    );
    let status = admin_status(admin_addr).await.unwrap();
    assert_eq!(status["services"][0]["weight"], 100.0, "{status}");
    for _ in 0..5 {
        assert_eq!(served_by(proxy_addr).await, "new");
    }
    let log = process.log();
    assert!(
        log.lines()
            .any(|l| l.contains("config reloaded") && l.contains("SIGHUP")),
        "the log should say the reload came from SIGHUP:\n{log}"
    );
}

#[tokio::test]
async fn post_reload_applies_the_file_and_answers_its_version() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", "")).await;
    let path = proxy.config_path();
    assert_eq!(served_by(proxy.addr).await, "old");

    save_by_rename(&path, &simple_config(&[old.addr], &[new.addr], "100%", ""));
    let expected = version_on_disk(&path);
    // Nothing changes until the reload is asked for (this proxy does not watch).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_by(proxy.addr).await, "old");

    let (status, body) = admin(proxy.app.admin_addr, "POST", "/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], expected.as_str(), "{body}");
    let (_, report) = admin(proxy.app.admin_addr, "GET", "/status").await;
    assert_eq!(report["config"]["version"], expected.as_str());
    assert!(report["config"]["last_error"].is_null(), "{report}");
    assert_eq!(report["services"][0]["weight"], 100.0);
    assert_eq!(metric(&proxy, RELOADS_OK), 1.0);
    for _ in 0..5 {
        assert_eq!(served_by(proxy.addr).await, "new");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_reloads_through_the_admin_api() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", "")).await;
    let path = proxy.config_path();
    save_by_rename(&path, &simple_config(&[old.addr], &[new.addr], "100%", ""));
    let expected = version_on_disk(&path);

    let output = tokio::process::Command::new(binary())
        .arg("reload")
        .arg("--admin")
        .arg(format!("http://{}", proxy.app.admin_addr))
        .env_remove("CUTOVER_ADMIN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`cutover reload` failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&expected), "{stdout}");
    assert_eq!(running_version(&proxy), expected);
    assert_eq!(served_by(proxy.addr).await, "new");
}

// ---------------------------------------------------------------------------------------
// (4) The file watcher: ConfigMap symlink swaps, editor saves
// ---------------------------------------------------------------------------------------

/// Publishes `text` the way the kubelet updates a ConfigMap volume: a new timestamped
/// directory, `..data_tmp` pointing at it, renamed over `..data`, the old one removed.
fn configmap_swap(dir: &Path, previous: &str, next: &str, text: &str) {
    std::fs::create_dir(dir.join(next)).unwrap();
    std::fs::write(dir.join(next).join("cutover.yaml"), text).unwrap();
    std::os::unix::fs::symlink(next, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(previous)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up_by_the_watcher() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");

    // The Kubernetes layout: cutover.yaml -> ..data/cutover.yaml, ..data -> ..TIMESTAMP.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = "..2026_01_01_00_00_00.1";
    std::fs::create_dir(dir.join(first)).unwrap();
    std::fs::write(dir.join(first).join("cutover.yaml"), yaml("0%")).unwrap();
    std::os::unix::fs::symlink(first, dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cutover.yaml", dir.join("cutover.yaml")).unwrap();
    let proxy = spawn_proxy_in(tmp, &yaml("0%"), true).await;
    let path = proxy.config_path();
    assert!(
        std::fs::symlink_metadata(&path).unwrap().is_symlink(),
        "precondition: cutover.yaml should still be the ConfigMap symlink"
    );
    assert_eq!(served_by(proxy.addr).await, "old");
    let dir = proxy.dir.path();

    // Two updates in a row: the watch must survive the first swap.
    let steps = [
        (first, "..2026_01_01_00_01_00.2", "100%", "new"),
        (
            "..2026_01_01_00_01_00.2",
            "..2026_01_01_00_02_00.3",
            "0%",
            "old",
        ),
    ];
    for (previous, next, weight, pool) in steps {
        let reloads = metric(&proxy, RELOADS_OK);
        let swapped_at = Instant::now();
        configmap_swap(dir, previous, next, &yaml(weight));
        let expected = version_on_disk(&path);
        let seen = eventually(Duration::from_secs(5), || {
            running_version(&proxy) == expected
        })
        .await;
        assert!(
            seen,
            "the swap to {next} ({weight}) was not picked up within 5s; running {} (want {expected}), \
             last_error {:?}",
            running_version(&proxy),
            proxy.app.controller.status().config.last_error
        );
        eprintln!(
            "ConfigMap swap to {next} applied after {:?}",
            swapped_at.elapsed()
        );
        assert_eq!(
            routed_weight(&proxy),
            if pool == "new" { 100.0 } else { 0.0 }
        );
        assert_eq!(served_by(proxy.addr).await, pool);
        assert!(metric(&proxy, RELOADS_OK) > reloads);
        assert_eq!(
            metric(&proxy, RELOADS_ERROR),
            0.0,
            "a half-swapped state was read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_picks_up_editor_saves_and_in_place_writes() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &yaml("0%"), true).await;
    let path = proxy.config_path();

    for (how, weight, pool) in [
        ("renamed over", "100%", "new"),
        ("written in place", "0%", "old"),
    ] {
        if how == "renamed over" {
            save_by_rename(&path, &yaml(weight));
        } else {
            save_in_place(&path, &yaml(weight));
        }
        let expected = version_on_disk(&path);
        let seen = eventually(Duration::from_secs(5), || {
            running_version(&proxy) == expected
        })
        .await;
        assert!(seen, "a file {how} was not picked up within 5s");
        assert_eq!(served_by(proxy.addr).await, pool);
    }
    assert_eq!(metric(&proxy, RELOADS_ERROR), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_ignores_changes_that_leave_the_config_as_it_is() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &yaml("0%"), true).await;
    let path = proxy.config_path();
    let generation = snapshot_generation(&proxy);

    // Another file in the directory, and the same bytes saved again.
    std::fs::write(proxy.dir.path().join("notes.txt"), "unrelated").unwrap();
    save_by_rename(&path, &yaml("0%"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        metric(&proxy, RELOADS_OK),
        0.0,
        "an unchanged config should not count as a reload"
    );
    assert_eq!(
        snapshot_generation(&proxy),
        generation,
        "the snapshot was republished"
    );

    // Control: the watcher is alive and does see a real change.
    save_by_rename(&path, &yaml("100%"));
    let seen = eventually(Duration::from_secs(5), || metric(&proxy, RELOADS_OK) == 1.0).await;
    assert!(seen, "the watcher did not reload a changed file within 5s");
    assert_eq!(routed_weight(&proxy), 100.0);
}

// ---------------------------------------------------------------------------------------
// (5) WebSockets and in-flight requests across reloads
// ---------------------------------------------------------------------------------------

/// Opens a WebSocket through the proxy; the stream after the 101 head.
async fn open_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("no 101 within 5s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the end of the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

async fn echo(stream: &mut TcpStream, message: &str) -> Result<(), String> {
    stream
        .write_all(message.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .map_err(|_| "no echo within 5s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if back != message.as_bytes() {
        return Err(format!("echoed {:?}", String::from_utf8_lossy(&back)));
    }
    Ok(())
}

#[tokio::test]
async fn a_websocket_stays_open_through_several_reloads() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy(&yaml("0%")).await;
    let path = proxy.config_path();
    let mut ws = open_websocket(proxy.addr).await;
    echo(&mut ws, "before any reload").await.unwrap();
    assert_eq!(old.hits(), 1, "the tunnel should go to OLD at 0%");

    // Shift everything to NEW and back, with the tunnel open to OLD all along.
    for (i, weight) in ["100%", "50%", "100%", "0%", "100%"].iter().enumerate() {
        save_by_rename(&path, &yaml(weight));
        reload_ok(&proxy).await;
        let message = format!("message {i} after the reload to {weight}");
        echo(&mut ws, &message)
            .await
            .unwrap_or_else(|e| panic!("the tunnel broke after reload {i} ({weight}): {e}"));
    }
    assert_eq!(metric(&proxy, RELOADS_OK), 5.0);
    assert_eq!(
        served_by(proxy.addr).await,
        "new",
        "the last reload set 100%"
    );
    echo(&mut ws, "still here").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_during_reloads_complete() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy(&yaml("0%")).await;
    let path = proxy.config_path();

    // Three /slow requests (300 ms at the backend), each on its own connection.
    let addr = proxy.addr;
    let slow: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let got = send(addr, get("api.test", "/slow")).await;
                (got, Instant::now())
            })
        })
        .collect();
    let arrived = eventually(Duration::from_secs(2), || old.hits() == 3).await;
    assert!(arrived, "the slow requests did not reach OLD");

    for weight in ["100%", "50%", "100%"] {
        save_by_rename(&path, &yaml(weight));
        reload_ok(&proxy).await;
    }
    let reloaded_at = Instant::now();
    for task in slow {
        let (got, finished_at) = task.await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{got:?}");
        assert_eq!(got.body, "old");
        assert!(
            finished_at > reloaded_at,
            "the request finished before the reloads: the test did not overlap them"
        );
    }
    assert_eq!(served_by(proxy.addr).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_to_a_backend_the_reload_removes_completes() {
    let first = spawn_backend("old").await;
    let second = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[first.addr], &[new.addr], "0%", "")).await;

    let addr = proxy.addr;
    let slow = tokio::spawn(async move { send(addr, get("api.test", "/slow")).await });
    assert!(eventually(Duration::from_secs(2), || first.hits() == 1).await);
    // OLD is now only the second backend: the first one leaves the config mid-request.
    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[second.addr], &[new.addr], "0%", ""),
    );
    reload_ok(&proxy).await;
    let got = slow.await.unwrap();
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the in-flight request was cut: {got:?}"
    );
    assert_eq!(served_by(proxy.addr).await, "old");
    assert_eq!(
        second.hits(),
        1,
        "new requests should go to the backend now configured"
    );
    assert_eq!(first.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// (6) Listeners added and removed by a reload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_listener_added_by_reload_serves() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy(&yaml).await;
    let mut kept = KeepAlive::connect(proxy.addr).await.unwrap();
    assert_eq!(kept.get("/").await.unwrap().1, "old");

    let port = free_port();
    let added: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        TcpStream::connect(added).await.is_err(),
        "precondition: {added} is free"
    );
    save_by_rename(&proxy.config_path(), &two_listeners(&yaml, port));
    reload_ok(&proxy).await;

    for _ in 0..3 {
        assert_eq!(served_by(added).await, "old", "through the added listener");
    }
    // The existing listener kept its socket and its open connections.
    assert_eq!(
        kept.get("/")
            .await
            .expect("a kept listener's connection was closed")
            .1,
        "old"
    );
    assert_eq!(served_by(proxy.addr).await, "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_stops_accepting_and_finishes_its_requests() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let one = simple_config(&[old.addr], &[new.addr], "0%", "");
    let port = free_port();
    let proxy = spawn_proxy(&two_listeners(&one, port)).await;
    let removed = proxy
        .app
        .listener(&format!("127.0.0.1:{port}"))
        .expect("the second listener is running");
    let kept = proxy.app.listener("127.0.0.1:0").unwrap();
    assert_eq!(served_by(removed).await, "old");

    // A slow request in flight on the listener that goes away.
    let slow = tokio::spawn(async move { send(removed, get("api.test", "/slow")).await });
    assert!(eventually(Duration::from_secs(2), || old.hits() == 2).await);
    save_by_rename(&proxy.config_path(), &one);
    reload_ok(&proxy).await;

    let closed = eventually_async(Duration::from_secs(3), || async {
        TcpStream::connect(removed).await.is_err()
    })
    .await;
    assert!(
        closed,
        "{removed} still accepts connections 3s after its removal"
    );
    let got = slow.await.unwrap();
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the in-flight request was cut: {got:?}"
    );
    assert_eq!(
        served_by(kept).await,
        "old",
        "the kept listener must still serve"
    );
}

#[tokio::test]
async fn a_listener_that_cannot_be_bound_fails_the_reload_and_changes_nothing() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy(&yaml).await;
    let version = running_version(&proxy);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let changed = simple_config(&[old.addr], &[new.addr], "100%", "");
    save_by_rename(&proxy.config_path(), &two_listeners(&changed, port));
    let errors = proxy
        .app
        .controller
        .reload(ReloadSource::Api)
        .await
        .expect_err("a reload with a port in use must fail");
    assert!(
        errors.iter().any(|e| e.contains(&port.to_string())),
        "the error should name the address: {errors:?}"
    );
    assert_eq!(running_version(&proxy), version);
    assert_eq!(
        routed_weight(&proxy),
        0.0,
        "the weight of a refused config applied"
    );
    assert_eq!(metric(&proxy, RELOADS_ERROR), 1.0);
    assert_eq!(served_by(proxy.addr).await, "old");
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// (7) Rollouts across reloads
// ---------------------------------------------------------------------------------------

const ROLLOUT_AT_30: &str = "    rollout:
      steps:
        - weight: 10%
        - weight: 30%
          hold: 1h
        - weight: 100%
";

#[tokio::test]
async fn a_reload_that_keeps_the_steps_keeps_the_rollouts_place() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        ROLLOUT_AT_30,
    ))
    .await;
    let at_30 = eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await;
    assert!(
        at_30,
        "the rollout did not reach 30%: {:?}",
        rollout(&proxy)
    );
    let before = rollout(&proxy);
    assert_eq!(before, ("progressing".to_string(), 2, 3, 30.0));
    let run_id = proxy.app.controller.status().services[0].run_id.clone();

    // Change something else about the service: the rollout carries on where it was.
    let extra =
        format!("    timeouts: {{ connect: 1s, request: 30s, idle: 60s }}\n{ROLLOUT_AT_30}");
    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[old.addr], &[new.addr], "0%", &extra),
    );
    reload_ok(&proxy).await;
    assert_eq!(rollout(&proxy), before);
    assert_eq!(proxy.app.controller.status().services[0].run_id, run_id);
    assert_eq!(routed_weight(&proxy), 30.0);
}

#[tokio::test]
async fn changed_steps_without_analysis_continue_from_the_first_step_above_the_weight() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        ROLLOUT_AT_30,
    ))
    .await;
    let at_30 = eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await;
    assert!(
        at_30,
        "the rollout did not reach 30%: {:?}",
        rollout(&proxy)
    );
    assert_eq!(rollout(&proxy), ("progressing".to_string(), 2, 3, 30.0));

    let new_steps = "    rollout:
      steps:
        - weight: 5%
          hold: 1h
        - weight: 20%
          hold: 1h
        - weight: 40%
          hold: 1h
        - weight: 80%
          hold: 1h
        - weight: 100%
";
    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[old.addr], &[new.addr], "0%", new_steps),
    );
    reload_ok(&proxy).await;
    // No analysis: nothing to wait for, 40% (step 3 of 5) at once, not 5% (step 1).
    assert_eq!(
        rollout(&proxy),
        ("progressing".to_string(), 3, 5, 40.0),
        "after the steps changed at 30%, the first new step above 30% is 40% (step 3/5)"
    );
    assert_eq!(routed_weight(&proxy), 40.0);
    let (_, to_new) = split(proxy.addr, 500).await;
    assert!(
        (190..=210).contains(&to_new),
        "NEW served {to_new} of 500 at 40%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_steps_with_analysis_move_on_after_the_next_passing_check() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let analysis = "      analysis:
        interval: 1s
        window: 10s
        min_requests: 20
        max_error_rate: 5%
";
    let before = format!(
        "    rollout:
      steps:
        - weight: 30%
          hold: 1h
        - weight: 100%
{analysis}"
    );
    let after = format!(
        "    rollout:
      steps:
        - weight: 20%
          hold: 1h
        - weight: 50%
          hold: 1h
        - weight: 100%
{analysis}"
    );
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", &before)).await;
    let at_30 = eventually(Duration::from_secs(3), || rollout(&proxy).3 == 30.0).await;
    assert!(
        at_30,
        "the rollout did not reach 30%: {:?}",
        rollout(&proxy)
    );

    save_by_rename(
        &proxy.config_path(),
        &simple_config(&[old.addr], &[new.addr], "0%", &after),
    );
    reload_ok(&proxy).await;
    let (state, _, steps, weight) = rollout(&proxy);
    assert_eq!(
        (state.as_str(), steps, weight),
        ("progressing", 3, 30.0),
        "right after the reload the weight must stay at 30% until a check passes"
    );

    // Without traffic the checks are inconclusive: the rollout waits at 30%.
    let series = "cutover_analysis_checks_total{service=\"api\",result=\"inconclusive\"}";
    let inconclusive = metric(&proxy, series);
    let waited = eventually(Duration::from_secs(4), || {
        metric(&proxy, series) >= inconclusive + 2.0
    })
    .await;
    assert!(waited, "no inconclusive checks after the reload");
    assert_eq!(
        rollout(&proxy).3,
        30.0,
        "the rollout moved without a passing check"
    );

    // Enough traffic for NEW (30% of 200 ≥ min_requests 20): the next check passes.
    let (_, to_new) = split(proxy.addr, 200).await;
    assert!(to_new >= 40, "NEW got only {to_new} of 200");
    let moved = eventually(Duration::from_secs(5), || rollout(&proxy).3 == 50.0).await;
    let status = proxy.app.controller.status();
    assert!(
        moved,
        "after a passing check the rollout should be at 50% (the first new step above 30%): \
         {:?}, last check {:?}",
        rollout(&proxy),
        status.services[0].last_check
    );
    assert_eq!(rollout(&proxy), ("progressing".to_string(), 2, 3, 50.0));
    assert_eq!(routed_weight(&proxy), 50.0);
}

// ---------------------------------------------------------------------------------------
// (8) Certificates
// ---------------------------------------------------------------------------------------

fn der(pem: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pem).unwrap()
}

/// A TLS client that trusts exactly `trusted` and speaks HTTP/1.1.
fn tls_connector(trusted: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(cutover::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects with TLS to `api.test`; the served end-entity certificate and an HTTP/1.1
/// sender on the connection.
async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> (
    CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("api.test".to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    (served, sender)
}

async fn tls_get(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> String {
    sender.ready().await.unwrap();
    let response = sender.send_request(get("api.test", "/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// A proxy with one TLS listener serving `tls.crt`/`tls.key`, which start as `first`.
async fn tls_proxy(old: SocketAddr, new: SocketAddr) -> (TestProxy, [CertificateDer<'static>; 2]) {
    let tmp = tempfile::tempdir().unwrap();
    let (a_crt, a_key) = certificate(tmp.path(), "first", &["api.test"]);
    let (b_crt, _) = certificate(tmp.path(), "second", &["api.test"]);
    std::fs::copy(&a_crt, tmp.path().join("tls.crt")).unwrap();
    std::fs::copy(&a_key, tmp.path().join("tls.key")).unwrap();
    let yaml = with_listeners(
        &simple_config(&[old], &[new], "0%", ""),
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - { cert: tls.crt, key: tls.key }\n",
    );
    let certs = [der(&a_crt), der(&b_crt)];
    assert_ne!(
        certs[0], certs[1],
        "precondition: two different certificates"
    );
    (spawn_proxy_in(tmp, &yaml, false).await, certs)
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_a_reload() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (proxy, [first, second]) = tls_proxy(old.addr, new.addr).await;
    let connector = tls_connector(&[first.clone(), second.clone()]);
    let dir = proxy.dir.path();

    let (served, mut before) = tls_connect(&connector, proxy.addr).await;
    assert!(
        served == first,
        "the first certificate should be served at start"
    );
    assert_eq!(tls_get(&mut before).await, "old");

    // Renew: the second certificate replaces the files (renamed over, like cert-manager).
    for ext in ["crt", "key"] {
        let tmp = dir.join(format!("tls.{ext}.new"));
        std::fs::copy(dir.join(format!("second.{ext}")), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(format!("tls.{ext}"))).unwrap();
    }
    reload_ok(&proxy).await;
    let (served, mut after) = tls_connect(&connector, proxy.addr).await;
    assert!(
        served == second,
        "after the reload new connections should get the renewed certificate"
    );
    assert_eq!(tls_get(&mut after).await, "old");
    // A connection made before the reload is untouched.
    assert_eq!(tls_get(&mut before).await, "old");
}

#[tokio::test]
async fn a_broken_certificate_fails_the_reload_and_the_served_one_stays() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (proxy, [first, second]) = tls_proxy(old.addr, new.addr).await;
    let connector = tls_connector(&[first.clone(), second.clone()]);
    let dir = proxy.dir.path();
    let version = running_version(&proxy);

    // The key of another certificate: readable, but it does not match.
    std::fs::copy(dir.join("second.key"), dir.join("tls.key")).unwrap();
    let errors = proxy
        .app
        .controller
        .reload(ReloadSource::Api)
        .await
        .expect_err("a certificate with the wrong key must fail the reload");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("tls.crt") || e.contains("tls.key")),
        "the error should name the certificate files: {errors:?}"
    );
    assert_eq!(running_version(&proxy), version);
    assert!(proxy.app.controller.status().config.last_error.is_some());
    let (served, mut sender) = tls_connect(&connector, proxy.addr).await;
    assert!(
        served == first,
        "the running certificate should still be served"
    );
    assert_eq!(tls_get(&mut sender).await, "old");
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_picked_up_by_the_watcher() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    // The certificate lives in a directory of its own, as cert-manager would put it; the
    // YAML does not change at all.
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let (a_crt, a_key) = certificate(&tls, "first", &["api.test"]);
    let (b_crt, b_key) = certificate(&tls, "second", &["api.test"]);
    std::fs::copy(&a_crt, tls.join("tls.crt")).unwrap();
    std::fs::copy(&a_key, tls.join("tls.key")).unwrap();
    let yaml = with_listeners(
        &simple_config(&[old.addr], &[new.addr], "0%", ""),
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - { cert: tls/tls.crt, key: tls/tls.key }\n",
    );
    let proxy = spawn_proxy_in(tmp, &yaml, true).await;
    let (first, second) = (der(&a_crt), der(&b_crt));
    let connector = tls_connector(&[first.clone(), second.clone()]);
    let (served, _) = tls_connect(&connector, proxy.addr).await;
    assert!(served == first);

    for (from, to) in [(&b_key, "tls.key"), (&b_crt, "tls.crt")] {
        let tmp = tls.join(format!("{to}.new"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, tls.join(to)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (served, _) = tls_connect(&connector, proxy.addr).await;
        if served == second {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.app.controller.status().config.last_error.is_none());
}

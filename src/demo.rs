//! `cutover demo`: the whole product in under a minute, with no config and no network.
//!
//! Two backends on loopback (OLD answers `old`, NEW answers `new`), a proxy in front of
//! them with a fast real rollout (10% → 50% → 100%, 15 s holds, checks every 2 s), and
//! ~200 requests a second through it. Every second a line shows the state, NEW's weight,
//! who served the last second's requests and the last check. With `--break-new`, NEW
//! starts failing 30% of its requests once it reaches 50%, and the analysis rolls it back.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::app::{self, App, Options};
use crate::config;
use crate::rollout::machine::ServiceState;
use crate::status::ServiceStatus;

const CONNECTIONS: usize = 8;
/// Per connection: 8 × 25 = 200 requests a second.
const PACE: Duration = Duration::from_millis(40);
const LIMIT: Duration = Duration::from_secs(90);

pub(crate) fn main(break_new: bool) -> ExitCode {
    if std::env::var_os("CUTOVER_LOG").is_none() {
        // cutover's own log would break the table; `CUTOVER_LOG=info cutover demo` shows it.
        std::env::set_var("CUTOVER_LOG", "error");
    }
    app::init_logging(crate::config::LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cutover demo: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(break_new)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cutover demo: {message}");
            ExitCode::from(1)
        }
    }
}

/// What the traffic saw, by who answered.
#[derive(Default)]
struct Tally {
    old_ok: AtomicU64,
    old_failed: AtomicU64,
    new_ok: AtomicU64,
    new_failed: AtomicU64,
    proxy_errors: AtomicU64,
}

impl Tally {
    fn take(&self) -> [u64; 5] {
        [
            self.old_ok.swap(0, Relaxed),
            self.old_failed.swap(0, Relaxed),
            self.new_ok.swap(0, Relaxed),
            self.new_failed.swap(0, Relaxed),
            self.proxy_errors.swap(0, Relaxed),
        ]
    }
}

/// Totals over the whole demo.
#[derive(Default)]
struct Totals([u64; 5]);

impl Totals {
    fn add(&mut self, counts: [u64; 5]) {
        for (total, n) in self.0.iter_mut().zip(counts) {
            *total += n;
        }
    }

    fn summary(&self) -> String {
        let [old_ok, old_failed, new_ok, new_failed, proxy_errors] = self.0;
        let all = old_ok + old_failed + new_ok + new_failed + proxy_errors;
        format!(
            "{all} requests: {old_ok} answered by OLD, {new_ok} by NEW, {new_failed} failed by NEW, \
             {old_failed} failed by OLD, {proxy_errors} lost in the proxy"
        )
    }
}

async fn run(break_new: bool) -> Result<(), String> {
    let broken = Arc::new(AtomicBool::new(false));
    let old = spawn_backend("old", Arc::new(AtomicBool::new(false))).await?;
    let new = spawn_backend("new", broken.clone()).await?;
    let dir = DemoDir::create()?;
    let config_path = dir.0.join("cutover.yaml");
    std::fs::write(&config_path, demo_config(old, new)).map_err(|e| e.to_string())?;
    let config = config::load(&config_path).map_err(|e| e.to_string())?;
    let app = app::start(config, Options::default())
        .await
        .map_err(|e| e.to_string())?;
    let proxy = app
        .listeners
        .first()
        .map(|(_, a)| *a)
        .ok_or("no listener")?;

    println!(
        "cutover demo: OLD on {old}, NEW on {new}, the proxy on {proxy}, admin API on {}",
        app.admin_addr
    );
    println!("rollout: 10% for 15s, 50% for 15s, then 100%; a check every 2s over the last 6s;");
    println!("rolls back after 2 failed checks in a row (NEW errors > 5%) or at once if 50% of NEW's requests fail.");
    if break_new {
        println!("--break-new: NEW will start failing 30% of its requests when it reaches 50%.");
    }
    println!(
        "try, in another terminal: cutover status --admin http://{}\n",
        app.admin_addr
    );
    println!(
        "{:>4}  {:<12} {:<5} {:>5}  {:<34} last check",
        "time", "state", "step", "NEW", "served in the last second"
    );

    let tally = Arc::new(Tally::default());
    for _ in 0..CONNECTIONS {
        tokio::spawn(traffic(proxy, tally.clone()));
    }
    let outcome = watch(&app, &tally, break_new.then_some(&broken)).await;
    app.shutdown().await;
    println!("\n{outcome}");
    Ok(())
}

/// Prints a line a second until the rollout is over; returns the closing words.
async fn watch(app: &App, tally: &Tally, break_new: Option<&Arc<AtomicBool>>) -> String {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut finished_at: Option<Instant> = None;
    let mut totals = Totals::default();
    loop {
        ticker.tick().await;
        let status = app.controller.status();
        let Some(service) = status.services.first() else {
            return "no service".into();
        };
        if let Some(broken) = break_new {
            if service.weight >= 50.0
                && service.state == ServiceState::Progressing
                && !broken.swap(true, Relaxed)
            {
                println!("      !! NEW starts failing 30% of its requests");
            }
        }
        let counts = tally.take();
        totals.add(counts);
        println!("{}", line(started.elapsed(), service, counts));
        let over = service.state.is_final();
        match (over, finished_at) {
            (true, None) => finished_at = Some(Instant::now()),
            (true, Some(at)) if at.elapsed() >= Duration::from_secs(3) => {
                return format!("{}\n  {}", closing(service), totals.summary());
            }
            _ => {}
        }
        if started.elapsed() > LIMIT {
            return "the demo ran out of time".into();
        }
    }
}

fn line(elapsed: Duration, service: &ServiceStatus, counts: [u64; 5]) -> String {
    let [old_ok, old_failed, new_ok, new_failed, proxy_errors] = counts;
    let mut served = format!("old {old_ok:>3}");
    if old_failed > 0 {
        let _ = write!(served, " ({old_failed} 5xx)");
    }
    let _ = write!(served, "  new {new_ok:>3}");
    if new_failed > 0 {
        let _ = write!(served, " + {new_failed} 5xx");
    }
    if proxy_errors > 0 {
        let _ = write!(served, "  proxy errors {proxy_errors}");
    }
    let check = match &service.last_check {
        Some(check) if !check.breaches.is_empty() => format!(
            "{} ({}/{}): {}",
            check.result,
            service.consecutive_failures,
            service.failure_threshold.unwrap_or(0),
            check.breaches.join("; ")
        ),
        Some(check) => format!(
            "{}: NEW {} req, {:.1}% errors",
            check.result,
            check.new.requests,
            check.new.error_rate * 100.0
        ),
        None => "-".into(),
    };
    format!(
        "{:>3}s  {:<12} {:<5} {:>4}%  {served:<34} {check}",
        elapsed.as_secs(),
        service.state,
        format!("{}/{}", service.step, service.steps),
        service.weight,
    )
}

fn closing(service: &ServiceStatus) -> String {
    match service.state {
        ServiceState::Promoted => "PROMOTED: all traffic is on NEW.".into(),
        _ => format!(
            "ROLLED BACK ({}): all traffic is back on OLD.\n  why: {}\n  `cutover retry demo` would start again from step 1.",
            service.rollback_reason.map_or("?", |r| r.label()),
            service.reason.as_deref().unwrap_or("?")
        ),
    }
}

/// One keep-alive connection sending a request every `PACE`.
async fn traffic(proxy: SocketAddr, tally: Arc<Tally>) {
    loop {
        let Ok(stream) = TcpStream::connect(proxy).await else {
            tokio::time::sleep(PACE).await;
            continue;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(connection);
        let mut ticker = tokio::time::interval(PACE);
        loop {
            ticker.tick().await;
            let request = Request::get("/")
                .header("host", "demo.local")
                .body(Empty::<Bytes>::new());
            let Ok(request) = request else { return };
            let Ok(response) = sender.send_request(request).await else {
                tally.proxy_errors.fetch_add(1, Relaxed);
                break;
            };
            let backend = response
                .headers()
                .get("x-backend")
                .map(|v| v.as_bytes().to_vec());
            let ok = response.status().is_success();
            let _ = response.into_body().collect().await;
            let counter = match (backend.as_deref(), ok) {
                (Some(b"old"), true) => &tally.old_ok,
                (Some(b"old"), false) => &tally.old_failed,
                (Some(b"new"), true) => &tally.new_ok,
                (Some(b"new"), false) => &tally.new_failed,
                _ => &tally.proxy_errors,
            };
            counter.fetch_add(1, Relaxed);
        }
    }
}

/// A backend that names itself and, once `broken`, fails 3 requests out of 10.
async fn spawn_backend(name: &'static str, broken: Arc<AtomicBool>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let broken = broken.clone();
            let served = served.clone();
            let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                let n = served.fetch_add(1, Relaxed);
                let failing = broken.load(Relaxed) && n % 10 < 3;
                let status = if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                let response = Response::builder()
                    .status(status)
                    .header("x-backend", name)
                    .body(Full::new(Bytes::from(format!("{name}\n"))));
                async move { response }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Ok(addr)
}

fn demo_config(old: SocketAddr, new: SocketAddr) -> String {
    format!(
        r#"# Written by `cutover demo`.
listeners:
  - addr: "127.0.0.1:0"
admin:
  addr: "127.0.0.1:0"
state_dir: state
services:
  - name: demo
    old:
      backends:
        - addr: "{old}"
    new:
      backends:
        - addr: "{new}"
    rollout:
      steps:
        - weight: 10%
          hold: 15s
        - weight: 50%
          hold: 15s
        - weight: 100%
      analysis:
        interval: 2s
        window: 6s
        min_requests: 20
        failure_threshold: 2
        max_error_rate: 5%
        max_error_rate_increase: 5%
        max_p99_latency: 250ms
        trip: {{ error_rate: 50%, min_requests: 20, window: 5s }}
"#
    )
}

/// A temporary directory for the demo's config and state, removed at the end.
struct DemoDir(PathBuf);

impl DemoDir {
    fn create() -> Result<DemoDir, String> {
        let dir = std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(DemoDir(dir))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

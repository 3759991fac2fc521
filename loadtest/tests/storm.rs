//! Reload storm: the config file differs on every rewrite, is never seen
//! half-written, and is always restored.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{backend, plan, Scratch};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loadtest::backend::BackendConfig;
use loadtest::storm::{self, AdminPlan, ConfigFile, RestoreGuard, StormError, StormPlan};
use tokio::net::TcpListener;

const MS: Duration = Duration::from_millis(1);
const ORIGINAL: &[u8] = b"listen: 127.0.0.1:8080\nupstreams:\n  old: [127.0.0.1:9001]\n";

#[test]
fn every_rewrite_differs_and_readers_never_see_a_partial_file() {
    let scratch = Scratch::new("rewrite");
    // A larger file makes a torn read more likely if writes were not atomic.
    let original: Vec<u8> = ORIGINAL.repeat(2000);
    let path = scratch.file("cutover.yaml", &original);
    let file = ConfigFile::open(&path).expect("open");
    let rewrites = 60;

    let mut allowed: BTreeSet<Vec<u8>> = (1..=rewrites).map(|n| file.marked(n)).collect();
    assert_eq!(allowed.len(), rewrites as usize, "each rewrite differs");
    assert!(!allowed.contains(&original));
    allowed.insert(original.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop, allowed) = (path.clone(), Arc::clone(&stop), allowed.clone());
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let content = std::fs::read(&path).expect("file always exists");
                assert!(allowed.contains(&content), "torn or unexpected read");
                seen.insert(content);
                reads += 1;
            }
            (seen.len(), reads)
        })
    };
    let mut previous = std::fs::read(&path).expect("read");
    for n in 1..=rewrites {
        assert!(file.rewrite(n).expect("rewrite"));
        let now = std::fs::read(&path).expect("read");
        assert_ne!(now, previous, "rewrite {n} changed the file");
        assert!(
            now.starts_with(&original)
                && now.ends_with(format!("# loadtest-reload {n}\n").as_bytes())
        );
        previous = now;
    }
    file.restore().expect("restore");
    stop.store(true, Ordering::Relaxed);
    let (distinct, reads) = reader.join().expect("reader saw only complete files");
    assert!(reads > 0 && distinct >= 1);

    assert_eq!(std::fs::read(&path).expect("read"), original);
    assert_eq!(
        scratch.names(),
        vec!["cutover.yaml"],
        "no temp file left behind"
    );
    // Once restored, later rewrites are refused rather than undoing it.
    assert!(!file.rewrite(99).expect("rewrite after restore"));
    assert_eq!(std::fs::read(&path).expect("read"), original);
}

#[test]
fn marker_goes_on_its_own_line_and_symlinks_survive() {
    let scratch = Scratch::new("symlink");
    let real = scratch.file("real.yaml", b"a: 1"); // no trailing newline
    let link = scratch.0.join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let file = ConfigFile::open(&link).expect("open");
    assert_eq!(file.marked(3), b"a: 1\n# loadtest-reload 3\n");
    assert!(file.rewrite(3).expect("rewrite"));
    assert!(std::fs::symlink_metadata(&link)
        .expect("meta")
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(&real).expect("read"),
        b"a: 1\n# loadtest-reload 3\n"
    );
    file.restore().expect("restore");
    assert_eq!(std::fs::read(&real).expect("read"), b"a: 1");
}

#[test]
fn guard_restores_when_dropped() {
    let scratch = Scratch::new("guard");
    let path = scratch.file("c.yaml", ORIGINAL);
    {
        let file = ConfigFile::open(&path).expect("open");
        let _guard = RestoreGuard(Arc::clone(&file));
        assert!(file.rewrite(1).expect("rewrite"));
        assert_ne!(std::fs::read(&path).expect("read"), ORIGINAL);
        // Leaving the scope without restoring, as an early `?` return would.
    }
    assert_eq!(std::fs::read(&path).expect("read"), ORIGINAL);
}

/// A stand-in admin API that accepts `POST /reload` only with the right
/// bearer token.
async fn admin_server(token: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| async move {
                let authorized = request.method() == Method::POST
                    && request.uri().path() == "/reload"
                    && request
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes() == format!("Bearer {token}").as_bytes());
                let mut response = Response::new(Full::new(Bytes::new()));
                if !authorized {
                    *response.status_mut() = StatusCode::UNAUTHORIZED;
                }
                Ok::<_, std::convert::Infallible>(response)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, task)
}

fn storm_plan(
    target: SocketAddr,
    config: std::path::PathBuf,
    admin: Option<AdminPlan>,
) -> StormPlan {
    StormPlan {
        load: plan(target, 200.0, 100 * MS, 4, Duration::from_secs(2)),
        config,
        reloads: 5,
        interval: 40 * MS,
        quiet: 200 * MS,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_reports_both_phases_posts_reloads_and_restores() {
    let server = backend(BackendConfig::default()).await;
    let (admin_addr, admin_task) = admin_server("s3cret").await;
    let scratch = Scratch::new("storm");
    let path = scratch.file("cutover.yaml", ORIGINAL);

    let good = AdminPlan::new(
        &format!("http://{admin_addr}/"),
        Some("s3cret"),
        Duration::from_secs(2),
    )
    .expect("admin plan");
    let report = storm::run(&storm_plan(server.addr(), path.clone(), Some(good)))
        .await
        .expect("storm runs");
    assert_eq!(report.quiet.scheduled, 40);
    assert_eq!(report.storm.scheduled, 40, "storm lasts reloads x interval");
    assert_eq!(report.quiet.status.s2xx, 40);
    assert_eq!(report.storm.status.s2xx, 40);
    assert_eq!(report.reloads.rewrites, 5);
    assert_eq!(
        (report.reloads.admin_posts, report.reloads.admin_ok),
        (5, 5)
    );
    assert_eq!(report.storm_failures(), 0);
    assert_eq!(std::fs::read(&path).expect("read"), ORIGINAL);
    let text = report.render_text();
    assert!(
        text.contains("quiet") && text.contains("storm") && text.contains("5 ok"),
        "{text}"
    );

    // A wrong token: every reload is refused, and that is counted.
    let bad = AdminPlan::new(
        &format!("http://{admin_addr}"),
        Some("wrong"),
        Duration::from_secs(2),
    )
    .expect("admin plan");
    let report = storm::run(&storm_plan(server.addr(), path.clone(), Some(bad)))
        .await
        .expect("storm runs");
    assert_eq!(report.reloads.admin_non_200, 5);
    assert_eq!(report.storm_failures(), 5);
    assert_eq!(std::fs::read(&path).expect("read"), ORIGINAL);

    admin_task.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_storm_restores_the_file() {
    let server = backend(BackendConfig::default()).await;
    let scratch = Scratch::new("cancel");
    let path = scratch.file("cutover.yaml", ORIGINAL);
    let plan = storm_plan(server.addr(), path.clone(), None);
    // Cancel in the middle of the storm phase, as Ctrl-C does.
    let cancelled = tokio::time::timeout(300 * MS, storm::run(&plan)).await;
    assert!(cancelled.is_err(), "the storm was interrupted");
    assert_eq!(std::fs::read(&path).expect("read"), ORIGINAL);
    assert_eq!(scratch.names(), vec!["cutover.yaml"]);
    server.stop().await;
}

#[tokio::test]
async fn missing_config_is_an_error_before_any_load() {
    let scratch = Scratch::new("missing");
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let plan = storm_plan(addr, scratch.0.join("nope.yaml"), None);
    assert!(matches!(
        storm::run(&plan).await,
        Err(StormError::ReadConfig { .. })
    ));
}

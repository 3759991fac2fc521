//! What the logs say when a rollout goes wrong: failed checks, trips and rollbacks are
//! WARN, so an operator filtering on warnings sees every one of them.
//!
//! The controller logs from its own thread, so the capture is the process's global
//! subscriber; each test runs its own service name and reads only that service's lines.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use support::*;

/// Every log line of this test process so far.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(logs.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    })
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines of `service` at `level`.
fn lines(service: &str, level: &str) -> Vec<String> {
    let logs = captured().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(&format!(" {level} ")) && l.contains(&format!("service={service}")))
        .map(str::to_string)
        .collect()
}

/// NEW answers 500; sends traffic until `service` is rolled back.
async fn roll_back(service: &str, analysis: &str) {
    captured();
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    new.set_status(500);
    let rollout = format!(
        "    rollout:\n      steps:\n        - weight: 20%\n          hold: 30s\n        \
         - weight: 100%\n      analysis:\n{analysis}"
    );
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", &rollout)
        .replace("name: api", &format!("name: {service}"));
    let proxy = spawn_proxy(&yaml).await;
    let mut client = Client::connect(proxy.addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while proxy.app.controller.status().services[0].state != "rolled_back" {
        assert!(tokio::time::Instant::now() < deadline, "no rollback");
        for _ in 0..20 {
            client.send(get("a", "/")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rollback event is logged as its effects run, right after the state changes.
    let logged = eventually(Duration::from_secs(2), || {
        lines(service, "WARN")
            .iter()
            .any(|l| l.contains("event=\"rollback\""))
    })
    .await;
    assert!(
        logged,
        "no WARN rollback line for {service}; INFO lines: {:#?}\nWARN lines: {:#?}",
        lines(service, "INFO"),
        lines(service, "WARN")
    );
}

#[tokio::test]
async fn failed_checks_and_the_rollback_they_cause_are_warnings() {
    let analysis = "        interval: 1s\n        window: 3s\n        min_requests: 10\n        \
                    failure_threshold: 2\n        max_error_rate: 5%\n";
    roll_back("checked", analysis).await;
    let warnings = lines("checked", "WARN");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("check FAIL") || l.contains("check fail")),
        "{warnings:#?}"
    );
    let infos = lines("checked", "INFO");
    assert!(
        !infos
            .iter()
            .any(|l| l.contains("rolled back") || l.contains("check failed")),
        "a failed check or a rollback logged at INFO: {infos:#?}"
    );
}

#[tokio::test]
async fn a_trip_and_its_rollback_are_warnings() {
    let analysis = "        interval: 1m\n        window: 1m\n        min_requests: 1000\n        \
                    failure_threshold: 5\n        max_error_rate: 5%\n        \
                    trip: { error_rate: 25%, min_requests: 20, window: 10s }\n";
    roll_back("tripped", analysis).await;
    let infos = lines("tripped", "INFO");
    assert!(
        !infos
            .iter()
            .any(|l| l.contains("rolled back") || l.contains("trip:")),
        "a trip or rollback logged at INFO: {infos:#?}"
    );
}

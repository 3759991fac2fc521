//! The controller's own rules, with a state store and a traffic source under the test's
//! control: a transition is saved before its effects, a failed save changes nothing, a
//! reload keeps a rollout's place, incomplete numbers make a check inconclusive.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use prometheus_client::registry::Registry;

use super::*;
use crate::config::{self, Weight};
use crate::rollout::analysis::Verdict;
use crate::rollout::machine::{Phase, ServiceState};

/// Writes a config with the given services, each `(name, rollout yaml or "")`.
pub(super) fn write_config(dir: &Path, services: &[(&str, &str)]) -> std::path::PathBuf {
    let mut yaml = String::from(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\nstate_dir: state\nservices:\n",
    );
    for (index, (name, rollout)) in services.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {name}\n    match: {{ hosts: [\"{name}.test\"] }}\n    weight: 0%\n    old:\n      backends:\n        - addr: \"127.0.0.1:{}\"\n    new:\n      backends:\n        - addr: \"127.0.0.1:{}\"\n{rollout}",
            9000 + 2 * index,
            9001 + 2 * index
        ));
    }
    let path = dir.join("cutover.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

pub(super) fn load(path: &Path) -> Config {
    config::load(path).unwrap_or_else(|e| panic!("{e}"))
}

const HOURLY: &str = "    rollout:\n      schedule: { start: 5%, step: 20%, every: 1h }\n";
const CHECKED: &str = "    rollout:\n      schedule: { start: 5%, step: 20%, every: 1h }\n      analysis: { interval: 1s, window: 10s, min_requests: 1, max_error_rate: 1% }\n";

/// Keeps states in memory; notes NEW's routed weight at each save, and can fail.
#[derive(Clone)]
struct MemoryStore {
    saved: Arc<Mutex<Vec<(RolloutState, Weight)>>>,
    snapshot: SharedSnapshot,
    fail: Arc<AtomicBool>,
}

impl StateStore for MemoryStore {
    fn load(&self, _: &str) -> Result<Option<RolloutState>, StateError> {
        Ok(self.saved.lock().unwrap().last().map(|(s, _)| s.clone()))
    }

    fn save(&self, _: &str, state: &RolloutState) -> Result<(), StateError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StateError::Write {
                path: "memory".into(),
                source: std::io::Error::other("lost the compare-and-swap"),
            });
        }
        let routed = self
            .snapshot
            .load()
            .routes
            .first()
            .map_or(Weight::ZERO, |r| r.new_weight);
        self.saved.lock().unwrap().push((state.clone(), routed));
        Ok(())
    }

    fn location(&self, _: &str) -> String {
        "memory".into()
    }

    fn reconfigured(&self, _: &Config) -> Box<dyn StateStore> {
        Box::new(self.clone())
    }
}

/// Counts nothing, and says it could not count everything.
struct PartialTraffic;

impl TrafficSource for PartialTraffic {
    fn sample(&self, _: &ServiceRoute) -> TrafficSample {
        TrafficSample {
            complete: false,
            ..TrafficSample::default()
        }
    }
}

/// NEW answers 100 requests a sample, OLD none (cumulative, as the proxy's counters).
#[derive(Default)]
struct NewOnlyTraffic(std::sync::atomic::AtomicU64);

impl TrafficSource for NewOnlyTraffic {
    fn sample(&self, _: &ServiceRoute) -> TrafficSample {
        let requests = self.0.fetch_add(100, Ordering::SeqCst) + 100;
        let mut new = crate::stats::PoolCounts::default();
        new.responses[crate::stats::CodeClass::Success as usize] = requests;
        new.latency[crate::stats::latency_bucket(10_000)] = requests;
        TrafficSample {
            new,
            complete: true,
            ..TrafficSample::default()
        }
    }
}

struct Harness {
    controller: Controller,
    store: MemoryStore,
    snapshot: SharedSnapshot,
    _dir: tempfile::TempDir,
}

fn harness(services: &[(&str, &str)], traffic: Box<dyn TrafficSource>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = load(&write_config(dir.path(), services));
    let data_plane = tokio::runtime::Handle::current();
    let snapshot: SharedSnapshot = Arc::default();
    let store = MemoryStore {
        saved: Arc::default(),
        snapshot: snapshot.clone(),
        fail: Arc::default(),
    };
    let parts = Parts {
        listeners: Listeners::new(vec![data_plane.clone()], snapshot.clone(), &config.limits),
        metrics: RolloutMetrics::register(&mut Registry::default()),
        admin_token: Arc::new(arc_swap::ArcSwap::from_pointee(None)),
        store: Box::new(store.clone()),
        traffic,
        snapshot: snapshot.clone(),
        data_plane,
        config,
    };
    let (controller, _handle) = Controller::start(parts).unwrap();
    Harness {
        controller,
        store,
        snapshot,
        _dir: dir,
    }
}

impl Harness {
    fn routed(&self) -> Weight {
        self.snapshot.load().routes[0].new_weight
    }

    fn status(&self) -> ServiceStatus {
        status::service_status(&self.controller.services[0])
    }
}

#[tokio::test]
async fn a_transition_is_saved_before_its_new_weight_is_routed() {
    let mut h = harness(&[("api", HOURLY)], Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    let saved = h.store.saved.lock().unwrap().clone();
    let (state, routed_at_save) = saved.last().unwrap();
    assert_eq!(state.weight, Weight::from_percent(5.0).unwrap());
    assert_eq!(
        *routed_at_save,
        Weight::ZERO,
        "saved while still routing 0%"
    );
    assert_eq!(h.routed(), Weight::from_percent(5.0).unwrap());
}

#[tokio::test]
async fn a_failed_save_changes_nothing() {
    let mut h = harness(&[("api", HOURLY)], Box::new(LocalTraffic));
    h.store.fail.store(true, Ordering::SeqCst);
    let err = h.controller.control("api", Op::Start).unwrap_err();
    assert!(matches!(err, ControlError::Persist(_)), "{err}");
    assert_eq!(h.status().state, ServiceState::Pending);
    assert_eq!(h.routed(), Weight::ZERO);
    let run = h.controller.services[0].rollout.as_ref().unwrap();
    assert_eq!(run.state.phase, Phase::Pending);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_rollouts_place() {
    let mut h = harness(&[("api", HOURLY), ("web", "")], Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    h.controller.on_wake();
    let before = h.status();
    assert_eq!((before.step, before.weight), (2, 25.0));
    // The same services, in another order, and one more.
    let path = h.controller.config.origin.path.clone();
    std::fs::remove_file(&path).unwrap();
    let dir = path.parent().unwrap();
    write_config(dir, &[("web", ""), ("api", HOURLY), ("shop", "")]);
    h.controller.reload(ReloadSource::Api).unwrap();
    let api = h.controller.index_of("api").unwrap();
    let after = status::service_status(&h.controller.services[api]);
    assert_eq!(
        (after.step, after.weight, after.state),
        (2, 25.0, ServiceState::Progressing)
    );
    assert_eq!(after.run_id, before.run_id);
    assert_eq!(h.controller.services.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn incomplete_traffic_numbers_make_a_check_inconclusive() {
    let mut h = harness(&[("api", CHECKED)], Box::new(PartialTraffic));
    h.controller.on_wake();
    h.controller.control("api", Op::Start).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    h.controller.on_wake();
    let check = h.status().last_check.expect("a check ran");
    assert_eq!(check.result, Verdict::Inconclusive);
    assert_eq!(
        check.note.as_deref(),
        Some("the traffic numbers are incomplete")
    );
}

#[tokio::test(start_paused = true)]
async fn the_next_deadline_is_the_earliest_thing_due() {
    let mut h = harness(&[("api", CHECKED), ("web", "")], Box::new(LocalTraffic));
    assert_eq!(
        h.controller.next_deadline(),
        None,
        "a pending rollout waits for a command"
    );
    h.controller.on_wake();
    h.controller.control("api", Op::Start).unwrap();
    h.controller.on_wake();
    let now = Instant::now();
    assert_eq!(
        h.controller.next_deadline(),
        Some(now + Duration::from_secs(1))
    );
    h.controller.control("api", Op::Rollback).unwrap();
    assert_eq!(h.controller.next_deadline(), None);
}

mod evidence;
mod fleet;
mod restarts;

/// With comparisons alone and no OLD traffic, a step below 100% waits (nothing judged is
/// not a pass); at 100%, where OLD takes no traffic by design, the checks pass on NEW's
/// requests and the rollout completes: the check is judged at the run's weight.
#[tokio::test(start_paused = true)]
async fn comparisons_alone_wait_for_old_below_full_weight_and_not_at_it() {
    const COMPARED: &str = "    rollout:\n      steps:\n        - { weight: 50%, hold: 2s }\n        - { weight: 100%, hold: 2s }\n      analysis: { interval: 1s, window: 5s, min_requests: 10, max_error_rate_increase: 1% }\n";
    let mut h = harness(&[("api", COMPARED)], Box::<NewOnlyTraffic>::default());
    h.controller.on_wake();
    h.controller.control("api", Op::Start).unwrap();
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(1)).await;
        h.controller.on_wake();
    }
    let status = h.status();
    assert_eq!((status.step, status.state), (1, ServiceState::Progressing));
    let check = status.last_check.expect("checks ran");
    assert_eq!(check.result, Verdict::Inconclusive);
    let note = check.note.unwrap_or_default();
    assert!(note.contains("no rule could judge"), "{note}");
    h.controller
        .control("api", Op::Promote { full: false })
        .unwrap();
    assert_eq!(h.routed(), Weight::FULL);
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        h.controller.on_wake();
    }
    assert_eq!(h.status().state, ServiceState::Promoted);
}

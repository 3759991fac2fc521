//! The controller in a fleet, through a state store that plays a member: leads or not,
//! cut off or not, blocked or not. It "commits" what it saved.

use super::*;
use crate::rollout::controller::traffic::TrafficSample;
use crate::rollout::state::ReportedTrip;
use crate::routing::ServiceRoute;

const TRIPPED: &str = "    rollout:\n      schedule: { start: 5%, step: 20%, every: 1h }\n      analysis: { interval: 1s, window: 10s, min_requests: 1, max_error_rate: 1%, trip: { error_rate: 25%, min_requests: 20, window: 10s } }\n";

/// A `MemoryStore` that plays a fleet member: leads or not, cut off or not, blocked or not;
/// it "commits" what it saved.
#[derive(Clone)]
struct FleetLike {
    inner: MemoryStore,
    leads: Arc<AtomicBool>,
    isolated: Arc<AtomicBool>,
    blocked: Arc<Mutex<Option<String>>>,
    /// This member's own trips: service → run.
    trips: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
    /// What the other members report.
    reports: Arc<Mutex<Vec<ReportedTrip>>>,
}

impl StateStore for FleetLike {
    fn load(&self, s: &str) -> Result<Option<RolloutState>, StateError> {
        self.inner.load(s)
    }
    fn save(&self, s: &str, state: &RolloutState) -> Result<(), StateError> {
        if !self.leads.load(Ordering::SeqCst) {
            return Err(StateError::Write {
                path: "etcd".into(),
                source: std::io::Error::other("refused: not the leader"),
            });
        }
        self.inner.save(s, state)
    }
    fn location(&self, _: &str) -> String {
        "etcd".into()
    }
    fn reconfigured(&self, _: &Config) -> Box<dyn StateStore> {
        Box::new(self.clone())
    }
    fn leads(&self) -> bool {
        self.leads.load(Ordering::SeqCst)
    }
    fn blocked(&self) -> Option<String> {
        self.blocked.lock().unwrap().clone()
    }
    fn committed(&self) -> Vec<(String, RolloutState)> {
        self.inner
            .saved
            .lock()
            .unwrap()
            .last()
            .map(|(s, _)| vec![("api".to_string(), s.clone())])
            .unwrap_or_default()
    }
    fn isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }
    fn set_local_trip(&self, service: &str, run: Option<&str>) {
        let mut trips = self.trips.lock().unwrap();
        match run {
            Some(run) => trips.insert(service.to_string(), run.to_string()),
            None => trips.remove(service),
        };
    }
    fn local_trip(&self, service: &str) -> Option<String> {
        self.trips.lock().unwrap().get(service).cloned()
    }
    fn reported_trips(&self) -> Vec<ReportedTrip> {
        self.reports.lock().unwrap().clone()
    }
}

/// NEW answers nothing but 5xx: 50 more failed requests at every sample.
#[derive(Default)]
struct FailingNew(Mutex<u64>);

impl TrafficSource for FailingNew {
    fn sample(&self, _: &ServiceRoute) -> TrafficSample {
        let mut n = self.0.lock().unwrap();
        *n += 50;
        let mut new = crate::stats::PoolCounts::default();
        new.responses[crate::stats::CodeClass::ServerError as usize] = *n;
        let mut old = crate::stats::PoolCounts::default();
        old.responses[0] = *n;
        TrafficSample {
            old,
            new,
            complete: true,
        }
    }
}

fn fleet_harness(traffic: Box<dyn TrafficSource>) -> (Harness, FleetLike) {
    let mut h = harness(&[("api", TRIPPED)], traffic);
    let fleet = leading_member(&mut h);
    (h, fleet)
}

/// Makes the harness's controller the leader of a fleet whose store the test controls.
fn leading_member(h: &mut Harness) -> FleetLike {
    let fleet = FleetLike {
        inner: h.store.clone(),
        leads: Arc::new(AtomicBool::new(true)),
        isolated: Arc::default(),
        blocked: Arc::default(),
        trips: Arc::default(),
        reports: Arc::default(),
    };
    h.controller.store = Box::new(fleet.clone());
    h.controller.leading = true;
    fleet
}

/// SPEC §11: cut off from etcd, an instance may trip to 0% locally and reports it when
/// back. A leader that trips just as it loses etcd cannot save the rollback, which goes
/// ahead locally; once a cut-off follower, it once adopted the last committed state and
/// routed NEW again, reporting nothing.
#[tokio::test(start_paused = true)]
async fn a_rollback_a_cut_off_leader_could_not_save_is_kept_and_reported() {
    let (mut h, fleet) = fleet_harness(Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    assert_eq!(h.routed(), Weight::from_percent(5.0).unwrap());
    // etcd goes away: the write fails before the agent has noticed.
    h.store.fail.store(true, Ordering::SeqCst);
    h.controller.apply_logged(
        0,
        Input::Trip {
            reason: "trip: NEW fails".into(),
        },
    );
    assert_eq!(h.routed(), Weight::ZERO, "the rollback went ahead locally");
    // The agent notices: no longer the leader, cut off.
    fleet.leads.store(false, Ordering::SeqCst);
    fleet.isolated.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    h.controller.wake();
    assert_eq!(
        h.routed(),
        Weight::ZERO,
        "NEW is routed again after a trip, nothing reported"
    );
    assert!(
        fleet.local_trip("api").is_some(),
        "the trip is reported once etcd is back"
    );
}

/// A leader trips a failing NEW, and so does one blocked by a member running another
/// config (a rolling config change): it once judged nothing while blocked, and followers
/// never trip.
#[tokio::test(start_paused = true)]
async fn a_leader_trips_a_failing_new_blocked_or_not() {
    for blocked in [false, true] {
        let (mut h, fleet) = fleet_harness(Box::new(FailingNew::default()));
        h.controller.control("api", Op::Start).unwrap();
        if blocked {
            *fleet.blocked.lock().unwrap() = Some("instance `i2` runs config x".into());
        }
        for _ in 0..15 {
            tokio::time::advance(Duration::from_secs(1)).await;
            h.controller.wake();
        }
        let phase = h.controller.services[0]
            .rollout
            .as_ref()
            .unwrap()
            .state
            .phase;
        assert_eq!(
            phase,
            Phase::RolledBack,
            "NEW failing 100% for 15 s at {}, blocked: {blocked}",
            h.routed()
        );
    }
}

const GATED: &str = "    rollout:\n      steps:\n        - gate: ready\n    hooks:\n      ready:\n        exec: [\"/bin/sh\", \"-c\", \"exit 1\"]\n        every: 1s\n        deadline: 10m\n        on_deadline: rollback\n      notify:\n        on: [rollback]\n        exec: [\"/bin/true\"]\n";

/// A follower's clean stop decides nothing: it once ran `on_wake` as if it led, the
/// running time since it last changed role went to the adopted state at once, a gate's
/// deadline passed, and the rollback, which it could not save, went ahead with its hooks
/// (SPEC §11: each hook runs once per fleet, never once per instance).
#[tokio::test(start_paused = true)]
async fn a_follower_that_stops_decides_nothing() {
    let mut h = harness(&[("api", GATED)], Box::new(LocalTraffic));
    let fleet = leading_member(&mut h);
    h.controller.control("api", Op::Start).unwrap();
    // What the leader committed between two polls of the gate.
    {
        let mut saved = h.store.saved.lock().unwrap();
        let (state, _) = saved.last_mut().unwrap();
        state.hook_in_flight = false;
        state.gate_wait_ms = 1000;
    }
    fleet.leads.store(false, Ordering::SeqCst);
    h.controller.wake();
    assert!(!h.controller.leading);
    // Following for an hour, then a clean stop (`Command::Shutdown`).
    for _ in 0..60 {
        tokio::time::advance(Duration::from_secs(60)).await;
        h.controller.wake();
    }
    h.controller.hand_over();
    let notify = &h.controller.services[0].hooks["notify"];
    assert!(
        !notify.running,
        "a follower ran the rollback hook at its stop: {:?} / {:?}",
        h.controller.services[0]
            .rollout
            .as_ref()
            .unwrap()
            .state
            .phase,
        h.routed()
    );
}

/// A member's trip belongs to the run it was made in: the leader acts on a trip of the
/// run in progress, not on one of a run that has ended (reported after the fleet rolled
/// that run back and started another, it once rolled the new one back too).
#[tokio::test(start_paused = true)]
async fn a_trip_reported_from_an_earlier_run_is_not_acted_on() {
    let (mut h, fleet) = fleet_harness(Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    let run = h.controller.services[0]
        .rollout
        .as_ref()
        .unwrap()
        .state
        .run_id
        .clone();
    let report = |run: &str| ReportedTrip {
        instance: "i2".into(),
        service: "api".into(),
        run: Some(run.into()),
    };
    *fleet.reports.lock().unwrap() = vec![report("an-earlier-run")];
    tokio::time::advance(Duration::from_secs(1)).await;
    h.controller.wake();
    assert_eq!(h.routed(), Weight::from_percent(5.0).unwrap());
    *fleet.reports.lock().unwrap() = vec![report(&run)];
    tokio::time::advance(Duration::from_secs(1)).await;
    h.controller.wake();
    assert_eq!(h.routed(), Weight::ZERO, "a trip of the run in progress");
}

/// A follower's own trip ends when the fleet has moved on to another run: it no longer
/// holds the new run's NEW at 0.
#[tokio::test(start_paused = true)]
async fn a_followers_trip_of_an_earlier_run_ends_with_it() {
    let (mut h, fleet) = fleet_harness(Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    fleet.leads.store(false, Ordering::SeqCst);
    fleet.set_local_trip("api", Some("an-earlier-run"));
    tokio::time::advance(Duration::from_secs(1)).await;
    h.controller.wake();
    assert_eq!(h.routed(), Weight::from_percent(5.0).unwrap());
    assert_eq!(fleet.local_trip("api"), None);
}

/// A leader's own trip of an earlier run (made while it followed) ends with that run too:
/// it once showed "LOCAL TRIP" for as long as the instance led.
#[tokio::test(start_paused = true)]
async fn a_leaders_own_trip_of_an_earlier_run_ends_with_it() {
    let (mut h, fleet) = fleet_harness(Box::new(LocalTraffic));
    h.controller.control("api", Op::Start).unwrap();
    fleet.set_local_trip("api", Some("an-earlier-run"));
    *fleet.reports.lock().unwrap() = vec![ReportedTrip {
        instance: "this-instance".into(),
        service: "api".into(),
        run: Some("an-earlier-run".into()),
    }];
    tokio::time::advance(Duration::from_secs(1)).await;
    h.controller.wake();
    assert_eq!(h.routed(), Weight::from_percent(5.0).unwrap());
    assert_eq!(fleet.local_trip("api"), None);
}

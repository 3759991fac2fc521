//! Fleet mode (SPEC §11) when things go wrong, with a real etcd and three real `cutover`
//! processes: a regression that only one follower's clients see rolls the whole fleet
//! back; a member that dies leaves `cutover_fleet_instances` on the others; etcd frozen
//! (SIGSTOP) mid-hold stops nothing from serving and advances nothing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const TTL_S: u64 = 2;

fn services(old: SocketAddr, new: SocketAddr, steps: &str, hook_log: &str) -> String {
    format!(
        r#"services:
  - name: api
    old: {{ backends: [{{ addr: "{old}" }}] }}
    new: {{ backends: [{{ addr: "{new}" }}] }}
    rollout:
      steps:
{steps}
      analysis:
        interval: 1s
        window: 3s
        min_requests: 10
        failure_threshold: 2
        max_error_rate: 5%
    hooks:
      mark:
        exec: ["/bin/sh", "-c", "echo ran >> {hook_log}"]
"#
    )
}

async fn start_three(etcd: &Etcd, dir: &std::path::Path, services: &str) -> Vec<FleetMember> {
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(FleetMember::start(dir, i, &etcd.url(), TTL_S, services).await);
    }
    let all: Vec<&FleetMember> = members.iter().collect();
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            fleet_leader(&all).await.is_some()
        })
        .await,
        "the three never agreed on a leader"
    );
    members
}

async fn wait_for<F, Fut>(what: &str, within: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        eventually_async(within, condition).await,
        "waited {within:?} for {what}"
    );
}

fn service(status: &Value) -> &Value {
    &status["services"][0]
}

/// Every member reports the rollout rolled back and routes nothing to NEW.
async fn all_rolled_back(members: &[FleetMember]) -> bool {
    for member in members {
        match member.status().await {
            Some(s) if service(&s)["state"] == "rolled_back" && weight(&s) == 0.0 => {}
            _ => return false,
        }
    }
    true
}

fn weight(status: &Value) -> f64 {
    service(status)["weight"].as_f64().unwrap_or(-1.0)
}

/// etcd, OLD's and NEW's backends and a directory for the members; `None` without etcd
/// (which `Etcd::start` has said aloud, and fails under `CI=true`).
async fn setup() -> Option<(Etcd, Backend, Backend, tempfile::TempDir)> {
    let etcd = Etcd::start().await?;
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    Some((etcd, old, new, tempfile::tempdir().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_only_a_follower_sees_rolls_the_fleet_back() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let old = spawn_backend("old").await;
    // NEW fails only what the follower's clients ask for.
    let (new, failed) = spawn_failing_on_path("new", "/via-follower").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let steps = "        - weight: 50%\n          hold: 1h\n";
    let members = start_three(
        &etcd,
        dir.path(),
        &services(old.addr, new, steps, &log.display().to_string()),
    )
    .await;
    let all: Vec<&FleetMember> = members.iter().collect();
    let leader = fleet_leader(&all).await.unwrap();
    let follower = members.iter().find(|m| m.name != leader).unwrap();
    let leader = members.iter().find(|m| m.name == leader).unwrap();
    wait_for("every instance at 50%", Duration::from_secs(10), || async {
        for member in &members {
            if !member.status().await.is_some_and(|s| weight(&s) == 50.0) {
                return false;
            }
        }
        true
    })
    .await;

    // Load through every instance; only the follower's fails on NEW.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the fleet was not rolled back: {:#}",
            leader.status().await.unwrap_or_default()
        );
        for member in &members {
            let path = if member.name == follower.name {
                "/via-follower"
            } else {
                "/"
            };
            for _ in 0..10 {
                let _ = send(member.proxy, get("api", path)).await;
            }
        }
        if leader
            .status()
            .await
            .is_some_and(|s| service(&s)["state"] == "rolled_back")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed.load(SeqCst) > 0);
    // The leader saw no error of its own: the fleet's numbers decided.
    let own_errors = leader
        .metric(r#"cutover_requests_total{service="api",pool="new",code="5xx"}"#)
        .await;
    assert_eq!(
        own_errors,
        Some(0.0),
        "the leader's own traffic had NEW errors"
    );
    let own_ok = leader
        .metric(r#"cutover_requests_total{service="api",pool="new",code="2xx"}"#)
        .await;
    assert!(
        own_ok > Some(0.0),
        "the leader sent NEW nothing: {own_ok:?}"
    );
    let follower_errors = follower
        .metric(r#"cutover_requests_total{service="api",pool="new",code="5xx"}"#)
        .await;
    assert!(follower_errors > Some(0.0), "{follower_errors:?}");

    // Every instance rolls back and routes nothing to NEW; the reason names the rule.
    wait_for(
        "every instance rolled back at 0%",
        Duration::from_secs(2),
        || all_rolled_back(&members),
    )
    .await;
    let status = follower.status().await.unwrap();
    let reason = service(&status)["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error rate"), "{status:#}");
    assert_eq!(
        service(&status)["rollback_reason"],
        "analysis",
        "{status:#}"
    );
    let before = failed.load(SeqCst);
    for member in &members {
        for _ in 0..20 {
            let got = send(member.proxy, get("api", "/via-follower")).await;
            assert_eq!(
                got.body, "old",
                "NEW still gets traffic via {}",
                member.name
            );
        }
    }
    assert_eq!(failed.load(SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_instances_gauge_drops_when_a_member_dies() {
    let Some((etcd, old, new, dir)) = setup().await else {
        return;
    };
    let log = dir.path().join("hook.log");
    let steps = "        - weight: 10%\n          hold: 1h\n";
    let mut members = start_three(
        &etcd,
        dir.path(),
        &services(old.addr, new.addr, steps, &log.display().to_string()),
    )
    .await;
    const SERIES: &str = "cutover_fleet_instances";
    wait_for(
        "every member to count 3",
        Duration::from_secs(5),
        || async {
            for member in &members {
                if member.metric(SERIES).await != Some(3.0) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let victim = members.pop().unwrap();
    victim.process.signal(libc::SIGKILL);
    let killed = Instant::now();
    wait_for(
        "the survivors to count 2",
        Duration::from_secs(TTL_S + 3),
        || async {
            for member in &members {
                if member.metric(SERIES).await != Some(2.0) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("cutover_fleet_instances dropped {took:?} after kill -9");
    assert!(took <= Duration::from_secs(TTL_S + 1), "took {took:?}");
    // And it stays true between events: still 2 a few scrapes later.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for member in &members {
            assert_eq!(member.metric(SERIES).await, Some(2.0));
        }
    }
}

fn hook_runs(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_frozen_mid_hold_serves_everything_and_advances_nothing() {
    let Some((etcd, old, new, dir)) = setup().await else {
        return;
    };
    let log = dir.path().join("hook.log");
    // The first hold would end during the stop if the stop did not stop it. The rollout
    // starts once all three run, so their start-up does not eat into the hold.
    let steps = "        - weight: 10%\n          hold: 4s\n        - run: mark\n        - weight: 40%\n          hold: 1h\n";
    let text = services(old.addr, new.addr, steps, &log.display().to_string())
        .replace("    rollout:\n", "    rollout:\n      start: manual\n");
    let members = start_three(&etcd, dir.path(), &text).await;
    let got = admin_post(members[2].process.admin, "/services/api/start").await;
    assert_eq!(got.status, 200, "{}", got.body);
    wait_for("every instance at 10%", Duration::from_secs(10), || async {
        for member in &members {
            if !member.status().await.is_some_and(|s| weight(&s) == 10.0) {
                return false;
            }
        }
        true
    })
    .await;
    let traffic: Vec<Traffic> = members
        .iter()
        .map(|m| Traffic::start(m.proxy, 2, 25))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = members[0].status().await.unwrap();
    assert_eq!(
        service(&before)["step"],
        1,
        "the hold ended too soon: {before:#}"
    );

    etcd.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let mut seen_down = false;
    while stopped.elapsed() < Duration::from_secs(5) {
        for member in &members {
            let status = member.status().await.expect("the admin API answers");
            assert_eq!(weight(&status), 10.0, "{status:#}");
            assert_eq!(service(&status)["step"], 1, "{status:#}");
        }
        assert_eq!(hook_runs(&log), 0, "a hook ran while etcd was stopped");
        if stopped.elapsed() > Duration::from_secs(4) && !seen_down {
            // Nobody can see anybody's fresh numbers, nor etcd.
            for member in &members {
                assert_eq!(member.metric("cutover_fleet_connected").await, Some(0.0));
                assert_eq!(member.metric("cutover_fleet_leader").await, Some(0.0));
                assert_eq!(member.metric("cutover_fleet_instances").await, Some(0.0));
            }
            seen_down = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_down);
    etcd.signal(libc::SIGCONT);

    // The rollout goes on: the hook runs once and every instance reaches 40%.
    wait_for(
        "every instance at 40% after SIGCONT",
        Duration::from_secs(20),
        || async {
            for member in &members {
                if !member.status().await.is_some_and(|s| weight(&s) == 40.0) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert_eq!(hook_runs(&log), 1, "the `run` hook ran once for the fleet");
    let mut tally = Tally::default();
    for t in traffic {
        tally.add(t.stop().await);
    }
    tally.assert_no_failures("through the fleet while etcd was stopped and after");
    assert!(tally.ok > 300, "only {} requests went through", tally.ok);
    assert!(tally.new > 0 && tally.old > 0, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_status_shows_the_member_table() {
    let Some((etcd, old, new, dir)) = setup().await else {
        return;
    };
    let steps = "        - weight: 10%\n          hold: 1h\n";
    let same = services(old.addr, new.addr, steps, "/dev/null");
    let mut members = Vec::new();
    for i in 0..2 {
        members.push(FleetMember::start(dir.path(), i, &etcd.url(), TTL_S, &same).await);
    }
    wait_for("both at 10%", Duration::from_secs(10), || async {
        for member in &members {
            if !member.status().await.is_some_and(|s| weight(&s) == 10.0) {
                return false;
            }
        }
        true
    })
    .await;
    // i2 runs another hook: another config hash.
    let other = services(old.addr, new.addr, steps, "/dev/zero");
    members.push(FleetMember::start(dir.path(), 2, &etcd.url(), TTL_S, &other).await);
    let all: Vec<&FleetMember> = members.iter().collect();
    wait_for(
        "three members seen by i1",
        Duration::from_secs(10),
        || async {
            let Some(leader) = fleet_leader(&all).await else {
                return false;
            };
            members[1].status().await.is_some_and(|s| {
                let list = s["fleet"]["instances"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.len() == 3 && list.iter().all(|m| m["weights"]["api"] == 10.0)
            }) && !leader.is_empty()
        },
    )
    .await;
    let leader = fleet_leader(&all).await.unwrap();

    let output = std::process::Command::new(binary())
        .args([
            "status",
            "--admin",
            &format!("http://{}", members[1].process.admin),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "fleet /cutover/test  this instance i1  leader {leader}  etcd connected"
        )),
        "{text}"
    );
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("INSTANCE"))
        .unwrap();
    for column in ["ROLE", "VERSION", "CONFIG", "RECORD AGE", "ROUTES NEW"] {
        assert!(header.contains(column), "{text}");
    }
    for i in 0..3 {
        let name = format!("i{i}");
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let role = if name == leader { "leader" } else { "follower" };
        assert_eq!(cells[1], role, "{text}");
        assert_eq!(cells[2], env!("CARGO_PKG_VERSION"), "{text}");
        assert_eq!(cells[3] == "same", i != 2, "{text}");
        let age_at = if i == 2 { 5 } else { 4 };
        let age: f64 = cells[age_at].trim_end_matches('s').parse().unwrap();
        assert!(age < 3.0, "{text}");
        assert!(row.trim_end().ends_with("api 10%"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_trip_while_etcd_is_frozen_rolls_the_fleet_back_once_it_is_back() {
    let Some((etcd, old, new, dir)) = setup().await else {
        return;
    };
    let steps = "        - weight: 50%\n          hold: 1h\n";
    let with_trip = services(old.addr, new.addr, steps, "/dev/null").replace(
        "        max_error_rate: 5%\n",
        "        max_error_rate: 5%\n        trip: { error_rate: 25%, min_requests: 20, window: 10s }\n",
    );
    let members = start_three(&etcd, dir.path(), &with_trip).await;
    wait_for("every instance at 50%", Duration::from_secs(10), || async {
        for member in &members {
            if !member.status().await.is_some_and(|s| weight(&s) == 50.0) {
                return false;
            }
        }
        true
    })
    .await;
    let all: Vec<&FleetMember> = members.iter().collect();
    let leader = fleet_leader(&all).await.unwrap();
    let tripper = members.iter().find(|m| m.name != leader).unwrap();

    etcd.signal(libc::SIGSTOP);
    wait_for(
        "every instance to lose etcd",
        Duration::from_secs(8),
        || async {
            for member in &members {
                if member.metric("cutover_fleet_connected").await != Some(0.0) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // NEW fails; only the tripper's clients see it.
    new.set_status(500);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        assert!(Instant::now() < deadline, "no local trip");
        for _ in 0..20 {
            let _ = send(tripper.proxy, get("api", "/")).await;
        }
        if tripper.status().await.is_some_and(|s| weight(&s) == 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = tripper.status().await.unwrap();
    let local = service(&status)["reason"].as_str().unwrap_or_default();
    assert!(local.contains("on this instance alone"), "{status:#}");
    let hits = new.hits();
    for _ in 0..30 {
        assert_eq!(send(tripper.proxy, get("api", "/")).await.body, "old");
    }
    assert_eq!(new.hits(), hits, "NEW got traffic after the local trip");
    // Nobody else decided anything: the others still route at 50%.
    for member in members.iter().filter(|m| m.name != tripper.name) {
        assert_eq!(weight(&member.status().await.unwrap()), 50.0);
    }

    etcd.signal(libc::SIGCONT);
    wait_for(
        "the fleet to act on the local trip",
        Duration::from_secs(15),
        || all_rolled_back(&members),
    )
    .await;
    let status = members[0].status().await.unwrap();
    let reason = service(&status)["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("instance `{}` tripped NEW to 0%", tripper.name)),
        "{status:#}"
    );
}

/// A follower keeps a copy of what it adopts: restarted while etcd is unreachable, it
/// routes at the weight the fleet last committed, not at the one of its previous start
/// (once 50% to a NEW the fleet had rolled back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_without_etcd_routes_at_the_fleets_last_weight() {
    let Some((etcd, old, new, dir)) = setup().await else {
        return;
    };
    let steps = "        - weight: 50%\n          hold: 1h\n";
    let text = services(old.addr, new.addr, steps, "/dev/null")
        .replace("    rollout:\n", "    rollout:\n      start: manual\n");
    let leader = FleetMember::start(dir.path(), 0, &etcd.url(), TTL_S, &text).await;
    wait_for("a leader", Duration::from_secs(10), || async {
        fleet_leader(&[&leader]).await.as_deref() == Some("i0")
    })
    .await;
    let got = admin_post(leader.process.admin, "/services/api/start").await;
    assert_eq!(got.status, 200, "{}", got.body);
    // The follower starts while the rollout is at 50%.
    let follower = FleetMember::start(dir.path(), 1, &etcd.url(), TTL_S, &text).await;
    wait_for("the follower at 50%", Duration::from_secs(10), || async {
        follower.status().await.is_some_and(|s| weight(&s) == 50.0)
    })
    .await;
    let got = admin_post(leader.process.admin, "/services/api/rollback").await;
    assert_eq!(got.status, 200, "{}", got.body);
    wait_for("both rolled back", Duration::from_secs(10), || async {
        leader.status().await.is_some_and(|s| weight(&s) == 0.0)
            && follower.status().await.is_some_and(|s| weight(&s) == 0.0)
    })
    .await;
    // etcd goes away; the follower restarts (deploy, OOM, crash).
    etcd.signal(libc::SIGSTOP);
    drop(follower);
    let follower = FleetMember::start(dir.path(), 1, &etcd.url(), TTL_S, &text).await;
    let status = follower.status().await.unwrap();
    etcd.signal(libc::SIGCONT);
    assert_eq!(
        weight(&status),
        0.0,
        "restarted without etcd, the follower routes NEW at the pre-rollback weight: {status:#}"
    );
}

/// A leader frozen past its lease (a long pause, a stopped VM) wakes with every timer due
/// and its etcd session not yet ended. Its gate's next poll is a transition, saved first:
/// etcd refuses the deposed leader's write, and once the lease it knows of has lapsed it
/// does not lead at all (`fleet::Shared::leads`), so the poll never starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_past_its_lease_runs_no_hook_when_it_wakes() {
    let Some((etcd, old, new, dir)) = setup().await else {
        return;
    };
    let log = dir.path().join("probe.log");
    // A gate that never passes, polled every 200 ms; each poll writes the pid of the
    // `cutover` that ran it.
    let text = services(old.addr, new.addr, "        - gate: probe\n", "/dev/null")
        + &format!(
            "      probe:\n        exec: [\"/bin/sh\", \"-c\", \"echo $PPID >> {}; exit 1\"]\n        every: 200ms\n",
            log.display()
        );
    let members = start_three(&etcd, dir.path(), &text).await;
    let polls_by = |pid: u32| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.trim() == pid.to_string())
            .count()
    };
    let all: Vec<&FleetMember> = members.iter().collect();
    let name = fleet_leader(&all).await.unwrap();
    let leader = members.iter().find(|m| m.name == name).unwrap();
    let pid = leader.process.child.id();
    wait_for(
        "the leader polling its gate",
        Duration::from_secs(10),
        || async { polls_by(pid) >= 2 },
    )
    .await;

    // Frozen for twice the lease: etcd lets the lease go and another instance leads and
    // polls. The frozen one's timers are all due when it wakes, its session not yet ended.
    leader.process.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = polls_by(pid);
    let others: Vec<&FleetMember> = members.iter().filter(|m| m.name != name).collect();
    wait_for("another leader", Duration::from_secs(10), || async {
        fleet_leader(&others).await.is_some_and(|l| l != name)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2 * TTL_S)).await;
    leader.process.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        polls_by(pid),
        before,
        "the deposed leader polled its gate after it woke: {}",
        leader.process.log()
    );
    let new_leader = fleet_leader(&all).await;
    assert!(
        new_leader.is_some_and(|l| l != name),
        "the fleet agrees on the new leader, the woken one among them"
    );
    assert!(
        leader.process.log().contains("no longer leading the fleet"),
        "{}",
        leader.process.log()
    );
}

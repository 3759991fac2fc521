//! Fleet mode's figures for docs/fleet.md (`#[ignore]`d: run by hand, they take minutes):
//! takeover time after kill -9 of the leader, routing propagation from the leader's commit
//! to every follower, and the CPU an idle member spends publishing its record.
//!
//! cargo test --release --test fleet_measure -- --ignored --nocapture --test-threads 1

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

const TTL_S: u64 = 2;

fn services(old: SocketAddr, new: SocketAddr) -> String {
    format!(
        r#"services:
  - name: api
    old: {{ backends: [{{ addr: "{old}" }}] }}
    new: {{ backends: [{{ addr: "{new}" }}] }}
    rollout:
      steps:
        - weight: 10%
          hold: 1h
"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn agreed(members: &[&FleetMember], not: Option<&str>) -> Option<String> {
    let leader = fleet_leader(members).await?;
    (Some(leader.as_str()) != not).then_some(leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn measure_takeover_after_kill_9() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let text = services(old.addr, new.addr);
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Some(
            FleetMember::start(dir.path(), i, &etcd.url(), TTL_S, &text).await,
        ));
    }
    let mut takeovers = Vec::new();
    for _ in 0..7 {
        let leader = loop {
            let all: Vec<&FleetMember> = members.iter().flatten().collect();
            if let Some(l) = agreed(&all, None).await {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let index: usize = leader.trim_start_matches('i').parse().unwrap();
        members[index]
            .as_ref()
            .unwrap()
            .process
            .signal(libc::SIGKILL);
        let killed = Instant::now();
        members[index] = None;
        loop {
            let all: Vec<&FleetMember> = members.iter().flatten().collect();
            if agreed(&all, Some(&leader)).await.is_some() {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(TTL_S + 5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        takeovers.push(killed.elapsed());
        members[index] =
            Some(FleetMember::start(dir.path(), index, &etcd.url(), TTL_S, &text).await);
    }
    takeovers.sort();
    eprintln!(
        "MEASURED takeover after kill -9 (lease_ttl {TTL_S}s, {} runs): median {:?}, max {:?}, all {takeovers:?}",
        takeovers.len(),
        percentile(&takeovers, 50.0),
        takeovers.last().unwrap()
    );
}

async fn set_weight(admin: SocketAddr, weight: u32) {
    let request = Request::post("/services/api/weight")
        .header("host", admin.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"weight": {weight}, "force": true}}"#
        ))))
        .unwrap();
    let got = send(admin, request).await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn measure_routing_propagation() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let text = services(old.addr, new.addr);
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(FleetMember::start(dir.path(), i, &etcd.url(), TTL_S, &text).await);
    }
    let all: Vec<&FleetMember> = members.iter().collect();
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            agreed(&all, None).await.is_some()
        })
        .await
    );
    let leader_name = agreed(&all, None).await.unwrap();
    let leader = members.iter().find(|m| m.name == leader_name).unwrap();
    let followers: Vec<&FleetMember> = members.iter().filter(|m| m.name != leader_name).collect();
    let got = admin_post(leader.process.admin, "/services/api/pause").await;
    assert_eq!(got.status, 200, "{}", got.body);
    let mut delays = Vec::new();
    for change in 0..30u32 {
        let weight = 20 + (change % 2) * 10;
        set_weight(leader.process.admin, weight).await;
        let committed = Instant::now();
        let mut pending: Vec<&FleetMember> = followers.clone();
        while !pending.is_empty() {
            assert!(committed.elapsed() < Duration::from_secs(5));
            let mut still = Vec::new();
            for follower in pending {
                let status = follower.status().await.unwrap();
                if status["services"][0]["weight"].as_f64() == Some(f64::from(weight)) {
                    delays.push(committed.elapsed());
                } else {
                    still.push(follower);
                }
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    delays.sort();
    eprintln!(
        "MEASURED routing propagation, leader's commit answered → follower /status shows it ({} applications): p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        delays.last().unwrap()
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn measure_idle_cpu_of_publishing() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let text = services(old.addr, new.addr);
    let member = FleetMember::start(dir.path(), 0, &etcd.url(), TTL_S, &text).await;
    let (proxy, admin) = (free_port(), free_port());
    let alone_path = dir.path().join("alone.yaml");
    std::fs::write(
        &alone_path,
        format!(
            "listeners: [{{ addr: \"127.0.0.1:{proxy}\" }}]\nadmin: {{ addr: \"127.0.0.1:{admin}\" }}\nstate_dir: state-alone\n{text}"
        ),
    )
    .unwrap();
    let alone = Cutover::start(&alone_path, format!("127.0.0.1:{admin}").parse().unwrap()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let span = Duration::from_secs(60);
    let (fleet0, alone0) = (
        cpu_ticks(member.process.child.id()),
        cpu_ticks(alone.child.id()),
    );
    tokio::time::sleep(span).await;
    let (fleet1, alone1) = (
        cpu_ticks(member.process.child.id()),
        cpu_ticks(alone.child.id()),
    );
    let hz = 100.0; // USER_HZ on Linux
    let ms = |ticks: u64| ticks as f64 / hz * 1000.0;
    eprintln!(
        "MEASURED idle CPU over {span:?}: fleet member {} ms, single process {} ms, extra {:.1} ms/s ({:.2}% of one core)",
        ms(fleet1 - fleet0),
        ms(alone1 - alone0),
        (ms(fleet1 - fleet0) - ms(alone1 - alone0)) / span.as_secs_f64(),
        (ms(fleet1 - fleet0) - ms(alone1 - alone0)) / span.as_secs_f64() / 10.0
    );
}

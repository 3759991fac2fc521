//! Fleet mode (SPEC §11) with a real etcd and three real `cutover` processes: one leader,
//! routing applied everywhere within a second, a command sent to a follower acting on the
//! fleet, and a kill -9 of the leader mid-hold taken over at the same step without running
//! the `run` hook again.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const TTL_S: u64 = 2;

struct Member {
    process: Cutover,
    proxy: SocketAddr,
}

fn config(
    dir: &Path,
    i: usize,
    etcd: &str,
    old: &Backend,
    new: &Backend,
    (proxy, admin): (u16, u16),
    said: &str,
) -> String {
    format!(
        r#"listeners: [{{ addr: "127.0.0.1:{proxy}" }}]
admin: {{ addr: "127.0.0.1:{admin}" }}
state_dir: state-{i}
fleet:
  etcd: ["{etcd}"]
  prefix: /cutover/test
  instance: i{i}
  lease_ttl: {TTL_S}s
services:
  - name: api
    old: {{ backends: [{{ addr: "{old}" }}] }}
    new: {{ backends: [{{ addr: "{new}" }}] }}
    rollout:
      steps:
        - weight: 10%
          hold: 2s
        - run: once
        - weight: 40%
          hold: 1h
    hooks:
      once:
        exec: ["/bin/sh", "-c", "echo {said} >> {hooks}"]
"#,
        old = old.addr,
        new = new.addr,
        hooks = dir.join("hook.log").display(),
    )
}

async fn start_member(dir: &Path, i: usize, etcd: &Etcd, old: &Backend, new: &Backend) -> Member {
    start_member_saying(dir, i, etcd, old, new, "ran").await
}

async fn start_member_saying(
    dir: &Path,
    i: usize,
    etcd: &Etcd,
    old: &Backend,
    new: &Backend,
    said: &str,
) -> Member {
    let (proxy, admin) = (free_port(), free_port());
    let path = dir.join(format!("cutover-{i}.yaml"));
    std::fs::write(
        &path,
        config(dir, i, &etcd.url(), old, new, (proxy, admin), said),
    )
    .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let process = Cutover::start(&path, admin).await;
    Member {
        process,
        proxy: format!("127.0.0.1:{proxy}").parse().unwrap(),
    }
}

async fn status(member: &Member) -> Option<Value> {
    admin_status(member.process.admin).await
}

async fn metric_of(member: &Member, name: &str) -> Option<f64> {
    let got = admin_get(member.process.admin, "/metrics").await;
    sample(&got.body, name)
}

/// The leader every live member names, once they all name the same one.
async fn agreed_leader(members: &[&Member]) -> Option<String> {
    let mut leader = None;
    for member in members {
        let status = status(member).await?;
        let named = status["fleet"]["leader"].as_str()?.to_string();
        if leader.get_or_insert(named.clone()) != &named {
            return None;
        }
    }
    leader
}

async fn wait_until<F, Fut>(what: &str, within: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        eventually_async(within, condition).await,
        "waited {within:?} for {what}"
    );
}

fn weight(status: &Value) -> f64 {
    status["services"][0]["weight"].as_f64().unwrap_or(-1.0)
}

fn hook_runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("hook.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_act_as_one() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Some(start_member(dir.path(), i, &etcd, &old, &new).await));
    }
    let live = |members: &Vec<Option<Member>>| -> Vec<usize> {
        (0..members.len())
            .filter(|&i| members[i].is_some())
            .collect()
    };

    // One leader, named by all; exactly one reports cutover_fleet_leader 1.
    wait_until(
        "all three to agree on a leader",
        Duration::from_secs(10),
        || async {
            let all: Vec<&Member> = members.iter().flatten().collect();
            agreed_leader(&all).await.is_some()
        },
    )
    .await;
    let mut leaders = 0.0;
    for member in members.iter().flatten() {
        leaders += metric_of(member, "cutover_fleet_leader")
            .await
            .unwrap_or(-1.0);
        assert_eq!(
            metric_of(member, "cutover_fleet_connected").await,
            Some(1.0)
        );
    }
    assert_eq!(leaders, 1.0, "exactly one instance leads");
    let leader_name = agreed_leader(&members.iter().flatten().collect::<Vec<_>>())
        .await
        .unwrap();
    let status0 = status(members[0].as_ref().unwrap()).await.unwrap();
    assert_eq!(
        status0["fleet"]["instances"].as_array().unwrap().len(),
        3,
        "{status0:#}"
    );

    // The rollout goes to 40% (after the hold and the `run` hook); every instance routes
    // at the leader's weight within one second of the leader.
    let mut reached: Vec<Option<Instant>> = vec![None; 3];
    let deadline = Instant::now() + Duration::from_secs(15);
    while reached.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "not every instance reached 40%: {reached:?}"
        );
        for i in 0..3 {
            if reached[i].is_none() {
                let member = members[i].as_ref().unwrap();
                if status(member).await.is_some_and(|s| weight(&s) == 40.0) {
                    reached[i] = Some(Instant::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = reached.iter().flatten().min().unwrap();
    let last = reached.iter().flatten().max().unwrap();
    let spread = *last - *first;
    eprintln!("routing propagation spread across 3 instances: {spread:?}");
    assert!(spread < Duration::from_secs(1), "spread {spread:?}");
    // And traffic through a follower really goes to NEW at about that share.
    let follower = live(&members)
        .into_iter()
        .find(|&i| format!("i{i}") != leader_name)
        .unwrap();
    let before = new.hits();
    for _ in 0..200 {
        let got = send(members[follower].as_ref().unwrap().proxy, get("api", "/")).await;
        assert_eq!(got.status, 200);
    }
    let to_new = new.hits() - before;
    assert!(
        (50..=110).contains(&to_new),
        "{to_new} of 200 went to NEW at 40%"
    );
    assert_eq!(
        hook_runs(dir.path()),
        1,
        "the run hook ran once for the fleet"
    );

    // A command sent to a follower pauses the fleet.
    let got = admin_post(
        members[follower].as_ref().unwrap().process.admin,
        "/services/api/pause",
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    wait_until(
        "every instance to show the pause",
        Duration::from_secs(2),
        || async {
            for member in members.iter().flatten() {
                match status(member).await {
                    Some(s) if s["services"][0]["state"] == "paused" => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    let got = admin_post(
        members[follower].as_ref().unwrap().process.admin,
        "/services/api/resume",
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);

    // kill -9 the leader mid-hold: another takes over within lease_ttl + 1 s, at the same
    // step and weight, and the `run` hook is not run again.
    let leader_index: usize = leader_name.trim_start_matches('i').parse().unwrap();
    let step_before = status(members[leader_index].as_ref().unwrap())
        .await
        .unwrap()["services"][0]["step"]
        .clone();
    members[leader_index]
        .as_ref()
        .unwrap()
        .process
        .signal(libc::SIGKILL);
    let killed_at = Instant::now();
    members[leader_index] = None;
    let survivors = live(&members);
    wait_until("a new leader", Duration::from_secs(TTL_S + 3), || async {
        let all: Vec<&Member> = members.iter().flatten().collect();
        matches!(agreed_leader(&all).await, Some(l) if l != leader_name)
    })
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("takeover after kill -9 of the leader: {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(TTL_S + 1),
        "takeover took {takeover:?}"
    );
    for &i in &survivors {
        let s = status(members[i].as_ref().unwrap()).await.unwrap();
        assert_eq!(s["services"][0]["step"], step_before, "{s:#}");
        assert_eq!(weight(&s), 40.0, "{s:#}");
        assert_eq!(s["services"][0]["state"], "progressing", "{s:#}");
    }
    // Requests through the survivors all succeed.
    for &i in &survivors {
        for _ in 0..50 {
            let got = send(members[i].as_ref().unwrap().proxy, get("api", "/")).await;
            assert_eq!(got.status, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook_runs(dir.path()), 1, "the run hook was not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_config_blocks_the_leader() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let leader = start_member(dir.path(), 0, &etcd, &old, &new).await;
    wait_until("i0 to lead at 10%", Duration::from_secs(10), || async {
        status(&leader)
            .await
            .is_some_and(|s| s["fleet"]["leader"] == "i0" && weight(&s) == 10.0)
    })
    .await;
    let other = start_member_saying(dir.path(), 1, &etcd, &old, &new, "other").await;
    wait_until(
        "the leader to name i1 as blocking",
        Duration::from_secs(5),
        || async {
            status(&leader).await.is_some_and(|s| {
                s["fleet"]["blocked"]
                    .as_str()
                    .is_some_and(|b| b.contains("`i1`"))
            })
        },
    )
    .await;
    // The first hold is 2 s: blocked, the leader does not go past it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&leader).await.unwrap();
    assert_eq!(s["services"][0]["step"], 1, "{s:#}");
    assert_eq!(weight(&s), 10.0, "{s:#}");
    assert_eq!(hook_runs(dir.path()), 0);
    // The odd one out leaves: the rollout goes on.
    drop(other);
    wait_until("the rollout to go on", Duration::from_secs(10), || async {
        status(&leader).await.is_some_and(|s| weight(&s) == 40.0)
    })
    .await;
}

//! Hooks (SPEC §4) with real child processes and a real HTTP receiver: gates, `run`
//! steps, event hooks, timeouts that kill whole process groups, output capture, metrics,
//! and a `run` hook surviving a `kill -9` of the real binary.
//!
//! Hooks are small `/bin/sh` scripts, inline in the config or
//! `tests/fixtures/hooks/record.sh`, which records every call (environment, payload,
//! working directory) in the config's directory. The controller ticks once a second, so
//! steps hold for 1 s and waits are bounded polls, never long fixed sleeps.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cutover::status::{HookStatus, ServiceStatus};
use serde_json::Value;
use support::*;

/// Records each call in `calls/` of the config directory; see the script's header.
const RECORD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hooks/record.sh"
);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One run of `record.sh`.
#[derive(Debug)]
struct Call {
    env: BTreeMap<String, String>,
    payload: Value,
    cwd: PathBuf,
}

impl Call {
    fn env(&self, name: &str) -> &str {
        self.env
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} is not in the hook's environment: {self:?}"))
    }
}

/// Every completed call of `record.sh` run with `dir` as its working directory.
fn calls(dir: &Path) -> Vec<Call> {
    let Ok(entries) = std::fs::read_dir(dir.join("calls")) else {
        return Vec::new();
    };
    let mut calls = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let json = std::fs::read_to_string(&path).unwrap();
        let payload = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("the hook's stdin is not JSON ({e}): {json:?}"));
        let env = std::fs::read_to_string(path.with_extension("env"))
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cwd = std::fs::read_to_string(path.with_extension("pwd")).unwrap();
        calls.push(Call {
            env,
            payload,
            cwd: PathBuf::from(cwd.trim_end()),
        });
    }
    calls
}

/// The calls of `record.sh` for one event (`CUTOVER_EVENT`).
fn calls_of(dir: &Path, event: &str) -> Vec<Call> {
    calls(dir)
        .into_iter()
        .filter(|c| c.env.get("CUTOVER_EVENT").map(String::as_str) == Some(event))
        .collect()
}

fn service(proxy: &TestProxy) -> ServiceStatus {
    proxy.app.controller.status().services[0].clone()
}

fn hook(proxy: &TestProxy, name: &str) -> HookStatus {
    let service = service(proxy);
    service
        .hooks
        .iter()
        .find(|h| h.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no hook `{name}` in the status: {service:#?}"))
}

/// Polls `condition` for up to `within`; on failure, panics with the service's status.
async fn wait_for(
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

/// GET on the admin API.
async fn admin_get(admin: SocketAddr, path: &str) -> Got {
    send(admin, get("admin", path)).await
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Whether a process is running. A zombie has exited: it only waits to be reaped, and an
/// orphan is reaped by whoever adopted it (in a container, PID 1 may never do it).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (command) S ...": the state follows the command's closing parenthesis.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// A pid a hook wrote to `path`, once the file is complete.
fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// SIGKILLs processes a hook started if they are still there when the test ends, so a
/// failing test leaves nothing behind.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if alive(pid) {
                // SAFETY: kill(2) has no memory effects; the pid is one our hook started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Waits for a hook to write `hook.pid` and `child.pid` in `dir`; both must be running.
async fn hook_and_child_pids(proxy: &TestProxy) -> (i32, i32, KillOnDrop) {
    let dir = proxy.dir.path();
    let mut pids = None;
    let written = eventually(Duration::from_secs(10), || {
        pids = read_pid(&dir.join("hook.pid")).zip(read_pid(&dir.join("child.pid")));
        pids.is_some()
    })
    .await;
    assert!(
        written,
        "the hook did not write its pid files: {:#?}",
        service(proxy)
    );
    let (hook_pid, child_pid) = pids.unwrap();
    let guard = KillOnDrop(vec![hook_pid, child_pid]);
    assert_ne!(hook_pid, child_pid);
    assert!(alive(hook_pid), "the hook {hook_pid} is not running");
    assert!(
        alive(child_pid),
        "the hook's child {child_pid} is not running"
    );
    (hook_pid, child_pid, guard)
}

/// Starts cutover with service `api` (NEW at 0%) and `extra` (rollout, hooks); `RECORD`
/// in `extra` stands for the path of `record.sh`.
async fn proxy_with(old: &Backend, new: &Backend, extra: &str) -> TestProxy {
    let extra = extra.replace("RECORD", RECORD);
    spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", &extra)).await
}

// ---------------------------------------------------------------------------------------
// Gates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_gate_is_polled_until_its_file_appears_and_not_before() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - gate: ready
        - weight: 100%
    hooks:
      ready:
        exec: ["/bin/sh", "-c", 'if test -e open; then r=open; else r=closed; fi; echo "$CUTOVER_EVENT $CUTOVER_STEP $CUTOVER_WEIGHT $r" >> attempts; test $r = open']
        every: 1s
        timeout: 5s
"#,
    )
    .await;
    let dir = proxy.dir.path().to_path_buf();
    let attempts = || {
        std::fs::read_to_string(dir.join("attempts"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    wait_for(
        &proxy,
        "three gate attempts",
        Duration::from_secs(10),
        || attempts().len() >= 3,
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "three attempts within {:?}: the gate is not waiting `every: 1s` between attempts",
        started.elapsed()
    );
    let status = service(&proxy);
    assert_eq!(
        status.state, "waiting",
        "the gate has not passed: {status:#?}"
    );
    assert_eq!(status.step, 1);
    assert_eq!(
        status.weight, 0.0,
        "no traffic moves before the gate passes"
    );
    let gate = hook(&proxy, "ready");
    assert_eq!(gate.last_event.as_deref(), Some("gate"));
    assert_eq!(gate.last_result.as_deref(), Some("failed"), "{gate:#?}");
    assert_eq!(gate.last_detail.as_deref(), Some("exit 1"), "{gate:#?}");
    for _ in 0..20 {
        assert_eq!(send(proxy.addr, get("a", "/")).await.body, "old");
    }
    assert_eq!(new.hits(), 0, "NEW got traffic before the gate passed");

    let before_open = attempts();
    assert!(
        before_open.iter().all(|a| a == "gate 1 0 closed"),
        "every attempt is CUTOVER_EVENT=gate, step 1, weight 0, and found no file: {before_open:?}"
    );
    std::fs::write(dir.join("open"), "").unwrap();
    wait_for(
        &proxy,
        "the rollout to pass the gate",
        Duration::from_secs(10),
        || service(&proxy).state == "promoted",
    )
    .await;
    let after_pass = attempts();
    let (last, earlier) = after_pass.split_last().unwrap();
    assert_eq!(
        last, "gate 1 0 open",
        "the gate passed on an attempt that found the file: {after_pass:?}"
    );
    assert!(
        earlier.iter().all(|a| a == "gate 1 0 closed"),
        "every attempt before it failed: {after_pass:?}"
    );
    assert_eq!(hook(&proxy, "ready").last_result.as_deref(), Some("ok"));
    // Once passed, a gate is not polled any more.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        attempts().len(),
        after_pass.len(),
        "the gate ran after it passed"
    );
}

#[tokio::test]
async fn a_gate_that_never_passes_rolls_back_at_its_deadline_with_on_deadline_rollback() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - gate: never
        - weight: 100%
    hooks:
      never:
        exec: ["/bin/sh", "-c", "echo not yet; exit 1"]
        every: 1s
        deadline: 2s
        on_deadline: rollback
      notify:
        on: [rollback]
        exec: ["RECORD"]
"#,
    )
    .await;
    wait_for(
        &proxy,
        "the gate at step 2",
        Duration::from_secs(10),
        || {
            let s = service(&proxy);
            s.step == 2 && s.state == "waiting"
        },
    )
    .await;
    let at_gate = Instant::now();
    assert_eq!(service(&proxy).weight, 10.0);
    wait_for(&proxy, "the rollback", Duration::from_secs(10), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    assert!(
        at_gate.elapsed() >= Duration::from_millis(1500),
        "rolled back {:?} after reaching a gate with `deadline: 2s`",
        at_gate.elapsed()
    );
    let status = service(&proxy);
    assert_eq!(
        status.rollback_reason.map(|r| r.label()),
        Some("gate"),
        "{status:#?}"
    );
    assert_eq!(status.weight, 0.0);
    let reason = status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("did not pass within 2s"),
        "the reason names the deadline: {reason:?}"
    );
    assert!(
        hook(&proxy, "never").runs >= 2,
        "the gate was retried before its deadline: {:#?}",
        hook(&proxy, "never")
    );
    let dir = proxy.dir.path();
    wait_for(&proxy, "the rollback hook", Duration::from_secs(5), || {
        !calls_of(dir, "rollback").is_empty()
    })
    .await;
    let call = &calls_of(dir, "rollback")[0];
    assert_eq!(call.env("CUTOVER_WEIGHT"), "0");
    assert_eq!(call.payload["weight"], 0.0);
    for _ in 0..20 {
        assert_eq!(send(proxy.addr, get("a", "/")).await.body, "old");
    }
}

// ---------------------------------------------------------------------------------------
// Event hooks: environment, payload, output, metrics
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn event_hooks_get_the_cutover_environment_and_the_json_payload() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    // A relative program path is relative to the config's directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    std::fs::copy(RECORD, dir.path().join("hooks/record.sh")).unwrap();
    let yaml = simple_config(
        &[old.addr],
        &[new.addr],
        "0%",
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      record:
        on: [started]
        exec: ["hooks/record.sh"]
"#,
    );
    let proxy = spawn_proxy_in(dir, &yaml, false).await;
    let dir = proxy.dir.path();
    wait_for(
        &proxy,
        "the `started` hook",
        Duration::from_secs(10),
        || hook(&proxy, "record").runs == 1 && !calls_of(dir, "started").is_empty(),
    )
    .await;
    let calls = calls_of(dir, "started");
    assert_eq!(calls.len(), 1, "`started` fired once: {calls:#?}");
    let call = &calls[0];
    let run_id = service(&proxy)
        .run_id
        .expect("a started rollout has a run id");

    let expected_env = [
        ("CUTOVER_SERVICE", "api"),
        ("CUTOVER_EVENT", "started"),
        ("CUTOVER_STEP", "1"),
        // At `started` nothing has moved yet: the 5% comes with step 1's `step_started`.
        ("CUTOVER_WEIGHT", "0"),
        ("CUTOVER_REASON", "rollout started"),
        ("CUTOVER_RUN_ID", run_id.as_str()),
    ];
    for (name, value) in expected_env {
        assert_eq!(call.env(name), value, "{name}");
    }

    let payload = call
        .payload
        .as_object()
        .expect("the payload is a JSON object");
    let mut keys: Vec<&str> = payload.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "analysis",
            "event",
            "reason",
            "run_id",
            "service",
            "state",
            "step",
            "timestamp",
            "weight"
        ],
        "the payload's fields (SPEC §4)"
    );
    assert_eq!(payload["service"], "api");
    assert_eq!(payload["event"], "started");
    assert_eq!(payload["step"], 1);
    // At `started` nothing has moved yet: the 5% comes with step 1's `step_started`.
    assert_eq!(payload["weight"], 0.0);
    assert_eq!(payload["state"], "progressing");
    assert_eq!(payload["reason"], "rollout started");
    assert_eq!(payload["run_id"], run_id.as_str());
    let timestamp = payload["timestamp"].as_str().expect("a timestamp string");
    let at = humantime::parse_rfc3339(timestamp)
        .unwrap_or_else(|e| panic!("timestamp {timestamp:?} is not RFC 3339: {e}"));
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "timestamp {timestamp} is not now"
    );

    assert_eq!(
        call.cwd.canonicalize().unwrap(),
        dir.canonicalize().unwrap(),
        "hooks run in the config's directory"
    );
    let status = hook(&proxy, "record");
    assert_eq!(status.last_event.as_deref(), Some("started"));
    assert_eq!(status.last_result.as_deref(), Some("ok"), "{status:#?}");
}

#[tokio::test]
async fn step_event_hooks_name_the_step_they_are_about() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - weight: 100%
    hooks:
      record:
        on: [step_started, step_completed, promoted]
        exec: ["RECORD"]
"#,
    )
    .await;
    let dir = proxy.dir.path();
    wait_for(
        &proxy,
        "five event hooks to finish",
        Duration::from_secs(10),
        || calls(dir).len() >= 5 && hook(&proxy, "record").runs >= 5,
    )
    .await;
    assert_eq!(service(&proxy).state, "promoted");
    assert_eq!(
        service(&proxy).step,
        2,
        "status shows a promoted 2-step rollout at step 2"
    );

    let mut seen: Vec<(String, String, String)> = calls(dir)
        .iter()
        .map(|c| {
            (
                c.env("CUTOVER_EVENT").to_string(),
                c.env("CUTOVER_STEP").to_string(),
                c.env("CUTOVER_REASON").to_string(),
            )
        })
        .collect();
    seen.sort();
    let events_and_steps: Vec<(&str, &str)> = seen
        .iter()
        .map(|(event, step, _)| (event.as_str(), step.as_str()))
        .collect();
    assert_eq!(
        events_and_steps,
        [
            ("promoted", "2"),
            ("step_completed", "1"),
            ("step_completed", "2"),
            ("step_started", "1"),
            ("step_started", "2"),
        ],
        "CUTOVER_STEP of each event is the step it is about \
         (events, steps and reasons: {seen:#?})"
    );
    for call in calls_of(dir, "step_started") {
        assert_eq!(
            call.payload["step"].to_string(),
            call.env("CUTOVER_STEP"),
            "payload and environment agree: {call:#?}"
        );
        assert_eq!(
            call.payload["state"], "progressing",
            "a step that starts is progressing: {call:#?}"
        );
    }
    let promoted = &calls_of(dir, "promoted")[0];
    assert_eq!(promoted.payload["weight"], 100.0);
    assert_eq!(promoted.payload["state"], "promoted");
}

#[tokio::test]
async fn hook_output_is_captured_and_shown_in_status() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      noisy:
        on: [started]
        exec: ["/bin/sh", "-c", 'echo "stdout says $CUTOVER_EVENT"; echo "stderr says hello" >&2; exit 3']
"#,
    )
    .await;
    wait_for(
        &proxy,
        "the hook to finish",
        Duration::from_secs(10),
        || hook(&proxy, "noisy").runs == 1,
    )
    .await;
    let got = admin_get(proxy.app.admin_addr, "/status").await;
    assert_eq!(got.status, 200, "{}", got.body);
    let status: Value = serde_json::from_str(&got.body).unwrap();
    let hooks = status["services"][0]["hooks"]
        .as_array()
        .expect("a hooks array");
    let noisy = hooks
        .iter()
        .find(|h| h["name"] == "noisy")
        .unwrap_or_else(|| panic!("no `noisy` hook in /status: {status:#}"));
    assert_eq!(noisy["runs"], 1, "{noisy:#}");
    assert_eq!(noisy["running"], false, "{noisy:#}");
    assert_eq!(noisy["last_event"], "started", "{noisy:#}");
    assert_eq!(noisy["last_result"], "failed", "{noisy:#}");
    assert_eq!(noisy["last_detail"], "exit 3", "{noisy:#}");
    assert_eq!(noisy["stdout_tail"], "stdout says started\n", "{noisy:#}");
    assert_eq!(noisy["stderr_tail"], "stderr says hello\n", "{noisy:#}");
    assert!(noisy["last_duration_ms"].is_u64(), "{noisy:#}");
    assert!(noisy["last_at"].is_string(), "{noisy:#}");
    // A failing event hook does not change the rollout.
    assert_eq!(status["services"][0]["state"], "progressing");
}

#[tokio::test]
async fn a_chatty_hook_is_not_blocked_by_its_pipes_and_status_keeps_the_tail() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    // ~200 KB on each stream: more than a pipe holds, and more than the 64 KiB kept.
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      chatty:
        on: [started]
        timeout: 20s
        exec: ["/bin/sh", "-c", 'i=0; while [ $i -lt 3000 ]; do echo "line $i: a chatty hook writes a lot of output"; echo "error $i: and a lot on stderr as well, too" >&2; i=$((i+1)); done; echo the-end; echo stderr-end >&2']
"#,
    )
    .await;
    wait_for(
        &proxy,
        "the chatty hook to finish",
        Duration::from_secs(15),
        || hook(&proxy, "chatty").runs == 1,
    )
    .await;
    let chatty = hook(&proxy, "chatty");
    assert_eq!(
        chatty.last_result.as_deref(),
        Some("ok"),
        "{:?}",
        chatty.last_detail
    );
    assert!(
        chatty
            .stdout_tail
            .ends_with("line 2999: a chatty hook writes a lot of output\nthe-end\n"),
        "stdout's tail is the end of the output: {:?}",
        Tail(&chatty.stdout_tail)
    );
    assert!(
        chatty
            .stderr_tail
            .ends_with("error 2999: and a lot on stderr as well, too\nstderr-end\n"),
        "stderr's tail is the end of the output: {:?}",
        Tail(&chatty.stderr_tail)
    );
    for tail in [&chatty.stdout_tail, &chatty.stderr_tail] {
        assert!(tail.len() <= 64 * 1024, "a tail of {} bytes", tail.len());
        assert!(
            !tail.contains("line 0:") && !tail.contains("error 0:"),
            "only the tail is kept"
        );
    }
}

/// Shows the end of a long string in an assertion message.
struct Tail<'a>(&'a str);

impl std::fmt::Debug for Tail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = self.0.len().saturating_sub(200);
        let start = (start..=self.0.len())
            .find(|&i| self.0.is_char_boundary(i))
            .unwrap();
        write!(f, "…{:?} ({} bytes)", &self.0[start..], self.0.len())
    }
}

#[tokio::test]
async fn hook_runs_are_counted_in_metrics_by_result() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      good:
        on: [started, step_started]
        exec: ["/bin/sh", "-c", "exit 0"]
      bad:
        on: [started]
        exec: ["/bin/sh", "-c", "exit 1"]
"#,
    )
    .await;
    wait_for(&proxy, "three hook runs", Duration::from_secs(10), || {
        hook(&proxy, "good").runs == 2 && hook(&proxy, "bad").runs == 1
    })
    .await;
    let got = admin_get(proxy.app.admin_addr, "/metrics").await;
    assert_eq!(got.status, 200);
    let metrics = got.body;
    let series = [
        (
            "cutover_hook_runs_total{service=\"api\",hook=\"good\",result=\"ok\"}",
            2.0,
        ),
        (
            "cutover_hook_runs_total{service=\"api\",hook=\"bad\",result=\"failed\"}",
            1.0,
        ),
        (
            "cutover_hook_duration_seconds_count{service=\"api\",hook=\"good\"}",
            2.0,
        ),
        (
            "cutover_hook_duration_seconds_count{service=\"api\",hook=\"bad\"}",
            1.0,
        ),
    ];
    for (name, value) in series {
        assert_eq!(
            sample(&metrics, name),
            Some(value),
            "{name} in:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("hook"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "cutover_hook_runs_total{service=\"api\",hook=\"good\",result=\"failed\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
}

// ---------------------------------------------------------------------------------------
// Timeouts: the whole process group goes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hook_that_times_out_is_killed_with_the_child_it_forked() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      forks:
        on: [started]
        timeout: 3s
        exec: ["/bin/sh", "-c", "sleep 30 & echo $! > child.pid.tmp; mv child.pid.tmp child.pid; echo $$ > hook.pid.tmp; mv hook.pid.tmp hook.pid; wait"]
"#,
    )
    .await;
    let (hook_pid, child_pid, _guard) = hook_and_child_pids(&proxy).await;
    // The hook started after `started` and before its pid files appeared (now).
    let seen = Instant::now();
    tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
    assert!(
        alive(hook_pid) && alive(child_pid),
        "the hook ({hook_pid}) and its child ({child_pid}) run until the 3 s timeout"
    );
    // SIGTERM at 3 s ends both at once: a plain `sleep` does not survive it. SIGKILL would
    // only come 5 s later, at 8 s.
    let gone = eventually(
        (seen + Duration::from_millis(4500)).saturating_duration_since(Instant::now()),
        || !alive(hook_pid) && !alive(child_pid),
    )
    .await;
    assert!(
        gone,
        "{:?} after the hook started: hook {hook_pid} alive: {}, child {child_pid} alive: {} \
         (an orphan of a hook that timed out)",
        seen.elapsed(),
        alive(hook_pid),
        alive(child_pid)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "killed {:?} after the proxy started, before the 3 s timeout",
        started.elapsed()
    );
    wait_for(
        &proxy,
        "the timeout to be reported",
        Duration::from_secs(5),
        || hook(&proxy, "forks").runs == 1,
    )
    .await;
    let status = hook(&proxy, "forks");
    assert_eq!(
        status.last_result.as_deref(),
        Some("timeout"),
        "{status:#?}"
    );
    let detail = status.last_detail.unwrap_or_default();
    assert!(detail.contains("timed out after 3s"), "{detail:?}");
    let metrics = proxy.app.metrics.encode();
    assert_eq!(
        sample(
            &metrics,
            "cutover_hook_runs_total{service=\"api\",hook=\"forks\",result=\"timeout\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // An event hook timing out does not change the rollout.
    assert_eq!(service(&proxy).state, "progressing");
}

#[tokio::test]
async fn a_hook_group_that_ignores_sigterm_is_killed_5s_later() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    // Both the script and its child note SIGTERM and carry on.
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      stubborn:
        on: [started]
        timeout: 1s
        exec: ["/bin/sh", "-c", "trap 'echo hook >> got-term' TERM; (trap 'echo child >> got-term' TERM; while :; do sleep 1; done) & echo $! > child.pid.tmp; mv child.pid.tmp child.pid; echo $$ > hook.pid.tmp; mv hook.pid.tmp hook.pid; while :; do sleep 1; done"]
"#,
    )
    .await;
    let (hook_pid, child_pid, _guard) = hook_and_child_pids(&proxy).await;
    let dir = proxy.dir.path().to_path_buf();
    let got_term = || std::fs::read_to_string(dir.join("got-term")).unwrap_or_default();
    wait_for(
        &proxy,
        "SIGTERM to reach the hook and its child",
        Duration::from_secs(5),
        || got_term().contains("hook") && got_term().contains("child"),
    )
    .await;
    assert!(
        alive(hook_pid) && alive(child_pid),
        "the group ignored SIGTERM and is still there during the grace period"
    );
    let gone = eventually(Duration::from_secs(10), || {
        !alive(hook_pid) && !alive(child_pid)
    })
    .await;
    assert!(
        gone,
        "SIGKILL did not come: hook {hook_pid} alive: {}, child {child_pid} alive: {}",
        alive(hook_pid),
        alive(child_pid)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(5900),
        "killed {:?} after the proxy started, with `timeout: 1s`: the 5 s grace after \
         SIGTERM was not given",
        started.elapsed()
    );
    wait_for(
        &proxy,
        "the timeout to be reported",
        Duration::from_secs(5),
        || hook(&proxy, "stubborn").runs == 1,
    )
    .await;
    assert_eq!(
        hook(&proxy, "stubborn").last_result.as_deref(),
        Some("timeout")
    );
}

// ---------------------------------------------------------------------------------------
// Run steps
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_run_step_rolls_back_and_the_rollback_hook_sees_weight_0() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 50%
          hold: 1s
        - run: migrate
        - weight: 100%
    hooks:
      migrate:
        exec: ["/bin/sh", "-c", "echo migration failed >&2; exit 1"]
      notify:
        on: [rollback]
        exec: ["RECORD"]
"#,
    )
    .await;
    let mut client = Client::connect(proxy.addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while service(&proxy).state != "rolled_back" {
        assert!(
            Instant::now() < deadline,
            "no rollback: {:#?}",
            service(&proxy)
        );
        for _ in 0..10 {
            client.send(get("a", "/")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_hits = new.hits();
    assert!(new_hits > 0, "NEW got traffic at 50% before the run step");

    let status = service(&proxy);
    assert_eq!(status.weight, 0.0);
    assert_eq!(
        status.rollback_reason.map(|r| r.label()),
        Some("hook"),
        "{status:#?}"
    );
    let migrate = hook(&proxy, "migrate");
    assert_eq!(migrate.last_event.as_deref(), Some("run"));
    assert_eq!(migrate.last_result.as_deref(), Some("failed"));
    assert_eq!(migrate.last_detail.as_deref(), Some("exit 1"));
    assert_eq!(migrate.stderr_tail, "migration failed\n");

    let dir = proxy.dir.path();
    wait_for(&proxy, "the rollback hook", Duration::from_secs(5), || {
        !calls_of(dir, "rollback").is_empty()
    })
    .await;
    let calls = calls_of(dir, "rollback");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.env("CUTOVER_WEIGHT"), "0", "{call:#?}");
    assert_eq!(call.payload["weight"], 0.0, "{call:#?}");
    assert_eq!(call.payload["state"], "rolled_back", "{call:#?}");
    assert_eq!(call.env("CUTOVER_STEP"), "2", "the run step");
    let reason = call.env("CUTOVER_REASON");
    assert!(
        reason.contains("rolled back from 50%") && reason.contains("migrate"),
        "the reason says what failed: {reason:?}"
    );
    assert_eq!(call.payload["reason"], reason);

    for _ in 0..50 {
        assert_eq!(client.send(get("a", "/")).await.unwrap().body, "old");
    }
    assert_eq!(new.hits(), new_hits, "NEW got traffic after the rollback");
    let state = std::fs::read_to_string(dir.join("state/api.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["phase"], "rolled_back");
    assert_eq!(state["weight"], 0.0);
}

#[tokio::test]
async fn a_hook_program_that_does_not_exist_fails_its_run_step_cleanly() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - run: missing
        - weight: 100%
    hooks:
      missing:
        exec: ["cutover-test-no-such-program", "--flag"]
        retries: 1
"#,
    )
    .await;
    wait_for(&proxy, "the rollback", Duration::from_secs(10), || {
        service(&proxy).state == "rolled_back"
    })
    .await;
    let status = service(&proxy);
    assert_eq!(status.rollback_reason.map(|r| r.label()), Some("hook"));
    let reason = status.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("2 attempt(s)") && reason.contains("cannot start"),
        "one attempt and one retry, both failing to start: {reason:?}"
    );
    let missing = hook(&proxy, "missing");
    assert_eq!(missing.runs, 2, "{missing:#?}");
    assert!(!missing.running);
    assert_eq!(missing.last_result.as_deref(), Some("failed"));
    let detail = missing.last_detail.unwrap_or_default();
    assert!(
        detail.contains("cannot start") && detail.contains("cutover-test-no-such-program"),
        "{detail:?}"
    );
    assert_eq!(
        sample(
            &proxy.app.metrics.encode(),
            "cutover_hook_runs_total{service=\"api\",hook=\"missing\",result=\"failed\"}"
        ),
        Some(2.0)
    );
    // The proxy carries on.
    let got = send(proxy.addr, get("a", "/")).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "old"));
}

// ---------------------------------------------------------------------------------------
// HTTP hooks
// ---------------------------------------------------------------------------------------

fn http_hook_config(receiver: SocketAddr) -> String {
    format!(
        r#"    rollout:
      steps:
        - weight: 5%
          hold: 1h
    hooks:
      announce:
        on: [started]
        timeout: 5s
        http:
          url: "http://{receiver}/hooks/cutover?team=payments"
          headers:
            X-Team: payments
            Authorization: "Bearer s3cret"
"#
    )
}

#[tokio::test]
async fn an_http_hook_posts_the_json_payload_with_its_headers() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let receiver = spawn_backend("receiver").await;
    let proxy = proxy_with(&old, &new, &http_hook_config(receiver.addr)).await;
    wait_for(&proxy, "the http hook", Duration::from_secs(10), || {
        hook(&proxy, "announce").runs == 1
    })
    .await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "one POST: {seen:#?}");
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hooks/cutover?team=payments");
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", request.headers))
            .to_string()
    };
    assert_eq!(header("x-team"), "payments");
    assert_eq!(header("authorization"), "Bearer s3cret");
    assert!(header("content-type").starts_with("application/json"));
    assert_eq!(header("host"), receiver.addr.to_string());
    let payload: Value = serde_json::from_slice(&request.body)
        .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:?}", request.body));
    assert_eq!(payload["service"], "api");
    assert_eq!(payload["event"], "started");
    assert_eq!(payload["step"], 1);
    // At `started` nothing has moved yet: the 5% comes with step 1's `step_started`.
    assert_eq!(payload["weight"], 0.0);
    assert_eq!(payload["state"], "progressing");
    assert_eq!(
        payload["run_id"].as_str(),
        service(&proxy).run_id.as_deref(),
        "{payload:#}"
    );
    let announce = hook(&proxy, "announce");
    assert_eq!(announce.last_result.as_deref(), Some("ok"));
    assert_eq!(announce.last_detail.as_deref(), Some("HTTP 200"));
}

#[tokio::test]
async fn an_http_hook_answered_with_503_fails_without_changing_the_rollout() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let receiver = spawn_backend("receiver").await;
    receiver.set_status(503);
    let proxy = proxy_with(&old, &new, &http_hook_config(receiver.addr)).await;
    wait_for(&proxy, "the http hook", Duration::from_secs(10), || {
        hook(&proxy, "announce").runs == 1
    })
    .await;
    let announce = hook(&proxy, "announce");
    assert_eq!(announce.last_result.as_deref(), Some("failed"));
    assert_eq!(announce.last_detail.as_deref(), Some("HTTP 503"));
    assert_eq!(receiver.seen().len(), 1);
    let status = service(&proxy);
    assert_eq!((status.state.as_str(), status.weight), ("progressing", 5.0));
}

#[tokio::test]
async fn an_http_hook_that_does_not_answer_in_time_times_out() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let receiver = spawn_backend("receiver").await;
    receiver.set_delay(Duration::from_secs(10));
    let config = http_hook_config(receiver.addr).replace("timeout: 5s", "timeout: 1s");
    let proxy = proxy_with(&old, &new, &config).await;
    wait_for(
        &proxy,
        "the http hook to time out",
        Duration::from_secs(6),
        || hook(&proxy, "announce").runs == 1,
    )
    .await;
    let announce = hook(&proxy, "announce");
    assert_eq!(
        announce.last_result.as_deref(),
        Some("timeout"),
        "{announce:#?}"
    );
    assert_eq!(
        announce.last_detail.as_deref(),
        Some("no answer within 1s"),
        "{announce:#?}"
    );
    assert!(
        announce.last_duration_ms.unwrap_or_default() < 3000,
        "{announce:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Hooks never block
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_event_hook_delays_neither_requests_nor_the_next_step() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let started = Instant::now();
    let proxy = proxy_with(
        &old,
        &new,
        r#"    rollout:
      steps:
        - weight: 10%
          hold: 1s
        - weight: 100%
    hooks:
      slow:
        on: [started]
        timeout: 30s
        exec: ["/bin/sh", "-c", "sleep 5; touch slow-done"]
"#,
    )
    .await;
    let done = proxy.dir.path().join("slow-done");
    wait_for(
        &proxy,
        "the slow hook to start",
        Duration::from_secs(5),
        || hook(&proxy, "slow").running,
    )
    .await;

    // Requests through the proxy while the hook runs, until the rollout is promoted.
    let mut client = Client::connect(proxy.addr).await;
    let mut latencies = Vec::new();
    while service(&proxy).state != "promoted" {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "not promoted {:?} after the start with a 1 s hold: the slow hook holds the \
             rollout up: {:#?}",
            started.elapsed(),
            service(&proxy)
        );
        let sent = Instant::now();
        let got = client.send(get("a", "/")).await.unwrap();
        latencies.push(sent.elapsed());
        assert_eq!(got.status, 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let promoted_at = started.elapsed();
    assert!(
        hook(&proxy, "slow").running && !done.exists(),
        "the rollout was promoted at {promoted_at:?}, while the 5 s hook was still running"
    );
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        latencies.len() >= 20,
        "{} requests while the hook ran",
        latencies.len()
    );
    assert!(
        slowest < Duration::from_millis(500),
        "the slowest of {} requests took {slowest:?} while a hook was running",
        latencies.len()
    );
    // And the hook really ran its 5 s.
    wait_for(
        &proxy,
        "the slow hook to finish",
        Duration::from_secs(8),
        || hook(&proxy, "slow").runs == 1,
    )
    .await;
    let slow = hook(&proxy, "slow");
    assert_eq!(slow.last_result.as_deref(), Some("ok"), "{slow:#?}");
    assert!(
        slow.last_duration_ms.unwrap_or_default() >= 5000,
        "{slow:#?}"
    );
    assert!(done.exists());
}

// ---------------------------------------------------------------------------------------
// Restarts: the real binary, killed with SIGKILL
// ---------------------------------------------------------------------------------------

/// A config for the restart tests: a `run: migrate` step with `exec`, then 10% for 1 h.
fn restart_config(admin: SocketAddr, old: SocketAddr, new: SocketAddr, exec: &str) -> String {
    format!(
        r#"listeners:
  - addr: "127.0.0.1:{listen}"
admin:
  addr: "{admin}"
state_dir: state
services:
  - name: api
    old: {{ backends: [{{ addr: "{old}" }}] }}
    new: {{ backends: [{{ addr: "{new}" }}] }}
    rollout:
      steps:
        - run: migrate
        - weight: 10%
          hold: 1h
    hooks:
      migrate:
        exec: {exec}
"#,
        listen = free_port(),
    )
}

/// The real binary running `dir/cutover.yaml`, SIGKILLed when dropped.
struct Running(Cutover);

impl Running {
    async fn start(dir: &Path, admin: SocketAddr) -> Running {
        Running(Cutover::start(&dir.join("cutover.yaml"), admin).await)
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// The service's part of `/status`.
    async fn status(&self) -> Value {
        self.0.status().await["services"][0].clone()
    }

    /// Polls `/status` until `condition` holds for the service.
    async fn wait_for(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status().await;
            if condition(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; status: {status:#}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_succeeded_run_hook_is_not_run_again_after_kill_9_and_restart() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = restart_config(admin, old.addr, new.addr, &format!("[\"{RECORD}\"]"));
    std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();

    let running = Running::start(dir.path(), admin).await;
    let before = running
        .wait_for("the run step to complete", |s| {
            s["step"] == 2 && s["weight"] == 10.0
        })
        .await;
    let runs = calls_of(dir.path(), "run");
    assert_eq!(runs.len(), 1, "the run hook ran once: {runs:#?}");
    assert_eq!(runs[0].env("CUTOVER_STEP"), "1");
    assert_eq!(before["hooks"][0]["last_result"], "ok", "{before:#}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/api.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 1, "the state file is at step 2: {state:#}");
    drop(running); // SIGKILL: no chance to clean up.

    let running = Running::start(dir.path(), admin).await;
    let after = running
        .wait_for("the restored rollout", |s| s["state"] == "progressing")
        .await;
    assert_eq!(after["step"], 2, "{after:#}");
    assert_eq!(after["weight"], 10.0, "{after:#}");
    assert_eq!(after["run_id"], before["run_id"], "the same run continues");
    // A hook run again would start as soon as the controller resumes; give it two ticks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = calls_of(dir.path(), "run");
    assert_eq!(
        runs.len(),
        1,
        "the run hook that had succeeded ran again after the restart: {runs:#?}\nlog:\n{}",
        running.log()
    );
    let after = running.status().await;
    assert_eq!(after["hooks"][0]["name"], "migrate");
    assert_eq!(after["hooks"][0]["runs"], 0, "{after:#}");
    assert_eq!(after["step"], 2, "{after:#}");
    assert_eq!(after["weight"], 10.0, "{after:#}");
}

/// POST on the admin API, without a body.
async fn admin_post(admin: SocketAddr, path: &str) -> Got {
    let request = http::Request::post(path)
        .header("host", "admin")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    send(admin, request).await
}

#[tokio::test]
async fn a_run_hook_that_succeeded_while_paused_is_not_run_again_after_kill_9() {
    // The rollout is paused while the hook runs, so it stays at the `run` step after the
    // hook succeeded: only the persisted outcome tells the restarted process not to run it
    // again when the rollout resumes.
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = restart_config(
        admin,
        old.addr,
        new.addr,
        r#"["/bin/sh", "-c", 'echo "$CUTOVER_RUN_ID" >> runs; sleep 2']"#,
    );
    std::fs::write(dir.path().join("cutover.yaml"), yaml).unwrap();
    let runs = || {
        std::fs::read_to_string(dir.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    let running = Running::start(dir.path(), admin).await;
    running
        .wait_for("the run hook to start", |s| {
            s["hooks"][0]["running"] == true
        })
        .await;
    let paused = admin_post(admin, "/services/api/pause").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let before = running
        .wait_for("the run hook to succeed", |s| s["hooks"][0]["runs"] == 1)
        .await;
    assert_eq!(before["hooks"][0]["last_result"], "ok", "{before:#}");
    assert_eq!(before["state"], "paused", "{before:#}");
    assert_eq!(before["step"], 1, "still at the run step: {before:#}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/api.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["hooks"]["0:migrate"]["ok"], true,
        "the outcome is persisted: {state:#}"
    );
    assert_eq!(runs(), 1);
    drop(running); // SIGKILL

    let running = Running::start(dir.path(), admin).await;
    let restored = running
        .wait_for("the restored rollout", |s| s["state"] == "paused")
        .await;
    assert_eq!(restored["step"], 1, "{restored:#}");
    assert_eq!(restored["run_id"], before["run_id"]);
    let resumed = admin_post(admin, "/services/api/resume").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let after = running
        .wait_for("the step after the run step", |s| s["step"] == 2)
        .await;
    assert_eq!(after["weight"], 10.0, "{after:#}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        runs(),
        1,
        "the run hook that had succeeded ran again after the restart\nlog:\n{}",
        running.log()
    );
    assert_eq!(running.status().await["hooks"][0]["runs"], 0);
}

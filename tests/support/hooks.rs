//! Hook programs as tests see them: the calls `tests/fixtures/hooks/record.sh` records,
//! the processes a hook starts (and their cleanup), and a proxy whose config uses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::backend::Backend;
use super::eventually;
use super::proxy::{service, simple_config, spawn_proxy, TestProxy};

/// Records each call in `calls/` of the config directory; see the script's header.
pub const RECORD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hooks/record.sh"
);

/// One run of `record.sh`.
#[derive(Debug)]
pub struct Call {
    pub env: BTreeMap<String, String>,
    pub payload: Value,
    pub cwd: PathBuf,
}

impl Call {
    pub fn env(&self, name: &str) -> &str {
        self.env
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} is not in the hook's environment: {self:?}"))
    }
}

/// Every completed call of `record.sh` run with `dir` as its working directory.
pub fn calls(dir: &Path) -> Vec<Call> {
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
pub fn calls_of(dir: &Path, event: &str) -> Vec<Call> {
    calls(dir)
        .into_iter()
        .filter(|c| c.env.get("CUTOVER_EVENT").map(String::as_str) == Some(event))
        .collect()
}

/// Whether a process is running. A zombie has exited: it only waits to be reaped, and an
/// orphan is reaped by whoever adopted it (in a container, PID 1 may never do it).
pub fn alive(pid: i32) -> bool {
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
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// SIGKILLs processes a hook started if they are still there when the test ends, so a
/// failing test leaves nothing behind.
pub struct KillOnDrop(pub Vec<i32>);

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
pub async fn hook_and_child_pids(proxy: &TestProxy) -> (i32, i32, KillOnDrop) {
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
pub async fn proxy_with(old: &Backend, new: &Backend, extra: &str) -> TestProxy {
    let extra = extra.replace("RECORD", RECORD);
    spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", &extra)).await
}

/// Shows the end of a long string in an assertion message.
pub struct Tail<'a>(pub &'a str);

impl std::fmt::Debug for Tail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = self.0.len().saturating_sub(200);
        let start = (start..=self.0.len())
            .find(|&i| self.0.is_char_boundary(i))
            .unwrap();
        write!(f, "…{:?} ({} bytes)", &self.0[start..], self.0.len())
    }
}

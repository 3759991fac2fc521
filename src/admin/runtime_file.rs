//! Where a running `cutover run` serves its admin API, written next to its config file as
//! `.<config file name>.admin`.
//!
//! Client commands read the admin address from the config, which is exactly what fails
//! when an operator needs them most: right after a bad edit. The running process records
//! the address it actually bound (and the token file it reads) so that the CLI can still
//! reach it, and say so, instead of guessing a default that might be another instance.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the running process records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuntimeInfo {
    pub(crate) pid: u32,
    /// The address the admin API is bound to (never port 0).
    pub(crate) admin: SocketAddr,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) config: PathBuf,
    pub(crate) started_at: String,
}

/// `.<name>.admin` in the config file's directory.
pub(crate) fn path_for(config: &Path) -> PathBuf {
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cutover".to_string());
    config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(format!(".{name}.admin"))
}

/// Writes the file atomically (temp file, rename): a reader never sees half of it.
pub(crate) fn write(config: &Path, info: &RuntimeInfo) -> std::io::Result<PathBuf> {
    let path = path_for(config);
    let tmp = path.with_extension("admin.tmp");
    let json = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes the file if it is still ours (another process may have started since).
pub(crate) fn remove(config: &Path, pid: u32) {
    let path = path_for(config);
    if read(&path).is_some_and(|info| info.pid == pid) {
        let _ = std::fs::remove_file(path);
    }
}

fn read(path: &Path) -> Option<RuntimeInfo> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The record of a process that is still alive, for this config file.
pub(crate) fn live(config: &Path) -> Option<(PathBuf, RuntimeInfo)> {
    let path = path_for(config);
    let info = read(&path)?;
    alive(info.pid).then_some((path, info))
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32) -> RuntimeInfo {
        RuntimeInfo {
            pid,
            admin: "127.0.0.1:9999".parse().unwrap(),
            token_file: Some(PathBuf::from("/etc/cutover/admin.token")),
            config: PathBuf::from("/etc/cutover/cutover.yaml"),
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn written_by_a_live_process_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cutover.yaml");
        let written = write(&config, &info(std::process::id())).unwrap();
        assert_eq!(written, dir.path().join(".cutover.yaml.admin"));
        let (path, found) = live(&config).unwrap();
        assert_eq!(path, written);
        assert_eq!(found, info(std::process::id()));
    }

    #[test]
    fn a_dead_process_is_ignored_and_remove_keeps_another_processes_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cutover.yaml");
        // A child that has exited and been reaped: its pid is not alive.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        write(&config, &info(dead)).unwrap();
        assert!(live(&config).is_none());
        remove(&config, dead + 1);
        assert!(path_for(&config).exists());
        remove(&config, dead);
        assert!(!path_for(&config).exists());
    }
}

//! Restarts and upgrades that refuse nothing: the state lock and the takeover.
//!
//! `cutover run` holds an exclusive `flock` on `state_dir/cutover.lock` (holding its pid)
//! for as long as its controller may write state, so two processes never write one state
//! directory. A second `cutover run` on the same `state_dir` stops with an error, unless
//! started with `CUTOVER_TAKEOVER=1`: then it
//! 1. binds every listener and the admin address itself (all are `SO_REUSEPORT`), so the
//!    kernel queues new connections in its backlog from that moment;
//! 2. sends SIGTERM to the holder, which stops accepting, finishes in-flight requests,
//!    stops its controller (its last state write) and only then releases the lock;
//! 3. takes the lock, reads the state the old process left and starts serving from its
//!    backlog. No connection is refused; the ones that arrive during the old process's
//!    drain wait for it. See `docs/restarts.md`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable that asks `cutover run` to take over from a running process.
pub(crate) const TAKEOVER_VAR: &str = "CUTOVER_TAKEOVER";

/// The exclusive right to write a state directory; released when dropped (or when the
/// process dies: the kernel drops `flock`s with their file).
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("cannot lock the state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state directory {} is in use by another cutover (pid {pid}); stop it first, or \
         start this one with {TAKEOVER_VAR}=1 to take over without refusing a request",
        dir.display()
    )]
    Held { dir: PathBuf, pid: i32 },
    #[error(
        "pid {pid} did not release the state directory {} within {waited:?}; not starting",
        dir.display()
    )]
    Timeout {
        dir: PathBuf,
        pid: i32,
        waited: Duration,
    },
}

impl StateLock {
    /// Takes the lock now, or says who holds it.
    pub(crate) fn try_acquire(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join("cutover.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().unwrap_or(0),
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }

    /// Waits up to `within` for the holder `pid` to release the lock.
    pub(crate) fn wait(dir: &Path, pid: i32, within: Duration) -> Result<StateLock, LockError> {
        let started = Instant::now();
        loop {
            match StateLock::try_acquire(dir) {
                Err(LockError::Held { .. }) if started.elapsed() < within => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(LockError::Held { .. }) => {
                    return Err(LockError::Timeout {
                        dir: dir.to_path_buf(),
                        pid,
                        waited: within,
                    })
                }
                other => return other,
            }
        }
    }
}

/// Makes the kernel hand every new connection on `socket`'s port to `socket`, the newest
/// of its `SO_REUSEPORT` group (the running process's socket is index 0, this one 1), so
/// the old process's accept queue stays empty and closing it drops nothing. A classic BPF
/// program that returns the index; when the index is out of range (the old socket has
/// closed) the kernel falls back to its hash, so the program is harmless afterwards.
pub(crate) fn steer_new_connections_here(socket: &std::net::TcpListener) -> std::io::Result<()> {
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let mut program = [libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: 1,
    }];
    let filter = libc::sock_fprog {
        len: 1,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: setsockopt(2) reads `filter` (and the one instruction it points to, alive
    // for the call) and copies them into the kernel.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(filter).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Asks `pid` to stop (SIGTERM): what an operator's `kill` would do.
pub(crate) fn terminate(pid: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::other("the lock file names no process"));
    }
    // SAFETY: kill(2) has no memory effects on this process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let lock = StateLock::try_acquire(&state).unwrap();
        match StateLock::try_acquire(&state) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id() as i32),
            other => panic!("a second holder: {other:?}"),
        }
        assert!(matches!(
            StateLock::wait(&state, 1, Duration::from_millis(30)),
            Err(LockError::Timeout { .. })
        ));
        drop(lock);
        StateLock::wait(&state, 1, Duration::from_secs(1)).unwrap();
    }
}

//! Where rollout state is kept: the `StateStore` seam, and today's store, the state files
//! (`state_dir/<service>.json`, one file per service). Fleet mode adds a store on etcd,
//! whose `save` fails on a lost compare-and-swap; the controller treats any failed save
//! the same way: the transition did not happen.
//!
//! A transition is written before it takes effect outside (SPEC §3): temp file in the same
//! directory, fsync, rename over the old file, fsync the directory. A crash at any point
//! leaves either the old state or the new one, never half of either.
//!
//! A file that cannot be read or parsed is an error naming the file. It is never replaced
//! by a fresh state: resetting a rollout to step 0 (or to 100%) because a file got
//! corrupted is exactly the surprise an operator cannot afford mid-migration.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::controller::status::FleetStatus;
use super::controller::{ControlError, Controlled, Op};
use super::machine::RolloutState;
use crate::config::Config;

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read rollout state {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("rollout state {path} is corrupt ({detail}); fix or remove it deliberately, cutover will not guess")]
    Corrupt { path: PathBuf, detail: String },
    #[error("rollout state {path} was written by a newer cutover (format {found}, this one reads {FORMAT_VERSION})")]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("cannot write rollout state {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The file's layout: the state plus what identifies it.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    service: String,
    updated_at: String,
    #[serde(flatten)]
    state: RolloutState,
}

/// A fleet's answer to a forwarded operator command.
pub(crate) type Forwarded =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Controlled, ControlError>> + Send>>;

/// Where the controller keeps each service's rollout state.
///
/// In fleet mode the store is also where the controller learns its role: only the leader
/// decides; the others adopt what it commits (`committed`) and forward operator commands
/// (`forward`). The defaults are those of a single process.
pub(crate) trait StateStore: Send {
    /// The saved state of `service`, or `None` if it never had one.
    fn load(&self, service: &str) -> Result<Option<RolloutState>, StateError>;
    /// Writes `state` durably; an error means it was not written.
    fn save(&self, service: &str, state: &RolloutState) -> Result<(), StateError>;
    /// Where `service`'s state lives, for logs.
    fn location(&self, service: &str) -> String;
    /// The store to use once `config` is the running config (its `state_dir` may differ).
    fn reconfigured(&self, config: &Config) -> Box<dyn StateStore>;

    /// Whether this process may change rollouts (fleet: only the leader may).
    fn leads(&self) -> bool {
        true
    }
    /// Why the leader must not advance now (fleet: an instance runs another config, or
    /// some instance's numbers are missing).
    fn blocked(&self) -> Option<String> {
        None
    }
    /// The states the leader committed, for a process that does not lead to adopt.
    fn committed(&self) -> Vec<(String, RolloutState)> {
        Vec::new()
    }
    /// Bumped when `leads`, `committed` or the members may have changed.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Sends an operator command to the process that decides, when that is not this one.
    fn forward(&self, _service: &str, _op: &Op) -> Option<Forwarded> {
        None
    }
    /// The `fleet` block of `/status`.
    fn fleet_status(&self) -> Option<FleetStatus> {
        None
    }
    /// Fleet: keeps a follower's copy of the state it adopted, what it starts from when
    /// etcd is unreachable at its next start.
    fn remember(&self, _service: &str, _state: &RolloutState) {}
    /// Fleet: cut off from the others (etcd); this process decides nothing but may trip.
    fn isolated(&self) -> bool {
        false
    }
    /// Fleet: this process tripped `service` to weight 0 on its own in run `run` (`None`:
    /// the trip is resolved); published in its member record.
    fn set_local_trip(&self, _service: &str, _run: Option<&str>) {}
    /// Fleet: the run in which this process holds `service` at weight 0 by its own trip.
    fn local_trip(&self, _service: &str) -> Option<String> {
        None
    }
    /// Fleet, leader: every trip a live member reports.
    fn reported_trips(&self) -> Vec<ReportedTrip> {
        Vec::new()
    }
}

/// A trip a fleet member made on its own while cut off from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReportedTrip {
    pub instance: String,
    pub service: String,
    /// The run it was made in; `None` from a member of a version that did not say.
    pub run: Option<String>,
}

/// A state as the file (and fleet mode's etcd key) holds it.
pub(crate) fn encode(service: &str, state: &RolloutState) -> Result<Vec<u8>, serde_json::Error> {
    let file = StateFile {
        format: FORMAT_VERSION,
        service: service.to_string(),
        updated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        state: state.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The state in `bytes`, read from `path` (a file, or an etcd key for messages).
pub(crate) fn decode(service: &str, bytes: &[u8], path: &Path) -> Result<RolloutState, StateError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| StateError::Corrupt {
            path: path.to_path_buf(),
            detail: err.to_string(),
        })?;
    let found = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0) as u32;
    if found > FORMAT_VERSION {
        return Err(StateError::NewerFormat {
            path: path.to_path_buf(),
            found,
        });
    }
    let file: StateFile = serde_json::from_value(value).map_err(|err| StateError::Corrupt {
        path: path.to_path_buf(),
        detail: err.to_string(),
    })?;
    if file.service != service {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("it belongs to service `{}`", file.service),
        });
    }
    Ok(file.state)
}

/// Reads and writes the state files of one state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateFiles {
    dir: PathBuf,
}

impl StateStore for StateFiles {
    fn load(&self, service: &str) -> Result<Option<RolloutState>, StateError> {
        self.read(service)
    }

    fn save(&self, service: &str, state: &RolloutState) -> Result<(), StateError> {
        self.write(service, state)
    }

    fn location(&self, service: &str) -> String {
        self.path(service).display().to_string()
    }

    fn reconfigured(&self, config: &Config) -> Box<dyn StateStore> {
        Box::new(StateFiles::new(&config.state_dir))
    }
}

impl StateFiles {
    pub(crate) fn new(dir: &Path) -> StateFiles {
        StateFiles {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn path(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.json"))
    }

    fn read(&self, service: &str) -> Result<Option<RolloutState>, StateError> {
        let path = self.path(service);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        decode(service, &bytes, &path).map(Some)
    }

    /// Writes `state` atomically and durably.
    fn write(&self, service: &str, state: &RolloutState) -> Result<(), StateError> {
        let path = self.path(service);
        let write_error = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(write_error)?;
        let bytes = encode(service, state).map_err(|err| write_error(io::Error::other(err)))?;
        let temp = self.dir.join(format!(".{service}.json.tmp"));
        let mut out = File::create(&temp).map_err(write_error)?;
        out.write_all(&bytes).map_err(write_error)?;
        out.sync_all().map_err(write_error)?;
        drop(out);
        fs::rename(&temp, &path).map_err(write_error)?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StartMode, Weight};
    use crate::rollout::machine::Phase;
    use crate::rollout::schedule::Plan;

    fn state() -> RolloutState {
        let plan = Plan {
            steps: Vec::new(),
            analysis: None,
            start: StartMode::Auto,
            fingerprint: "f".into(),
        };
        let mut state = RolloutState::new(&plan, Weight::ZERO);
        state.phase = Phase::Progressing;
        state.step = 3;
        state.weight = Weight::from_percent(25.0).unwrap();
        state.hold_observed_ms = 123_000;
        state
    }

    #[test]
    fn saves_and_loads_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateFiles::new(&dir.path().join("state"));
        assert!(store.load("api").unwrap().is_none());
        store.save("api", &state()).unwrap();
        assert_eq!(store.load("api").unwrap(), Some(state()));
        let text = fs::read_to_string(store.path("api")).unwrap();
        assert!(text.contains("\"weight\": 25.0"), "{text}");
        assert!(!dir.path().join("state/.api.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateFiles::new(dir.path());
        fs::write(store.path("api"), "{\"format\": 1, \"phase\": ").unwrap();
        let err = store.load("api").unwrap_err().to_string();
        assert!(
            err.contains(&store.path("api").display().to_string()),
            "{err}"
        );
        assert!(err.contains("corrupt"), "{err}");

        fs::write(store.path("api"), "{\"format\": 1, \"service\": \"api\"}").unwrap();
        assert!(matches!(store.load("api"), Err(StateError::Corrupt { .. })));

        store.save("other", &state()).unwrap();
        fs::copy(store.path("other"), store.path("api")).unwrap();
        let err = store.load("api").unwrap_err().to_string();
        assert!(err.contains("belongs to service `other`"), "{err}");
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateFiles::new(dir.path());
        fs::write(store.path("api"), "{\"format\": 9}").unwrap();
        assert!(matches!(
            store.load("api"),
            Err(StateError::NewerFormat { found: 9, .. })
        ));
    }
}

//! What the rest of cutover uses to talk to the controller: the commands it accepts, the
//! operator's verbs, their errors, and the handle that sends them. The admin API imports
//! this file and nothing else of the controller.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};

use super::status::{ServiceStatus, Status};
use crate::config::watch::WatchTargets;
use crate::config::Weight;

/// The admin token, replaced by the controller when a reload changes it. It lives here, not
/// in the admin API, so that the controller can keep it current without importing the API.
pub(crate) type AdminToken = Arc<ArcSwap<Option<Arc<str>>>>;

/// What can be asked of the controller.
pub(crate) enum Command {
    Control {
        service: String,
        op: Op,
        /// The admin client's address, for the decision log.
        client: Option<String>,
        reply: oneshot::Sender<Result<Controlled, ControlError>>,
    },
    Reload {
        source: ReloadSource,
        reply: Option<oneshot::Sender<Result<String, Vec<String>>>>,
    },
    Shutdown {
        grace: Duration,
        reply: oneshot::Sender<usize>,
    },
}

/// The operator's verbs (SPEC §1, §5).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Start,
    Pause,
    Resume,
    Promote {
        full: bool,
    },
    Rollback,
    Retry,
    /// `force` allows lowering NEW's weight, which moves sticky users back to OLD.
    SetWeight {
        weight: Weight,
        force: bool,
    },
}

impl Op {
    /// The verb as the command line names it, without its options.
    pub(crate) fn verb(&self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Promote { .. } => "promote",
            Op::Rollback => "rollback",
            Op::Retry => "retry",
            Op::SetWeight { .. } => "set-weight",
        }
    }
}

/// What an accepted verb left behind: the service's status, and a note when the verb
/// changed nothing because what it asks for already holds ("already paused").
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Controlled {
    pub status: ServiceStatus,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    Signal,
    Watch,
    Api,
}

names! {
    ReloadSource: pub fn label {
        Signal => "SIGHUP",
        Watch => "file change",
        Api => "admin API",
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("no service named `{0}`")]
    UnknownService(String),
    #[error("service `{0}` has no rollout: its split is the static `weight` of its config")]
    NoRollout(String),
    #[error("{0}")]
    Refused(String),
    #[error("the transition was not applied: {0}")]
    Persist(String),
    #[error("the controller has stopped")]
    Gone,
}

/// How the rest of cutover talks to the controller.
#[derive(Clone)]
pub struct ControllerHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Arc<Status>>,
    /// What the config watcher watches: the running config's files and directories.
    targets: watch::Receiver<WatchTargets>,
    /// Where the decision logs are (`state_dir`), for the admin API to read them.
    state_dir: std::path::PathBuf,
}

impl std::fmt::Debug for ControllerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerHandle").finish_non_exhaustive()
    }
}

impl ControllerHandle {
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        status: watch::Receiver<Arc<Status>>,
        targets: watch::Receiver<WatchTargets>,
        state_dir: std::path::PathBuf,
    ) -> ControllerHandle {
        ControllerHandle {
            commands,
            targets,
            status,
            state_dir,
        }
    }

    pub async fn control(&self, service: &str, op: Op) -> Result<Controlled, ControlError> {
        self.control_from(service, op, None).await
    }

    /// `control`, for the admin client at `client` (recorded in the decision log).
    pub async fn control_from(
        &self,
        service: &str,
        op: Op,
        client: Option<String>,
    ) -> Result<Controlled, ControlError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Control {
            service: service.to_string(),
            op,
            client,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ControlError::Gone)?;
        answer.await.map_err(|_| ControlError::Gone)?
    }

    /// Reloads the config file; the new version, or every error.
    pub async fn reload(&self, source: ReloadSource) -> Result<String, Vec<String>> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Reload {
            source,
            reply: Some(reply),
        };
        let gone = || vec!["the controller has stopped".to_string()];
        self.commands.send(command).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Asks for a reload without waiting for its outcome (signals, the file watcher). When
    /// the controller's queue is full the request waits its turn in a task of its own, as
    /// the watcher does not ask twice for the same change.
    pub fn request_reload(&self, source: ReloadSource) {
        let command = Command::Reload {
            source,
            reply: None,
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            let commands = self.commands.clone();
            tokio::spawn(async move {
                let _ = commands.send(command).await;
            });
        }
    }

    /// Stops the listeners and waits for connections to finish, up to `grace`; returns
    /// how many were still open.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { grace, reply })
            .await
            .is_err()
        {
            return 0;
        }
        answer.await.unwrap_or(0)
    }

    /// The decision log of `service`: `state_dir/<service>.history.jsonl`.
    pub(crate) fn history_path(&self, service: &str) -> std::path::PathBuf {
        crate::evidence::log::history_path(&self.state_dir, service)
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.borrow().clone()
    }

    /// What the config watcher should watch, as each reload leaves it.
    pub fn watch_targets(&self) -> watch::Receiver<WatchTargets> {
        self.targets.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::watch::Fingerprint;

    /// A reload asked for while the controller's queue is full waits its turn: the watcher
    /// does not ask twice for the same change.
    #[tokio::test]
    async fn a_reload_asked_for_with_the_queue_full_is_not_lost() {
        let (commands, mut queue) = mpsc::channel(1);
        let (_status_tx, status) = watch::channel(Arc::new(Status::default()));
        let targets = WatchTargets {
            dirs: Vec::new(),
            files: Vec::new(),
            loaded: Fingerprint::of(&[]),
        };
        let (_targets_tx, targets) = watch::channel(targets);
        let handle = ControllerHandle::new(commands, status, targets, "state".into());
        handle.request_reload(ReloadSource::Signal);
        handle.request_reload(ReloadSource::Watch);
        let mut sources = Vec::new();
        for _ in 0..2 {
            let next = tokio::time::timeout(Duration::from_secs(5), queue.recv());
            match next.await.expect("the second reload was lost") {
                Some(Command::Reload { source, .. }) => sources.push(source.label()),
                _ => panic!("not a reload"),
            }
        }
        assert_eq!(sources, ["SIGHUP", "file change"]);
    }
}

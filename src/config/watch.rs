//! Reloading on file change (SPEC §8).
//!
//! The config file's *directory* is watched, not the file: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes updates a ConfigMap by swapping
//! the `..data` symlink, and neither touches the watched file's inode. The directories of
//! the certificates, keys and token it reads are watched too, as the running config names
//! them (the controller sends new ones after each reload), so a renewed certificate is
//! picked up, one a reload named included.
//!
//! A directory also holds files that have nothing to do with the config (logs, a hook's
//! output, editor swap files). After a short quiet period, the watcher fingerprints the
//! config file and the files it reads (their contents, following symlinks) and asks the
//! controller to reload only when that fingerprint changed. One broken edit is then one
//! reload error, however often the rest of the directory is written.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::model::Origin;

/// How long the directory must stay quiet before a reload is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A reload is asked for at the latest this long after the first change, even if changes
/// keep coming.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to watch: the directories whose changes may change the config, the files whose
/// contents decide whether a reload is worth asking for, and what those held when the
/// running config was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTargets {
    pub dirs: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
    pub loaded: Fingerprint,
}

impl WatchTargets {
    /// The running config's, read now: just after it was loaded.
    pub fn of(origin: &Origin) -> WatchTargets {
        let files = watched_files(&origin.path, &origin.read);
        WatchTargets {
            dirs: origin.watched_dirs(),
            loaded: Fingerprint::of(&files),
            files,
        }
    }
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher").finish_non_exhaustive()
    }
}

/// What the watched files hold: one hash over each file's path and contents (or its
/// absence). Equal fingerprints mean there is nothing new to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// Reads every file in `files` (following symlinks, as loading the config does).
    pub fn of(files: &[PathBuf]) -> Fingerprint {
        let mut hasher = DefaultHasher::new();
        for file in files {
            file.hash(&mut hasher);
            std::fs::read(file).ok().hash(&mut hasher);
        }
        Fingerprint(hasher.finish())
    }
}

/// The files whose contents decide whether a reload is worth asking for: the config file
/// and everything it reads (certificates, keys, the admin token).
pub fn watched_files(config_path: &Path, read: &[PathBuf]) -> Vec<PathBuf> {
    std::iter::once(config_path.to_path_buf())
        .chain(read.iter().cloned())
        .collect()
}

/// Calls `on_change` (on the current runtime) after changes in any of the `targets`'
/// directories (the config's and those of the certificates and token it reads), when the
/// contents of their files differ from what they were at the last call (or at the start).
/// New targets (a reload named other files) are watched from when they arrive.
pub fn watch(
    mut targets: watch::Receiver<WatchTargets>,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<ConfigWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "config watch error"),
        })?;
    let WatchTargets {
        dirs,
        mut files,
        loaded,
    } = targets.borrow_and_update().clone();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for config changes");
    }
    let mut watched = dirs;
    let mut last = loaded;
    let task = tokio::spawn(async move {
        // Until the controller is gone: then what is watched stays.
        let mut followed = true;
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                changed = targets.changed(), if followed => {
                    if changed.is_err() {
                        followed = false;
                        continue;
                    }
                    let next = targets.borrow_and_update().clone();
                    for dir in next.dirs {
                        if watched.contains(&dir) {
                            continue;
                        }
                        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                            Ok(()) => tracing::info!(dir = %dir.display(), "watching for config changes"),
                            Err(err) => tracing::warn!(dir = %dir.display(), error = %err, "cannot watch for config changes"),
                        }
                        watched.push(dir);
                    }
                    // What the reload read is the new reference; a change since (events
                    // this loop took before it knew these files) asks for a reload now.
                    files = next.files;
                    last = next.loaded;
                }
            }
            // Wait until the burst of events (write, rename, chmod...) is over, but not
            // forever when something keeps writing.
            let latest = tokio::time::Instant::now() + MAX_DELAY;
            while let Ok(Some(())) = tokio::time::timeout_at(
                latest.min(tokio::time::Instant::now() + DEBOUNCE),
                rx.recv(),
            )
            .await
            {}
            let now = Fingerprint::of(&files);
            if now != last {
                last = now;
                on_change();
            }
        }
    });
    Ok(ConfigWatcher { task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_contents_not_writes() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cutover.yaml");
        let cert = dir.path().join("api.crt");
        std::fs::write(&config, "a: 1\n").unwrap();
        let files = watched_files(&config, std::slice::from_ref(&cert));
        let missing_cert = Fingerprint::of(&files);
        std::fs::write(&cert, "cert").unwrap();
        let first = Fingerprint::of(&files);
        assert_ne!(first, missing_cert, "a file that appears is a change");
        std::fs::write(&config, "a: 1\n").unwrap();
        std::fs::write(dir.path().join("hook.log"), "unrelated").unwrap();
        assert_eq!(Fingerprint::of(&files), first, "same bytes written again");
        std::fs::write(&config, "a: 2\n").unwrap();
        assert_ne!(Fingerprint::of(&files), first);
    }
}

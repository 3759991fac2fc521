//! Reloading on file change (SPEC §8).
//!
//! The config file's *directory* is watched, not the file: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes updates a ConfigMap by swapping
//! the `..data` symlink, and neither touches the watched file's inode. The directories of
//! the certificates, keys and token it reads are watched too (as they were at start), so
//! a renewed certificate is picked up. Any change, after a short quiet period, asks the
//! controller to reload; the controller ignores it if the config and the files it reads
//! are what is running already.

use std::path::PathBuf;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the directory must stay quiet before a reload is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A reload is asked for at the latest this long after the first change, even if changes
/// keep coming.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` (on the current runtime) after changes in any of `dirs` (the
/// config's directory and those of the certificates and token it reads).
pub fn watch(
    dirs: &[PathBuf],
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
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for config changes");
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait until the burst of events (write, rename, chmod...) is over, but not
            // forever when something keeps writing.
            let latest = tokio::time::Instant::now() + MAX_DELAY;
            while let Ok(Some(())) = tokio::time::timeout_at(
                latest.min(tokio::time::Instant::now() + DEBOUNCE),
                rx.recv(),
            )
            .await
            {}
            on_change();
        }
    });
    Ok(ConfigWatcher { _watcher: watcher })
}

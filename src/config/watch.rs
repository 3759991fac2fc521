//! Reloading on file change (SPEC §8).
//!
//! The config file's *directory* is watched, not the file: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes updates a ConfigMap by swapping
//! the `..data` symlink, and neither touches the watched file's inode. Any change in the
//! directory, after a short quiet period, asks the controller to reload; the controller
//! ignores it if the file's contents are what is running already.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the directory must stay quiet before a reload is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` (on the current runtime) after changes in the directory of `path`.
pub fn watch(path: &Path, on_change: impl Fn() + Send + 'static) -> notify::Result<ConfigWatcher> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "config watch error"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait until the burst of events (write, rename, chmod...) is over.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            on_change();
        }
    });
    tracing::info!(dir = %dir.display(), "watching the config directory for changes");
    Ok(ConfigWatcher { _watcher: watcher })
}

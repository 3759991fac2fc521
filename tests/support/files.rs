//! Files on disk as operators change them: editor saves, in-place writes, ConfigMap
//! symlink swaps, certificates; and the `file:line:col` errors cutover reports about them.

use std::path::{Path, PathBuf};

/// Saves the way editors do: a temporary file in the same directory renamed over the file.
pub fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Rewrites the file in place (truncate, write).
pub fn save_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The version cutover gives the file as it is on disk now.
pub fn version_on_disk(path: &Path) -> String {
    cutover::config::load(path)
        .unwrap_or_else(|e| panic!("the test wrote an invalid config: {e}"))
        .origin
        .version
}

/// Publishes `text` the way the kubelet updates a ConfigMap volume: a new timestamped
/// directory, `..data_tmp` pointing at it, renamed over `..data`, the old one removed.
pub fn configmap_swap(dir: &Path, previous: &str, next: &str, text: &str) {
    std::fs::create_dir(dir.join(next)).unwrap();
    std::fs::write(dir.join(next).join("cutover.yaml"), text).unwrap();
    std::os::unix::fs::symlink(next, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(previous)).unwrap();
}

/// True when `text` holds `{path}:LINE:COL: ` with numbers for LINE and COL.
pub fn has_location(text: &str, path: &Path) -> bool {
    let prefix = format!("{}:", path.display());
    text.match_indices(&prefix).any(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or("");
        let col = parts.next().unwrap_or("");
        !line.is_empty()
            && !col.is_empty()
            && line.bytes().all(|b| b.is_ascii_digit())
            && col.bytes().all(|b| b.is_ascii_digit())
            && parts.next().is_some()
    })
}

/// A self-signed certificate for `names`, written as PEM into `dir`; returns (cert, key).
pub fn certificate(dir: &std::path::Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

//! External tools the tests run for real (promtool, prometheus, etcd, chromium, groff, zsh,
//! fish). `.ci/run` installs them; a test whose tool is missing fails under `CI=true` and
//! otherwise says loudly that it checked nothing.

use std::path::PathBuf;

/// The path of an external tool, or `None` (after a loud SKIP line) when it is missing
/// outside CI. In CI (`CI=true`) a missing tool fails the test.
pub fn external_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{name} is not installed and CI=true: install Debian's `{package}` package"
        );
        eprintln!(
            "\n*** SKIP: {name} is not installed (Debian package `{package}`); this test \
             checked nothing ***\n"
        );
    }
    found
}

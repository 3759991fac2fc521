//! The binary end to end: `backend` prints its address and stops on
//! SIGTERM, `load --json` prints a parseable report, `--max-errors` sets
//! the exit code.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

/// Kills the child if a test fails before stopping it, so no backend
/// outlives the test run (its `--lifetime` is a second safety net).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `loadtest backend ARGS` and returns it with its address.
fn start_backend(args: &[&str]) -> (Reaper, String) {
    let mut child = Command::new(BIN)
        .arg("backend")
        .args(["--lifetime", "20s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backend");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "binds loopback by default: {addr}"
    );
    (Reaper(child), addr)
}

fn load(addr: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "load",
            "--url",
            &format!("http://{addr}/"),
            "--rate",
            "200",
            "--duration",
            "100ms",
        ])
        .args(extra)
        .output()
        .expect("run load")
}

#[test]
fn load_json_and_exit_codes_against_backend_process() {
    let (mut healthy, addr) = start_backend(&["--name", "new"]);
    let output = load(
        &addr,
        &["--json", "--count-header", "X-Backend", "--max-errors", "0"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["scheduled"], 20);
    assert_eq!(report["status"]["2xx"], 20);
    assert_eq!(report["count_header"]["values"]["new"], 20);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("latency"),
        "summary on stderr"
    );

    // SIGTERM stops the backend cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &healthy.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(healthy.0.wait().expect("wait").success());

    let (_failing, addr) = start_backend(&["--fail-rate", "1", "--fail-status", "503"]);
    let output = load(&addr, &["--max-errors", "5"]);
    assert_eq!(output.status.code(), Some(1), "20 failures exceed 5");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("5xx 20"), "{text}");
}

#[test]
fn bad_arguments_exit_2() {
    let output = Command::new(BIN)
        .args(["load", "--url", "https://127.0.0.1:1/", "--rate", "10"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(BIN)
        .args(["backend", "--listen", "0.0.0.0:0", "--lifetime", "1s"])
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(2),
        "non-loopback refused by default"
    );
    let output = Command::new(BIN)
        .args([
            "load",
            "--url",
            "http://x/",
            "--rate",
            "10",
            "--duration",
            "soon",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
}

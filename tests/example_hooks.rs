//! The example hook scripts in `config/hooks/` fail closed: exit 0 only when the check or
//! the action really happened. A dry run (`--dry-run` only; `DRY_RUN` in the environment is
//! ignored) says DRY RUN and exits 4; missing arguments exit 2 even in a dry run;
//! `switch-writes.sh` and `dns-switch.sh` without `--apply` are dry runs.
//!
//! Nothing here touches the network: servers are 127.0.0.1 ports nothing listens on, and
//! the tools (curl, rsync, mysql, psql, nsupdate, dig, pg_restore) are small fakes put
//! first on PATH, which log their calls.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SCRIPTS: [&str; 9] = [
    "alert.sh",
    "data-sync-check.sh",
    "dns-switch.sh",
    "mysql-replication-gate.sh",
    "pg-replication-gate.sh",
    "preflight.sh",
    "replication-lag.sh",
    "rollback-db.sh",
    "switch-writes.sh",
];

/// Variables that would change what a script does, removed from every run.
const CLEARED: [&str; 15] = [
    "DRY_RUN",
    "SLACK_WEBHOOK_URL",
    "RSYNC",
    "NSUPDATE",
    "DIG",
    "MYSQL",
    "PSQL",
    "PG_RESTORE",
    "LAG_COMMAND",
    "LAG_FILE",
    "SWITCH_COMMAND",
    "PRECHECK_COMMAND",
    "VERIFY_COMMAND",
    "CUTOVER_EVENT",
    "HEALTH_PATH",
];

fn hooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hooks")
}

/// A port on 127.0.0.1 that nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory with `bin/` (fakes, first on PATH) and `calls` (what they logged).
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        Sandbox { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Installs `bin/NAME` running `body` (POSIX sh), after logging its argv to `calls`.
    fn fake(&self, name: &str, body: &str) -> &Sandbox {
        let path = self.path("bin").join(name);
        let calls = self.path("calls");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >>'{}'\n{body}\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// What the fakes logged, one call per line.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.path("calls")).unwrap_or_default()
    }

    /// Runs `sh config/hooks/SCRIPT ARGS` in this directory with `env` added.
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("sh");
        command
            .arg(hooks_dir().join(script))
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("TMPDIR", self.dir.path())
            .env("CUTOVER_SERVICE", "api")
            .stdin(Stdio::null());
        for name in CLEARED {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let output = command.output().unwrap();
        Outcome {
            what: format!("{script} {args:?} {env:?}"),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Outcome {
    #[allow(dead_code)] // read in assertion messages, through Debug
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn expect(&self, code: i32) -> &Outcome {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }

    fn dry_run(&self) -> bool {
        self.stdout.contains("DRY RUN") || self.stderr.contains("DRY RUN")
    }

    /// A dry run: exit 4, DRY RUN on stdout and on stderr.
    fn expect_dry_run(&self) -> &Outcome {
        self.expect(4);
        assert!(
            self.stdout.contains("DRY RUN"),
            "no DRY RUN on stdout: {self:#?}"
        );
        assert!(
            self.stderr.contains("DRY RUN"),
            "no DRY RUN on stderr: {self:#?}"
        );
        self
    }

    /// Exit 0, and no sign of a dry run.
    fn expect_success(&self) -> &Outcome {
        self.expect(0);
        assert!(!self.dry_run(), "{self:#?}");
        self
    }

    /// Failed for real: non-zero, and not as a dry run.
    fn expect_real_failure(&self) -> &Outcome {
        assert!(!matches!(self.code, Some(0) | Some(4)), "{self:#?}");
        assert!(!self.dry_run(), "{self:#?}");
        self
    }
}

/// Valid arguments for each script (files they need are created in `sandbox`), with a
/// server that does not answer: run for real, none of them can succeed.
fn valid_args(sandbox: &Sandbox, script: &str) -> Vec<String> {
    let port = dead_port().to_string();
    let file = |name: &str, text: &str| {
        let path = sandbox.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let args: Vec<String> = match script {
        "alert.sh" => vec![
            "--url".into(),
            format!("http://127.0.0.1:{port}/hook"),
            "--timeout".into(),
            "2".into(),
        ],
        "data-sync-check.sh" => {
            std::fs::create_dir_all(sandbox.path("src")).unwrap();
            std::fs::create_dir_all(sandbox.path("dest")).unwrap();
            file("src/f", "a file only the source has");
            vec![
                "--src".into(),
                format!("{}/", sandbox.path("src").display()),
                "--dest".into(),
                format!("{}/", sandbox.path("dest").display()),
            ]
        }
        "dns-switch.sh" => vec![
            "--apply".into(),
            "--name".into(),
            "api.example.test".into(),
            "--value".into(),
            "192.0.2.20".into(),
            "--server".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port,
            "--key-file".into(),
            file(
                "dns.key",
                "key \"k\" { algorithm hmac-sha256; secret \"AAAA\"; };\n",
            ),
            "--timeout".into(),
            "1".into(),
        ],
        "mysql-replication-gate.sh" => vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port,
            "--connect-timeout".into(),
            "1".into(),
        ],
        "pg-replication-gate.sh" => {
            vec!["--host".into(), "127.0.0.1".into(), "--port".into(), port]
        }
        "preflight.sh" => vec![
            "--new".into(),
            format!("http://127.0.0.1:{port}"),
            "--timeout".into(),
            "2".into(),
        ],
        "replication-lag.sh" => vec!["--max-seconds".into(), "5".into()],
        "rollback-db.sh" => vec![
            "--confirm".into(),
            "--dump".into(),
            file("pre.dump", "PGDMP"),
            "--dbname".into(),
            "app".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port,
        ],
        "switch-writes.sh" => vec![
            "--apply".into(),
            "--precheck".into(),
            format!("nc -z 127.0.0.1 {port} || exit 1"),
            "--command".into(),
            "echo NEW > write-target".into(),
        ],
        other => panic!("no arguments for {other}"),
    };
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Fakes that fail like the real tools do against a server that does not answer.
fn failing_fakes(sandbox: &Sandbox) {
    sandbox
        .fake("curl", "cat >/dev/null; echo 'curl: (7) Failed to connect' >&2; printf 000; exit 7")
        .fake("rsync", "echo '>f+++++++++ f'; exit 0")
        .fake("nsupdate", "cat >/dev/null; echo '; Communication with 127.0.0.1#53 failed' >&2; exit 2")
        .fake("dig", "echo ';; connection timed out' >&2; exit 9")
        .fake("mysql", "echo \"ERROR 2003 (HY000): Can't connect to MySQL server\" >&2; exit 1")
        .fake("psql", "echo 'psql: error: connection refused' >&2; exit 2")
        .fake("pg_restore", "case $1 in --list) echo '1; 2615 2200 SCHEMA - public';; *) echo 'pg_restore: error: connection refused' >&2; exit 1;; esac")
        .fake("nc", "exit 1");
}

#[test]
fn every_script_is_covered() {
    let mut found: Vec<String> = std::fs::read_dir(hooks_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sh"))
        .collect();
    found.sort();
    assert_eq!(found, SCRIPTS, "a new script needs its cases in this file");
}

#[test]
fn scripts_are_valid_posix_sh() {
    for script in SCRIPTS {
        let status = Command::new("sh")
            .arg("-n")
            .arg(hooks_dir().join(script))
            .status()
            .unwrap();
        assert!(status.success(), "sh -n {script}");
    }
}

/// (a) DRY_RUN=1 in the environment changes nothing: the script really runs, and here,
/// with nothing answering, really fails.
#[test]
fn dry_run_in_the_environment_is_ignored() {
    for script in SCRIPTS {
        let sandbox = Sandbox::new();
        failing_fakes(&sandbox);
        let args = valid_args(&sandbox, script);
        let outcome = sandbox.run(script, &strs(&args), &[("DRY_RUN", "1")]);
        outcome.expect_real_failure();
        if script == "switch-writes.sh" {
            assert!(
                !sandbox.path("write-target").exists(),
                "the precheck failed, nothing may change: {outcome:#?}"
            );
        } else if script != "replication-lag.sh" {
            // Every other script reached its tool (the lag gate reads a missing file).
            assert!(
                !sandbox.calls().is_empty(),
                "no tool was called: {outcome:#?}"
            );
        }
    }
}

/// (b) --dry-run: exit 4, DRY RUN on both streams, no tool called, nothing changed.
#[test]
fn dry_run_flag_exits_4_and_says_so() {
    for script in SCRIPTS {
        let sandbox = Sandbox::new();
        failing_fakes(&sandbox);
        let mut args = valid_args(&sandbox, script);
        args.push("--dry-run".into());
        let outcome = sandbox.run(script, &strs(&args), &[]);
        outcome.expect_dry_run();
        let calls = sandbox.calls();
        let allowed = |line: &str| line.starts_with("pg_restore --list");
        assert!(
            calls.lines().all(allowed),
            "{script}: a dry run called {calls}"
        );
        assert!(!sandbox.path("write-target").exists(), "{script}");
    }
}

/// (c) switch-writes.sh and dns-switch.sh without --apply: a dry run, exit 4.
#[test]
fn without_apply_the_switches_change_nothing_and_fail() {
    for script in ["switch-writes.sh", "dns-switch.sh"] {
        let sandbox = Sandbox::new();
        sandbox
            .fake("nsupdate", "cat >/dev/null; exit 0")
            .fake("dig", "echo 192.0.2.20")
            .fake("nc", "exit 0");
        let args: Vec<String> = valid_args(&sandbox, script)
            .into_iter()
            .filter(|arg| arg != "--apply")
            .collect();
        let outcome = sandbox.run(script, &strs(&args), &[]);
        outcome.expect_dry_run();
        assert!(outcome.stderr.contains("no --apply"), "{outcome:#?}");
        assert_eq!(sandbox.calls(), "", "{script}");
        assert!(!sandbox.path("write-target").exists(), "{script}");
    }
}

/// (d) Missing or invalid arguments exit 2, with --dry-run too.
#[test]
fn missing_arguments_exit_2_also_in_a_dry_run() {
    let cases: &[(&str, &[&str])] = &[
        ("alert.sh", &[]),
        ("alert.sh", &["--url", "ftp://example.test/x"]),
        ("alert.sh", &["--url-file", "/nonexistent/webhook.url"]),
        ("data-sync-check.sh", &["--src", "/tmp/a/"]),
        ("data-sync-check.sh", &["--dest", "/tmp/b/"]),
        ("dns-switch.sh", &["--name", "api.example.test"]),
        ("dns-switch.sh", &["--value", "192.0.2.20"]),
        (
            "dns-switch.sh",
            &[
                "--apply",
                "--name",
                "api.example.test",
                "--value",
                "192.0.2.20",
            ],
        ),
        (
            "dns-switch.sh",
            &["--name", "api.example.test", "--value", "not-an-ip"],
        ),
        ("mysql-replication-gate.sh", &["--max-seconds"]),
        ("mysql-replication-gate.sh", &["--max-seconds", "soon"]),
        ("pg-replication-gate.sh", &["--max-seconds"]),
        ("pg-replication-gate.sh", &["--bogus"]),
        ("preflight.sh", &[]),
        ("preflight.sh", &["--new"]),
        ("replication-lag.sh", &["--max-seconds", "x"]),
        ("replication-lag.sh", &["--lag-file"]),
        ("rollback-db.sh", &["--dump", "/tmp/x.dump", "--confirm"]),
        ("rollback-db.sh", &["--dbname", "app", "--confirm"]),
        ("switch-writes.sh", &[]),
        ("switch-writes.sh", &["--apply", "--precheck", "true"]),
    ];
    for (script, args) in cases {
        let sandbox = Sandbox::new();
        failing_fakes(&sandbox);
        for dry in [false, true] {
            let mut args = args.to_vec();
            if dry {
                args.insert(0, "--dry-run");
            }
            let outcome = sandbox.run(script, &args, &[]);
            outcome.expect(2);
            assert!(outcome.stderr.contains("error:"), "{outcome:#?}");
        }
    }
    // A rollback-db.sh dry run that a real run would refuse (no --confirm, no rollback).
    let sandbox = Sandbox::new();
    failing_fakes(&sandbox);
    let args: Vec<String> = valid_args(&sandbox, "rollback-db.sh")
        .into_iter()
        .filter(|arg| arg != "--confirm")
        .chain(["--dry-run".to_string()])
        .collect();
    let outcome = sandbox.run("rollback-db.sh", &strs(&args), &[]);
    outcome.expect(2);
    assert!(outcome.stderr.contains("refusing"), "{outcome:#?}");
}

/// (e) With tools that answer like real ones, each script succeeds for real.
#[test]
fn each_script_succeeds_for_real_with_fake_tools() {
    let ok_fakes = |sandbox: &Sandbox| {
        sandbox
            .fake("curl", "cat >\"$TMPDIR/curl-config\"; printf 200")
            .fake("rsync", "exit 0")
            .fake("nsupdate", "cat >\"$TMPDIR/nsupdate-script\"; exit 0")
            .fake("dig", "echo 192.0.2.20")
            .fake(
                "mysql",
                "printf '%s\\n' '*************************** 1. row ***************************' \
                 '             Replica_IO_Running: Yes' '            Replica_SQL_Running: Yes' \
                 '          Seconds_Behind_Source: 0'",
            )
            .fake("psql", "echo 't|0.25|t'")
            .fake(
                "pg_restore",
                "case $1 in --list) echo '1; 2615 2200 SCHEMA - public';; *) exit 0;; esac",
            )
            .fake("nc", "exit 0");
    };
    for script in SCRIPTS {
        let sandbox = Sandbox::new();
        ok_fakes(&sandbox);
        let mut args = valid_args(&sandbox, script);
        match script {
            "data-sync-check.sh" => std::fs::remove_file(sandbox.path("src/f")).unwrap(),
            "replication-lag.sh" => {
                std::fs::write(sandbox.path("replication-lag.seconds"), "0\n").unwrap()
            }
            "preflight.sh" => args.extend(
                [
                    "--old-cpus",
                    "4",
                    "--new-cpus",
                    "8",
                    "--old-mem-mb",
                    "1024",
                    "--new-mem-mb",
                    "2048",
                ]
                .map(String::from),
            ),
            _ => {}
        }
        // DRY_RUN=1 as cutover's environment might have it: still a real run.
        let outcome = sandbox.run(script, &strs(&args), &[("DRY_RUN", "1")]);
        outcome.expect_success();
        assert!(
            outcome.stdout.contains("ok") || outcome.stdout.contains("in sync"),
            "{outcome:#?}"
        );
        match script {
            "alert.sh" => {
                let config = std::fs::read_to_string(sandbox.path("curl-config")).unwrap();
                assert!(config.contains("url = \"http://127.0.0.1:"), "{config}");
            }
            "dns-switch.sh" => {
                let update = std::fs::read_to_string(sandbox.path("nsupdate-script")).unwrap();
                assert!(
                    update.contains("update add api.example.test. 60 A 192.0.2.20"),
                    "{update}"
                );
            }
            "switch-writes.sh" => {
                let target = std::fs::read_to_string(sandbox.path("write-target")).unwrap();
                assert_eq!(target, "NEW\n");
            }
            _ => {}
        }
    }
}

/// The real tools fail the other way too: differences, lag, a wrong DNS answer.
#[test]
fn checks_fail_when_the_tools_report_a_problem() {
    let sandbox = Sandbox::new();
    sandbox.fake("rsync", "echo '>f+++++++++ f'");
    let args = valid_args(&sandbox, "data-sync-check.sh");
    let outcome = sandbox.run("data-sync-check.sh", &strs(&args), &[]);
    outcome.expect(1);
    assert!(outcome.stdout.contains("NOT in sync"), "{outcome:#?}");

    let sandbox = Sandbox::new();
    sandbox.fake("psql", "echo 't|42|f'");
    let args = valid_args(&sandbox, "pg-replication-gate.sh");
    sandbox
        .run("pg-replication-gate.sh", &strs(&args), &[])
        .expect(1);

    let sandbox = Sandbox::new();
    sandbox
        .fake("nsupdate", "cat >/dev/null; exit 0")
        .fake("dig", "echo 192.0.2.99");
    let args = valid_args(&sandbox, "dns-switch.sh");
    let outcome = sandbox.run("dns-switch.sh", &strs(&args), &[]);
    outcome.expect(1);
    assert!(outcome.stdout.contains("FAIL"), "{outcome:#?}");
}

/// The main example's point of no return runs for real: `switch-writes` has --apply, and
/// with its arguments exactly as configured it moves the demo's write target.
#[test]
fn the_main_example_switches_writes_for_real() {
    let config =
        cutover::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cutover.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let api = config.services.iter().find(|s| s.name == "api").unwrap();
    let hook = api
        .hooks
        .iter()
        .find(|h| h.name == "switch-writes")
        .unwrap();
    let cutover::config::HookAction::Exec { argv } = &hook.action else {
        panic!("switch-writes is not an exec hook");
    };
    assert!(argv.iter().any(|a| a == "--apply"), "{argv:?}");

    // Run it as cutover would, from a copy of the config directory.
    let sandbox = Sandbox::new();
    let hooks = sandbox.path("hooks");
    std::fs::create_dir(&hooks).unwrap();
    for script in SCRIPTS {
        std::fs::copy(hooks_dir().join(script), hooks.join(script)).unwrap();
    }
    std::fs::write(sandbox.path("replication-lag.seconds"), "0\n").unwrap();
    let outcome = Command::new(sandbox.dir.path().join(&argv[0]))
        .args(&argv[1..])
        .current_dir(sandbox.dir.path())
        .env_remove("DRY_RUN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(outcome.status.success(), "{outcome:?}");
    let target = std::fs::read_to_string(sandbox.path("write-target")).unwrap();
    assert_eq!(target.trim(), "NEW");
}

//! Completions, man pages and `--help` generated from the clap definitions.

mod support;

use std::process::{Command, Output};

use support::binary;

fn cutover(args: &[&str]) -> Output {
    let output = Command::new(binary())
        .args(args)
        .env_remove("CUTOVER_ADMIN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cutover {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(cutover(args).stdout).unwrap()
}

/// A shell's syntax check of a script, when that shell is installed; `bash` must be.
fn syntax_check(shell: &str, script: &str) {
    // bash, zsh and fish: `.ci/run` installs the last two.
    let Some(program) = support::external_tool(shell, shell) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(program).arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{shell} -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_generate_for_each_shell_and_name_every_command() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cutover"),
        ("fish", "complete -c cutover"),
    ] {
        let script = stdout(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        for command in ["set-weight", "rollback", "schema", "completions", "man"] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
        // The admin options complete after client commands only.
        assert!(script.contains("token-file"), "{shell}");
        syntax_check(shell, &script);
    }
}

#[test]
fn bash_completion_offers_subcommands_in_a_real_bash() {
    let script = stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.bash");
    std::fs::write(&path, script).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(cutover se); COMP_CWORD=1; COMP_LINE='cutover se'; COMP_POINT=10; \
         _cutover cutover se cutover; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    let mut words: Vec<&str> = words.lines().collect();
    words.sort();
    assert_eq!(
        words,
        ["set-weight"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_man_page_renders() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH cutover 1"), "{page}");
    for command in ["validate", "set\\-weight", "completions"] {
        assert!(page.contains(command), "man page lacks {command}");
    }
    if let Some(groff) = support::external_tool("groff", "groff-base") {
        use std::io::Write;
        let mut child = Command::new(groff)
            .args(["-man", "-Tutf8", "-Wall", "-z"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "groff warns: {warnings}");
    }

    let dir = tempfile::tempdir().unwrap();
    cutover(&["man", "--dir", dir.path().to_str().unwrap()]);
    for page in ["cutover.1", "cutover-status.1", "cutover-set-weight.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn client_options_are_on_client_commands_only() {
    for command in [
        "status",
        "start",
        "pause",
        "resume",
        "promote",
        "rollback",
        "retry",
        "set-weight",
        "reload",
    ] {
        let help = stdout(&[command, "--help"]);
        assert!(help.contains("--admin <URL>"), "{command}: {help}");
        assert!(
            help.contains("[env: CUTOVER_ADMIN="),
            "{command} shows no env: {help}"
        );
        assert!(help.contains("--json"), "{command}");
        assert!(help.contains("CUTOVER_TOKEN"), "{command}");
    }
    for command in [
        "run",
        "validate",
        "plan",
        "demo",
        "schema",
        "completions",
        "man",
    ] {
        let help = stdout(&[command, "--help"]);
        for client_only in ["--admin", "--token-file", "--json"] {
            assert!(
                !help.contains(client_only),
                "{command} offers {client_only}: {help}"
            );
        }
    }
    // An option a command does not have is a usage error, not silently ignored.
    let out = Command::new(binary())
        .args(["validate", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_schema_command_prints_json_schema() {
    let schema: serde_json::Value = serde_json::from_str(&stdout(&["schema"])).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

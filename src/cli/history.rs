//! `cutover history` and `cutover report`: the decision log, read from the file in the
//! config's `state_dir`, so both work whether or not the proxy runs (SPEC §10).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::config;
use crate::evidence::log::{self, history_path, Follower};
use crate::evidence::record::Entry;
use crate::report::{self, Format};

/// How often `--follow` looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The history file of `service` per the config at `config_path`.
fn history_file(config_path: &Path, service: &str) -> Result<std::path::PathBuf, String> {
    let config = config::load(config_path).map_err(|errors| errors.to_string())?;
    if !config.services.iter().any(|s| s.name == service) {
        return Err(format!(
            "no service named `{service}` in {}",
            config_path.display()
        ));
    }
    Ok(history_path(&config.state_dir, service))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("cutover: {message}");
    ExitCode::from(1)
}

/// What a failed write to stdout means: a reader that went away (`| head`) is the end of
/// the output, anything else (a full disk behind `>`) a failure.
fn stdout_failed(error: &std::io::Error) -> ExitCode {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        ExitCode::SUCCESS
    } else {
        fail(&format!("cannot write to stdout: {error}"))
    }
}

fn print(entry: &Entry, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "{}", line(entry))?;
    }
    out.flush()
}

/// `2026-11-30T14:30:00Z  25.00%  step 2  check pass (…)`.
fn line(entry: &Entry) -> String {
    let at = entry
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| entry.at.to_string());
    let step = entry
        .step
        .map_or_else(|| "-".to_string(), |s| format!("step {}", s + 1));
    format!(
        "{at}  {:>7.2}%  {step:<8}  {}",
        entry.weight,
        report::describe(entry)
    )
}

pub(super) fn history(
    config_path: &Path,
    service: &str,
    follow: bool,
    since: Option<&str>,
    json: bool,
) -> ExitCode {
    let path = match history_file(config_path, service) {
        Ok(path) => path,
        Err(message) => return fail(&message),
    };
    let since = match since.map(log::parse_since).transpose() {
        Ok(since) => since,
        Err(err) => return fail(&err.to_string()),
    };
    // Follow from where the reading ended, so nothing written meanwhile is lost or
    // printed twice.
    let (entries, position) = match log::read_history(&path, since) {
        Ok(read) => read,
        Err(err) => return fail(&err.to_string()),
    };
    let mut follower = follow.then(|| Follower::at(&path, position));
    if entries.is_empty() && !follow && !json {
        eprintln!("cutover: no decisions recorded yet in {}", path.display());
    }
    for entry in &entries {
        if let Err(error) = print(entry, json) {
            return stdout_failed(&error);
        }
    }
    let Some(follower) = follower.as_mut() else {
        return ExitCode::SUCCESS;
    };
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        match follower.poll() {
            Ok(entries) => {
                for entry in &entries {
                    if let Err(error) = print(entry, json) {
                        return stdout_failed(&error);
                    }
                }
            }
            Err(err) => return fail(&err.to_string()),
        }
    }
}

pub(super) fn report(
    config_path: &Path,
    service: &str,
    output: Option<&Path>,
    format: &str,
) -> ExitCode {
    let path = match history_file(config_path, service) {
        Ok(path) => path,
        Err(message) => return fail(&message),
    };
    let entries = match log::read_since(&path, None) {
        Ok(entries) => entries,
        Err(err) => return fail(&err.to_string()),
    };
    if entries.is_empty() {
        return fail(&format!("no decisions recorded in {}", path.display()));
    }
    let format = if format == "md" {
        Format::Markdown
    } else {
        Format::Html
    };
    let text = report::render(service, &entries, format);
    match output {
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => stdout_failed(&error),
            }
        }
        Some(file) => match std::fs::write(file, text) {
            Ok(()) => {
                eprintln!(
                    "cutover: wrote the report of {service} ({} decisions) to {}",
                    entries.len(),
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => fail(&format!("cannot write {}: {err}", file.display())),
        },
    }
}

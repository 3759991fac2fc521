//! The client commands: the operator's verbs and `reload`.

use std::process::ExitCode;

use http::{Method, StatusCode};

use super::client::{call, target, Answer, ClientError, Target};
use super::status_view::{service_text, status};
use super::{usage, Cli, Command};
use crate::admin::weight_hint;
use crate::config::{self, Weight};
use crate::status::ServiceStatus;

pub(super) fn client(cli: &Cli, command: &Command) -> ExitCode {
    let Some(args) = command.client_args() else {
        return usage("not a client command");
    };
    let json = args.json;
    let target = match target(cli, args) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("cutover: {message}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cutover: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match command {
            Command::Status { watch, service, .. } => {
                status(&target, json, *watch, service.as_deref()).await
            }
            Command::Reload { .. } => reload(&target, json).await,
            Command::Diff { service, .. } => super::diff_view::diff(&target, json, service).await,
            command => control(&target, json, command).await,
        }
    })
}

pub(super) fn exit_for(answer: &Answer) -> ExitCode {
    if answer.status.is_success() {
        return ExitCode::SUCCESS;
    }
    eprintln!("cutover: {}", refusal_text(answer.status, &answer.body));
    ExitCode::from(1)
}

/// An error answer as a sentence: a refusal is the reason itself; other errors keep their
/// HTTP code in parentheses for whoever has to look further.
fn refusal_text(status: StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let message = message.trim_end_matches('.');
    match status {
        StatusCode::CONFLICT => format!("refused: {message}."),
        StatusCode::UNAUTHORIZED => format!(
            "the admin API wants a valid token ({}): give it with --token-file, CUTOVER_TOKEN or the config's admin.token_file",
            status.as_u16()
        ),
        _ => format!("{message} ({})", status.as_u16()),
    }
}

pub(super) fn unreachable_exit(err: ClientError) -> ExitCode {
    let ClientError::Unreachable(message) = err;
    eprintln!("cutover: cannot reach the admin API at {message}");
    ExitCode::from(3)
}

async fn control(target: &Target, json: bool, command: &Command) -> ExitCode {
    let (path, body) = match command {
        Command::Start { service, .. } => (format!("/services/{service}/start"), None),
        Command::Pause { service, .. } => (format!("/services/{service}/pause"), None),
        Command::Resume { service, .. } => (format!("/services/{service}/resume"), None),
        Command::Promote { service, full, .. } => {
            let query = if *full { "?full=true" } else { "" };
            (format!("/services/{service}/promote{query}"), None)
        }
        Command::Rollback { service, .. } => (format!("/services/{service}/rollback"), None),
        Command::Retry { service, .. } => (format!("/services/{service}/retry"), None),
        Command::SetWeight {
            service,
            percent,
            force,
            ..
        } => {
            let weight = config::parse_percent(percent)
                .and_then(|p| Weight::from_percent(p).ok_or_else(|| weight_hint(p)));
            let weight = match weight {
                Ok(weight) => weight,
                Err(message) => {
                    eprintln!("cutover: {message}");
                    return ExitCode::from(1);
                }
            };
            (
                format!("/services/{service}/weight"),
                Some(serde_json::json!({ "weight": weight.percent(), "force": force }).to_string()),
            )
        }
        _ => return usage("not a control command"),
    };
    let answer = match call(target, Method::POST, &path, body).await {
        Ok(answer) => answer,
        Err(err) => return unreachable_exit(err),
    };
    if answer.status.is_success() {
        if json {
            print!("{}", String::from_utf8_lossy(&answer.body));
        } else if let Ok(service) = serde_json::from_slice::<ServiceStatus>(&answer.body) {
            let note = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("note").and_then(|n| n.as_str()).map(str::to_string));
            if let Some(note) = note {
                println!("{}: {note}; nothing changed", service.name);
            }
            print!("{}", service_text(&service, true));
        }
    }
    exit_for(&answer)
}

async fn reload(target: &Target, json: bool) -> ExitCode {
    let answer = match call(target, Method::POST, "/reload", None).await {
        Ok(answer) => answer,
        Err(err) => return unreachable_exit(err),
    };
    let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    if json {
        print!("{}", String::from_utf8_lossy(&answer.body));
    } else if answer.status.is_success() {
        println!(
            "reloaded: config version {}",
            value["version"].as_str().unwrap_or("?")
        );
    } else if let Some(errors) = value["errors"].as_array() {
        for error in errors {
            eprintln!("{}", error.as_str().unwrap_or_default());
        }
        eprintln!("cutover: the config was not reloaded; the running one stays");
        return ExitCode::from(1);
    }
    exit_for(&answer)
}

//! `cutover status`: the rollouts as text, once or redrawn every second (`--watch`).

use std::process::ExitCode;
use std::time::Duration;

use http::Method;

use super::client::{call, Target};
use super::commands::{exit_for, unreachable_exit};
use crate::status::{ServiceStatus, Status};

pub(super) async fn status(
    target: &Target,
    json: bool,
    watch: bool,
    only: Option<&str>,
) -> ExitCode {
    loop {
        let path = match only {
            Some(service) => format!("/services/{service}"),
            None => "/status".to_string(),
        };
        let answer = match call(target, Method::GET, &path, None).await {
            Ok(answer) => answer,
            Err(err) => return unreachable_exit(err),
        };
        if !answer.status.is_success() {
            return exit_for(&answer);
        }
        let text = if json {
            String::from_utf8_lossy(&answer.body).into_owned()
        } else if only.is_some() {
            serde_json::from_slice::<ServiceStatus>(&answer.body)
                .map(|s| service_text(&s, true))
                .unwrap_or_default()
        } else {
            serde_json::from_slice::<Status>(&answer.body)
                .map(|s| status_text(&s))
                .unwrap_or_default()
        };
        if !watch {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        // Clear the screen and redraw from the top.
        print!("\x1b[2J\x1b[H{text}\n(refreshing every second; Ctrl-C to stop)\n");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every service, then the config.
pub(crate) fn status_text(status: &Status) -> String {
    let mut out = String::new();
    for service in &status.services {
        out.push_str(&service_text(service, false));
    }
    out.push_str(&format!(
        "config {} version {} loaded {}\n",
        status.config.path, status.config.version, status.config.loaded_at
    ));
    if let Some(error) = &status.config.last_error {
        out.push_str(&format!(
            "  LAST RELOAD FAILED ({}), the running config stays:\n",
            status.config.last_error_at.as_deref().unwrap_or("?")
        ));
        for line in error.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// One service, for people.
pub(crate) fn service_text(service: &ServiceStatus, detailed: bool) -> String {
    let state = service.state.as_str().to_uppercase();
    let mut out = format!("{}  {state}", service.name);
    if service.steps > 0 {
        out.push_str(&format!("  step {}/{}", service.step, service.steps));
    }
    out.push_str(&format!("  NEW {}%", service.weight));
    if let Some(next) = service.next_weight {
        out.push_str(&format!(" -> {next}%"));
    }
    if let Some(hold) = service.hold_remaining_s {
        out.push_str(&format!(
            "  hold {} left",
            humantime::format_duration(Duration::from_secs(hold.ceil() as u64))
        ));
    }
    out.push('\n');
    if let Some(step) = &service.step_description {
        out.push_str(&format!("  step: {step}\n"));
    }
    if let Some(reason) = &service.reason {
        out.push_str(&format!("  last: {reason}\n"));
    }
    if let Some(check) = &service.last_check {
        out.push_str(&format!(
            "  check {} at {}: NEW {} | OLD {}\n",
            check.result.label().to_uppercase(),
            check.at,
            check.new,
            check.old
        ));
        for breach in &check.breaches {
            out.push_str(&format!("    breach: {breach}\n"));
        }
        if let Some(note) = &check.note {
            out.push_str(&format!("    note: {note}\n"));
        }
    }
    if let Some(threshold) = service.failure_threshold {
        if service.consecutive_failures > 0 {
            out.push_str(&format!(
                "  failed checks in a row: {}/{threshold}\n",
                service.consecutive_failures
            ));
        }
    }
    if detailed {
        for hook in &service.hooks {
            let last = match (&hook.last_result, &hook.last_detail) {
                (Some(result), Some(detail)) => format!(
                    "{result} ({detail}, {}ms) at {}",
                    hook.last_duration_ms.unwrap_or_default(),
                    hook.last_at.as_deref().unwrap_or("?")
                ),
                _ => "not run yet".to_string(),
            };
            let running = if hook.running { " [running]" } else { "" };
            out.push_str(&format!(
                "  hook {}: {last}{running}, {} run(s)\n",
                hook.name, hook.runs
            ));
            for line in hook
                .stderr_tail
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                out.push_str(&format!("    stderr: {line}\n"));
            }
        }
        for backend in &service.backends {
            let state = match (backend.up, backend.healthy, backend.ejected) {
                (true, _, _) => "up",
                (false, false, _) => "down (health checks)",
                (false, true, true) => "ejected (failures)",
                _ => "down",
            };
            out.push_str(&format!(
                "  backend {} {}: {state}, {} in flight\n",
                backend.pool, backend.addr, backend.in_flight
            ));
        }
    }
    out.push('\n');
    out
}

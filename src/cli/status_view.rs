//! `cutover status`: the rollouts as text, once or redrawn every second (`--watch`).

use std::process::ExitCode;
use std::time::Duration;

use http::Method;

use super::client::{call, ClientError, Target};
use super::commands::{exit_for, unreachable_exit};
use crate::rollout::controller::status::FleetStatus;
use crate::status::{HookStatus, ServiceStatus, Status};

/// Prints the status once, or redraws it every second. A watch outlives the proxy it
/// watches: while the admin API cannot be reached (a restart, a crash) it says so, keeps the
/// last view on screen and tries again every second.
pub(super) async fn status(
    target: &Target,
    json: bool,
    watch: bool,
    only: Option<&str>,
) -> ExitCode {
    let path = match only {
        Some(service) => format!("/services/{service}"),
        None => "/status".to_string(),
    };
    let mut last_view = String::new();
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let problem = match call(target, Method::GET, &path, None).await {
            Ok(answer) if answer.status.is_success() => {
                let text = match render(&answer.body, json, only.is_some()) {
                    Ok(text) => text,
                    Err(err) => {
                        eprintln!("cutover: the admin API answered something unreadable: {err}");
                        return ExitCode::from(1);
                    }
                };
                if !watch {
                    print!("{text}");
                    return ExitCode::SUCCESS;
                }
                last_view = text;
                lost_since = None;
                None
            }
            // Refused (no such service, no token): retrying will not help.
            Ok(answer) if answer.status.is_client_error() || !watch => return exit_for(&answer),
            Ok(answer) => Some(format!("the admin API answered {}", answer.status)),
            Err(err) if !watch => return unreachable_exit(err),
            Err(ClientError::Unreachable(message)) => {
                Some(format!("cannot reach the admin API at {message}"))
            }
        };
        // Clear the screen and redraw from the top.
        match problem {
            None => print!("\x1b[2J\x1b[H{last_view}\n(refreshing every second; Ctrl-C to stop)\n"),
            Some(problem) => {
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                print!(
                    "\x1b[2J\x1b[H{last_view}\n{problem}\nreconnecting (for {}s); the view above is from before; Ctrl-C to stop\n",
                    since.elapsed().as_secs()
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn render(body: &[u8], json: bool, one: bool) -> Result<String, serde_json::Error> {
    if json {
        return Ok(String::from_utf8_lossy(body).into_owned());
    }
    if one {
        serde_json::from_slice::<ServiceStatus>(body).map(|s| service_text(&s, true))
    } else {
        serde_json::from_slice::<Status>(body).map(|s| status_text(&s))
    }
}

/// Every service, then the config.
pub(crate) fn status_text(status: &Status) -> String {
    let mut out = String::new();
    for service in &status.services {
        out.push_str(&service_text(service, false));
    }
    if let Some(fleet) = &status.fleet {
        out.push_str(&fleet_text(fleet));
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

/// Who leads the fleet, and a row per member: what it runs and what it routes.
pub(crate) fn fleet_text(fleet: &FleetStatus) -> String {
    let etcd = if fleet.connected {
        "connected"
    } else {
        "UNREACHABLE (serving the last routing, deciding nothing)"
    };
    let mut out = format!(
        "fleet {}  this instance {}  leader {}  etcd {etcd}\n",
        fleet.prefix,
        fleet.instance,
        fleet.leader.as_deref().unwrap_or("NONE")
    );
    if let Some(blocked) = &fleet.blocked {
        out.push_str(&format!("  NOT ADVANCING: {blocked}\n"));
    }
    let mut rows = vec![[
        "INSTANCE".to_string(),
        "ROLE".into(),
        "VERSION".into(),
        "CONFIG".into(),
        "RECORD AGE".into(),
        "ROUTES NEW".into(),
    ]];
    for member in &fleet.instances {
        let role = if fleet.leader.as_deref() == Some(member.id.as_str()) {
            "leader"
        } else {
            "follower"
        };
        let config = if member.config_agrees {
            "same".to_string()
        } else {
            format!("DIFFERS ({})", member.config_hash)
        };
        let age = format!(
            "{:.1}s{}",
            member.age_s,
            if member.stale { " STALE" } else { "" }
        );
        let weights = member
            .weights
            .iter()
            .map(|(service, weight)| {
                let tripped = member.local_trips.iter().any(|s| s == service);
                let note = if tripped { " (LOCAL TRIP)" } else { "" };
                format!("{service} {weight}%{note}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        rows.push([
            member.id.clone(),
            role.into(),
            member.version.clone(),
            config,
            age,
            weights,
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(&format!("  {}\n", line.join("  ").trim_end()));
    }
    out.push('\n');
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
            "  check #{} {} at {}: NEW {} | OLD {}\n",
            check.seq,
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
    if !detailed {
        // Why the rollout is stuck: a step hook (gate, run) whose last run failed.
        let stuck = matches!(service.state.as_str(), "waiting" | "progressing" | "paused");
        for hook in service.hooks.iter().filter(|_| stuck) {
            let step_hook = matches!(hook.last_event.as_deref(), Some("gate" | "run"));
            let failed = hook.last_result.as_deref().is_some_and(|r| r != "ok");
            if step_hook && failed {
                out.push_str(&format!(
                    "  {} {}: {} ({}) at {}\n",
                    hook.last_event.as_deref().unwrap_or_default(),
                    hook.name,
                    hook.last_result.as_deref().unwrap_or_default(),
                    hook.last_detail.as_deref().unwrap_or("?"),
                    hook.last_at.as_deref().unwrap_or("?")
                ));
                for line in output_tail(hook, 2) {
                    out.push_str(&format!("    {line}\n"));
                }
            }
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
            for line in output_tail(hook, 3) {
                out.push_str(&format!("    {line}\n"));
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

/// The last `n` lines a hook wrote, labelled: stderr if it wrote any, else stdout (a script
/// that explains itself on stdout must be heard too).
fn output_tail(hook: &HookStatus, n: usize) -> Vec<String> {
    let (label, text) = if hook.stderr_tail.trim().is_empty() {
        ("stdout", &hook.stdout_tail)
    } else {
        ("stderr", &hook.stderr_tail)
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| format!("{label}: {line}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::controller::status::FleetMember;

    fn member(id: &str, agrees: bool, age_s: f64, weight: f64) -> FleetMember {
        FleetMember {
            id: id.into(),
            age_s,
            config_hash: "00ff".into(),
            version: "1.2.3".into(),
            stale: age_s > 3.0,
            config_agrees: agrees,
            weights: [("api".to_string(), weight)].into(),
            ..FleetMember::default()
        }
    }

    #[test]
    fn the_member_table_says_who_leads_what_each_runs_and_routes() {
        let mut tripped = member("web-3", true, 0.4, 0.0);
        tripped.local_trips = vec!["api".into()];
        let fleet = FleetStatus {
            prefix: "/cutover/prod".into(),
            instance: "web-2".into(),
            leader: Some("web-1".into()),
            connected: true,
            blocked: Some("instance `web-2` runs config 00ff".into()),
            instances: vec![
                member("web-1", true, 0.25, 40.0),
                member("web-2", false, 4.0, 40.0),
                tripped,
            ],
        };
        let text = fleet_text(&fleet);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "fleet /cutover/prod  this instance web-2  leader web-1  etcd connected"
        );
        assert_eq!(
            lines[1],
            "  NOT ADVANCING: instance `web-2` runs config 00ff"
        );
        assert_eq!(
            &lines[2..6],
            [
                "  INSTANCE  ROLE      VERSION  CONFIG          RECORD AGE  ROUTES NEW",
                "  web-1     leader    1.2.3    same            0.2s        api 40%",
                "  web-2     follower  1.2.3    DIFFERS (00ff)  4.0s STALE  api 40%",
                "  web-3     follower  1.2.3    same            0.4s        api 0% (LOCAL TRIP)",
            ]
        );
        let cut_off = FleetStatus {
            connected: false,
            leader: None,
            ..fleet
        };
        assert!(fleet_text(&cut_off).starts_with(
            "fleet /cutover/prod  this instance web-2  leader NONE  etcd UNREACHABLE"
        ));
    }
}

//! The command line (SPEC §1).
//!
//! Exit codes: 0 ok, 1 invalid input or refused operation (message on stderr), 2 usage
//! error (clap), 3 cannot reach the admin API.
//!
//! Client commands find the admin API from `--admin URL` or `CUTOVER_ADMIN`, else the
//! config's `admin.addr`; the token from `--token-file`, `CUTOVER_TOKEN`, or the config's
//! `admin.token_file`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::{self, Weight};
use crate::rollout::schedule::{self, Plan};
use crate::status::{ServiceStatus, Status};

const DEFAULT_CONFIG: &str = "config/cutover.yaml";
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Move a live service from old servers to new ones without losing a request",
    long_about = None,
    after_help = "Without a command, `cutover -c FILE` runs the proxy, like `cutover run -c FILE`."
)]
pub struct Cli {
    /// The config file.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The admin API, like http://127.0.0.1:9901 (client commands).
    #[arg(long, global = true, env = "CUTOVER_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// A file holding the admin token (client commands).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the admin API's JSON instead of text (client commands).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: listeners, rollouts, hooks and the admin API.
    Run,
    /// Check a config file: exit 0 if valid, else print every error with file:line:col.
    Validate,
    /// Print each service's rollout timeline: steps, weights, earliest starts, the minimum
    /// duration and the worst-case time from a regression to its rollback.
    Plan {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// A self-contained demonstration: two local backends, a proxy and a fast rollout.
    Demo {
        /// Make NEW start failing partway, to watch an automatic rollback.
        #[arg(long)]
        break_new: bool,
    },
    /// Show the rollout of every service (or one).
    Status {
        /// Redraw every second.
        #[arg(long)]
        watch: bool,
        service: Option<String>,
    },
    /// Start a rollout configured with `start: manual`.
    Start { service: String },
    /// Freeze the weight and the hold clock.
    Pause { service: String },
    /// Continue a paused rollout.
    Resume { service: String },
    /// Complete the current step now (`--full`: jump to the last step).
    Promote {
        service: String,
        #[arg(long)]
        full: bool,
    },
    /// Send all traffic back to OLD now.
    Rollback { service: String },
    /// Start a rolled back rollout again from its first step.
    Retry { service: String },
    /// Set NEW's weight by hand; the rollout stays paused at it.
    SetWeight {
        service: String,
        /// Like 30, 30% or 0.5%.
        percent: String,
    },
    /// Reload the config file (like SIGHUP).
    Reload,
}

/// Runs the command line; returns the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        None | Some(Command::Run) => match &cli.config {
            Some(path) => {
                crate::app::init_logging();
                crate::app::run(path)
            }
            None => {
                usage("`cutover run` needs the config file: cutover run -c config/cutover.yaml")
            }
        },
        Some(Command::Validate) => validate(&config_path(&cli)),
        Some(Command::Plan { ref service }) => plan(&config_path(&cli), service.as_deref()),
        Some(Command::Demo { break_new }) => crate::demo::main(break_new),
        Some(ref command) => client(&cli, command),
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("cutover: {message}");
    ExitCode::from(2)
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

fn validate(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            let rollouts = config
                .services
                .iter()
                .filter(|s| s.rollout.is_some())
                .count();
            println!(
                "{}: ok ({} listener(s), {} service(s), {} with a rollout)",
                path.display(),
                config.listeners.len(),
                config.services.len(),
                rollouts
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::from(1)
        }
    }
}

fn plan(path: &Path, only: Option<&str>) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let services: Vec<_> = config
        .services
        .iter()
        .filter(|s| only.is_none_or(|name| s.name == name))
        .collect();
    if services.is_empty() {
        eprintln!("cutover: no service named `{}`", only.unwrap_or_default());
        return ExitCode::from(1);
    }
    for service in services {
        print!("{}", plan_text(service));
    }
    ExitCode::SUCCESS
}

/// The timeline of one service, as text.
pub fn plan_text(service: &config::Service) -> String {
    let Some(plan) = Plan::of(service) else {
        return format!(
            "service {}: no rollout; static weight {}\n\n",
            service.name, service.weight
        );
    };
    let timeline = schedule::timeline(&plan, service.weight);
    let start = match plan.start {
        config::StartMode::Auto => "starts on the first run",
        config::StartMode::Manual => "waits for `cutover start`",
    };
    let mut out = format!(
        "service {}: {} steps, {start}\n",
        service.name,
        plan.steps.len()
    );
    out.push_str("  step  earliest start  NEW weight  what\n");
    for entry in &timeline.entries {
        let at = humantime::format_duration(entry.earliest_start).to_string();
        let at = if entry.after_open_ended {
            format!("{at}+")
        } else {
            at
        };
        out.push_str(&format!(
            "  {:>4}  {:>14}  {:>10}  {}\n",
            entry.index + 1,
            at,
            entry.weight.to_string(),
            entry.description
        ));
    }
    out.push_str(&format!(
        "  minimum total: {} (the holds; \"+\" marks starts that also wait for checks, gates, hooks or pauses)\n",
        humantime::format_duration(timeline.minimum_total)
    ));
    match (&timeline.worst_case_detection, &plan.analysis) {
        (Some(detection), Some(analysis)) => {
            out.push_str(&format!(
                "  worst case from a regression to rollback: {} (window {} filling with bad traffic, then {} failed checks {} apart)\n",
                humantime::format_duration(detection.regression),
                humantime::format_duration(analysis.window),
                analysis.failure_threshold,
                humantime::format_duration(analysis.interval),
            ));
            match (detection.outage, &analysis.trip) {
                (Some(outage), Some(trip)) => out.push_str(&format!(
                    "  hard outage: rolled back within {} (trip at {:.0}% errors, with at least {} NEW requests a second)\n",
                    humantime::format_duration(outage),
                    trip.error_rate * 100.0,
                    trip.min_requests
                )),
                _ => out.push_str("  hard outage: no trip configured; detected like any regression\n"),
            }
        }
        _ => out.push_str(
            "  no analysis: regressions are not detected; steps advance on their holds alone\n",
        ),
    }
    out.push('\n');
    out
}

/// The admin API's address and token, from flags, environment and config.
struct Target {
    authority: String,
    token: Option<String>,
}

fn target(cli: &Cli) -> Result<Target, String> {
    let config_path = config_path(cli);
    let (config_admin, config_token_file) = if cli.config.is_some() || config_path.exists() {
        config::load::admin_settings(&config_path).unwrap_or_default()
    } else {
        (None, None)
    };
    let admin = cli
        .admin
        .clone()
        .or(config_admin)
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    let authority = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if admin.starts_with("https://") {
        return Err("the admin API speaks plain HTTP: use http://host:port".into());
    }
    let token = match (
        &cli.token_file,
        std::env::var("CUTOVER_TOKEN").ok(),
        config_token_file,
    ) {
        (Some(file), _, _) => Some(read_token(file)?),
        (None, Some(token), _) if !token.trim().is_empty() => Some(token.trim().to_string()),
        (None, _, Some(file)) => Some(read_token(&file)?),
        _ => None,
    };
    Ok(Target { authority, token })
}

fn read_token(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|err| format!("cannot read token file {}: {err}", path.display()))
}

/// An answer from the admin API.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

#[derive(Debug)]
enum ClientError {
    Unreachable(String),
}

async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Answer, ClientError> {
    let unreachable =
        |what: String| ClientError::Unreachable(format!("{}: {what}", target.authority));
    let connect = tokio::net::TcpStream::connect(target.authority.as_str());
    let stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|err| unreachable(err.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = &target.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|err| unreachable(err.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| unreachable("no answer within 30s".into()))?
        .map_err(|err| unreachable(err.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| unreachable(err.to_string()))?
        .to_bytes();
    Ok(Answer { status, body })
}

fn client(cli: &Cli, command: &Command) -> ExitCode {
    let target = match target(cli) {
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
            Command::Status { watch, service } => {
                status(&target, cli.json, *watch, service.as_deref()).await
            }
            Command::Reload => reload(&target, cli.json).await,
            command => control(&target, cli.json, command).await,
        }
    })
}

fn exit_for(answer: &Answer) -> ExitCode {
    if answer.status.is_success() {
        return ExitCode::SUCCESS;
    }
    let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).trim().to_string());
    eprintln!("cutover: {} {message}", answer.status);
    ExitCode::from(1)
}

fn unreachable_exit(err: ClientError) -> ExitCode {
    let ClientError::Unreachable(message) = err;
    eprintln!("cutover: cannot reach the admin API at {message}");
    ExitCode::from(3)
}

async fn control(target: &Target, json: bool, command: &Command) -> ExitCode {
    let (path, body) = match command {
        Command::Start { service } => (format!("/services/{service}/start"), None),
        Command::Pause { service } => (format!("/services/{service}/pause"), None),
        Command::Resume { service } => (format!("/services/{service}/resume"), None),
        Command::Promote { service, full } => {
            let query = if *full { "?full=true" } else { "" };
            (format!("/services/{service}/promote{query}"), None)
        }
        Command::Rollback { service } => (format!("/services/{service}/rollback"), None),
        Command::Retry { service } => (format!("/services/{service}/retry"), None),
        Command::SetWeight { service, percent } => {
            let weight = config::parse_percent(percent)
                .ok()
                .and_then(Weight::from_percent);
            let Some(weight) = weight else {
                eprintln!("cutover: `{percent}` is not a weight (0..100, like 30 or 0.5%)");
                return ExitCode::from(1);
            };
            (
                format!("/services/{service}/weight"),
                Some(serde_json::json!({ "weight": weight.percent() }).to_string()),
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

async fn status(target: &Target, json: bool, watch: bool, only: Option<&str>) -> ExitCode {
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
pub fn status_text(status: &Status) -> String {
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
pub fn service_text(service: &ServiceStatus, detailed: bool) -> String {
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

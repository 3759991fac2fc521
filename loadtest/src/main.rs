//! Command-line entry point: parses arguments, runs one subcommand, prints
//! its report and turns the outcome into an exit code.
//!
//! Exit codes: 0 the run happened; 1 `--max-errors` was exceeded; 2 the run
//! could not happen (bad arguments, unreadable files, cannot bind);
//! 130 interrupted.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use loadtest::backend::{Backend, BackendConfig};
use loadtest::duration::parse_duration;
use loadtest::load::{self, LoadPlan};
use loadtest::scenarios;
use loadtest::storm::{self, AdminPlan, StormPlan};
use loadtest::target::Target;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Open-loop HTTP/1.1 load, scripted backends and reload storms for measuring cutover",
    long_about = "Open-loop HTTP/1.1 load, scripted backends and reload storms for measuring cutover.\n\n\
        Latency is measured from each request's scheduled send time, so a stalled server shows up \
        as high latency instead of as a quietly lower request rate (coordinated omission is corrected).\n\n\
        Exit codes: 0 ran, 1 --max-errors exceeded, 2 could not run, 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send open-loop load at a constant rate and report latency percentiles.
    ///
    /// Requests are scheduled every 1/RATE seconds whatever the server does; if no
    /// connection is free at a scheduled time the request waits, and that wait is part
    /// of its latency. Failures = transport errors + 5xx responses.
    ///
    /// Example:
    ///   loadtest load --url http://127.0.0.1:8080/ --rate 500 --duration 10s --count-header X-Backend
    #[command(verbatim_doc_comment)]
    Load(LoadArgs),
    /// Run a scripted HTTP/1.1 backend (prints `listening ADDR` first).
    ///
    /// Answers every request with --status (or --fail-status with probability --fail-rate)
    /// after --delay, with header `X-Backend: NAME`. Binds 127.0.0.1 unless told
    /// otherwise. Change it while it runs:
    ///
    ///   curl -X POST 'http://ADDR/__loadtest/fail-rate?value=0.3'
    ///   curl -X POST 'http://ADDR/__loadtest/delay?value=200ms'
    ///   curl 'http://ADDR/__loadtest/state'
    ///
    /// Stops on SIGINT/SIGTERM or after --lifetime.
    #[command(verbatim_doc_comment)]
    Backend(BackendArgs),
    /// Measure what config reloads cost: a quiet phase, then the same load while the
    /// config file is rewritten (and optionally reloaded through the admin API).
    ///
    /// Each rewrite appends `# loadtest-reload N` to the original content, atomically
    /// (temp file + rename). The original file is restored at the end, also on error or
    /// SIGINT/SIGTERM.
    ///
    /// Example:
    ///   loadtest reload-storm --url http://127.0.0.1:8080/ --config cutover.yaml \
    ///     --reloads 40 --interval 100ms --rate 300 --quiet 5s --admin http://127.0.0.1:9901
    #[command(verbatim_doc_comment)]
    ReloadStorm(StormArgs),
    /// Run the rollback scenario matrix against the real cutover binary.
    ///
    /// Each run starts `cutover run` as a child (temporary directory, 127.0.0.1:0), two
    /// scripted OLD and two NEW backends, and open-loop load (200 req/s; 3 req/s for low
    /// traffic). Once NEW holds 25% with passing checks, a fault begins on NEW; the
    /// proxy's decision log says whether and how fast NEW's weight went to 0.
    ///
    /// Example:
    ///   loadtest scenarios --cutover target/release/cutover --seeds 3 --markdown table.md
    #[command(verbatim_doc_comment)]
    Scenarios(ScenarioArgs),
}

#[derive(Args)]
struct ScenarioArgs {
    /// The cutover binary to run.
    #[arg(long)]
    cutover: PathBuf,
    /// Analysis methods, comma separated.
    #[arg(long, default_value = "threshold,statistical", value_delimiter = ',')]
    methods: Vec<String>,
    /// Runs of each scenario and method.
    #[arg(long, default_value_t = 1)]
    seeds: u32,
    /// Runs at the same time.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Only the scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Also write the table to this file, as Markdown.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Copy the decision log of every measured run into this directory.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
}

/// Options shared by `load` and `reload-storm`.
#[derive(Args)]
struct RequestArgs {
    /// Target URL (plain http:// only).
    #[arg(long)]
    url: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(long = "header", value_name = "'NAME: VALUE'")]
    headers: Vec<String>,
    /// Size of the keep-alive connection pool (one request at a time each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Give up on a request this long after its *scheduled* send time.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Tally the values of this response header (e.g. X-Backend, X-Pool).
    #[arg(long, value_name = "HEADER")]
    count_header: Option<String>,
    /// Print the report as JSON on stdout (the human summary goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Requests per second (arrival rate, not concurrency).
    #[arg(long)]
    rate: f64,
    /// How long to keep scheduling requests.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop scheduling after this many requests, even if time remains.
    #[arg(long)]
    requests: Option<u64>,
    /// Exit with code 1 if more than N requests failed (transport errors + 5xx).
    #[arg(long, value_name = "N")]
    max_errors: Option<u64>,
}

#[derive(Args)]
struct BackendArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Allow listening on a non-loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Value of the X-Backend response header.
    #[arg(long, default_value = "backend")]
    name: String,
    /// Status of normal answers.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Delay before every answer.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    delay: Duration,
    /// Fraction of requests (0..=1) answered with --fail-status.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Status of failed answers.
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// Response body.
    #[arg(long, default_value = "ok\n")]
    body: String,
    /// Stop by itself after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    lifetime: Duration,
}

#[derive(Args)]
struct StormArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Config file to rewrite (restored at the end).
    #[arg(long)]
    config: PathBuf,
    /// Number of rewrites during the storm phase.
    #[arg(long, default_value_t = 40)]
    reloads: u32,
    /// Time between rewrites; the storm phase lasts RELOADS x INTERVAL.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: Duration,
    /// Requests per second in both phases.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Length of the baseline phase without reloads.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    quiet: Duration,
    /// Admin base URL; `POST {admin}/reload` after each rewrite.
    #[arg(long)]
    admin: Option<String>,
    /// File holding the admin bearer token.
    #[arg(long, requires = "admin")]
    token_file: Option<PathBuf>,
    /// Exit with code 1 if storm-phase failures plus rejected reloads exceed N.
    #[arg(long, value_name = "N")]
    max_errors: Option<u64>,
}

/// The exit code for "could not run".
const EXIT_UNUSABLE: u8 = 2;
/// The conventional exit code after SIGINT (also used for SIGTERM).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        match cli.command {
            Command::Load(args) => run_load(args).await,
            Command::Backend(args) => run_backend(args).await,
            Command::ReloadStorm(args) => run_storm(args).await,
            Command::Scenarios(args) => run_scenarios(args).await,
        }
    })
}

async fn run_load(args: LoadArgs) -> ExitCode {
    let plan = match build_plan(&args.request, args.rate, args.duration) {
        Ok(plan) => plan.with_max_requests(args.requests),
        Err(message) => return fail(message),
    };
    let report = tokio::select! {
        report = load::run(&plan) => report,
        () = shutdown_signal() => return interrupted(),
    };
    print_report(args.request.json, &report, &report.render_text());
    judge(args.max_errors, report.failures)
}

async fn run_backend(args: BackendArgs) -> ExitCode {
    let config = BackendConfig {
        listen: args.listen,
        allow_remote: args.allow_remote,
        name: args.name,
        status: args.status,
        delay: args.delay,
        fail_rate: args.fail_rate,
        fail_status: args.fail_status,
        body: args.body,
        lifetime: args.lifetime,
    };
    let backend = match Backend::start(config).await {
        Ok(backend) => backend,
        Err(e) => return fail(e.to_string()),
    };
    // Scripts wait for this exact first line to learn the port.
    println!("listening {}", backend.addr());
    let _ = std::io::stdout().flush();
    let summary = backend.run_until(shutdown_signal()).await;
    eprintln!(
        "loadtest backend: stopped ({:?}) after {} requests, {} failed on purpose",
        summary.reason, summary.requests, summary.failed
    );
    ExitCode::SUCCESS
}

async fn run_storm(args: StormArgs) -> ExitCode {
    let plan = match build_storm_plan(&args) {
        Ok(plan) => plan,
        Err(message) => return fail(message),
    };
    // Dropping the storm future on SIGINT/SIGTERM runs its restore guard.
    let outcome = tokio::select! {
        outcome = storm::run(&plan) => outcome,
        () = shutdown_signal() => return interrupted(),
    };
    match outcome {
        Ok(report) => {
            print_report(args.request.json, &report, &report.render_text());
            judge(args.max_errors, report.storm_failures())
        }
        Err(e) => fail(e.to_string()),
    }
}

async fn run_scenarios(args: ScenarioArgs) -> ExitCode {
    let methods: Result<Vec<_>, _> = args
        .methods
        .iter()
        .map(|m| scenarios::parse_method(m))
        .collect();
    let methods = match methods {
        Ok(methods) => methods,
        Err(message) => return fail(message),
    };
    if !args.cutover.is_file() {
        return fail(format!(
            "--cutover {}: no such file",
            args.cutover.display()
        ));
    }
    let selected: Vec<_> = scenarios::scenarios()
        .into_iter()
        .filter(|s| {
            args.only
                .as_deref()
                .is_none_or(|text| s.name.contains(text))
        })
        .collect();
    if selected.is_empty() || args.seeds == 0 {
        return fail("nothing to run (check --only and --seeds)".to_string());
    }
    let plan = scenarios::MatrixPlan {
        binary: args.cutover,
        scenarios: selected,
        methods,
        seeds: args.seeds,
        schedule: scenarios::Schedule {
            keep_logs: args.keep_logs,
            ..scenarios::Schedule::default()
        },
        parallel: args.parallel,
    };
    // Dropping the matrix on a signal kills every child and stops every backend.
    let rows = tokio::select! {
        rows = scenarios::run_matrix(&plan) => rows,
        () = shutdown_signal() => return interrupted(),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(message) => return fail(message),
    };
    let table = scenarios::markdown(&rows);
    print!("{table}");
    if let Some(path) = &args.markdown {
        if let Err(e) = std::fs::write(path, &table) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    ExitCode::SUCCESS
}

fn build_plan(request: &RequestArgs, rate: f64, duration: Duration) -> Result<LoadPlan, String> {
    let target = Target::parse(&request.url, &request.method, &request.headers)
        .map_err(|e| e.to_string())?;
    LoadPlan::new(target, rate, duration, request.connections, request.timeout)
        .and_then(|plan| plan.with_count_header(request.count_header.as_deref()))
        .map_err(|e| e.to_string())
}

fn build_storm_plan(args: &StormArgs) -> Result<StormPlan, String> {
    // The load duration is replaced per phase; `quiet` is a valid placeholder.
    let load = build_plan(&args.request, args.rate, args.quiet)?;
    let token = match &args.token_file {
        Some(path) => Some(storm::read_token(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let admin = match &args.admin {
        Some(url) => Some(
            AdminPlan::new(url, token.as_deref(), args.request.timeout)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let plan = StormPlan {
        load,
        config: args.config.clone(),
        reloads: args.reloads,
        interval: args.interval,
        quiet: args.quiet,
        admin,
    };
    plan.validate().map_err(|e| e.to_string())?;
    Ok(plan)
}

/// JSON on stdout when asked (the human text then goes to stderr so both
/// are available), otherwise the human text on stdout.
fn print_report(json: bool, report: &impl Serialize, text: &str) {
    if !json {
        print!("{text}");
        return;
    }
    eprint!("{text}");
    match serde_json::to_string_pretty(report) {
        Ok(encoded) => println!("{encoded}"),
        Err(e) => eprintln!("loadtest: cannot encode report: {e}"),
    }
}

fn judge(max_errors: Option<u64>, failures: u64) -> ExitCode {
    match max_errors {
        Some(max) if failures > max => {
            eprintln!("loadtest: {failures} failures exceed --max-errors {max}");
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("loadtest: {message}");
    ExitCode::from(EXIT_UNUSABLE)
}

fn interrupted() -> ExitCode {
    eprintln!("loadtest: interrupted");
    ExitCode::from(EXIT_INTERRUPTED)
}

/// Resolves on SIGINT or SIGTERM (process supervisors send the latter).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            // Without a SIGTERM handler, still stop on Ctrl-C (and lifetime).
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! The command line (SPEC §1).
//!
//! Exit codes: 0 ok, 1 invalid input or refused operation (message on stderr), 2 usage
//! error (clap), 3 cannot reach the admin API.
//!
//! Client commands find the admin API from `--admin URL` or `CUTOVER_ADMIN`, else the
//! config's `admin.addr`; the token from `--token-file`, `CUTOVER_TOKEN`, or the config's
//! `admin.token_file`.

mod client;
mod commands;
mod diff_view;
mod generate;
mod history;
mod plan_view;
mod status_view;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config;

const DEFAULT_CONFIG: &str = "config/cutover.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Move a live service from old servers to new ones without losing a request",
    long_about = None,
    after_help = "Without a command, `cutover -c FILE` runs the proxy, like `cutover run -c FILE`.\n\
                  Exit codes: 0 ok, 1 invalid input or refused, 2 usage error, 3 admin API unreachable."
)]
pub struct Cli {
    /// The config file [default: config/cutover.yaml; `run` needs it given].
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How a client command reaches the admin API of a running cutover.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Admin API")]
pub struct ClientArgs {
    /// The admin API, like http://127.0.0.1:9901 [default: the running process's address
    /// recorded next to the config, else the config's admin.addr, else 127.0.0.1:9901].
    #[arg(long, env = "CUTOVER_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// A file holding the admin token [default: the token in the CUTOVER_TOKEN environment
    /// variable, else the config's admin.token_file].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the admin API's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: listeners, rollouts, hooks and the admin API (with its status page at /).
    Run,
    /// Check a config file: exit 0 if valid, else print every error with file:line:col.
    Validate,
    /// Print each service's rollout timeline: steps, weights, earliest starts, the minimum
    /// duration and the worst-case time from a regression to its rollback.
    Plan {
        /// Only this service.
        #[arg(long, value_name = "NAME")]
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
        /// Only this service.
        service: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a rollout configured with `start: manual`.
    Start {
        /// The service to start.
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Freeze the weight and the hold clock.
    Pause {
        /// The service to pause.
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Continue a paused rollout.
    Resume {
        /// The service to resume.
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Complete the current step now (`--full`: jump to the last step).
    Promote {
        /// The service to promote.
        service: String,
        /// Jump to the last step (100%) instead of completing only the current one.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send all traffic back to OLD now.
    Rollback {
        /// The service to roll back.
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a rolled back rollout again from its first step.
    Retry {
        /// The service to retry.
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set NEW's weight by hand; the rollout stays paused at it.
    SetWeight {
        /// The service whose weight to set.
        service: String,
        /// Like 30, 30% or 0.5% (steps of 0.01%).
        percent: String,
        /// Allow lowering NEW's weight: that sends sticky users on NEW back to OLD.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A shadow step's comparisons: counts, noise learned, the last 50 mismatches.
    Diff {
        /// The service whose shadow step to show.
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reload the config file (like SIGHUP).
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a service's decision log (`state_dir/<service>.history.jsonl`); works with
    /// the proxy stopped.
    History {
        /// The service whose decisions to print.
        service: String,
        /// Keep printing new decisions as they are written.
        #[arg(long)]
        follow: bool,
        /// Only decisions at or after this time (RFC 3339, like 2026-11-30T14:30:00Z).
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per decision, as stored.
        #[arg(long)]
        json: bool,
    },
    /// Write the migration report of a service from its decision log; works with the
    /// proxy stopped.
    Report {
        /// The service whose migration to report.
        service: String,
        /// The file to write (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// html (self-contained, with charts) or md.
        #[arg(long, default_value = "html", value_parser = ["html", "md"])]
        format: String,
    },
    /// Print the JSON Schema of the config file, for editors (YAML language server).
    Schema,
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or one page per command into a directory.
    Man {
        /// Write cutover.1 and cutover-COMMAND.1 pages into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Command {
    /// The admin API options of a client command; `None` for the others.
    pub(crate) fn client_args(&self) -> Option<&ClientArgs> {
        match self {
            Command::Status { client, .. }
            | Command::Start { client, .. }
            | Command::Pause { client, .. }
            | Command::Resume { client, .. }
            | Command::Promote { client, .. }
            | Command::Rollback { client, .. }
            | Command::Retry { client, .. }
            | Command::SetWeight { client, .. }
            | Command::Diff { client, .. }
            | Command::Reload { client } => Some(client),
            Command::Run
            | Command::Validate
            | Command::Plan { .. }
            | Command::Demo { .. }
            | Command::Schema
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::History { .. }
            | Command::Report { .. } => None,
        }
    }
}

/// Runs the command line; returns the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        None | Some(Command::Run) => match &cli.config {
            Some(path) => crate::app::run(path),
            None => {
                usage("`cutover run` needs the config file: cutover run -c config/cutover.yaml")
            }
        },
        Some(Command::Validate) => validate(&config_path(&cli)),
        Some(Command::Plan { ref service }) => plan(&config_path(&cli), service.as_deref()),
        Some(Command::Demo { break_new }) => crate::demo::main(break_new),
        Some(Command::History {
            ref service,
            follow,
            ref since,
            json,
        }) => history::history(&config_path(&cli), service, follow, since.as_deref(), json),
        Some(Command::Report {
            ref service,
            ref output,
            ref format,
        }) => history::report(&config_path(&cli), service, output.as_deref(), format),
        Some(Command::Schema) => {
            println!("{}", config::json_schema_text());
            ExitCode::SUCCESS
        }
        Some(Command::Completions { shell }) => generate::completions(shell),
        Some(Command::Man { ref dir }) => generate::man(dir.as_deref()),
        Some(ref command) => commands::client(&cli, command),
    }
}

pub(crate) fn usage(message: &str) -> ExitCode {
    eprintln!("cutover: {message}");
    ExitCode::from(2)
}

pub(crate) fn config_path(cli: &Cli) -> PathBuf {
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
            for warning in config::warnings(&config) {
                eprintln!("{}: warning: {warning}", path.display());
            }
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
        print!("{}", plan_view::plan_text(service));
    }
    ExitCode::SUCCESS
}

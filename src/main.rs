//! The `cutover` binary: parse the command line and hand off (see `cli`).

use clap::Parser;

#[global_allocator]
static GLOBAL: cutover::app::Allocator = cutover::app::Allocator;

fn main() -> std::process::ExitCode {
    cutover::cli::main(cutover::cli::Cli::parse())
}

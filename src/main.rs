//! The `cutover` binary: parse the command line and hand off (see `cli`).

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cutover::cli::main(cutover::cli::Cli::parse())
}

//! Files generated from the clap definitions: shell completions and man pages, so they
//! always describe the commands this binary has.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// `cutover completions SHELL`: the script on stdout.
pub(super) fn completions(shell: Shell) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "cutover", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `cutover man`: the main page on stdout, or every page into `dir`.
pub(super) fn man(dir: Option<&Path>) -> ExitCode {
    let command = Cli::command();
    let result = match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .and_then(|()| std::io::stdout().write_all(&out))
        }
        Some(dir) => clap_mangen::generate_to(command, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let place = dir.map_or("stdout".to_string(), |d| d.display().to_string());
            eprintln!("cutover: cannot write the man page to {place}: {err}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks every command and argument: `--help` describes each one.
    #[test]
    fn every_argument_and_command_is_described() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "cutover", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:?}");
    }
}

//! `vmm machines`, `vmm props`, `vmm compat ...`: what each machine type presents, and why.

use std::process::ExitCode;

/// Introspection subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List machine types (like the reference's `-M help`).
    Machines,
}

/// Runs an introspection subcommand.
pub fn main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Machines => ExitCode::SUCCESS,
    }
}

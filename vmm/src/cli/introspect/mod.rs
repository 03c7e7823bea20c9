//! `vmm machines`, `vmm props`, `vmm compat diff`: what each machine type
//! presents, and why. Every command takes `--json`. Bad input (unknown
//! machine, type or property; a value of the wrong type) prints one line with
//! a "did you mean" where one is close, and exits with status 2.

mod diff;
mod machines;
mod props;
#[cfg(test)]
mod tests;

use compat_runtime::{Catalog, OverrideError};
use devices::generated::CATALOG;
use std::process::ExitCode;

/// Introspection subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List machine types (like the reference's `-M help`).
    Machines(machines::MachinesArgs),
    /// Show every property's effective value on a machine type, and where it came from.
    Props(props::PropsArgs),
    /// Compat tables: compare machine types.
    #[command(subcommand)]
    Compat(CompatCommand),
}

/// `vmm compat ...`.
#[derive(clap::Subcommand, Debug)]
pub enum CompatCommand {
    /// Every property that differs between two machine types, and why.
    Diff(diff::DiffArgs),
    /// Which migrations between frozen releases work, and why the others fail.
    Matrix(crate::release::matrix::MatrixArgs),
}

/// An introspection failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input (exit status 2).
    #[error(transparent)]
    Input(#[from] OverrideError),
    /// Writing JSON failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `vmm compat matrix` failed.
    #[error(transparent)]
    Matrix(#[from] crate::release::matrix::MatrixError),
}

/// Runs an introspection subcommand against the compiled catalog.
pub fn main(cmd: Command) -> ExitCode {
    let mut out = String::new();
    match run(&CATALOG, cmd, &mut out) {
        Ok(()) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a subcommand against `catalog`, writing its output to `out`.
pub fn run(catalog: &Catalog, cmd: Command, out: &mut String) -> Result<(), Error> {
    match cmd {
        Command::Machines(a) => machines::run(catalog, &a, out),
        Command::Props(a) => props::run(catalog, &a, out),
        Command::Compat(CompatCommand::Diff(a)) => diff::run(catalog, &a, out),
        Command::Compat(CompatCommand::Matrix(a)) => {
            Ok(crate::release::matrix::run(&a, catalog, out)?)
        }
    }
}

/// Provenance as one short word or delta name, with the entry's type when it
/// is an ancestor (`hw_compat_7_2 (via pci-device)`).
pub(crate) fn source(p: &compat_runtime::Provenance, type_name: &str) -> String {
    match p {
        compat_runtime::Provenance::Compat { delta, via } if via != type_name => {
            format!("{delta} (via {via})")
        }
        other => other.to_string(),
    }
}

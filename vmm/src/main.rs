//! `vmm`: run, introspect and migrate guests on versioned machine types.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vmm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Introspect(vmm::introspect::Command),
    /// Run a VM on a versioned machine type until the guest powers off.
    Run(vmm::run::RunArgs),
    /// Write the embedded guest ELF to PATH (bootable by any PVH-capable VMM).
    GuestElf { path: std::path::PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Introspect(cmd) => vmm::introspect::main(cmd),
        Command::Run(args) => vmm::run::main(args),
        Command::GuestElf { path } => vmm::run::guest_elf(&path),
    }
}

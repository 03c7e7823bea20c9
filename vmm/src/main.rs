//! `vmm`: run, introspect and migrate guests on versioned machine types.

use clap::{Parser, Subcommand};
use miette::IntoDiagnostic;
use std::process::ExitCode;
use vmm::cli::exit_with;

#[derive(Parser)]
#[command(name = "vmm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live-migrate the embedded guest's `ab` workload between two local vmm processes and check its memory.
    Demo(vmm::cli::demo::DemoArgs),
    #[command(flatten)]
    Introspect(vmm::cli::introspect::Command),
    /// Dump every VMState description as JSON (the reference's -dump-vmstate format).
    DumpVmstate(vmm::cli::dump_vmstate::DumpVmstateArgs),
    /// Send a QMP command to a running vmm (`--control`/`--qmp` socket).
    Ctl(vmm::cli::ctl::CtlArgs),
    /// Migrate a running vmm's guest live (or snapshot it to file:PATH).
    Migrate(vmm::cli::ctl::MigrateArgs),
    /// Run a VM on a versioned machine type until the guest powers off.
    Run(Box<vmm::cli::run::RunArgs>),
    /// Write the embedded guest ELF to PATH (bootable by any PVH-capable VMM).
    GuestElf { path: std::path::PathBuf },
    /// The guest CPU against this host's (`vmm cpu host`).
    #[command(subcommand)]
    Cpu(vmm::cli::cpu::CpuCommand),
    /// Credentials for TLS migrations (`vmm tls gen DIR`: a rehearsal set).
    #[command(subcommand)]
    Tls(vmm::cli::tls::TlsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => vmm::cli::demo::main(&args),
        Command::Introspect(cmd) => vmm::cli::introspect::main(cmd),
        Command::DumpVmstate(args) => vmm::cli::dump_vmstate::main(&args),
        Command::Ctl(args) => exit_with(|| vmm::cli::ctl::ctl(&args).into_diagnostic()),
        Command::Migrate(args) => exit_with(|| vmm::cli::ctl::migrate(&args).into_diagnostic()),
        Command::Run(args) => vmm::cli::run::main(*args),
        Command::GuestElf { path } => vmm::cli::run::guest_elf(&path),
        Command::Cpu(cmd) => vmm::cli::cpu::main(&cmd),
        Command::Tls(cmd) => vmm::cli::tls::main(&cmd),
    }
}

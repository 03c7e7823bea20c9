//! Repository automation (`cargo xtask --help`).
//!
//! * `cargo xtask gen`: compile `compat/*.toml` into `devices/src/generated/`.
//! * `cargo xtask gen --check`: fail (naming the files) if the committed
//!   generated code is stale.
//! * `cargo xtask release X.Y[.Z]`: freeze what release X.Y presents into
//!   `compat/releases/X.Y.lock.toml` (never rewritten).
//! * `cargo xtask bench-codegen`: compile synthetic 1x/4x/16x trees and report
//!   the time of each size.
//! * `cargo xtask bench-boot`: time to the guest's first serial line and
//!   memory beyond guest RAM, `vmm` against the reference VMM
//!   (`docs/bench-boot.md`).
//! * `cargo xtask bench-migrate`: live migration over loopback TCP (total
//!   time, downtime, bytes, CPU), `vmm` against the reference VMM
//!   (`docs/bench-migrate.md`).
//!
//! `cargo test -p xtask` also runs the tidy checks (`tidy.rs`): the layers
//! of `docs/architecture.md`, no import cycles, no KVM in the migration
//! core, no hand-written source file over 600 lines.
//!
//! The VMM benchmarks run the real `vmm` binary (`--vmm PATH`, default
//! `target/release/vmm`, built first unless `--no-build`) as a process: xtask
//! never depends on `vmm` or `devices`, so a broken generated file cannot stop
//! `cargo xtask gen` from building.

mod bench_boot;
mod bench_codegen;
mod bench_cpu;
mod bench_migrate;
mod bench_storage;
mod bench_vmm;
mod oracle;
mod procfs;
mod release;
#[cfg(test)]
mod tidy;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn generate(check: bool) -> Result<(), String> {
    let root = root();
    let compat = root.join("compat");
    let out_dir = root.join("devices/src/generated");
    let compiled = match codegen::compile_dir(&compat)
        .map_err(|e| format!("reading {}: {e}", compat.display()))?
    {
        Ok(c) => c,
        Err(failed) => {
            for r in failed.reports() {
                eprintln!("{:?}", miette::Report::new(r));
            }
            let n = failed.diags.iter().filter(|d| d.is_error()).count();
            return Err(format!("{n} error(s) in compat/; nothing generated"));
        }
    };
    for w in &compiled.warnings {
        eprintln!(
            "{:?}",
            miette::Report::new(w.with_source(&compiled.sources))
        );
    }
    release::gen_hook(&root, &compiled, check)?;
    if check {
        let stale = codegen::output::stale(&out_dir, &compiled.files).map_err(|e| e.to_string())?;
        if !stale.is_empty() {
            let names: Vec<String> = stale
                .iter()
                .map(|s| format!("devices/src/generated/{s}"))
                .collect();
            return Err(format!(
                "stale generated files (run `cargo xtask gen`): {}",
                names.join(", ")
            ));
        }
        println!("devices/src/generated is up to date");
    } else {
        let touched =
            codegen::output::write(&out_dir, &compiled.files).map_err(|e| e.to_string())?;
        if touched.is_empty() {
            println!("devices/src/generated is up to date");
        }
        for t in touched {
            println!("wrote devices/src/generated/{t}");
        }
    }
    Ok(())
}

/// Repository automation for the vmm workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile compat/*.toml into devices/src/generated/ and the release-derived files.
    Gen {
        /// Write nothing; fail, naming the files, if the committed generated code is stale.
        #[arg(long)]
        check: bool,
    },
    /// Freeze what release X.Y presents into compat/releases/X.Y.lock.toml (never rewritten).
    Release {
        /// The release: X.Y or X.Y.Z.
        #[arg(value_name = "X.Y[.Z]")]
        version: String,
    },
    /// Compile synthetic 1x/4x/16x compat trees and report the time of each size
    /// (BENCH_SIZES=1,4 limits the sizes).
    BenchCodegen,
    /// Measure exec -> first serial line and memory overhead, vmm against the
    /// reference VMM (docs/bench-boot.md).
    BenchBoot(bench_boot::Args),
    /// Measure live migration, vmm against the reference VMM (docs/bench-migrate.md).
    BenchMigrate(bench_migrate::Args),
    /// Measure storage + memory migration (NBD export + mirror), vmm against
    /// the reference VMM (docs/storage.md).
    BenchStorage(bench_storage::Args),
    /// Time `vmm cpu baseline` over 1,000 host files (target: under 0.1 s).
    BenchCpuBaseline(bench_cpu::Args),
    /// Compare our resolved property values with the reference's (`qom-get`
    /// on every machine type both know); fail on a difference not explained
    /// in compat/oracle.allow.toml.
    Oracle(oracle::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Gen { check } => generate(check),
        Command::Release { version } => release::freeze(&root(), &version),
        Command::BenchCodegen => bench_codegen::run(),
        Command::BenchBoot(args) => bench_boot::run(&args),
        Command::BenchMigrate(args) => bench_migrate::run(&args),
        Command::BenchStorage(args) => bench_storage::run(&args),
        Command::BenchCpuBaseline(args) => bench_cpu::run(&args),
        Command::Oracle(args) => oracle::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

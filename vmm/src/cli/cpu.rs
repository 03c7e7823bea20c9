//! `vmm cpu host [--json]`: what this host's KVM can give a guest CPU.

use crate::builder::config::catalog;
use crate::cpu::host;
use std::process::ExitCode;

/// `vmm cpu ...`
#[derive(clap::Subcommand, Debug)]
pub enum CpuCommand {
    /// What this host's KVM can give a guest, by feature name, and a
    /// fingerprint (vendor, family/model/stepping, microcode, kernel, vmm).
    Host {
        /// Print JSON (the input of later comparisons).
        #[arg(long)]
        json: bool,
    },
}

/// Runs `vmm cpu`.
pub fn main(cmd: &CpuCommand) -> ExitCode {
    match cmd {
        CpuCommand::Host { json } => match host::read(catalog()) {
            Ok(h) if *json => match serde_json::to_string_pretty(&h) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
            Ok(h) => {
                println!(
                    "host: {} family {} model {} stepping {} microcode {} kernel {} vmm {}",
                    h.vendor,
                    h.family,
                    h.model,
                    h.stepping,
                    if h.microcode.is_empty() {
                        "?"
                    } else {
                        &h.microcode
                    },
                    h.kernel,
                    h.vmm
                );
                println!("features ({}): {}", h.features.len(), h.features.join(" "));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("vmm cpu: {e}");
    ExitCode::FAILURE
}

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
    /// The CPU models and whether each runs on this host (like the
    /// reference's `-cpu help` with unavailable features).
    Models {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Can HOST present the guest CPU of GUEST (a `vmm cpu host --json` file,
    /// or a guest's `{ "model", "features" }`), and what is missing.
    Compare {
        guest: std::path::PathBuf,
        host: std::path::PathBuf,
    },
    /// The CPU several hosts can all present, from their `vmm cpu host
    /// --json` files, and the `--cpu` each host must be started with.
    Baseline {
        /// Host files.
        #[arg(required = true)]
        hosts: Vec<std::path::PathBuf>,
        /// Print JSON.
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
        CpuCommand::Models { json } => {
            let offered = match host::offered(catalog(), None) {
                Ok(o) => o,
                Err(e) => return fail(&e),
            };
            let models = crate::cpu::choice::models(catalog(), &offered);
            if *json {
                return match serde_json::to_string_pretty(&models) {
                    Ok(t) => {
                        println!("{t}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                };
            }
            for m in &models {
                if m.unavailable.is_empty() {
                    println!("{:<10} runs here ({} features)", m.name, m.features);
                } else {
                    println!(
                        "{:<10} unavailable here: {}",
                        m.name,
                        m.unavailable.join(" ")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        CpuCommand::Compare { guest, host } => {
            let read = |p: &std::path::Path| -> Result<crate::cpu::choice::CpuChoice, String> {
                let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                if let Ok(h) = serde_json::from_str::<host::HostCpu>(&t) {
                    return Ok(crate::cpu::choice::CpuChoice {
                        model: crate::cpu::choice::HOST_MODEL.into(),
                        features: h.features.into_iter().collect(),
                    });
                }
                serde_json::from_str(&t).map_err(|e| format!("{}: {e}", p.display()))
            };
            let (g, h) = match (read(guest), read(host)) {
                (Ok(g), Ok(h)) => (g, h),
                (Err(e), _) | (_, Err(e)) => return usage(&e),
            };
            match crate::cpu::choice::enforce(catalog(), &g, &h.features) {
                Ok(()) => {
                    println!("works: {} can present the guest's CPU", host.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("{} cannot present the guest's CPU: {e}", host.display());
                    ExitCode::FAILURE
                }
            }
        }
        CpuCommand::Baseline { hosts, json } => {
            let mut read = Vec::new();
            for p in hosts {
                let h = std::fs::read_to_string(p)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str::<host::HostCpu>(&t).map_err(|e| e.to_string())
                    });
                match h {
                    Ok(h) => read.push((p.display().to_string(), h)),
                    Err(e) => return usage(&format!("{}: {e}", p.display())),
                }
            }
            match crate::cpu::baseline::baseline(catalog(), &read) {
                Ok(b) if *json => match serde_json::to_string_pretty(&b) {
                    Ok(t) => {
                        println!("{t}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                },
                Ok(b) => {
                    print!("{}", crate::cpu::baseline::text(&b));
                    ExitCode::SUCCESS
                }
                Err(e) => usage(&e),
            }
        }
    }
}

fn usage(e: &str) -> ExitCode {
    eprintln!("vmm cpu: {e}");
    ExitCode::from(2)
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("vmm cpu: {e}");
    ExitCode::FAILURE
}

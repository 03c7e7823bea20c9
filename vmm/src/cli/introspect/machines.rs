//! `vmm machines`.

use super::Error;
use compat_runtime::{Catalog, Lifecycle};
use serde::Serialize;
use std::fmt::Write;

/// Arguments of `vmm machines`.
#[derive(clap::Args, Debug)]
pub struct MachinesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct MachineJson<'a> {
    name: &'a str,
    alias: Option<&'a str>,
    family: &'a str,
    version: String,
    lifecycle: &'a str,
    lifecycle_since: Option<&'a str>,
    lifecycle_reason: Option<&'a str>,
    introduced_in: &'a str,
    max_cpus: u32,
    default_cpus: u32,
    memory_mib: u64,
    devices: &'a [&'a str],
    deltas: Vec<&'a str>,
}

pub fn run(catalog: &Catalog, a: &MachinesArgs, out: &mut String) -> Result<(), Error> {
    let mut list: Vec<_> = catalog.machines().collect();
    list.sort_by(|x, y| x.family.cmp(y.family).then(y.version.cmp(&x.version)));
    if a.json {
        let rows: Vec<MachineJson> =
            list.iter()
                .map(|m| MachineJson {
                    name: m.name,
                    alias: m.alias,
                    family: m.family,
                    version: m.version.to_string(),
                    lifecycle: m.lifecycle.label(),
                    lifecycle_since: m.lifecycle.since(),
                    lifecycle_reason: match m.lifecycle {
                        Lifecycle::Supported => None,
                        Lifecycle::Deprecated { reason, .. }
                        | Lifecycle::Removed { reason, .. } => Some(reason),
                    },
                    introduced_in: m.introduced_in,
                    max_cpus: m.knobs.max_cpus,
                    default_cpus: m.knobs.default_cpus,
                    memory_mib: m.knobs.memory_mib,
                    devices: m.knobs.devices,
                    deltas: catalog.applied_deltas(m).iter().map(|d| d.name).collect(),
                })
                .collect();
        out.push_str(&serde_json::to_string_pretty(&rows)?);
        out.push('\n');
        return Ok(());
    }
    let _ = writeln!(out, "Supported machines are:");
    for m in list {
        if let Some(alias) = m.alias {
            let _ = writeln!(out, "{alias:<12} alias of {}", m.name);
        }
        let doc = catalog.family(m.family).map(|f| f.doc).unwrap_or("");
        let state = match m.lifecycle {
            Lifecycle::Supported => "supported".to_string(),
            Lifecycle::Deprecated { since, reason } => {
                format!("deprecated since {since}: {reason}")
            }
            Lifecycle::Removed { since, reason } => {
                format!("removed in {since}: {reason}; refused")
            }
        };
        let _ = writeln!(
            out,
            "{:<12} {doc} (introduced in {}, {state})",
            m.name, m.introduced_in
        );
    }
    Ok(())
}

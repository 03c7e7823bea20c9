//! `cargo xtask oracle`: the reference's running binaries as the judge of
//! our compat tables. For every machine type both know (`pc-X.Y` here,
//! `pc-q35-X.Y` there) it starts the reference paused under TCG with one
//! instance of each device type we share, reads every shared property with
//! `qom-get` (through `vmm-qmp`, the client the benchmarks use) and compares
//! it with our resolved value (`vmm props -M pc-X.Y --json`). Differences
//! are printed as a table; any not explained in `compat/oracle.allow.toml`
//! fails the run. Which properties are compared, and why some are not, is
//! in docs/oracle.md.

mod allow;
mod reference;

use crate::bench_vmm::Binaries;
use allow::Allow;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `cargo xtask oracle`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// A reference binary (scripts/reference-qemu.sh, scripts/reference-qemu10.sh);
    /// repeatable.
    #[arg(long, value_name = "PATH", required = true)]
    pub qemu: Vec<PathBuf>,
    /// The explained differences.
    #[arg(long, default_value = "compat/oracle.allow.toml")]
    pub allow: PathBuf,
    #[command(flatten)]
    pub bins: Binaries,
}

/// Our device types the reference has too, and where the reference's
/// instance sits in its QOM tree (see [`reference::command`]).
pub const SHARED: &[(&str, &str)] = &[
    ("pcie-root-port", "/machine/peripheral/rp0"),
    ("isa-serial", "/machine/peripheral/ser0"),
    (
        "virtio-blk-device",
        "/machine/peripheral/blk0/virtio-backend",
    ),
    ("virtio-rng-pci", "/machine/peripheral/rng0"),
    ("qemu64-x86_64-cpu", reference::CPU),
];

/// One compared property that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub reference: String,
    pub machine: String,
    pub type_name: String,
    pub property: String,
    pub ours: String,
    pub theirs: String,
}

/// The pseudo type of machine-level knobs in a [`Difference`] (`max_cpus`
/// against the reference's `query-machines` `cpu-max`).
pub const MACHINE: &str = "machine";

/// Resolved values: type → property → value.
type Values = BTreeMap<String, BTreeMap<String, String>>;

/// Our resolved values of `machine`.
fn ours(vmm: &Path, machine: &str) -> Result<Values, String> {
    let out = Command::new(vmm)
        .args(["props", "-M", machine, "--json"])
        .output()
        .map_err(|e| format!("vmm props: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "vmm props -M {machine}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("vmm props --json: {e}"))?;
    let mut m = BTreeMap::new();
    for d in v["devices"].as_array().into_iter().flatten() {
        let props = d["props"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["value"].as_str()?.to_string(),
                ))
            })
            .collect();
        if let Some(t) = d["type"].as_str() {
            m.insert(t.to_string(), props);
        }
    }
    Ok(m)
}

/// A machine type's name, `(major, minor)` version and `max_cpus`.
type MachineVersion = (String, (u32, u32), u64);

/// Our machine types, oldest first.
fn machines(vmm: &Path) -> Result<Vec<MachineVersion>, String> {
    let out = Command::new(vmm)
        .args(["machines", "--json"])
        .output()
        .map_err(|e| format!("vmm machines: {e}"))?;
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("vmm machines --json: {e}"))?;
    let mut out: Vec<_> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m["name"].as_str()?.to_string();
            let (a, b) = m["version"].as_str()?.split_once('.')?;
            let max_cpus = m["max_cpus"].as_u64()?;
            Some((name, (a.parse().ok()?, b.parse().ok()?), max_cpus))
        })
        .collect();
    out.sort_by_key(|(_, v, _)| *v);
    Ok(out)
}

/// Canonical spelling of a value on either side (`on`/`off`, decimal).
pub fn canonical(v: &str) -> String {
    match v {
        "true" | "on" | "yes" => "on".into(),
        "false" | "off" | "no" => "off".into(),
        "(unset)" => String::new(),
        s => match s
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            Some(n) => n.to_string(),
            None => s.to_string(),
        },
    }
}

/// Compares one machine type against one reference.
fn compare(
    r: &reference::Reference,
    ours: &Values,
    machine: &str,
    (major, minor): (u32, u32),
) -> Result<(Vec<Difference>, usize), String> {
    let theirs_machine = format!("pc-q35-{major}.{minor}");
    let mut wanted: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for (ty, path) in SHARED {
        let props = ours
            .get(*ty)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        wanted.push((ty, path, props));
    }
    let got = r.read(&theirs_machine, &wanted)?;
    wanted.push((MACHINE, "", vec!["max_cpus".to_string()]));
    let mut diffs = Vec::new();
    let mut compared = 0;
    for (ty, _, props) in &wanted {
        for p in props {
            compared += 1;
            let our = canonical(&ours[*ty][p]);
            let their = got
                .get(&(ty.to_string(), p.clone()))
                .cloned()
                .unwrap_or_else(|| "(absent)".into());
            if our != their {
                diffs.push(Difference {
                    reference: r.label(),
                    machine: machine.to_string(),
                    type_name: ty.to_string(),
                    property: p.clone(),
                    ours: our,
                    theirs: their,
                });
            }
        }
    }
    Ok((diffs, compared))
}

/// `cargo xtask oracle`.
pub fn run(args: &Args) -> Result<(), String> {
    let vmm = args.bins.binary()?;
    let allow = Allow::load(&crate::root().join(&args.allow))?;
    let mut unexplained = 0;
    // Our values once per machine type, whatever the number of references.
    let mut cache: BTreeMap<String, Values> = BTreeMap::new();
    let ours_machines = machines(&vmm)?;
    for q in &args.qemu {
        let r = reference::Reference::probe(q)?;
        let mut compared = 0;
        let mut rows = Vec::new();
        for (machine, v, max_cpus) in &ours_machines {
            let (machine, v) = (machine.clone(), *v);
            if v > r.version() {
                continue;
            }
            if !cache.contains_key(&machine) {
                let mut values = ours(&vmm, &machine)?;
                values.insert(
                    MACHINE.to_string(),
                    BTreeMap::from([("max_cpus".to_string(), max_cpus.to_string())]),
                );
                cache.insert(machine.clone(), values);
            }
            let (d, n) = compare(&r, &cache[&machine], &machine, v)?;
            compared += n;
            rows.extend(d);
        }
        println!(
            "{} (-accel {}): {compared} property values compared, {} differ",
            r.label(),
            r.accel(),
            rows.len()
        );
        println!(
            "| machine | type | property | vmm | {} | explained by |",
            r.label()
        );
        println!("|---|---|---|---|---|---|");
        for d in &rows {
            let why = allow.explains(d);
            if why.is_none() {
                unexplained += 1;
            }
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                d.machine,
                d.type_name,
                d.property,
                d.ours,
                d.theirs,
                why.unwrap_or("**UNEXPLAINED**")
            );
        }
        println!();
    }
    if unexplained > 0 {
        return Err(format!(
            "oracle: {unexplained} difference(s) not explained in {}",
            args.allow.display()
        ));
    }
    println!(
        "oracle: every difference is explained in {}",
        args.allow.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_compared_canonically() {
        assert_eq!(canonical("true"), "on");
        assert_eq!(canonical("off"), "off");
        assert_eq!(canonical("0x3f8"), "1016");
        assert_eq!(canonical("auto"), "auto");
    }
}

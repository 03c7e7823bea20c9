//! `vmm props -M MACHINE [TYPE] [--global T.P=V]... [--device T,P=V]...`.

use super::{Error, source};
use compat_runtime::suggest::did_you_mean;
use compat_runtime::{Catalog, Effect, EffectiveDevice, Override, OverrideError};
use serde::Serialize;
use std::fmt::Write;

/// Arguments of `vmm props`.
#[derive(clap::Args, Debug)]
pub struct PropsArgs {
    /// Machine type or alias (`pc-5.1`, `pc`).
    #[arg(short = 'M', long = "machine", default_value = "pc")]
    pub machine: String,
    /// Only this device type (default: every device type).
    pub type_name: Option<String>,
    /// `-global TYPE.PROP=VALUE`: reaches TYPE and its subtypes; beats compat deltas.
    #[arg(long = "global", value_name = "TYPE.PROP=VALUE")]
    pub globals: Vec<String>,
    /// `-device TYPE,PROP=VALUE,...`: that type only; beats `--global`.
    #[arg(long = "device", value_name = "TYPE,PROP=VALUE")]
    pub devices: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct PropJson<'a> {
    name: &'a str,
    value: String,
    source: String,
    provenance: &'a compat_runtime::Provenance,
    /// `guest`, `stream`, or `none` with `why` (never compared).
    #[serde(flatten)]
    effect: Effect,
}

/// What `type.prop` changes ([`Effect::Guest`] for a property no type declares).
fn effect(catalog: &Catalog, ty: &str, prop: &str) -> Effect {
    catalog
        .device_type(ty)
        .and_then(|d| d.props.iter().find(|p| p.name == prop))
        .map_or(Effect::Guest, |p| p.effect)
}

#[derive(Serialize)]
struct DeviceJson<'a> {
    #[serde(rename = "type")]
    type_name: &'a str,
    props: Vec<PropJson<'a>>,
}

#[derive(Serialize)]
struct PropsJson<'a> {
    machine: &'a str,
    devices: Vec<DeviceJson<'a>>,
}

fn device_json<'a>(catalog: &Catalog, d: &'a EffectiveDevice) -> DeviceJson<'a> {
    DeviceJson {
        type_name: &d.type_name,
        props: d
            .props
            .iter()
            .map(|p| PropJson {
                name: &p.name,
                value: p.value.to_string(),
                source: source(&p.provenance, &d.type_name),
                provenance: &p.provenance,
                effect: effect(catalog, &d.type_name, &p.name),
            })
            .collect(),
    }
}

pub fn run(catalog: &Catalog, a: &PropsArgs, out: &mut String) -> Result<(), Error> {
    let mut overrides = Vec::new();
    for g in &a.globals {
        overrides.push(Override::parse_global(g)?);
    }
    for d in &a.devices {
        overrides.push(Override::parse_device(d)?);
    }
    let cfg = catalog.effective(&a.machine, &overrides)?;
    let devices: Vec<&EffectiveDevice> = match &a.type_name {
        Some(t) => {
            let d = cfg.device(t).ok_or_else(|| OverrideError::UnknownType {
                name: t.clone(),
                suggestion: did_you_mean(t, catalog.device_types.iter().map(|d| d.name)),
            })?;
            vec![d]
        }
        None => cfg.devices.iter().collect(),
    };
    if a.json {
        let j = PropsJson {
            machine: &cfg.machine,
            devices: devices.iter().map(|d| device_json(catalog, d)).collect(),
        };
        out.push_str(&serde_json::to_string_pretty(&j)?);
        out.push('\n');
        return Ok(());
    }
    let _ = writeln!(out, "machine {}", cfg.machine);
    for d in devices {
        let _ = writeln!(out, "{}", d.type_name);
        for p in &d.props {
            let inert = match effect(catalog, &d.type_name, &p.name) {
                Effect::None { .. } => "  (no effect here: not compared)",
                Effect::Guest | Effect::Stream => "",
            };
            let _ = writeln!(
                out,
                "  {:<34} {:<10} {}{inert}",
                p.name,
                p.value.to_string(),
                source(&p.provenance, &d.type_name)
            );
        }
    }
    Ok(())
}

//! `vmm compat diff A B`: every property that differs, and why.

use super::{Error, source};
use compat_runtime::{Catalog, EffectiveProp, PropDiff};
use serde::Serialize;
use std::fmt::Write;

/// Arguments of `vmm compat diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Left machine type or alias.
    pub left: String,
    /// Right machine type or alias.
    pub right: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Side {
    value: String,
    source: String,
}

#[derive(Serialize)]
struct DiffJson {
    #[serde(rename = "type")]
    type_name: String,
    property: String,
    left: Option<Side>,
    right: Option<Side>,
}

#[derive(Serialize)]
struct Report<'a> {
    left: &'a str,
    right: &'a str,
    deltas_only_left: Vec<&'a str>,
    deltas_only_right: Vec<&'a str>,
    differences: Vec<DiffJson>,
}

fn side(p: &Option<EffectiveProp>, t: &str) -> Option<Side> {
    p.as_ref().map(|p| Side {
        value: p.value.to_string(),
        source: source(&p.provenance, t),
    })
}

fn show(s: &Option<Side>) -> String {
    match s {
        Some(s) => format!("{} [{}]", s.value, s.source),
        None => "(absent)".into(),
    }
}

pub fn run(catalog: &Catalog, a: &DiffArgs, out: &mut String) -> Result<(), Error> {
    let l = catalog.machine_or_err(&a.left)?;
    let r = catalog.machine_or_err(&a.right)?;
    let diffs: Vec<PropDiff> = catalog.resolve(l).diff(&catalog.resolve(r));
    let (ld, rd) = (catalog.applied_deltas(l), catalog.applied_deltas(r));
    let only = |x: &[&compat_runtime::Delta], y: &[&compat_runtime::Delta]| -> Vec<&'static str> {
        x.iter()
            .filter(|d| !y.iter().any(|e| e.name == d.name))
            .map(|d| d.name)
            .collect()
    };
    let report = Report {
        left: l.name,
        right: r.name,
        deltas_only_left: only(&ld, &rd),
        deltas_only_right: only(&rd, &ld),
        differences: diffs
            .iter()
            .map(|d| DiffJson {
                type_name: d.type_name.clone(),
                property: d.property.clone(),
                left: side(&d.left, &d.type_name),
                right: side(&d.right, &d.type_name),
            })
            .collect(),
    };
    if a.json {
        out.push_str(&serde_json::to_string_pretty(&report)?);
        out.push('\n');
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{} vs {}: {} difference(s)",
        l.name,
        r.name,
        report.differences.len()
    );
    if !report.deltas_only_left.is_empty() {
        let _ = writeln!(
            out,
            "deltas applied by {} only: {}",
            l.name,
            report.deltas_only_left.join(", ")
        );
    }
    if !report.deltas_only_right.is_empty() {
        let _ = writeln!(
            out,
            "deltas applied by {} only: {}",
            r.name,
            report.deltas_only_right.join(", ")
        );
    }
    for d in &report.differences {
        let _ = writeln!(
            out,
            "{}.{}: {} -> {}",
            d.type_name,
            d.property,
            show(&d.left),
            show(&d.right)
        );
    }
    Ok(())
}

//! Versioned CPU models (`EPYC-v1-x86_64-cpu`) are never edited once a
//! release presented them: every lock lists each model version's own
//! properties, and the current tree must define it exactly so. A change is a
//! new model version, never a delta (the reference's rule for its versioned
//! models).

use super::LockRef;
use super::findings::Findings;
use super::present::own_defaults;
use super::spans::{Spans, find};
use crate::diag::{Diag, SourceFile};
use crate::model::Model;

/// Adds a finding for every model version of `l` that the tree removed or
/// changed.
pub fn check(
    model: &Model,
    sources: &[SourceFile],
    spans: &Spans,
    l: &LockRef,
    findings: &mut Findings,
) {
    let release = &l.lock.release;
    for (name, locked) in &l.lock.cpu_model {
        let Some(t) = model.types.iter().find(|t| &t.name == name) else {
            findings.add(format!("cpu-model-gone:{name}"), release, || {
                Diag::error(
                    "compat::cpu-model-removed",
                    &find(sources, l.file, &format!("[cpu_model.{name}]")),
                    format!("CPU model `{name}` is gone, but {{RELEASES}} presented it"),
                    "released here",
                )
                .help("never delete a released CPU model version; guests started with it must keep finding it")
            });
            continue;
        };
        let now = own_defaults(t);
        let mut changes: Vec<String> = Vec::new();
        for (prop, old) in locked {
            match now.get(prop) {
                Some(new) if new == old => {}
                Some(new) => changes.push(format!("`{prop}` was {old}, is now {new}")),
                None => changes.push(format!("`{prop}` (was {old}) is gone")),
            }
        }
        for (prop, new) in &now {
            if !locked.contains_key(prop) {
                changes.push(format!("`{prop}` = {new} is new"));
            }
        }
        if changes.is_empty() {
            continue;
        }
        let next = t
            .model_version()
            .map(|(m, _)| format!("{m}-v{}-x86_64-cpu", next_version(model, m)))
            .unwrap_or_default();
        let at = spans
            .device_name(name)
            .unwrap_or_else(|| find(sources, l.file, name));
        findings.add(format!("cpu-model:{name}"), release, || {
            Diag::error(
                "compat::cpu-model-changed",
                &at,
                format!(
                    "CPU model `{name}` changed after {{RELEASES}} presented it: {}",
                    changes.join(", ")
                ),
                "a released CPU model version",
            )
            .help(format!(
                "a released model version is never edited (guests started with it would see another CPU after a migration): restore it and declare `{next}` with the change"
            ))
        });
    }
}

/// The first version of CPU model `name` the tree does not declare.
fn next_version(model: &Model, name: &str) -> u32 {
    model
        .types
        .iter()
        .filter_map(|t| t.model_version())
        .filter(|(m, _)| *m == name)
        .map(|(_, v)| v + 1)
        .max()
        .unwrap_or(1)
}

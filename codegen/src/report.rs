//! Human-readable reports of a resolved tree (snapshotted in review).

use crate::resolve::Resolved;
use compat_runtime::Value;
use std::fmt::Write;

/// The effective value and provenance (`default` or a delta name, with the
/// entry's type when it is an ancestor) of one property on one machine.
pub fn effective(
    r: &Resolved,
    machine: &str,
    type_name: &str,
    prop: &str,
) -> Option<(Value, String)> {
    let (fi, m) = r.model.families.iter().enumerate().find_map(|(i, f)| {
        f.machines
            .iter()
            .find(|m| m.name == machine)
            .map(|m| (i, m))
    })?;
    let t = r.model.types.iter().find(|t| t.name == type_name)?;
    let p = t.prop(prop)?;
    let tl = r.timelines.get(fi)?;
    let steps = tl
        .props
        .binary_search_by(|(tn, pn, _)| (tn.as_str(), pn.as_str()).cmp(&(type_name, prop)))
        .ok()
        .map(|i| &tl.props[i].2);
    let step = steps.and_then(|s| s.iter().find(|s| s.version >= m.version));
    Some(match step {
        Some(s) if s.via == type_name => (s.value.clone(), s.delta.clone()),
        Some(s) => (s.value.clone(), format!("{} (via {})", s.delta, s.via)),
        None => (p.default.clone(), "default".into()),
    })
}

/// A table of every machine type's effective properties, one block per
/// machine type.
pub fn effective_table(r: &Resolved) -> String {
    let mut out = String::new();
    for f in &r.model.families {
        for m in f.machines.iter().rev() {
            let alias = m
                .alias
                .as_deref()
                .map(|a| format!(" (alias {a})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "== {}{alias}: {:?}, introduced in {}, max_cpus {}, memory {} MiB, devices [{}]",
                m.name,
                m.lifecycle,
                m.introduced_in,
                m.knobs.max_cpus,
                m.knobs.memory_mib,
                m.knobs.devices.join(", ")
            );
            for t in &r.model.types {
                for p in &t.props {
                    if let Some((v, prov)) = effective(r, &m.name, &t.name, &p.name) {
                        let _ = writeln!(
                            out,
                            "  {:<20} {:<34} {:<8} {prov}",
                            t.name,
                            p.name,
                            v.to_string()
                        );
                    }
                }
            }
        }
    }
    out
}

//! Phase 3: resolve deltas into per-family property timelines, and warn about
//! entries that never take effect.
//!
//! Machine `F-v` applies every delta of a version `u` with `v <= u < newest`,
//! newest first, series in family order, entries in order; later wins. So the
//! value of `(type, prop)` for `v` is set by the smallest `u >= v` touching it
//! (within one `u`, by the last applied entry): a sorted list of steps,
//! linear in the number of entries.

use crate::diag::Diag;
use crate::model::{MachineM, Model};
use compat_runtime::{MachineVersion, Value};
use std::collections::{HashMap, HashSet};

/// A step of a property timeline.
#[derive(Debug, Clone)]
pub struct StepM {
    pub version: MachineVersion,
    pub value: Value,
    pub delta: String,
    pub via: String,
}

/// The compiled output of one family: `(type name, prop name) -> steps`,
/// sorted by type then property name.
#[derive(Debug, Clone, Default)]
pub struct FamilyTimelines {
    pub props: Vec<(String, String, Vec<StepM>)>,
}

/// The resolved compat tree: the model plus one timeline set per family.
#[derive(Debug)]
pub struct Resolved {
    pub model: Model,
    pub timelines: Vec<FamilyTimelines>,
}

/// One entry as it reaches a `(type, prop)`.
struct Hit {
    version: MachineVersion,
    series_pos: usize,
    order: usize,
    delta: usize,
    entry: usize,
}

/// Resolves timelines; pushes shadowing/unreachable warnings.
pub fn resolve(model: Model, diags: &mut Vec<Diag>) -> Resolved {
    let mut descendants: Vec<Vec<usize>> = vec![Vec::new(); model.types.len()];
    for (t, ty) in model.types.iter().enumerate() {
        for &a in &ty.ancestors {
            if let Some(d) = descendants.get_mut(a) {
                d.push(t);
            }
        }
    }
    let mut alive: HashSet<(usize, usize)> = HashSet::new();
    let mut shadower: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
    let mut reached: HashSet<usize> = HashSet::new();
    let mut timelines = Vec::new();
    for fam in &model.families {
        let Some(newest) = fam.machines.last().map(|m| m.version) else {
            timelines.push(FamilyTimelines::default());
            continue;
        };
        let mut hits: HashMap<(usize, &str), Vec<Hit>> = HashMap::new();
        for (di, d) in model.deltas.iter().enumerate() {
            let Some(series_pos) = fam.series.iter().position(|s| s == &d.series) else {
                continue;
            };
            if d.version >= newest {
                continue;
            }
            reached.insert(di);
            for (ei, e) in d.entries.iter().enumerate() {
                for &t in descendants
                    .get(e.type_idx)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    hits.entry((t, e.property.as_str())).or_default().push(Hit {
                        version: d.version,
                        series_pos,
                        order: ei,
                        delta: di,
                        entry: ei,
                    });
                }
            }
        }
        let mut props = Vec::with_capacity(hits.len());
        for ((t, p), mut list) in hits {
            list.sort_by_key(|h| (h.version, h.series_pos, h.order));
            let mut steps = Vec::new();
            let mut prev: Option<MachineVersion> = None;
            let mut i = 0;
            while i < list.len() {
                let v = list[i].version;
                let mut j = i;
                while j + 1 < list.len() && list[j + 1].version == v {
                    j += 1;
                }
                let win = &list[j];
                for lost in &list[i..j] {
                    shadower
                        .entry((lost.delta, lost.entry))
                        .or_insert((win.delta, win.entry));
                }
                if has_machine_in(&fam.machines, prev, v) {
                    alive.insert((win.delta, win.entry));
                    let d = &model.deltas[win.delta];
                    let e = &d.entries[win.entry];
                    steps.push(StepM {
                        version: v,
                        value: e.value.clone(),
                        delta: d.name.clone(),
                        via: e.type_name.clone(),
                    });
                }
                prev = Some(v);
                i = j + 1;
            }
            if !steps.is_empty() {
                props.push((model.types[t].name.clone(), p.to_string(), steps));
            }
        }
        props.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        timelines.push(FamilyTimelines { props });
    }
    warn(&model, &reached, &alive, &shadower, diags);
    Resolved { model, timelines }
}

fn has_machine_in(
    machines: &[MachineM],
    above: Option<MachineVersion>,
    upto: MachineVersion,
) -> bool {
    let lo = machines.partition_point(|m| above.is_some_and(|a| m.version <= a));
    machines.get(lo).is_some_and(|m| m.version <= upto)
}

fn warn(
    model: &Model,
    reached: &HashSet<usize>,
    alive: &HashSet<(usize, usize)>,
    shadower: &HashMap<(usize, usize), (usize, usize)>,
    diags: &mut Vec<Diag>,
) {
    for (di, d) in model.deltas.iter().enumerate() {
        if !reached.contains(&di) {
            diags.push(
                Diag::warning(
                    "compat::unreachable-delta",
                    &d.loc,
                    format!("{} reaches no machine type: {} is not older than the newest machine type", d.name, d.version),
                    "never applied",
                )
                .help("a delta restores old defaults for older machine types; add it together with the next machine type"),
            );
            continue;
        }
        for (ei, e) in d.entries.iter().enumerate() {
            if alive.contains(&(di, ei)) {
                continue;
            }
            let mut diag = Diag::warning(
                "compat::shadowed-entry",
                &e.loc,
                format!(
                    "{} entry {}.{} is shadowed for every machine type it reaches",
                    d.name, e.type_name, e.property
                ),
                "never takes effect",
            );
            if let Some(&(sd, se)) = shadower.get(&(di, ei)) {
                let s = &model.deltas[sd];
                let sentry = &s.entries[se];
                diag = diag.label(&sentry.loc, "applied later, wins").help(format!(
                    "{} sets {}.{} after it; remove one of them",
                    s.name, sentry.type_name, sentry.property
                ));
            } else {
                diag = diag.help(
                    "an older delta sets the same property for every machine type this one reaches",
                );
            }
            diags.push(diag);
        }
    }
}

//! What a release presents for each machine type it knows, reconstructed
//! from the current tree.
//!
//! Release `R` knows the machine types up to its own version; its newest one
//! has no delta. Machine `v` under `R` is what the current tree says the
//! newest machine `N` of `R` is (every entry of every delta `>= N`), then the
//! deltas `v <= u < N`, newest first, without entries added after `R`
//! (`added_in`), then the errata `R` shipped. With no release given this is
//! the current tree itself.

use crate::model::{FieldM, Model, TypeM, VmStateM};
use compat_runtime::release::{
    LockField, LockMachine, LockSection, LockSubsection, MIN_STREAM_FORMAT, STREAM_FORMAT,
};
use compat_runtime::version::cmp_release;
use compat_runtime::{Lock, MachineVersion, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Where a presented value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The property's default.
    Default,
    /// Entry `entry` of `Model::deltas[delta]`.
    Entry { delta: usize, entry: usize },
    /// An erratum of the release.
    Erratum(String),
}

/// A presented value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub value: Value,
    pub source: Source,
}

/// One machine type as presented: `props[type][prop]`, indices as in the model.
#[derive(Debug, Clone)]
pub struct MachineView {
    pub family: usize,
    pub machine: usize,
    pub name: String,
    pub version: MachineVersion,
    pub props: Vec<Vec<Presented>>,
}

impl MachineView {
    /// A value by type and property name.
    pub fn get(&self, model: &Model, ty: &str, prop: &str) -> Option<&Presented> {
        let t = model.types.iter().position(|t| t.name == ty)?;
        let p = model.types[t].props.iter().position(|p| p.name == prop)?;
        self.props.get(t)?.get(p)
    }
}

/// `7.2.1` → `7.2` (the machine version a release knows up to).
pub fn release_machine_version(release: &str) -> Option<MachineVersion> {
    let mut parts = release.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(MachineVersion::new(major, minor))
}

fn descendants(model: &Model) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); model.types.len()];
    for (t, ty) in model.types.iter().enumerate() {
        for &a in &ty.ancestors {
            if let Some(d) = out.get_mut(a) {
                d.push(t);
            }
        }
    }
    out
}

fn set(
    types: &[TypeM],
    props: &mut [Vec<Presented>],
    targets: &[usize],
    prop: &str,
    p: &Presented,
) {
    for &t in targets {
        if let Some(i) = types[t].props.iter().position(|x| x.name == prop) {
            props[t][i] = p.clone();
        }
    }
}

/// Every machine type `release` knows, as it presents them (`None`: the
/// current tree).
pub fn present(model: &Model, release: Option<&str>) -> Vec<MachineView> {
    let desc = descendants(model);
    let bound = release.and_then(release_machine_version);
    let errata: Vec<_> = release
        .map(|r| {
            model
                .releases
                .iter()
                .filter(|e| cmp_release(&e.version, r) != Ordering::Greater)
                .flat_map(|e| &e.errata)
                .filter(|e| cmp_release(r, &e.fixed_in) == Ordering::Less)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (fi, f) in model.families.iter().enumerate() {
        let Some(newest_cur) = f.machines.last().map(|m| m.version) else {
            continue;
        };
        let known: Vec<_> = f
            .machines
            .iter()
            .enumerate()
            .filter(|(_, m)| bound.is_none_or(|b| m.version <= b))
            .collect();
        let Some(newest) = known.last().map(|(_, m)| m.version) else {
            continue;
        };
        let mut deltas: Vec<(usize, usize)> = model
            .deltas
            .iter()
            .enumerate()
            .filter(|(_, d)| d.version < newest_cur)
            .filter_map(|(i, d)| Some((i, f.series.iter().position(|s| *s == d.series)?)))
            .collect();
        deltas.sort_by(|a, b| {
            let (da, db) = (&model.deltas[a.0], &model.deltas[b.0]);
            db.version.cmp(&da.version).then(a.1.cmp(&b.1))
        });
        for (mi, m) in known {
            let mut props: Vec<Vec<Presented>> = model
                .types
                .iter()
                .map(|t| {
                    t.props
                        .iter()
                        .map(|p| Presented {
                            value: p.default.clone(),
                            source: Source::Default,
                        })
                        .collect()
                })
                .collect();
            for &(di, _) in &deltas {
                let d = &model.deltas[di];
                if d.version < m.version {
                    continue;
                }
                for (ei, e) in d.entries.iter().enumerate() {
                    let later = match (release, &e.added_in) {
                        (Some(r), Some(a)) => {
                            d.version < newest && cmp_release(a, r) == Ordering::Greater
                        }
                        _ => false,
                    };
                    if later {
                        continue;
                    }
                    let p = Presented {
                        value: e.value.clone(),
                        source: Source::Entry {
                            delta: di,
                            entry: ei,
                        },
                    };
                    set(&model.types, &mut props, &desc[e.type_idx], &e.property, &p);
                }
            }
            for e in &errata {
                let Some(t) = model.types.iter().position(|t| t.name == e.type_name) else {
                    continue;
                };
                if m.version <= e.max_machine {
                    let p = Presented {
                        value: e.shipped.clone(),
                        source: Source::Erratum(e.id.clone()),
                    };
                    set(&model.types, &mut props, &desc[t], &e.property, &p);
                }
            }
            out.push(MachineView {
                family: fi,
                machine: mi,
                name: m.name.clone(),
                version: m.version,
                props,
            });
        }
    }
    out
}

fn lock_field(f: &FieldM) -> LockField {
    use crate::model::CountM;
    let (len, len_field) = match &f.count {
        CountM::One => (None, None),
        CountM::Fixed(n) => (Some(*n), None),
        CountM::Field(by, max) => (Some(*max), Some(by.clone())),
    };
    LockField {
        name: f.name.clone(),
        wire: f.wire.name().to_string(),
        len,
        len_field,
        since: f.since,
    }
}

/// The lock form of a VMState description owned by `device`.
pub fn lock_section(device: &str, v: &VmStateM) -> LockSection {
    LockSection {
        name: v.name.clone(),
        device: device.to_string(),
        version_id: v.version_id,
        minimum_version_id: v.minimum_version_id,
        fields: v.fields.iter().map(lock_field).collect(),
        subsection: v
            .subsections
            .iter()
            .map(|s| LockSubsection {
                name: s.name.clone(),
                gate: s.gate.clone(),
                fields: s.fields.iter().map(lock_field).collect(),
            })
            .collect(),
    }
}

/// What `release` presents (`None`: the current tree, named `name`), as a lock.
pub fn lock(model: &Model, release: Option<&str>, name: &str) -> Lock {
    let views = present(model, release);
    let errata = release
        .map(|r| {
            model
                .releases
                .iter()
                .filter(|e| cmp_release(&e.version, r) != Ordering::Greater)
                .flat_map(|e| &e.errata)
                .filter(|e| cmp_release(r, &e.fixed_in) == Ordering::Less)
                .map(|e| e.id.clone())
                .collect()
        })
        .unwrap_or_default();
    let machine = views
        .iter()
        .map(|v| {
            let m = &model.families[v.family].machines[v.machine];
            let props = model
                .types
                .iter()
                .zip(&v.props)
                .filter(|(t, _)| !t.props.is_empty() && t.model_version().is_none())
                .map(|(t, vals)| {
                    let map = t
                        .props
                        .iter()
                        .zip(vals)
                        .map(|(p, x)| (p.name.clone(), x.value.to_string()))
                        .collect();
                    (t.name.clone(), map)
                })
                .collect();
            LockMachine {
                name: m.name.clone(),
                max_cpus: m.knobs.max_cpus,
                default_cpus: m.knobs.default_cpus,
                memory_mib: m.knobs.memory_mib,
                devices: m.knobs.devices.clone(),
                props,
            }
        })
        .collect();
    Lock {
        release: name.to_string(),
        stream_format: STREAM_FORMAT,
        min_stream_format: MIN_STREAM_FORMAT,
        errata,
        parents: model
            .types
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.parent.clone()?)))
            .collect::<BTreeMap<_, _>>(),
        machine,
        section: model
            .types
            .iter()
            .filter_map(|t| Some(lock_section(&t.name, t.vmstate.as_ref()?)))
            .collect(),
        cpu_model: model
            .types
            .iter()
            .filter(|t| t.model_version().is_some())
            .map(|t| (t.name.clone(), own_defaults(t)))
            .collect(),
    }
}

/// A type's own properties (not inherited) at their defaults, as a lock
/// spells them.
pub fn own_defaults(t: &TypeM) -> BTreeMap<String, String> {
    t.props
        .iter()
        .filter(|p| p.owner == t.name)
        .map(|p| (p.name.clone(), p.default.to_string()))
        .collect()
}

//! Whether a guest of machine type `M` started on release `A` migrates to
//! release `B`, and if not, exactly what differs.
//!
//! Migration works when both releases know `M`, present the same value for
//! every guest-visible property of every device type `M` instantiates (its
//! `devices` knob: abstract types such as `pci-device` and types the machine
//! never builds are not compared) and every machine knob, and `B` loads every
//! section `A` sends: the stream format and each section's version within
//! `B`'s `[minimum, version]`, the same fields at that version, and every
//! subsection `A` sends (its gate is on) known to `B` with the same fields.

use super::lock::{Lock, LockField, LockMachine, LockSection};
use std::collections::BTreeMap;
use std::fmt;

/// One reason a migration fails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Difference {
    /// A guest-visible property differs. Reported once on the topmost type
    /// whose value differs the same way; `subtypes` inherit the difference.
    Property {
        device: String,
        property: String,
        source: Option<String>,
        destination: Option<String>,
        subtypes: Vec<String>,
    },
    /// A machine-level knob differs.
    Knob {
        knob: String,
        source: String,
        destination: String,
    },
    /// The destination cannot read the source's stream format.
    StreamFormat { sent: u32, min: u32, max: u32 },
    /// The destination does not know a section the source sends.
    UnknownSection { section: String },
    /// A section's version is outside the destination's range.
    SectionVersion {
        section: String,
        sent: u32,
        min: u32,
        max: u32,
    },
    /// A section's or subsection's fields differ at the version sent.
    Layout {
        section: String,
        source: Vec<String>,
        destination: Vec<String>,
    },
    /// The destination does not know a subsection the source sends.
    UnknownSubsection { section: String, subsection: String },
}

/// The verdict on one migration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Same hardware, loadable state.
    Works,
    /// A release does not know the machine type: nothing to migrate.
    NotPossible { release: String, machine: String },
    /// The migration is refused; `fix` lists destination settings
    /// (`-global T.P=V`) that make it work, if properties are all that differ.
    Fails {
        differences: Vec<Difference>,
        fix: Vec<String>,
    },
}

impl Verdict {
    /// Whether the migration works.
    pub fn works(&self) -> bool {
        matches!(self, Verdict::Works)
    }
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(absent)")
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Property {
                device,
                property,
                source,
                destination,
                subtypes,
            } => {
                write!(
                    f,
                    "{device}.{property}: {} vs {}",
                    show(source),
                    show(destination)
                )?;
                if !subtypes.is_empty() {
                    write!(f, " (and subtypes {})", subtypes.join(", "))?;
                }
                Ok(())
            }
            Difference::Knob {
                knob,
                source,
                destination,
            } => write!(f, "machine {knob}: {source} vs {destination}"),
            Difference::StreamFormat { sent, min, max } => {
                write!(
                    f,
                    "stream format {sent} outside the destination's {min}..={max}"
                )
            }
            Difference::UnknownSection { section } => {
                write!(f, "section `{section}` unknown to the destination")
            }
            Difference::SectionVersion {
                section,
                sent,
                min,
                max,
            } => write!(
                f,
                "section `{section}` version {sent} outside the destination's {min}..={max}"
            ),
            Difference::Layout {
                section,
                source,
                destination,
            } => write!(
                f,
                "section `{section}` fields [{}] vs [{}]",
                source.join(", "),
                destination.join(", ")
            ),
            Difference::UnknownSubsection {
                section,
                subsection,
            } => write!(
                f,
                "subsection `{subsection}` of `{section}` unknown to the destination"
            ),
        }
    }
}

/// The verdict for a guest of `machine` started on `src` migrating to `dst`,
/// assuming `dst` can be started with any property value.
pub fn migrate(src: &Lock, dst: &Lock, machine: &str) -> Verdict {
    migrate_with(src, dst, machine, &|_, _| true)
}

/// Like [`migrate`]; a fix is only offered when `settable(type, property)`
/// says the destination release can be started with another value of each
/// property that differs (a release cannot set a property it predates).
pub fn migrate_with(
    src: &Lock,
    dst: &Lock,
    machine: &str,
    settable: &dyn Fn(&str, &str) -> bool,
) -> Verdict {
    let (Some(sm), Some(dm)) = (src.machine(machine), dst.machine(machine)) else {
        let release = if src.machine(machine).is_none() {
            &src.release
        } else {
            &dst.release
        };
        return Verdict::NotPossible {
            release: release.clone(),
            machine: machine.to_string(),
        };
    };
    let props = property_diffs(sm, dm, &src.parents);
    let mut diffs = props.clone();
    knob_diffs(sm, dm, &mut diffs);
    section_diffs(src, sm, dst, &mut diffs);
    if diffs.is_empty() {
        return Verdict::Works;
    }
    let all_settable = props.iter().all(|d| match d {
        Difference::Property {
            device,
            property,
            subtypes,
            ..
        } => std::iter::once(device)
            .chain(subtypes)
            .all(|t| settable(t, property)),
        _ => false,
    });
    let fix = if diffs.len() == props.len() && all_settable {
        fix_for(&props, src, sm, dst, dm)
    } else {
        Vec::new()
    };
    Verdict::Fails {
        differences: diffs,
        fix,
    }
}

/// Destination `-global` settings that make the properties equal, checked by
/// re-running the comparison with them applied.
fn fix_for(
    props: &[Difference],
    src: &Lock,
    sm: &LockMachine,
    dst: &Lock,
    dm: &LockMachine,
) -> Vec<String> {
    let mut patched = dm.clone();
    let mut fix = Vec::new();
    for d in props {
        let Difference::Property {
            device,
            property,
            source: Some(v),
            subtypes,
            ..
        } = d
        else {
            return Vec::new();
        };
        for t in std::iter::once(device).chain(subtypes) {
            if let Some(p) = patched.props.get_mut(t).and_then(|p| p.get_mut(property)) {
                *p = v.clone();
            }
        }
        fix.push(format!("-global {device}.{property}={v}"));
    }
    let mut rest = property_diffs(sm, &patched, &src.parents);
    section_diffs(src, sm, dst, &mut rest);
    if rest.is_empty() { fix } else { Vec::new() }
}

/// A property's value on the source and on the destination.
type ValuePair<'a> = (Option<&'a String>, Option<&'a String>);

fn property_diffs(
    sm: &LockMachine,
    dm: &LockMachine,
    parents: &BTreeMap<String, String>,
) -> Vec<Difference> {
    let mut raw: BTreeMap<(&str, &str), ValuePair> = BTreeMap::new();
    let instantiated = |t: &&String| sm.devices.contains(t) || dm.devices.contains(t);
    let devices = sm.props.keys().chain(dm.props.keys()).filter(instantiated);
    for dev in devices {
        let (s, d) = (sm.props.get(dev), dm.props.get(dev));
        for p in s.into_iter().chain(d).flat_map(|m| m.keys()) {
            let sv = s.and_then(|m| m.get(p));
            let dv = d.and_then(|m| m.get(p));
            // A property only one release knows is not compared: the other
            // cannot say what it presented (its lock predates the property).
            if sv.is_some() && dv.is_some() && sv != dv {
                raw.insert((dev.as_str(), p.as_str()), (sv, dv));
            }
        }
    }
    // Report each difference on the topmost ancestor that differs the same way.
    let top = |dev: &str, p: &str| -> String {
        let mut cur = dev.to_string();
        let here = raw.get(&(dev, p));
        while let Some(parent) = parents.get(&cur) {
            if raw.get(&(parent.as_str(), p)) == here {
                cur = parent.clone();
            } else {
                break;
            }
        }
        cur
    };
    let mut out: BTreeMap<(String, &str), Difference> = BTreeMap::new();
    for (&(dev, p), &(sv, dv)) in &raw {
        let t = top(dev, p);
        let entry = out
            .entry((t.clone(), p))
            .or_insert_with(|| Difference::Property {
                device: t.clone(),
                property: p.to_string(),
                source: sv.cloned(),
                destination: dv.cloned(),
                subtypes: Vec::new(),
            });
        if let Difference::Property { subtypes, .. } = entry
            && t != dev
        {
            subtypes.push(dev.to_string());
        }
    }
    out.into_values().collect()
}

fn knob_diffs(sm: &LockMachine, dm: &LockMachine, out: &mut Vec<Difference>) {
    let knobs = [
        ("max_cpus", sm.max_cpus.to_string(), dm.max_cpus.to_string()),
        (
            "default_cpus",
            sm.default_cpus.to_string(),
            dm.default_cpus.to_string(),
        ),
        (
            "memory_mib",
            sm.memory_mib.to_string(),
            dm.memory_mib.to_string(),
        ),
        ("devices", sm.devices.join(","), dm.devices.join(",")),
    ];
    for (knob, s, d) in knobs {
        if s != d {
            out.push(Difference::Knob {
                knob: knob.into(),
                source: s,
                destination: d,
            });
        }
    }
}

fn names(fields: impl Iterator<Item = impl std::borrow::Borrow<LockField>>) -> Vec<String> {
    fields
        .map(|f| {
            let f = f.borrow();
            match (&f.len, &f.len_field) {
                (None, _) => format!("{} {}", f.name, f.wire),
                (Some(n), None) => format!("{} {}[{n}]", f.name, f.wire),
                (Some(n), Some(by)) => format!("{} {}[{by}<={n}]", f.name, f.wire),
            }
        })
        .collect()
}

fn same_layout(a: &[&LockField], b: &[&LockField]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name && x.wire == y.wire && x.len == y.len && x.len_field == y.len_field
        })
}

fn section_diffs(src: &Lock, sm: &LockMachine, dst: &Lock, out: &mut Vec<Difference>) {
    if src.stream_format < dst.min_stream_format || src.stream_format > dst.stream_format {
        out.push(Difference::StreamFormat {
            sent: src.stream_format,
            min: dst.min_stream_format,
            max: dst.stream_format,
        });
    }
    for s in &src.section {
        let Some(d) = dst.section(&s.name) else {
            out.push(Difference::UnknownSection {
                section: s.name.clone(),
            });
            continue;
        };
        let v = s.version_id;
        if v > d.version_id || v < d.minimum_version_id {
            out.push(Difference::SectionVersion {
                section: s.name.clone(),
                sent: v,
                min: d.minimum_version_id,
                max: d.version_id,
            });
            continue;
        }
        let (a, b): (Vec<_>, Vec<_>) = (s.fields_at(v).collect(), d.fields_at(v).collect());
        if !same_layout(&a, &b) {
            out.push(Difference::Layout {
                section: s.name.clone(),
                source: names(a.into_iter()),
                destination: names(b.into_iter()),
            });
        }
        subsection_diffs(s, sm, d, out);
    }
}

fn subsection_diffs(s: &LockSection, sm: &LockMachine, d: &LockSection, out: &mut Vec<Difference>) {
    for sub in &s.subsection {
        if sm.prop(&s.device, &sub.gate) != Some("on") {
            continue;
        }
        let Some(dsub) = d.subsection.iter().find(|x| x.name == sub.name) else {
            out.push(Difference::UnknownSubsection {
                section: s.name.clone(),
                subsection: sub.name.clone(),
            });
            continue;
        };
        let (a, b): (Vec<_>, Vec<_>) = (sub.fields.iter().collect(), dsub.fields.iter().collect());
        if !same_layout(&a, &b) {
            out.push(Difference::Layout {
                section: sub.name.clone(),
                source: names(a.into_iter()),
                destination: names(b.into_iter()),
            });
        }
    }
}

#[cfg(test)]
mod tests;

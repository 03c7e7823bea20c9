//! The compat checker: for every frozen release and every machine type it
//! knows, the current tree must present the same guest-visible properties
//! and machine knobs (errata of that release excepted), and a VMState
//! layout the release can load and send ([`super::vmstate_check`]).

use super::LockRef;
use super::findings::{Findings, range};
use super::present::{MachineView, Source, present};
use super::spans::{Spans, at, find};
use crate::diag::{Diag, Loc, SourceFile};
use crate::model::Model;
use compat_runtime::release::{MIN_STREAM_FORMAT, STREAM_FORMAT};
use compat_runtime::version::cmp_release;
use compat_runtime::{Lock, MachineVersion};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Machines that would change for one cause.
struct Group {
    family: usize,
    owner: String,
    prop: String,
    source: Source,
    new: String,
    types: BTreeSet<String>,
    /// version → (machine name, released value)
    machines: BTreeMap<MachineVersion, (String, String)>,
    releases: Vec<String>,
}

/// Checks the current tree against every lock. `sources` is the compat
/// tree followed by the lock files (`LockRef::file` indexes it).
pub fn check(model: &Model, sources: &[SourceFile], locks: &[LockRef]) -> Vec<Diag> {
    let spans = Spans::new(sources);
    let current = present(model, None);
    let releases: Vec<String> = model.releases.iter().map(|r| r.version.clone()).collect();
    let mut findings = Findings::default();
    let mut groups: BTreeMap<(usize, String, String, String), Group> = BTreeMap::new();
    for l in locks {
        let lock = l.lock;
        let whole = Loc {
            file: l.file,
            span: 0..0,
        };
        if !releases.contains(&lock.release) {
            findings.add(format!("unknown:{}", lock.release), &lock.release, || {
                Diag::error(
                    "compat::lock-unknown-release",
                    &find(sources, l.file, "release"),
                    format!(
                        "lock of release {} that compat/releases.toml does not list",
                        lock.release
                    ),
                    "unknown release",
                )
                .help("releases are never removed from the history; put it back in releases.toml")
            });
            continue;
        }
        stream(lock, &whole, &mut findings);
        for lm in &lock.machine {
            let Some(cur) = current.iter().find(|v| v.name == lm.name) else {
                findings.add(format!("machine:{}", lm.name), &lock.release, || {
                    Diag::error(
                        "compat::machine-removed",
                        &find(sources, l.file, &format!("\"{}\"", lm.name)),
                        format!("machine type {} is gone, but {{RELEASES}} presented it", lm.name),
                        "released here",
                    )
                    .help("never delete a released machine type; mark it `lifecycle = \"removed\"` instead")
                });
                continue;
            };
            knobs(model, lock, lm, cur, &mut findings);
            props(
                model,
                sources,
                &spans,
                l,
                lm,
                cur,
                &mut findings,
                &mut groups,
            );
        }
        super::vmstate_check::check(model, sources, &spans, &current, l, &mut findings);
        super::cpu_models::check(model, sources, &spans, l, &mut findings);
    }
    let mut diags = findings.into_diags(&releases);
    for g in groups.into_values() {
        diags.extend(group_diags(model, sources, &spans, g, &releases));
    }
    diags
}

fn stream(lock: &Lock, whole: &Loc, findings: &mut Findings) {
    let r = &lock.release;
    if lock.stream_format < MIN_STREAM_FORMAT || lock.min_stream_format > STREAM_FORMAT {
        findings.add(format!("stream:{r}"), r, || {
            Diag::error(
                "compat::stream-format",
                whole,
                format!(
                    "release {r} writes stream format {} and reads {}..={}; this tree writes {STREAM_FORMAT} and reads {MIN_STREAM_FORMAT}..={STREAM_FORMAT}",
                    lock.stream_format, lock.min_stream_format, lock.stream_format
                ),
                "frozen stream format",
            )
            .help("keep reading and writing a stream format every released version understands")
        });
    }
}

fn knobs(
    model: &Model,
    lock: &Lock,
    lm: &compat_runtime::LockMachine,
    cur: &MachineView,
    findings: &mut Findings,
) {
    let m = &model.families[cur.family].machines[cur.machine];
    let k = &m.knobs;
    let pairs = [
        ("max_cpus", lm.max_cpus.to_string(), k.max_cpus.to_string()),
        (
            "default_cpus",
            lm.default_cpus.to_string(),
            k.default_cpus.to_string(),
        ),
        (
            "memory_mib",
            lm.memory_mib.to_string(),
            k.memory_mib.to_string(),
        ),
        (
            "devices",
            format!("{:?}", lm.devices),
            format!("{:?}", k.devices),
        ),
    ];
    for (knob, old, new) in pairs {
        if old != new {
            findings.add(format!("knob:{}:{knob}:{old}", m.name), &lock.release, || {
                Diag::error(
                    "compat::knob-changed",
                    &m.loc,
                    format!("machine type {}: `{knob}` changed from {old} to {new}, but {{RELEASES}} presented {old}", m.name),
                    "this machine type",
                )
                .help(format!("released machine types keep their knobs: set `{knob} = {old}` on this [[machine]] (family defaults apply to every machine type that does not set it)"))
            });
        }
    }
}

/// Whether an erratum of `release` explains the released value.
fn excused(
    model: &Model,
    release: &str,
    v: MachineVersion,
    ty: usize,
    prop: &str,
    old: &str,
) -> bool {
    model
        .releases
        .iter()
        .filter(|r| cmp_release(&r.version, release) != Ordering::Greater)
        .flat_map(|r| &r.errata)
        .filter(|e| cmp_release(release, &e.fixed_in) == Ordering::Less)
        .any(|e| {
            e.property == prop
                && v <= e.max_machine
                && e.shipped.to_string() == old
                && model.types[ty]
                    .ancestors
                    .iter()
                    .any(|&a| model.types[a].name == e.type_name)
        })
}

#[allow(clippy::too_many_arguments)]
fn props(
    model: &Model,
    sources: &[SourceFile],
    spans: &Spans,
    l: &LockRef,
    lm: &compat_runtime::LockMachine,
    cur: &MachineView,
    findings: &mut Findings,
    groups: &mut BTreeMap<(usize, String, String, String), Group>,
) {
    let release = &l.lock.release;
    for (tname, props) in &lm.props {
        let Some(ti) = model.types.iter().position(|t| &t.name == tname) else {
            findings.add(format!("type:{tname}"), release, || {
                Diag::error(
                    "compat::type-removed",
                    &find(sources, l.file, &format!("props.{tname}]")),
                    format!("device type `{tname}` is gone, but {{RELEASES}} presented it"),
                    "released here",
                )
                .help("never delete a device type released machine types present")
            });
            continue;
        };
        let ty = &model.types[ti];
        for (pname, old) in props {
            let Some(pi) = ty.props.iter().position(|p| &p.name == pname) else {
                findings.add(format!("prop:{tname}.{pname}"), release, || {
                    Diag::error(
                        "compat::property-removed",
                        &spans.device_name(tname).unwrap_or(Loc {
                            file: l.file,
                            span: 0..0,
                        }),
                        format!(
                            "property `{tname}.{pname}` is gone, but {{RELEASES}} presented it"
                        ),
                        "this device type",
                    )
                    .help(format!(
                        "keep `{pname}` (with its released values) on `{tname}`"
                    ))
                });
                continue;
            };
            let now = &cur.props[ti][pi];
            let new = now.value.to_string();
            if &new == old || excused(model, release, cur.version, ti, pname, old) {
                continue;
            }
            let owner = ty.props[pi].owner.clone();
            let skey = match &now.source {
                Source::Entry { delta, entry } => format!("{delta}:{entry}"),
                _ => "default".to_string(),
            };
            let g = groups
                .entry((cur.family, owner.clone(), pname.clone(), skey))
                .or_insert_with(|| Group {
                    family: cur.family,
                    owner,
                    prop: pname.clone(),
                    source: now.source.clone(),
                    new,
                    types: BTreeSet::new(),
                    machines: BTreeMap::new(),
                    releases: Vec::new(),
                });
            g.types.insert(tname.clone());
            g.machines
                .entry(cur.version)
                .or_insert_with(|| (cur.name.clone(), old.clone()));
            if !g.releases.contains(release) {
                g.releases.push(release.clone());
            }
        }
    }
}

fn group_diags(
    model: &Model,
    sources: &[SourceFile],
    spans: &Spans,
    mut g: Group,
    releases: &[String],
) -> Vec<Diag> {
    let fam = &model.families[g.family];
    let universe: Vec<String> = fam.machines.iter().map(|m| m.name.clone()).collect();
    g.releases.sort_by(|a, b| cmp_release(a, b));
    let rels = range(&g.releases, releases);
    let target = if g.types.contains(&g.owner) || g.types.len() != 1 {
        g.owner.clone()
    } else {
        g.types.iter().next().cloned().unwrap_or_default()
    };
    // One diagnostic per released value.
    let mut by_old: BTreeMap<String, Vec<(MachineVersion, String)>> = BTreeMap::new();
    for (v, (name, old)) in &g.machines {
        by_old
            .entry(old.clone())
            .or_default()
            .push((*v, name.clone()));
    }
    let series = fam.series.first().cloned().unwrap_or_default();
    let newest = fam.machines.last().map(|m| m.version);
    let mut out = Vec::new();
    for (old, ms) in by_old {
        let names: Vec<String> = ms.iter().map(|(_, n)| n.clone()).collect();
        let what = if names.len() == 1 {
            "machine type"
        } else {
            "machine types"
        };
        let list = range(&names, &universe);
        let Some(&(maxv, _)) = ms.last() else {
            continue;
        };
        let delta = format!("{series}_{}", maxv.underscored());
        let diag = match &g.source {
            Source::Entry {
                delta: di,
                entry: ei,
            } => {
                let d = &model.deltas[*di];
                let e = &d.entries[*ei];
                Diag::error(
                    "compat::released-machine-changed",
                    &e.loc,
                    format!(
                        "`{}` entry `{{ {}, {}, {} }}` in `{}` changes released {what} {list}: {} presented `{}.{}` = {old}",
                        d.name, e.type_name, e.property, e.value, at(sources, &e.loc), release_word(&g.releases, &rels), g.owner, g.prop
                    ),
                    "retroactive change",
                )
                .help(format!(
                    "released machine types never change. If that release shipped them wrong and a later one fixed it, declare it in compat/releases.toml: an erratum on release {} with type = \"{target}\", property = \"{}\", shipped = \"{old}\", max_machine = \"{maxv}\", fixed_in = \"<fixing release>\"; otherwise remove the entry",
                    g.releases.first().cloned().unwrap_or_default(), g.prop
                ))
            }
            _ => {
                let l = spans.default(&g.owner, &g.prop).unwrap_or(Loc {
                    file: 0,
                    span: 0..0,
                });
                let mut d = Diag::error(
                    "compat::default-changed",
                    &l,
                    format!(
                        "default of `{}.{}` changed from {old} to {} in `{}`; {what} {list} would change; add `{{ {target}, {}, {old} }}` to `{delta}`",
                        g.owner,
                        g.prop,
                        g.new,
                        at(sources, &l),
                        g.prop
                    ),
                    format!("{} presented {old}", release_word(&g.releases, &rels)),
                );
                d = if Some(maxv) == newest {
                    d.help(format!("{} is the newest machine type and frozen by {}: add the next machine type to compat/machines.toml, then `{delta}` with the old value", names.last().cloned().unwrap_or_default(), release_word(&g.releases, &rels)))
                } else {
                    d.help(format!("a changed default needs a compat delta restoring the old value for every released machine type ({} froze them)", release_word(&g.releases, &rels)))
                };
                d
            }
        };
        out.push(diag);
    }
    out
}

fn release_word(rels: &[String], list: &str) -> String {
    if rels.len() == 1 {
        format!("release {list}")
    } else {
        format!("releases {list}")
    }
}

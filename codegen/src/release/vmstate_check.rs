//! VMState half of the checker: every section a frozen release sends must
//! still load (its version within our `[minimum, version]`, the same fields
//! at that version), and what we send it must load there: new fields only
//! with a `since` above its version, new subsections only behind a gate that
//! is off for every machine type it knows.

use super::LockRef;
use super::findings::{Findings, range};
use super::present::MachineView;
use super::spans::{Spans, at, find};
use crate::diag::{Diag, Loc, SourceFile};
use crate::model::{CountM, FieldM, Model};
use compat_runtime::release::LockField;
use compat_runtime::{LockSection, Value};

fn same(f: &FieldM, l: &LockField) -> bool {
    let (len, by) = match &f.count {
        CountM::One => (None, None),
        CountM::Fixed(n) => (Some(*n), None),
        CountM::Field(by, max) => (Some(*max), Some(by.as_str())),
    };
    f.wire.name() == l.wire && len == l.len && by == l.len_field.as_deref()
}

/// Checks the sections of one lock.
pub fn check(
    model: &Model,
    sources: &[SourceFile],
    spans: &Spans,
    current: &[MachineView],
    l: &LockRef,
    out: &mut Findings,
) {
    let rel = &l.lock.release;
    for ls in &l.lock.section {
        let Some((ti, vm)) = model.types.iter().enumerate().find_map(|(i, t)| {
            t.vmstate
                .as_ref()
                .filter(|v| v.name == ls.name)
                .map(|v| (i, v))
        }) else {
            out.add(format!("section:{}", ls.name), rel, || {
                Diag::error(
                    "compat::section-removed",
                    &find(sources, l.file, &format!("name = \"{}\"", ls.name)),
                    format!(
                        "VMState section `{}` is gone, but {{RELEASES}} send it",
                        ls.name
                    ),
                    "released section",
                )
                .help("keep the section (renaming it is removing it)")
            });
            continue;
        };
        let dev = &model.types[ti].name;
        let none = Loc {
            file: 0,
            span: 0..0,
        };
        let (vloc, mloc) = spans.versions(dev).unwrap_or((none.clone(), none.clone()));
        let v = ls.version_id;
        if vm.minimum_version_id > v {
            out.add(format!("min:{}:{v}", ls.name), rel, || {
                Diag::error(
                    "compat::section-minimum",
                    &mloc,
                    format!("`minimum_version_id` of VMState section `{}` is {}, above version {v} that {{RELEASES}} send", ls.name, vm.minimum_version_id),
                    "streams of version {v} no longer load",
                )
                .help(format!("keep `minimum_version_id <= {v}`"))
            });
        }
        if vm.version_id < v {
            out.add(format!("ver:{}:{v}", ls.name), rel, || {
                Diag::error(
                    "compat::section-version",
                    &vloc,
                    format!("`version_id` of VMState section `{}` went down to {}, but {{RELEASES}} send version {v}", ls.name, vm.version_id),
                    "lower than released",
                )
                .help("section versions only go up")
            });
        }
        fields(sources, spans, dev, ls, &vm.fields, &vloc, rel, out);
        subsections(model, sources, spans, current, l, ti, ls, out);
    }
}

#[allow(clippy::too_many_arguments)]
fn fields(
    sources: &[SourceFile],
    spans: &Spans,
    dev: &str,
    ls: &LockSection,
    cur: &[FieldM],
    vloc: &Loc,
    rel: &str,
    out: &mut Findings,
) {
    let v = ls.version_id;
    let name = &ls.name;
    let at_v: Vec<&FieldM> = cur.iter().filter(|f| f.since <= v).collect();
    let locked: Vec<&LockField> = ls.fields_at(v).collect();
    for f in &at_v {
        let floc = spans
            .field(dev, None, &f.name)
            .unwrap_or_else(|| vloc.clone());
        match locked.iter().find(|x| x.name == f.name) {
            None => out.add(format!("new:{name}:{}:{v}", f.name), rel, || {
                let since = if f.since == 0 { "no `since`".to_string() } else { format!("`since = {}`", f.since) };
                Diag::error(
                    "compat::vmstate-new-field",
                    &floc,
                    format!("new VMState field `{name}.{}` in `{}` has {since}, so it would be sent at version {v}, which {{RELEASES}} send and load without it", f.name, at(sources, &floc)),
                    "not in the released layout",
                )
                .help(format!("bump `version_id` to {} and give the field `since = {}`, or put it in a subsection gated by a bool property that is off for every released machine type", v + 1, v + 1))
            }),
            Some(l) if !same(f, l) => out.add(format!("changed:{name}:{}", f.name), rel, || {
                Diag::error(
                    "compat::vmstate-field-changed",
                    &floc,
                    format!("VMState field `{name}.{}` changed its wire type or count, but {{RELEASES}} send it as {} (len {:?})", f.name, l.wire, l.len),
                    "changed",
                )
                .help("add a new field with a new `since` instead of changing a released one")
            }),
            Some(_) => {}
        }
    }
    for l in &locked {
        if !at_v.iter().any(|f| f.name == l.name) {
            out.add(format!("gone:{name}:{}", l.name), rel, || {
                Diag::error(
                    "compat::vmstate-field-removed",
                    vloc,
                    format!("VMState field `{name}.{}` is gone (or its `since` rose above {v}), but {{RELEASES}} send it at version {v}", l.name),
                    "this section",
                )
                .help("keep every released field at its released version")
            });
        }
    }
    fn common<'a>(xs: Vec<&'a str>, a: &[&FieldM], b: &[&LockField]) -> Vec<&'a str> {
        xs.into_iter()
            .filter(|n| b.iter().any(|l| l.name == *n) && a.iter().any(|f| f.name == *n))
            .collect()
    }
    let order = |xs: Vec<&'_ str>| {
        common(xs, &at_v, &locked)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    if order(at_v.iter().map(|f| f.name.as_str()).collect())
        != order(locked.iter().map(|f| f.name.as_str()).collect())
    {
        out.add(format!("order:{name}"), rel, || {
            Diag::error("compat::vmstate-field-order", vloc, format!("fields of VMState section `{name}` were reordered, but {{RELEASES}} send them in the released order"), "this section")
                .help("restore the released order; append new fields at the end with a new `since`")
        });
    }
}

/// Every machine type of this lock (the message names them all).
fn released(l: &LockRef) -> Vec<String> {
    l.all_machines.to_vec()
}

#[allow(clippy::too_many_arguments)]
fn subsections(
    model: &Model,
    sources: &[SourceFile],
    spans: &Spans,
    current: &[MachineView],
    l: &LockRef,
    ti: usize,
    ls: &LockSection,
    out: &mut Findings,
) {
    let released = released(l);
    let rel = &l.lock.release;
    let ty = &model.types[ti];
    let Some(vm) = &ty.vmstate else { return };
    for sub in &vm.subsections {
        let sloc = spans.subsection(&ty.name, &sub.name).unwrap_or(Loc {
            file: 0,
            span: 0..0,
        });
        match ls.subsection.iter().find(|x| x.name == sub.name) {
            None => {
                let gate = ty.props.iter().position(|p| p.name == sub.gate);
                let gated_on = |c: &&MachineView| {
                    gate.is_some_and(|g| c.props[ti][g].value == Value::Bool(true))
                };
                let known = |c: &&MachineView| l.lock.machine.iter().any(|m| m.name == c.name);
                if !current.iter().filter(known).any(|c| gated_on(&c)) {
                    continue;
                }
                // Name every released machine type that would send it.
                let on_views: Vec<&MachineView> = current
                    .iter()
                    .filter(|c| released.contains(&c.name))
                    .filter(gated_on)
                    .collect();
                let on: Vec<String> = on_views.iter().map(|c| c.name.clone()).collect();
                let universe: Vec<String> = current.iter().map(|c| c.name.clone()).collect();
                let owner = gate.map(|g| ty.props[g].owner.clone()).unwrap_or_default();
                let last = on_views
                    .last()
                    .map(|c| {
                        let series = model.families[c.family]
                            .series
                            .first()
                            .cloned()
                            .unwrap_or_default();
                        format!("`{series}_{}`", c.version.underscored())
                    })
                    .unwrap_or_default();
                out.add(format!("newsub:{}", sub.name), rel, || {
                    Diag::error(
                        "compat::vmstate-new-subsection",
                        &sloc,
                        format!("new VMState subsection `{}` in `{}` would be sent for machine types {} (gate `{}.{}` is on), which {{RELEASES}} cannot load", sub.name, at(sources, &sloc), range(&on, &universe), ty.name, sub.gate),
                        "not in the released layout",
                    )
                    .help(format!("gate it on a bool property that is off for released machine types: e.g. add `{{ {owner}, {}, off }}` to {last} (after adding the next machine type if that is the newest)", sub.gate))
                });
            }
            Some(lsub) => {
                let a: Vec<&FieldM> = sub.fields.iter().collect();
                let ok = a.len() == lsub.fields.len()
                    && a.iter()
                        .zip(&lsub.fields)
                        .all(|(f, l)| f.name == l.name && same(f, l));
                if !ok {
                    out.add(format!("subchanged:{}", sub.name), rel, || {
                        Diag::error(
                            "compat::vmstate-subsection-changed",
                            &sloc,
                            format!("fields of VMState subsection `{}` changed, but {{RELEASES}} send and load the released ones", sub.name),
                            "changed",
                        )
                        .help("add a new subsection (with its own gate) instead of changing a released one")
                    });
                }
            }
        }
    }
    for lsub in &ls.subsection {
        if !vm.subsections.iter().any(|s| s.name == lsub.name) {
            let sent = l
                .lock
                .machine
                .iter()
                .any(|m| m.prop(&ls.device, &lsub.gate) == Some("on"));
            if sent {
                out.add(format!("subgone:{}", lsub.name), rel, || {
                    Diag::error(
                        "compat::vmstate-subsection-removed",
                        &find(sources, l.file, &format!("name = \"{}\"", lsub.name)),
                        format!(
                            "VMState subsection `{}` is gone, but {{RELEASES}} send it",
                            lsub.name
                        ),
                        "released subsection",
                    )
                    .help("keep loading every subsection a released version sends")
                });
            }
        }
    }
}

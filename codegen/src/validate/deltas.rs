//! Compat deltas, releases with errata, deprecations.

use super::{Names, check_name, check_release, loc, valid_release};
use crate::ast::{FileAst, ScalarAst};
use crate::diag::{Diag, Loc};
use crate::model::{DeltaM, DeprecationM, EntryM, ErratumM, FamilyM, ReleaseM, TypeM};
use compat_runtime::suggest::did_you_mean;
use compat_runtime::version::cmp_release;
use compat_runtime::{MachineVersion, Value};
use std::collections::HashMap;
use toml::Spanned;

/// Release history (errata are attached later, once types are known).
pub fn releases(files: &[FileAst], diags: &mut Vec<Diag>) -> Vec<ReleaseM> {
    let mut out: Vec<ReleaseM> = Vec::new();
    for (file, f) in files.iter().enumerate() {
        for r in &f.release {
            let r = r.get_ref();
            let v = r.version.get_ref();
            if !valid_release(v) {
                diags.push(Diag::error(
                    "compat::bad-version",
                    &loc(file, &r.version),
                    format!("release `{v}` is not of the form X.Y or X.Y.Z"),
                    "here",
                ));
            } else if out.iter().any(|x| &x.version == v) {
                diags.push(Diag::error(
                    "compat::duplicate",
                    &loc(file, &r.version),
                    format!("release {v} is listed twice"),
                    "second entry",
                ));
            } else {
                out.push(ReleaseM {
                    version: v.clone(),
                    date: r
                        .date
                        .as_ref()
                        .and_then(|d| super::lifecycle::date(file, d, diags)),
                    errata: Vec::new(),
                });
            }
        }
    }
    out.sort_by(|a, b| cmp_release(&a.version, &b.version));
    out
}

/// Resolves `type`/`property`/value triples (deltas and errata).
struct Triple<'a> {
    types: &'a [TypeM],
    index: HashMap<&'a str, usize>,
}

impl<'a> Triple<'a> {
    fn new(types: &'a [TypeM]) -> Self {
        Self {
            types,
            index: types
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect(),
        }
    }
}

impl Triple<'_> {
    fn check(
        &self,
        file: usize,
        ty: &Spanned<String>,
        prop: &Spanned<String>,
        value: &Spanned<ScalarAst>,
        diags: &mut Vec<Diag>,
    ) -> Option<(usize, Value)> {
        let Some(&ti) = self.index.get(ty.get_ref().as_str()) else {
            diags.push(
                Diag::error(
                    "compat::unknown-type",
                    &loc(file, ty),
                    format!("unknown device type `{}`", ty.get_ref()),
                    "no such device type",
                )
                .suggest(did_you_mean(
                    ty.get_ref(),
                    self.types.iter().map(|t| t.name.as_str()),
                ))
                .help_if_none("device types are declared in compat/devices/*.toml"),
            );
            return None;
        };
        let t = &self.types[ti];
        if let Some((model, v)) = t.model_version() {
            diags.push(
                Diag::error(
                    "compat::delta-on-cpu-model",
                    &loc(file, ty),
                    format!("`{}` is CPU model {model} version {v}, which no delta or erratum may change", t.name),
                    "a CPU model version",
                )
                .help(format!("a released model version is never edited: declare `{model}-v{}-x86_64-cpu` with the change in compat/cpu/models.toml (or target `x86_64-cpu` for every model)", v + 1)),
            );
            return None;
        }
        let Some(p) = t.prop(prop.get_ref()) else {
            diags.push(
                Diag::error(
                    "compat::unknown-property",
                    &loc(file, prop),
                    format!(
                        "device type `{}` has no property `{}`",
                        t.name,
                        prop.get_ref()
                    ),
                    "unknown property",
                )
                .suggest(did_you_mean(
                    prop.get_ref(),
                    t.props.iter().map(|p| p.name.as_str()),
                ))
                .help_if_none("properties are inherited from parents, never from subtypes"),
            );
            return None;
        };
        match Value::parse(&p.ty, &value.get_ref().text()) {
            Ok(v) => Some((ti, v)),
            Err(e) => {
                diags.push(
                    Diag::error(
                        "compat::bad-value",
                        &loc(file, value),
                        format!("bad value for {}.{}: {e}", t.name, p.name),
                        format!("expected {}", p.ty.describe()),
                    )
                    .help("values are parsed exactly like -global values"),
                );
                None
            }
        }
    }
}

/// Validates deltas against types and machine types.
pub fn deltas(
    files: &[FileAst],
    types: &[TypeM],
    fams: &[FamilyM],
    releases: &Names,
    diags: &mut Vec<Diag>,
) -> Vec<DeltaM> {
    let triple = Triple::new(types);
    let mut out: Vec<DeltaM> = Vec::new();
    let mut seen: HashMap<(String, MachineVersion), Loc> = HashMap::new();
    let machine_versions: std::collections::HashSet<(&str, MachineVersion)> = fams
        .iter()
        .flat_map(|f| f.machines.iter().map(move |m| (f.name.as_str(), m.version)))
        .collect();
    for (file, f) in files.iter().enumerate() {
        for d in &f.delta {
            let dloc = loc(file, d);
            let d = d.get_ref();
            if !check_name(file, &d.series, "delta series", diags) {
                continue;
            }
            let series = d.series.get_ref();
            let Ok(version) = d.version.get_ref().parse::<MachineVersion>() else {
                diags.push(Diag::error(
                    "compat::bad-version",
                    &loc(file, &d.version),
                    format!(
                        "delta version `{}` is not of the form X.Y",
                        d.version.get_ref()
                    ),
                    "expected e.g. \"7.2\"",
                ));
                continue;
            };
            let name = format!("{series}_{}", version.underscored());
            let users: Vec<&FamilyM> = fams.iter().filter(|f| f.series.contains(series)).collect();
            if users.is_empty() {
                let all: Vec<&str> = fams
                    .iter()
                    .flat_map(|f| f.series.iter().map(String::as_str))
                    .collect();
                diags.push(
                    Diag::error(
                        "compat::delta-without-machine",
                        &loc(file, &d.series),
                        format!("{name}: no family applies the `{series}` series"),
                        "unknown series",
                    )
                    .suggest(did_you_mean(series, all)),
                );
                continue;
            }
            if !users
                .iter()
                .any(|f| machine_versions.contains(&(f.name.as_str(), version)))
            {
                let versions: Vec<String> = users[0]
                    .machines
                    .iter()
                    .map(|m| m.version.to_string())
                    .collect();
                diags.push(
                    Diag::error(
                        "compat::delta-without-machine",
                        &loc(file, &d.version),
                        format!("{name}: there is no machine type with version {version}"),
                        "no machine type has this version",
                    )
                    .help(format!("machine versions: {}", versions.join(", "))),
                );
                continue;
            }
            if let Some(prev) = seen.get(&(series.clone(), version)) {
                diags.push(
                    Diag::error(
                        "compat::duplicate",
                        &dloc,
                        format!("{name} is defined twice"),
                        "second definition",
                    )
                    .label(prev, "first definition"),
                );
                continue;
            }
            seen.insert((series.clone(), version), dloc.clone());
            let mut entries: Vec<EntryM> = Vec::new();
            for e in &d.entries {
                let eloc = loc(file, e);
                let e = e.get_ref();
                if let Some(a) = &e.added_in {
                    check_release(file, a, "added_in", releases, diags);
                }
                let Some((ti, value)) = triple.check(file, &e.ty, &e.property, &e.value, diags)
                else {
                    continue;
                };
                if let Some(prev) = entries
                    .iter()
                    .find(|x| x.type_idx == ti && &x.property == e.property.get_ref())
                {
                    diags.push(
                        Diag::error(
                            "compat::duplicate-entry",
                            &eloc,
                            format!(
                                "{name} sets {}.{} twice",
                                e.ty.get_ref(),
                                e.property.get_ref()
                            ),
                            "second entry",
                        )
                        .label(&prev.loc, "first entry")
                        .help("keep one entry: within a delta the last one would silently win"),
                    );
                    continue;
                }
                entries.push(EntryM {
                    type_idx: ti,
                    type_name: e.ty.get_ref().clone(),
                    property: e.property.get_ref().clone(),
                    value,
                    added_in: e.added_in.as_ref().map(|a| a.get_ref().clone()),
                    loc: eloc,
                });
            }
            out.push(DeltaM {
                name,
                series: series.clone(),
                version,
                entries,
                loc: dloc,
            });
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Attaches validated errata to releases.
pub fn errata(
    files: &[FileAst],
    mut rel: Vec<ReleaseM>,
    types: &[TypeM],
    releases: &Names,
    diags: &mut Vec<Diag>,
) -> Vec<ReleaseM> {
    let triple = Triple::new(types);
    for (file, f) in files.iter().enumerate() {
        for r in &f.release {
            let r = r.get_ref();
            for e in &r.erratum {
                let e = e.get_ref();
                let fixed = check_release(file, &e.fixed_in, "erratum `fixed_in`", releases, diags);
                let t = triple.check(file, &e.ty, &e.property, &e.shipped, diags);
                let mv = e.max_machine.get_ref().parse::<MachineVersion>();
                if mv.is_err() {
                    diags.push(Diag::error(
                        "compat::bad-version",
                        &loc(file, &e.max_machine),
                        format!(
                            "max_machine `{}` is not of the form X.Y",
                            e.max_machine.get_ref()
                        ),
                        "here",
                    ));
                }
                if let (true, Some((_, shipped)), Ok(max_machine), Some(target)) = (
                    fixed,
                    t,
                    mv,
                    rel.iter_mut().find(|x| &x.version == r.version.get_ref()),
                ) {
                    target.errata.push(ErratumM {
                        id: e.id.get_ref().clone(),
                        summary: e.summary.clone(),
                        type_name: e.ty.get_ref().clone(),
                        property: e.property.get_ref().clone(),
                        shipped,
                        max_machine,
                        fixed_in: e.fixed_in.get_ref().clone(),
                    });
                }
            }
        }
    }
    rel
}

/// Validates deprecations.
pub fn deprecations(
    files: &[FileAst],
    releases: &Names,
    diags: &mut Vec<Diag>,
) -> Vec<DeprecationM> {
    let mut out: Vec<DeprecationM> = Vec::new();
    for (file, f) in files.iter().enumerate() {
        for d in &f.deprecation {
            let d = d.get_ref();
            if out.iter().any(|x| &x.id == d.id.get_ref()) {
                diags.push(Diag::error(
                    "compat::duplicate",
                    &loc(file, &d.id),
                    format!("deprecation `{}` is listed twice", d.id.get_ref()),
                    "second entry",
                ));
                continue;
            }
            check_release(file, &d.since, "deprecation `since`", releases, diags);
            out.push(DeprecationM {
                id: d.id.get_ref().clone(),
                feature: d.feature.clone(),
                since: d.since.get_ref().clone(),
                replacement: d.replacement.clone(),
            });
        }
    }
    out
}

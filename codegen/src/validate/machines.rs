//! Families, machine types, lifecycles, knobs and aliases.

use super::{Names, check_name, check_release, loc};
use crate::ast::{FileAst, MachineAst, SStr};
use crate::diag::{Diag, Loc};
use crate::model::{FamilyM, KnobsM, LifecycleM, MachineM, TypeM};
use compat_runtime::MachineVersion;
use compat_runtime::suggest::did_you_mean;

/// Validates families, their machine types and aliases.
pub fn families(
    files: &[FileAst],
    types: &[TypeM],
    releases: &Names,
    diags: &mut Vec<Diag>,
) -> Vec<FamilyM> {
    let mut fams: Vec<(FamilyM, KnobsM)> = Vec::new();
    for (file, f) in files.iter().enumerate() {
        for fa in &f.family {
            let fa = fa.get_ref();
            if !check_name(file, &fa.name, "family", diags) {
                continue;
            }
            if fams.iter().any(|(x, _)| &x.name == fa.name.get_ref()) {
                diags.push(Diag::error(
                    "compat::duplicate",
                    &loc(file, &fa.name),
                    format!("family `{}` is defined twice", fa.name.get_ref()),
                    "second definition",
                ));
                continue;
            }
            let series = fa
                .series
                .iter()
                .filter(|s| check_name(file, s, "delta series", diags))
                .map(|s| s.get_ref().clone())
                .collect();
            let knobs = KnobsM {
                max_cpus: fa.max_cpus.unwrap_or(1),
                default_cpus: fa.default_cpus.unwrap_or(1),
                memory_mib: fa.memory_mib.unwrap_or(128),
                devices: device_list(file, fa.devices.as_deref().unwrap_or(&[]), types, diags),
            };
            let family = FamilyM {
                name: fa.name.get_ref().clone(),
                doc: fa.doc.clone(),
                alias: fa
                    .alias
                    .as_ref()
                    .filter(|a| check_name(file, a, "alias", diags))
                    .map(|a| a.get_ref().clone()),
                series,
                machines: Vec::new(),
            };
            fams.push((family, knobs));
        }
    }
    for (file, f) in files.iter().enumerate() {
        for m in &f.machine {
            machine(file, m.get_ref(), &mut fams, types, releases, diags);
        }
    }
    let mut out: Vec<FamilyM> = fams.into_iter().map(|(f, _)| f).collect();
    for f in &mut out {
        f.machines.sort_by_key(|m| m.version);
        if let (Some(a), Some(last)) = (&f.alias, f.machines.last_mut()) {
            last.alias = Some(a.clone());
        }
    }
    aliases(files, &mut out, diags);
    out
}

fn device_list(file: usize, list: &[SStr], types: &[TypeM], diags: &mut Vec<Diag>) -> Vec<String> {
    let mut out = Vec::new();
    for d in list {
        if types.iter().any(|t| &t.name == d.get_ref()) {
            out.push(d.get_ref().clone());
        } else {
            diags.push(
                Diag::error(
                    "compat::unknown-type",
                    &loc(file, d),
                    format!(
                        "unknown device type `{}` in a machine's device list",
                        d.get_ref()
                    ),
                    "no such device type",
                )
                .suggest(did_you_mean(
                    d.get_ref(),
                    types.iter().map(|t| t.name.as_str()),
                )),
            );
        }
    }
    out
}

fn machine(
    file: usize,
    m: &MachineAst,
    fams: &mut [(FamilyM, KnobsM)],
    types: &[TypeM],
    releases: &Names,
    diags: &mut Vec<Diag>,
) {
    let names: Vec<String> = fams.iter().map(|(f, _)| f.name.clone()).collect();
    let Some((fam, fknobs)) = fams.iter_mut().find(|(f, _)| &f.name == m.family.get_ref()) else {
        diags.push(
            Diag::error(
                "compat::unknown-family",
                &loc(file, &m.family),
                format!("machine type names unknown family `{}`", m.family.get_ref()),
                "no such family",
            )
            .suggest(did_you_mean(
                m.family.get_ref(),
                names.iter().map(String::as_str),
            )),
        );
        return;
    };
    let Ok(version) = m.version.get_ref().parse::<MachineVersion>() else {
        diags.push(Diag::error(
            "compat::bad-version",
            &loc(file, &m.version),
            format!(
                "machine version `{}` is not of the form X.Y",
                m.version.get_ref()
            ),
            "expected e.g. \"7.2\"",
        ));
        return;
    };
    let here = loc(file, &m.version);
    if let Some(prev) = fam.machines.iter().find(|x| x.version == version) {
        diags.push(
            Diag::error(
                "compat::duplicate-machine",
                &here,
                format!("machine type {}-{version} is defined twice", fam.name),
                "defined again here",
            )
            .label(&prev.loc, "first defined here")
            .help("each version appears once per family"),
        );
        return;
    }
    let introduced_in = match &m.introduced_in {
        Some(r) => {
            check_release(file, r, "introduced_in", releases, diags);
            r.get_ref().clone()
        }
        None => {
            let v = version.to_string();
            if !releases.contains(&v) {
                check_release(
                    file,
                    &toml::Spanned::new(here.span.clone(), v.clone()),
                    "machine type version",
                    releases,
                    diags,
                );
            }
            v
        }
    };
    let lifecycle = lifecycle(file, m, releases, &here, diags);
    let knobs = KnobsM {
        max_cpus: m.max_cpus.unwrap_or(fknobs.max_cpus),
        default_cpus: m.default_cpus.unwrap_or(fknobs.default_cpus),
        memory_mib: m.memory_mib.unwrap_or(fknobs.memory_mib),
        devices: match &m.devices {
            Some(d) => device_list(file, d, types, diags),
            None => fknobs.devices.clone(),
        },
    };
    if knobs.default_cpus > knobs.max_cpus || knobs.default_cpus == 0 {
        diags.push(Diag::error(
            "compat::bad-value",
            &here,
            format!(
                "machine {}-{version}: default_cpus {} is not in 1..={}",
                fam.name, knobs.default_cpus, knobs.max_cpus
            ),
            "this machine",
        ));
    }
    fam.machines.push(MachineM {
        name: format!("{}-{version}", fam.name),
        family: fam.name.clone(),
        version,
        alias: None,
        lifecycle,
        introduced_in,
        knobs,
        loc: here,
    });
}

fn lifecycle(
    file: usize,
    m: &MachineAst,
    releases: &Names,
    here: &Loc,
    diags: &mut Vec<Diag>,
) -> LifecycleM {
    let state = m
        .lifecycle
        .as_ref()
        .map(|l| l.get_ref().as_str())
        .unwrap_or("supported");
    let mut since = || -> String {
        match &m.since {
            Some(s) => {
                check_release(file, s, "lifecycle `since`", releases, diags);
                s.get_ref().clone()
            }
            None => {
                diags.push(Diag::error(
                    "compat::bad-value",
                    here,
                    format!("a {state} machine type needs `since = \"<release>\"`"),
                    "this machine",
                ));
                String::new()
            }
        }
    };
    match state {
        "supported" => LifecycleM::Supported,
        "deprecated" => LifecycleM::Deprecated {
            since: since(),
            reason: "declared deprecated in compat/machines.toml".into(),
        },
        "removed" => LifecycleM::Removed {
            since: since(),
            reason: "declared removed in compat/machines.toml".into(),
        },
        other => {
            if let Some(l) = &m.lifecycle {
                diags.push(
                    Diag::error(
                        "compat::bad-value",
                        &loc(file, l),
                        format!("unknown lifecycle `{other}`"),
                        "here",
                    )
                    .help("lifecycle is one of supported, deprecated, removed"),
                );
            }
            LifecycleM::Supported
        }
    }
}

fn aliases(files: &[FileAst], fams: &mut [FamilyM], diags: &mut Vec<Diag>) {
    for (file, f) in files.iter().enumerate() {
        for a in &f.alias {
            let a = a.get_ref();
            let all: Vec<String> = fams
                .iter()
                .flat_map(|f| f.machines.iter().map(|m| m.name.clone()))
                .collect();
            let taken = fams
                .iter()
                .flat_map(|f| f.machines.iter())
                .any(|m| &m.name == a.name.get_ref() || m.alias.as_ref() == Some(a.name.get_ref()));
            if taken {
                diags.push(Diag::error(
                    "compat::duplicate",
                    &loc(file, &a.name),
                    format!(
                        "alias `{}` is already a machine type name or alias",
                        a.name.get_ref()
                    ),
                    "here",
                ));
                continue;
            }
            let Some(m) = fams
                .iter_mut()
                .flat_map(|f| f.machines.iter_mut())
                .find(|m| &m.name == a.machine.get_ref())
            else {
                diags.push(
                    Diag::error(
                        "compat::unknown-alias-target",
                        &loc(file, &a.machine),
                        format!(
                            "alias `{}` points to unknown machine type `{}`",
                            a.name.get_ref(),
                            a.machine.get_ref()
                        ),
                        "no such machine type",
                    )
                    .suggest(did_you_mean(
                        a.machine.get_ref(),
                        all.iter().map(String::as_str),
                    )),
                );
                continue;
            };
            if m.alias.is_some() {
                diags.push(Diag::error(
                    "compat::duplicate",
                    &loc(file, &a.name),
                    format!("machine type `{}` already has an alias", m.name),
                    "second alias",
                ));
                continue;
            }
            m.alias = Some(a.name.get_ref().clone());
        }
    }
}

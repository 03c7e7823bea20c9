//! VMState descriptions: versions, wire types, counts, subsection gates.

use super::{check_name, loc};
use crate::ast::{CountAst, FieldAst, VmStateAst};
use crate::diag::Diag;
use crate::model::{CountM, FieldM, PropM, SubsectionM, VmStateM};
use compat_runtime::suggest::did_you_mean;
use compat_runtime::{PropType, WireType};
use toml::Spanned;

/// Validates one device's VMState description.
pub fn vmstate(
    file: usize,
    v: &Spanned<VmStateAst>,
    props: &[PropM],
    diags: &mut Vec<Diag>,
) -> Option<VmStateM> {
    let v = v.get_ref();
    let (version_id, min) = (*v.version_id.get_ref(), *v.minimum_version_id.get_ref());
    let mut ok = true;
    if min > version_id {
        diags.push(
            Diag::error(
                "compat::min-version-above-version",
                &loc(file, &v.minimum_version_id),
                format!(
                    "VMState `{}`: minimum_version_id {min} is above version_id {version_id}",
                    v.name.get_ref()
                ),
                "minimum_version_id",
            )
            .label(&loc(file, &v.version_id), "version_id")
            .help("the oldest version a build reads cannot be newer than the one it writes"),
        );
        ok = false;
    }
    let mut earlier: Vec<FieldM> = Vec::new();
    let fields = field_list(file, &v.fields, version_id, &mut earlier, diags, &mut ok);
    let mut subsections: Vec<SubsectionM> = Vec::new();
    for s in &v.subsection {
        let s = s.get_ref();
        if subsections.iter().any(|x| &x.name == s.name.get_ref()) {
            diags.push(Diag::error(
                "compat::duplicate",
                &loc(file, &s.name),
                format!("subsection `{}` is defined twice", s.name.get_ref()),
                "second definition",
            ));
            ok = false;
            continue;
        }
        match props.iter().find(|p| &p.name == s.gate.get_ref()) {
            None => {
                diags.push(
                    Diag::error(
                        "compat::bad-gate",
                        &loc(file, &s.gate),
                        format!(
                            "subsection `{}` is gated on unknown property `{}`",
                            s.name.get_ref(),
                            s.gate.get_ref()
                        ),
                        "no such property on this device type",
                    )
                    .suggest(did_you_mean(
                        s.gate.get_ref(),
                        props.iter().map(|p| p.name.as_str()),
                    )),
                );
                ok = false;
            }
            Some(p) if p.ty != PropType::Bool => {
                diags.push(
                    Diag::error(
                        "compat::bad-gate",
                        &loc(file, &s.gate),
                        format!(
                            "subsection `{}` is gated on `{}`, which is not a bool",
                            s.name.get_ref(),
                            p.name
                        ),
                        format!("this is a {}", p.ty.describe()),
                    )
                    .help("a subsection is sent when its gate property is on: use a bool property"),
                );
                ok = false;
            }
            Some(_) => {}
        }
        let mut sub_earlier = earlier.clone();
        let sf = field_list(
            file,
            &s.fields,
            version_id,
            &mut sub_earlier,
            diags,
            &mut ok,
        );
        subsections.push(SubsectionM {
            name: s.name.get_ref().clone(),
            gate: s.gate.get_ref().clone(),
            fields: sf,
        });
    }
    ok.then(|| VmStateM {
        name: v.name.get_ref().clone(),
        version_id,
        minimum_version_id: min,
        fields,
        subsections,
    })
}

fn field_list(
    file: usize,
    list: &[Spanned<FieldAst>],
    version_id: u32,
    earlier: &mut Vec<FieldM>,
    diags: &mut Vec<Diag>,
    ok: &mut bool,
) -> Vec<FieldM> {
    let mut out = Vec::new();
    for f in list {
        match field(file, f.get_ref(), version_id, earlier, diags) {
            Some(fm) => {
                earlier.push(fm.clone());
                out.push(fm);
            }
            None => *ok = false,
        }
    }
    out
}

fn field(
    file: usize,
    f: &FieldAst,
    version_id: u32,
    earlier: &[FieldM],
    diags: &mut Vec<Diag>,
) -> Option<FieldM> {
    if !check_name(file, &f.name, "field", diags) {
        return None;
    }
    if earlier.iter().any(|e| &e.name == f.name.get_ref()) {
        diags.push(Diag::error(
            "compat::duplicate",
            &loc(file, &f.name),
            format!("field `{}` is defined twice", f.name.get_ref()),
            "second definition",
        ));
        return None;
    }
    let wire = match f.wire.get_ref().parse::<WireType>() {
        Ok(w) => w,
        Err(_) => {
            diags.push(
                Diag::error(
                    "compat::unknown-wire-type",
                    &loc(file, &f.wire),
                    format!(
                        "field `{}` has unknown wire type `{}`",
                        f.name.get_ref(),
                        f.wire.get_ref()
                    ),
                    "unknown wire type",
                )
                .suggest(did_you_mean(
                    f.wire.get_ref(),
                    WireType::ALL.iter().map(|w| w.name()),
                ))
                .help_if_none("wire types: bool, u8, u16, u32, u64, i64, buffer"),
            );
            return None;
        }
    };
    let since = f.since.as_ref().map(|s| *s.get_ref()).unwrap_or(0);
    if since > version_id {
        if let Some(s) = &f.since {
            diags.push(
                Diag::error(
                    "compat::since-above-version",
                    &loc(file, s),
                    format!("field `{}` appears in version {since}, above the description's version_id {version_id}", f.name.get_ref()),
                    "since",
                )
                .help("bump version_id when adding a field"),
            );
        }
        return None;
    }
    let count = match &f.count {
        None => CountM::One,
        Some(c) => {
            let bad = |msg: String| Diag::error("compat::bad-count", &loc(file, c), msg, "count");
            match c.get_ref() {
                CountAst::Fixed(0) => {
                    diags.push(bad("a fixed count must be at least 1".into()));
                    return None;
                }
                CountAst::Fixed(n) => CountM::Fixed(*n),
                CountAst::Field(s) => {
                    let Some(name) = s.strip_prefix("field:") else {
                        diags.push(bad(format!(
                            "count `{s}` is neither a number nor `field:NAME`"
                        )));
                        return None;
                    };
                    match earlier.iter().find(|e| e.name == name) {
                        Some(e) if e.count == CountM::One && e.wire.is_unsigned_int() => {}
                        Some(_) => {
                            diags.push(bad(format!(
                                "count field `{name}` is not a scalar unsigned integer"
                            )));
                            return None;
                        }
                        None => {
                            diags.push(
                                bad(format!("count field `{name}` is not an earlier field"))
                                    .suggest(did_you_mean(
                                        name,
                                        earlier.iter().map(|e| e.name.as_str()),
                                    )),
                            );
                            return None;
                        }
                    }
                    let Some(max) = f.max else {
                        diags.push(bad("a variable count needs `max`".into()));
                        return None;
                    };
                    CountM::Field(name.to_string(), max)
                }
            }
        }
    };
    Some(FieldM {
        name: f.name.get_ref().clone(),
        wire,
        count,
        since,
    })
}

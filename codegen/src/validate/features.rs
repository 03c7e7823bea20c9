//! `[[feature]]`: the CPU feature catalogue. Every problem is reported: a
//! name or alias used twice, a feature with no place or two, a register
//! that does not exist, a bit outside its register, two features on one bit.

use super::loc;
use crate::ast::{FeatureAst, FileAst};
use crate::diag::{Diag, Loc};
use crate::model::FeatureM;
use compat_runtime::{FeatureKind, FeatureLoc};
use std::collections::BTreeMap;
use toml::Spanned;

/// A feature name: letters, digits, `-`, `_`, `.` (`sse4.2`, `3dnowprefetch`).
fn valid_feature_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

pub fn features(files: &[FileAst], diags: &mut Vec<Diag>) -> Vec<FeatureM> {
    let mut out = Vec::new();
    // Every spelling (name or alias) → where it was first given.
    let mut spellings: BTreeMap<String, (String, Loc)> = BTreeMap::new();
    let mut places: BTreeMap<FeatureLoc, (String, Loc)> = BTreeMap::new();
    for (file, f) in files.iter().enumerate() {
        for feat in &f.feature {
            if let Some(m) = feature(file, feat, &mut spellings, &mut places, diags) {
                out.push(m);
            }
        }
    }
    out
}

fn feature(
    file: usize,
    feat: &Spanned<FeatureAst>,
    spellings: &mut BTreeMap<String, (String, Loc)>,
    places: &mut BTreeMap<FeatureLoc, (String, Loc)>,
    diags: &mut Vec<Diag>,
) -> Option<FeatureM> {
    let f = feat.get_ref();
    let name = f.name.get_ref().clone();
    let mut ok = true;
    for s in std::iter::once(&f.name).chain(&f.aliases) {
        let text = s.get_ref();
        if !valid_feature_name(text) {
            diags.push(Diag::error(
                "compat::bad-feature",
                &loc(file, s),
                format!("`{text}` is not a valid feature name"),
                "lower-case letters, digits, `-`, `_`, `.`",
            ));
            ok = false;
            continue;
        }
        if let Some((owner, first)) = spellings.get(text) {
            diags.push(
                Diag::error(
                    "compat::duplicate-feature",
                    &loc(file, s),
                    format!("`{text}` already names feature `{owner}`"),
                    "used again here",
                )
                .label(first, "first here"),
            );
            ok = false;
        } else {
            spellings.insert(text.clone(), (name.clone(), loc(file, s)));
        }
    }
    let place = match (&f.cpuid, &f.msr) {
        (Some(c), None) => {
            let c_ref = c.get_ref();
            let reg = match c_ref.reg.get_ref().as_str() {
                "eax" => Some(0),
                "ebx" => Some(1),
                "ecx" => Some(2),
                "edx" => Some(3),
                other => {
                    diags.push(
                        Diag::error(
                            "compat::bad-feature",
                            &loc(file, &c_ref.reg),
                            format!("feature {name}: no register `{other}`"),
                            "here",
                        )
                        .help("one of eax, ebx, ecx, edx"),
                    );
                    None
                }
            };
            let bit = in_register(file, &name, &c_ref.bit, 32, diags);
            reg.zip(bit).map(|(reg, bit)| FeatureLoc::Cpuid {
                leaf: c_ref.leaf,
                subleaf: c_ref.subleaf,
                reg,
                bit,
            })
        }
        (None, Some(m)) => {
            let m_ref = m.get_ref();
            in_register(file, &name, &m_ref.bit, 64, diags).map(|bit| FeatureLoc::Msr {
                index: m_ref.index,
                bit,
            })
        }
        (c, _) => {
            let what = if c.is_some() {
                "both `cpuid` and `msr`"
            } else {
                "neither `cpuid` nor `msr`"
            };
            diags.push(
                Diag::error(
                    "compat::bad-feature",
                    &loc(file, &f.name),
                    format!("feature {name} has {what}"),
                    "here",
                )
                .help(
                    "give exactly one: cpuid = { leaf, subleaf, reg, bit } or msr = { index, bit }",
                ),
            );
            None
        }
    };
    let place = place?;
    let at = match (&f.cpuid, &f.msr) {
        (Some(c), _) => loc(file, c),
        (_, Some(m)) => loc(file, m),
        _ => loc(file, &f.name),
    };
    if let Some((other, first)) = places.get(&place) {
        diags.push(
            Diag::error(
                "compat::duplicate-feature",
                &at,
                format!(
                    "features `{other}` and `{name}` are on one bit: {}",
                    place.describe()
                ),
                "the same bit again",
            )
            .label(first, "first here"),
        );
        ok = false;
    } else {
        places.insert(place, (name.clone(), at));
    }
    let kind = match f.kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("feature") => FeatureKind::Feature,
        Some("vulnerability-absent") => FeatureKind::VulnerabilityAbsent,
        Some(other) => {
            let k = f
                .kind
                .as_ref()
                .map_or_else(|| loc(file, &f.name), |k| loc(file, k));
            diags.push(
                Diag::error(
                    "compat::bad-feature",
                    &k,
                    format!("feature {name}: unknown kind `{other}`"),
                    "here",
                )
                .help("feature (the default) or vulnerability-absent"),
            );
            return None;
        }
    };
    ok.then(|| FeatureM {
        name,
        aliases: f.aliases.iter().map(|a| a.get_ref().clone()).collect(),
        loc: place,
        migratable: f.migratable.unwrap_or(true),
        kind,
        doc: f.doc.clone(),
    })
}

/// A bit number inside a register of `width` bits, or a diagnostic.
fn in_register(
    file: usize,
    name: &str,
    bit: &Spanned<u32>,
    width: u32,
    diags: &mut Vec<Diag>,
) -> Option<u8> {
    let b = *bit.get_ref();
    if b < width {
        return u8::try_from(b).ok();
    }
    diags.push(Diag::error(
        "compat::bad-feature",
        &loc(file, bit),
        format!("feature {name}: bit {b} is outside its {width}-bit register"),
        format!("0..={}", width - 1),
    ));
    None
}

//! Device types: names, hierarchy (cycles), properties, VMState.

use super::{check_name, loc};
use crate::ast::{DeviceAst, FileAst, PropAst};
use crate::diag::Diag;
use crate::model::{EffectM, FeatureM, PropM, TypeM};
use compat_runtime::suggest::did_you_mean;
use compat_runtime::{PropType, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use toml::Spanned;

const PROP_TYPES: [&str; 7] = ["bool", "u8", "u16", "u32", "u64", "enum", "string"];

/// Validates device types; returns them parents-first with props resolved.
pub fn device_types(files: &[FileAst], features: &[FeatureM], diags: &mut Vec<Diag>) -> Vec<TypeM> {
    // Collect, dropping duplicates and bad names.
    let mut items: Vec<(usize, &DeviceAst)> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (file, f) in files.iter().enumerate() {
        for d in &f.device {
            let d = d.get_ref();
            if !check_name(file, &d.name, "device type", diags) {
                continue;
            }
            if by_name.contains_key(d.name.get_ref().as_str()) {
                diags.push(Diag::error(
                    "compat::duplicate",
                    &loc(file, &d.name),
                    format!("device type `{}` is defined twice", d.name.get_ref()),
                    "second definition",
                ));
                continue;
            }
            by_name.insert(d.name.get_ref(), items.len());
            items.push((file, d));
        }
    }
    // Parents.
    let names: Vec<&str> = items
        .iter()
        .map(|(_, d)| d.name.get_ref().as_str())
        .collect();
    let mut parent: Vec<Option<usize>> = items
        .iter()
        .map(|(file, d)| {
            let p = d.parent.as_ref()?;
            let found = by_name.get(p.get_ref().as_str()).copied();
            if found.is_none() {
                diags.push(
                    Diag::error(
                        "compat::unknown-type",
                        &loc(*file, p),
                        format!(
                            "device type `{}` has unknown parent `{}`",
                            d.name.get_ref(),
                            p.get_ref()
                        ),
                        "no such device type",
                    )
                    .suggest(did_you_mean(p.get_ref(), names.iter().copied())),
                );
            }
            found
        })
        .collect();
    break_cycles(&items, &mut parent, diags);
    // Topological order: by depth, then definition order.
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(p) = parent[i] {
            i = p;
            d += 1;
        }
        d
    };
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (depth(i), i));
    let mut new_idx = vec![0; items.len()];
    for (n, &i) in order.iter().enumerate() {
        new_idx[i] = n;
    }
    let mut out: Vec<TypeM> = Vec::with_capacity(items.len());
    for &i in &order {
        let (file, d) = items[i];
        let (mut ancestors, mut props) = match parent[i] {
            Some(p) => {
                let pt = &out[new_idx[p]];
                (pt.ancestors.clone(), pt.props.clone())
            }
            None => (Vec::new(), Vec::new()),
        };
        ancestors.insert(0, out.len());
        for p in &d.props {
            if let Some(pm) = prop(file, d.name.get_ref(), p, &props, diags) {
                props.push(pm);
            }
        }
        if let Some(list) = &d.cpu_features {
            cpu_model_props(file, d.name.get_ref(), list, features, &mut props, diags);
        }
        let vmstate = d
            .vmstate
            .as_ref()
            .and_then(|v| super::vmstate::vmstate(file, v, &props, diags));
        out.push(TypeM {
            name: d.name.get_ref().clone(),
            parent: d
                .parent
                .as_ref()
                .filter(|_| parent[i].is_some())
                .map(|p| p.get_ref().clone()),
            ancestors,
            doc: d.doc.clone(),
            props,
            vmstate,
            cpu_model: d.cpu_features.is_some(),
        });
    }
    out
}

/// A CPU model's feature properties: one bool per catalogued feature, on for
/// those `list` names (each must be a catalogued feature, once), doc from the
/// catalogue, `effect = guest`.
fn cpu_model_props(
    file: usize,
    owner: &str,
    list: &[Spanned<String>],
    features: &[FeatureM],
    props: &mut Vec<PropM>,
    diags: &mut Vec<Diag>,
) {
    let mut on: Vec<&str> = Vec::new();
    for f in list {
        let name = f.get_ref().as_str();
        let Some(feat) = features
            .iter()
            .find(|c| c.name == name || c.aliases.iter().any(|a| a == name))
        else {
            diags.push(
                Diag::error(
                    "compat::unknown-feature",
                    &loc(file, f),
                    format!("CPU model `{owner}` has unknown feature `{name}`"),
                    "not in compat/cpu/features.toml",
                )
                .suggest(did_you_mean(name, features.iter().map(|c| c.name.as_str()))),
            );
            continue;
        };
        if on.contains(&feat.name.as_str()) {
            diags.push(Diag::error(
                "compat::duplicate",
                &loc(file, f),
                format!("CPU model `{owner}` lists feature `{}` twice", feat.name),
                "again here",
            ));
            continue;
        }
        on.push(feat.name.as_str());
    }
    for feat in features {
        if props.iter().any(|p| p.name == feat.name) {
            continue;
        }
        let v = on.contains(&feat.name.as_str());
        props.push(PropM {
            name: feat.name.clone(),
            owner: owner.to_string(),
            ty: PropType::Bool,
            default: Value::Bool(v),
            doc: format!("CPU feature: {}", feat.doc),
            effect: EffectM::Guest,
        });
    }
}

/// Finds parent cycles, reports each once and cuts it (so later phases go on).
fn break_cycles(
    items: &[(usize, &DeviceAst)],
    parent: &mut [Option<usize>],
    diags: &mut Vec<Diag>,
) {
    let n = items.len();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; n];
    for start in 0..n {
        let mut path = Vec::new();
        let mut cur = Some(start);
        while let Some(c) = cur {
            if state[c] == 2 {
                break;
            }
            if state[c] == 1 {
                let pos = path.iter().position(|&x| x == c).unwrap_or(0);
                let cycle: Vec<usize> = path[pos..].to_vec();
                let mut names: Vec<&str> = cycle
                    .iter()
                    .map(|&i| items[i].1.name.get_ref().as_str())
                    .collect();
                names.push(items[c].1.name.get_ref());
                let (file, d) = items[c];
                if let Some(p) = &d.parent {
                    diags.push(
                        Diag::error(
                            "compat::type-cycle",
                            &loc(file, p),
                            format!("cycle in the type hierarchy: {}", names.join(" -> ")),
                            "this parent closes the cycle",
                        )
                        .help("a type's ancestors must end at a root type (one without `parent`)"),
                    );
                }
                parent[c] = None;
                break;
            }
            state[c] = 1;
            path.push(c);
            cur = parent[c];
        }
        for p in path {
            state[p] = 2;
        }
    }
}

fn prop(
    file: usize,
    owner: &str,
    p: &Spanned<PropAst>,
    existing: &[PropM],
    diags: &mut Vec<Diag>,
) -> Option<PropM> {
    let p = p.get_ref();
    if !check_name(file, &p.name, "property", diags) {
        return None;
    }
    if let Some(e) = existing.iter().find(|e| &e.name == p.name.get_ref()) {
        diags.push(Diag::error(
            "compat::duplicate",
            &loc(file, &p.name),
            format!(
                "property `{}` of `{owner}` is already defined by `{}`",
                p.name.get_ref(),
                e.owner
            ),
            "defined again here",
        ));
        return None;
    }
    let ty = prop_type(file, p, diags)?;
    let default = match &p.default {
        Some(d) => match Value::parse(&ty, &d.get_ref().text()) {
            Ok(v) => v,
            Err(e) => {
                diags.push(
                    Diag::error(
                        "compat::bad-value",
                        &loc(file, d),
                        format!(
                            "default of {owner}.{} does not parse: {e}",
                            p.name.get_ref()
                        ),
                        format!("expected {}", ty.describe()),
                    )
                    .help("defaults are parsed exactly like -global values"),
                );
                return None;
            }
        },
        None if matches!(ty, PropType::Str { optional: true, .. }) => Value::Unset,
        None => {
            diags.push(Diag::error(
                "compat::bad-value",
                &loc(file, &p.name),
                format!("property {owner}.{} has no default", p.name.get_ref()),
                "add `default = ...`",
            ));
            return None;
        }
    };
    let effect = effect(file, owner, p, diags)?;
    Some(PropM {
        name: p.name.get_ref().clone(),
        owner: owner.to_string(),
        ty,
        default,
        doc: p.doc.clone(),
        effect,
    })
}

/// Every property says what it changes: the guest (compared), the migration
/// stream (compared), or nothing in this VMM (`none`, with `why`; never
/// compared).
fn effect(file: usize, owner: &str, p: &PropAst, diags: &mut Vec<Diag>) -> Option<EffectM> {
    let name = p.name.get_ref();
    let Some(e) = &p.effect else {
        diags.push(
            Diag::error(
                "compat::no-effect",
                &loc(file, &p.name),
                format!("property {owner}.{name} does not say what it changes"),
                "add `effect = ...`",
            )
            .help("effect = \"guest\" (the guest sees it), \"stream\" (it selects a migration stream feature) or \"none\" with why = \"...\" (no effect in this VMM: never compared)"),
        );
        return None;
    };
    let why = p.why.as_ref().map(|w| w.get_ref().trim().to_string());
    match (e.get_ref().as_str(), why) {
        ("guest", None) => Some(EffectM::Guest),
        ("stream", None) => Some(EffectM::Stream),
        ("none", Some(why)) if !why.is_empty() => Some(EffectM::None { why }),
        ("none", _) => {
            diags.push(
                Diag::error(
                    "compat::no-effect",
                    &loc(file, e),
                    format!("property {owner}.{name} has no effect but does not say why"),
                    "here",
                )
                .help(
                    "add why = \"...\": the reason it changes nothing the guest or the stream sees",
                ),
            );
            None
        }
        ("guest" | "stream", Some(_)) => {
            let w = p
                .why
                .as_ref()
                .map_or_else(|| loc(file, e), |w| loc(file, w));
            diags.push(
                Diag::error(
                    "compat::no-effect",
                    &w,
                    format!("property {owner}.{name}: `why` goes only with effect = \"none\""),
                    "here",
                )
                .help("remove `why`, or set effect = \"none\""),
            );
            None
        }
        (other, _) => {
            diags.push(
                Diag::error(
                    "compat::no-effect",
                    &loc(file, e),
                    format!("property {owner}.{name}: unknown effect `{other}`"),
                    "here",
                )
                .help("one of guest, stream, none"),
            );
            None
        }
    }
}

fn prop_type(file: usize, p: &PropAst, diags: &mut Vec<Diag>) -> Option<PropType> {
    let here = loc(file, &p.ty);
    let bad = |msg: String| Diag::error("compat::bad-prop-type", &here, msg, "here");
    let ty = match p.ty.get_ref().as_str() {
        "bool" => PropType::Bool,
        t @ ("u8" | "u16" | "u32" | "u64") => {
            let bits: u8 = t[1..].parse().unwrap_or(64);
            let top = PropType::bits_max(bits);
            let (min, max) = (p.min.unwrap_or(0), p.max.unwrap_or(top));
            if min > max || max > top {
                diags.push(bad(format!(
                    "range {min}..={max} is empty or does not fit {t}"
                )));
                return None;
            }
            PropType::Uint {
                bits,
                min,
                max,
                auto: p.auto,
                power_of_two: p.power_of_two,
            }
        }
        "enum" => {
            let mut seen = std::collections::HashSet::new();
            if p.variants.is_empty()
                || !p
                    .variants
                    .iter()
                    .all(|v| seen.insert(v.as_str()) && !v.is_empty())
            {
                diags.push(bad(
                    "an enum needs a non-empty list of distinct, non-empty `variants`".into(),
                ));
                return None;
            }
            PropType::Enum {
                variants: Cow::Owned(p.variants.iter().map(|v| Cow::Owned(v.clone())).collect()),
            }
        }
        "string" => PropType::Str {
            optional: p.optional,
            max_len: p.max_len,
        },
        other => {
            diags.push(
                bad(format!("unknown property type `{other}`"))
                    .suggest(did_you_mean(other, PROP_TYPES))
                    .help_if_none("property types: bool, u8, u16, u32, u64, enum, string"),
            );
            return None;
        }
    };
    Some(ty)
}

//! `--cpu host[,FEATURE=on|off][,+FEATURE][,-FEATURE]`: the guest's CPU
//! features, chosen from what this host's KVM offers, and refused at once
//! when the host cannot give a requested one (the reference's `enforce`).
//!
//! The choice covers the catalogued features, migratable ones only: CPUID
//! bits and feature MSR bits (`IA32_ARCH_CAPABILITIES`: `taa-no`, `mds-no`).
//! A feature MSR is written only when a bit is turned off; this machine's
//! KVM refuses that write (measured: `KVM_SET_MSRS` handles 0 of 1), so
//! there `--cpu host,taa-no=off` fails at start naming the MSR, where a KVM
//! that allows it presents the guest without the bit.

use super::features::{FeatureMsrs, Leaves, by_name, has};
use compat_runtime::suggest::{did_you_mean, hint};
use compat_runtime::{Catalog, FeatureLoc};
use std::collections::BTreeSet;

/// Everything this host's KVM can give, migratable features only.
pub const HOST_MODEL: &str = "host";
/// Everything this host's KVM can give, non-migratable features (`invtsc`)
/// included: such a guest cannot migrate.
pub const MAX_MODEL: &str = "max";

/// A guest CPU: its model and the catalogued CPUID features it has (what
/// travels in the manifest).
pub type CpuChoice = migration::manifest::GuestCpu;

/// The CPUID bits a guest with `choice` must not see: in every register
/// that holds a catalogued feature, every bit but those of its features (an
/// uncatalogued bit of the host's would show through otherwise, and differ
/// on the next host). The VMM sets its own bits afterwards (hypervisor,
/// HTT); KVM maintains OSXSAVE/OSPKE.
pub fn cleared_bits(catalog: &Catalog, choice: &CpuChoice) -> Vec<crate::vstate::cpuid::CpuidBit> {
    let mut keep: std::collections::BTreeMap<(u32, u32, u8), u32> = Default::default();
    for f in catalog.cpu_features {
        if let FeatureLoc::Cpuid {
            leaf,
            subleaf,
            reg,
            bit,
        } = f.loc
        {
            let k = keep.entry((leaf, subleaf, reg)).or_default();
            if choice.features.contains(f.name) {
                *k |= 1 << bit;
            }
        }
    }
    keep.into_iter()
        .flat_map(|((leaf, subleaf, reg), mask)| {
            (0..32u8)
                .filter(move |b| mask & (1 << b) == 0)
                .map(move |bit| crate::vstate::cpuid::CpuidBit {
                    leaf,
                    subleaf,
                    reg,
                    bit,
                })
        })
        .collect()
}

/// Why a `--cpu` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChoiceError {
    #[error("unknown CPU model `{0}` (see vmm cpu models)")]
    UnknownModel(String),
    #[error("--cpu: unknown feature `{name}`{}", hint(.suggestion))]
    UnknownFeature {
        name: String,
        suggestion: Option<String>,
    },
    #[error("--cpu: `{0}` is not FEATURE=on|off, +FEATURE or -FEATURE")]
    Syntax(String),
    #[error(
        "--cpu: {0} is a feature MSR bit; this KVM does not let the VMM set feature MSRs, so they stay the host's"
    )]
    MsrFeature(String),
    #[error("--cpu: {0} cannot migrate (it depends on the host); this VMM leaves it out")]
    NotMigratable(String),
    /// The host cannot give what the CPU needs (one line per feature).
    #[error("{}", .0.join("; "))]
    Missing(Vec<String>),
}

/// The reference's line for a feature the host lacks.
pub fn missing_line(catalog: &Catalog, name: &str) -> String {
    let at =
        by_name(catalog, name).map_or_else(|| name.to_string(), |f| f.loc.describe_as(Some(name)));
    format!("host doesn't support requested feature: {at}")
}

/// The catalogued features this host offers (non-migratable ones included:
/// only `max` takes those).
pub fn host_features(catalog: &Catalog, leaves: &Leaves, msrs: &FeatureMsrs) -> BTreeSet<String> {
    catalog
        .cpu_features
        .iter()
        .filter(|f| has(f, leaves, msrs))
        .map(|f| f.name.to_string())
        .collect()
}

/// Whether `choice` can leave out a feature MSR bit at all: the guest has
/// `IA32_ARCH_CAPABILITIES` (only with `arch-capabilities`, CPUID 7.0 EDX
/// 29; without it the guest cannot read the MSR) and lacks one of its
/// catalogued bits. Only then are this host's MSR values needed.
pub fn turns_msr_bits_off(catalog: &Catalog, choice: &CpuChoice) -> bool {
    choice.features.contains("arch-capabilities")
        && catalog
            .cpu_features
            .iter()
            .any(|f| matches!(f.loc, FeatureLoc::Msr { .. }) && !choice.features.contains(f.name))
}

/// The feature MSRs to write for `choice`: this host's value of each MSR in
/// which the choice turns a catalogued bit off, without those bits (none
/// when the guest keeps the host's values).
pub fn feature_msrs(catalog: &Catalog, choice: &CpuChoice, msrs: &FeatureMsrs) -> Vec<(u32, u64)> {
    let mut out: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    if !turns_msr_bits_off(catalog, choice) {
        return Vec::new();
    }
    for f in catalog.cpu_features {
        if let FeatureLoc::Msr { index, bit } = f.loc
            && let Some(&host) = msrs.get(&index)
            && host & (1 << bit) != 0
            && !choice.features.contains(f.name)
        {
            *out.entry(index).or_insert(host) &= !(1u64 << bit);
        }
    }
    out.into_iter().collect()
}

/// One CPU model as `vmm cpu models` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelInfo {
    /// `qemu64`, `host`.
    pub name: String,
    /// How many catalogued features it has.
    pub features: usize,
    /// Those this host cannot give (empty: it runs here).
    pub unavailable: Vec<String>,
}

/// The catalogued features CPU model type `d` has at its defaults.
pub fn model_features(catalog: &Catalog, d: &compat_runtime::DeviceType) -> Vec<&'static str> {
    d.props
        .iter()
        .filter(|p| catalog.cpu_features.iter().any(|f| f.name == p.name))
        .filter(|p| p.default == compat_runtime::Value::Bool(true))
        .map(|p| p.name)
        .collect()
}

/// Every CPU model (types with feature properties, at their defaults, and
/// `host`) against what this host offers.
pub fn models(catalog: &Catalog, offered: &BTreeSet<String>) -> Vec<ModelInfo> {
    let mut out: Vec<ModelInfo> = catalog
        .device_types
        .iter()
        .filter(|d| d.cpu_model)
        .map(|d| {
            let on = model_features(catalog, d);
            ModelInfo {
                name: d.name.trim_end_matches("-x86_64-cpu").to_string(),
                features: on.len(),
                unavailable: on
                    .iter()
                    .filter(|n| !offered.contains(**n))
                    .map(|n| n.to_string())
                    .collect(),
            }
        })
        .collect();
    let migratable = offered
        .iter()
        .filter(|n| by_name(catalog, n).is_some_and(|f| f.migratable));
    out.push(ModelInfo {
        name: HOST_MODEL.into(),
        features: migratable.count(),
        unavailable: Vec::new(),
    });
    out.push(ModelInfo {
        name: MAX_MODEL.into(),
        features: offered.len(),
        unavailable: Vec::new(),
    });
    out
}

/// The CPU model type `name` means: `qemu64`, `EPYC-v2`, or an unversioned
/// name (`EPYC`), which is version 1 as in the reference's pc machine types.
pub fn model_type(
    catalog: &Catalog,
    name: &str,
) -> Result<&'static compat_runtime::DeviceType, ChoiceError> {
    let is_model = |ty: &str| {
        catalog
            .device_types
            .iter()
            .find(|d| d.name == ty && d.cpu_model)
    };
    is_model(&format!("{name}-x86_64-cpu"))
        .or_else(|| is_model(&format!("{name}-v1-x86_64-cpu")))
        .ok_or_else(|| ChoiceError::UnknownModel(name.to_string()))
}

/// `--cpu MODEL[,F=on|off][,+F][,-F]` for a named model (`qemu64`,
/// `EPYC-v2`): the model's device type and its feature settings as `--global
/// TYPE.F=on|off` (the model's properties; enforced like the model's own).
/// `host` and `max` give none (they are [`parse`] choices).
pub fn model_settings(
    catalog: &Catalog,
    spec: &str,
) -> Result<Option<(&'static str, Vec<compat_runtime::Override>)>, ChoiceError> {
    let mut parts = spec.split(',');
    let model = parts.next().unwrap_or_default();
    if model == HOST_MODEL || model == MAX_MODEL {
        return Ok(None);
    }
    let ty = model_type(catalog, model)?.name;
    let mut out = Vec::new();
    for p in parts.filter(|p| !p.is_empty()) {
        let (name, on) = setting(p)?;
        let f = feature(catalog, name)?;
        out.push(compat_runtime::Override::Global {
            type_name: ty.to_string(),
            property: f.name.to_string(),
            value: if on { "on" } else { "off" }.to_string(),
        });
    }
    Ok(Some((ty, out)))
}

/// `+F`, `-F`, `F=on|off`.
fn setting(p: &str) -> Result<(&str, bool), ChoiceError> {
    if let Some(n) = p.strip_prefix('+') {
        return Ok((n, true));
    }
    if let Some(n) = p.strip_prefix('-') {
        return Ok((n, false));
    }
    match p.split_once('=') {
        Some((n, "on" | "true" | "yes")) => Ok((n, true)),
        Some((n, "off" | "false" | "no")) => Ok((n, false)),
        _ => Err(ChoiceError::Syntax(p.to_string())),
    }
}

/// The catalogued feature `name` (or alias), or an error with a "did you mean".
fn feature<'c>(
    catalog: &'c Catalog,
    name: &str,
) -> Result<&'c compat_runtime::CpuFeature, ChoiceError> {
    by_name(catalog, name).ok_or_else(|| ChoiceError::UnknownFeature {
        name: name.to_string(),
        suggestion: did_you_mean(
            name,
            catalog
                .cpu_features
                .iter()
                .flat_map(|f| std::iter::once(f.name).chain(f.aliases.iter().copied())),
        ),
    })
}

/// Parses `--cpu SPEC` against what this host offers.
pub fn parse(
    catalog: &Catalog,
    spec: &str,
    offered: &BTreeSet<String>,
) -> Result<CpuChoice, ChoiceError> {
    let mut parts = spec.split(',');
    let model = parts.next().unwrap_or_default();
    let max = match model {
        HOST_MODEL => false,
        MAX_MODEL => true,
        _ => return Err(ChoiceError::UnknownModel(model.to_string())),
    };
    let migratable = |n: &str| by_name(catalog, n).is_some_and(|f| f.migratable);
    let mut features: BTreeSet<String> = offered
        .iter()
        .filter(|n| max || migratable(n))
        .cloned()
        .collect();
    let mut wanted = Vec::new();
    for p in parts.filter(|p| !p.is_empty()) {
        let (name, on) = setting(p)?;
        let f = feature(catalog, name)?;
        if !f.migratable && !max {
            return Err(ChoiceError::NotMigratable(f.name.to_string()));
        }
        if on {
            features.insert(f.name.to_string());
            wanted.push(f.name);
        } else {
            features.remove(f.name);
        }
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|n| !offered.contains(**n))
        .map(|n| missing_line(catalog, n))
        .collect();
    if !missing.is_empty() {
        return Err(ChoiceError::Missing(missing));
    }
    Ok(CpuChoice {
        model: model.to_string(),
        features,
    })
}

/// Why a guest with `choice` cannot migrate: a non-migratable feature
/// (`--cpu max` takes `invtsc`), as the reference blocks it.
pub fn migration_blocker(catalog: &Catalog, choice: &CpuChoice) -> Result<(), String> {
    let fixed: Vec<&str> = catalog
        .cpu_features
        .iter()
        .filter(|f| !f.migratable && choice.features.contains(f.name))
        .map(|f| f.name)
        .collect();
    if fixed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "migration blocked: the guest's CPU ({}) has {}, which cannot migrate (it depends on this host); start the guest with --cpu host or --cpu {},-{}",
        choice.model,
        fixed.join(", "),
        choice.model,
        fixed.join(",-")
    ))
}

/// What `choice` needs that `offered` lacks, as the reference's lines.
pub fn enforce(
    catalog: &Catalog,
    choice: &CpuChoice,
    offered: &BTreeSet<String>,
) -> Result<(), ChoiceError> {
    let missing: Vec<String> = choice
        .features
        .difference(offered)
        .map(|n| missing_line(catalog, n))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ChoiceError::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    fn offered() -> BTreeSet<String> {
        ["fpu", "cx16", "x2apic", "stibp"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn features_are_taken_from_the_host_and_turned_off_or_on() {
        let c = parse(&CATALOG, "host,x2apic=off,-stibp", &offered()).unwrap();
        let names: Vec<&str> = c.features.iter().map(String::as_str).collect();
        assert_eq!(names, ["cx16", "fpu"]);
        let c = parse(&CATALOG, "host,+cx16,sse4_2=off", &offered()).unwrap();
        assert!(c.features.contains("cx16") && !c.features.contains("sse4.2"));
    }

    #[test]
    fn models_say_what_this_host_lacks() {
        let m = models(&CATALOG, &offered());
        let q = m.iter().find(|m| m.name == "qemu64").expect("qemu64");
        assert!(q.unavailable.contains(&"sse2".to_string()), "{q:?}");
        assert!(!q.unavailable.contains(&"cx16".to_string()), "{q:?}");
        assert_eq!(m.last().map(|m| m.name.as_str()), Some("max"));
        let epyc = m.iter().find(|m| m.name == "EPYC-v4").expect("EPYC-v4");
        assert!(epyc.unavailable.contains(&"pni".to_string()), "{epyc:?}");
    }

    #[test]
    fn what_the_host_cannot_give_is_refused_in_the_references_words() {
        let e = parse(&CATALOG, "host,+hle,pcid=on", &offered())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "host doesn't support requested feature: CPUID[eax=07h,ecx=00h].EBX.hle [bit 4]"
            ) && e.contains("CPUID[eax=01h,ecx=00h].ECX.pcid [bit 17]"),
            "{e}"
        );
        let e = parse(&CATALOG, "host,+no-such-feature", &offered())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown feature `no-such-feature`"), "{e}");
        let e = parse(&CATALOG, "host,+x2apik", &offered())
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `x2apic`"), "{e}");
        assert!(matches!(
            parse(&CATALOG, "qemu64", &offered()),
            Err(ChoiceError::UnknownModel(_))
        ));
        let mut o = offered();
        o.extend(["mds-no", "taa-no", "arch-capabilities"].map(String::from));
        let msrs = FeatureMsrs::from([(0x10a, (1 << 5) | (1 << 8) | (1 << 40))]);
        let keep = parse(&CATALOG, "host", &o).unwrap();
        assert!(
            feature_msrs(&CATALOG, &keep, &msrs).is_empty(),
            "the host's values stay"
        );
        let c = parse(&CATALOG, "host,taa-no=off", &o).unwrap();
        // taa-no cleared, mds-no and an uncatalogued bit kept.
        assert_eq!(
            feature_msrs(&CATALOG, &c, &msrs),
            [(0x10a, (1 << 5) | (1 << 40))]
        );
        assert!(matches!(
            parse(&CATALOG, "host,+invtsc", &offered()),
            Err(ChoiceError::NotMigratable(_))
        ));
        let c = parse(&CATALOG, "host", &offered()).unwrap();
        let fewer: BTreeSet<String> = ["fpu".to_string()].into();
        let e = enforce(&CATALOG, &c, &fewer).unwrap_err().to_string();
        assert!(
            e.contains(".x2apic [bit 21]") && e.contains(".stibp [bit 27]"),
            "{e}"
        );
    }
}

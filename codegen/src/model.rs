//! The validated model: what the TOML means, names resolved, values parsed.

use crate::diag::Loc;
use compat_runtime::{MachineVersion, PropType, Value, WireType};

/// The whole validated compat tree.
#[derive(Debug, Default)]
pub struct Model {
    /// Families, each with its machine types sorted oldest first.
    pub families: Vec<FamilyM>,
    /// Device types, parents before children.
    pub types: Vec<TypeM>,
    /// Deltas, sorted by (version, series order of first family using it, name).
    pub deltas: Vec<DeltaM>,
    /// Releases, oldest first.
    pub releases: Vec<ReleaseM>,
    /// Deprecations in file order.
    pub deprecations: Vec<DeprecationM>,
    /// CPU features in file order.
    pub features: Vec<FeatureM>,
    /// The `[lifecycle]` rule, if the tree has one.
    pub lifecycle_rule: Option<LifecycleRuleM>,
}

/// The age rule of machine types (`[lifecycle]` in `compat/releases.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleRuleM {
    pub deprecated_after_years: u16,
    pub removed_after_years: u16,
}

impl LifecycleRuleM {
    /// The reference's warning text for a machine type the rule deprecated.
    pub fn deprecated_reason(&self) -> String {
        format!(
            "machines more than {} years old are subject to deletion after {} years",
            self.deprecated_after_years, self.removed_after_years
        )
    }

    /// The reason for a machine type the rule removed.
    pub fn removed_reason(&self) -> String {
        format!(
            "machines more than {} years old are removed",
            self.removed_after_years
        )
    }
}

/// A calendar date `(year, month, day)`; tuples compare chronologically.
pub type DateM = (u16, u8, u8);

/// A CPU feature.
#[derive(Debug, Clone)]
pub struct FeatureM {
    pub name: String,
    pub aliases: Vec<String>,
    pub loc: compat_runtime::FeatureLoc,
    pub migratable: bool,
    pub kind: compat_runtime::FeatureKind,
    pub doc: String,
}

/// A machine family.
#[derive(Debug, Clone)]
pub struct FamilyM {
    pub name: String,
    pub doc: String,
    pub alias: Option<String>,
    pub series: Vec<String>,
    pub machines: Vec<MachineM>,
}

/// A machine type.
#[derive(Debug, Clone)]
pub struct MachineM {
    pub name: String,
    pub family: String,
    pub version: MachineVersion,
    pub alias: Option<String>,
    pub lifecycle: LifecycleM,
    pub introduced_in: String,
    pub knobs: KnobsM,
    pub loc: Loc,
}

/// Machine lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleM {
    Supported,
    Deprecated { since: String, reason: String },
    Removed { since: String, reason: String },
}

impl LifecycleM {
    /// Supported < deprecated < removed.
    pub fn rank(&self) -> u8 {
        match self {
            LifecycleM::Supported => 0,
            LifecycleM::Deprecated { .. } => 1,
            LifecycleM::Removed { .. } => 2,
        }
    }
}

/// Machine-level knobs, family defaults applied.
#[derive(Debug, Clone)]
pub struct KnobsM {
    pub max_cpus: u32,
    pub default_cpus: u32,
    pub memory_mib: u64,
    pub devices: Vec<String>,
}

/// A device type.
#[derive(Debug, Clone)]
pub struct TypeM {
    pub name: String,
    pub parent: Option<String>,
    /// Indices into `Model::types`: itself first, then its ancestors.
    pub ancestors: Vec<usize>,
    pub doc: String,
    /// All properties, inherited first.
    pub props: Vec<PropM>,
    pub vmstate: Option<VmStateM>,
    /// A CPU model (it lists `cpu_features`).
    pub cpu_model: bool,
}

impl TypeM {
    /// A versioned CPU model (`EPYC-v2-x86_64-cpu`): its model name and
    /// version. A released model version is never edited.
    pub fn model_version(&self) -> Option<(&str, u32)> {
        if !self.cpu_model {
            return None;
        }
        let stem = self.name.strip_suffix("-x86_64-cpu")?;
        let (model, v) = stem.rsplit_once("-v")?;
        Some((model, v.parse().ok()?))
    }

    /// A property by name.
    pub fn prop(&self, name: &str) -> Option<&PropM> {
        self.props.iter().find(|p| p.name == name)
    }
}

/// A property definition.
#[derive(Debug, Clone)]
pub struct PropM {
    pub name: String,
    pub owner: String,
    pub ty: PropType,
    pub default: Value,
    pub doc: String,
    pub effect: EffectM,
}

/// What a property changes (`effect`, `why`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectM {
    Guest,
    Stream,
    None { why: String },
}

/// A VMState description.
#[derive(Debug, Clone)]
pub struct VmStateM {
    pub name: String,
    pub version_id: u32,
    pub minimum_version_id: u32,
    pub fields: Vec<FieldM>,
    pub subsections: Vec<SubsectionM>,
}

/// A VMState field.
#[derive(Debug, Clone)]
pub struct FieldM {
    pub name: String,
    pub wire: WireType,
    pub count: CountM,
    pub since: u32,
}

/// A field's element count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountM {
    One,
    Fixed(u32),
    Field(String, u32),
}

/// A VMState subsection.
#[derive(Debug, Clone)]
pub struct SubsectionM {
    pub name: String,
    pub gate: String,
    pub fields: Vec<FieldM>,
}

/// A compat delta.
#[derive(Debug, Clone)]
pub struct DeltaM {
    pub name: String,
    pub series: String,
    pub version: MachineVersion,
    pub entries: Vec<EntryM>,
    pub loc: Loc,
}

/// A delta entry.
#[derive(Debug, Clone)]
pub struct EntryM {
    /// Index into `Model::types`.
    pub type_idx: usize,
    pub type_name: String,
    pub property: String,
    pub value: Value,
    pub added_in: Option<String>,
    pub loc: Loc,
}

/// A release.
#[derive(Debug, Clone)]
pub struct ReleaseM {
    pub version: String,
    pub date: Option<DateM>,
    pub errata: Vec<ErratumM>,
}

/// An erratum.
#[derive(Debug, Clone)]
pub struct ErratumM {
    pub id: String,
    pub summary: String,
    pub type_name: String,
    pub property: String,
    pub shipped: Value,
    pub max_machine: MachineVersion,
    pub fixed_in: String,
}

/// A deprecation.
#[derive(Debug, Clone)]
pub struct DeprecationM {
    pub id: String,
    pub feature: String,
    pub since: String,
    pub replacement: String,
}

//! The TOML schema as serde types (see `compat/README.md`). Every name that
//! other items refer to keeps its span for diagnostics.

use serde::Deserialize;
use toml::Spanned;

/// A spanned string.
pub type SStr = Spanned<String>;

/// One TOML file: any mix of the top-level tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAst {
    #[serde(default)]
    pub family: Vec<Spanned<FamilyAst>>,
    #[serde(default)]
    pub machine: Vec<Spanned<MachineAst>>,
    #[serde(default)]
    pub alias: Vec<Spanned<AliasAst>>,
    #[serde(default)]
    pub device: Vec<Spanned<DeviceAst>>,
    #[serde(default)]
    pub delta: Vec<Spanned<DeltaAst>>,
    #[serde(default)]
    pub release: Vec<Spanned<ReleaseAst>>,
    #[serde(default)]
    pub deprecation: Vec<Spanned<DeprecationAst>>,
    #[serde(default)]
    pub feature: Vec<Spanned<FeatureAst>>,
    /// `[lifecycle]`: the rule that deprecates and removes machine types
    /// by age (at most one in the tree).
    pub lifecycle: Option<Spanned<LifecycleRuleAst>>,
}

/// `[lifecycle]`: machine types more than `deprecated_after_years` old (from
/// the date of the release that introduced them to the date of the newest
/// release) are deprecated, more than `removed_after_years` removed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRuleAst {
    pub deprecated_after_years: u16,
    pub removed_after_years: u16,
}

/// `[[feature]]`: one x86 CPU feature and where the guest finds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureAst {
    pub name: SStr,
    #[serde(default)]
    pub aliases: Vec<SStr>,
    pub cpuid: Option<Spanned<CpuidLocAst>>,
    pub msr: Option<Spanned<MsrLocAst>>,
    pub migratable: Option<bool>,
    pub kind: Option<SStr>,
    #[serde(default)]
    pub doc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidLocAst {
    pub leaf: u32,
    #[serde(default)]
    pub subleaf: u32,
    pub reg: SStr,
    pub bit: Spanned<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsrLocAst {
    pub index: u32,
    pub bit: Spanned<u32>,
}

/// Machine-level knobs, on a family (defaults) or a machine (overrides).
#[derive(Debug, Default, Deserialize, Clone)]
pub struct KnobsAst {
    pub max_cpus: Option<u32>,
    pub default_cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub devices: Option<Vec<SStr>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyAst {
    pub name: SStr,
    #[serde(default)]
    pub doc: String,
    pub alias: Option<SStr>,
    pub series: Vec<SStr>,
    pub max_cpus: Option<u32>,
    pub default_cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub devices: Option<Vec<SStr>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineAst {
    pub family: SStr,
    pub version: SStr,
    pub introduced_in: Option<SStr>,
    pub lifecycle: Option<SStr>,
    pub since: Option<SStr>,
    pub max_cpus: Option<u32>,
    pub default_cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub devices: Option<Vec<SStr>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasAst {
    pub name: SStr,
    pub machine: SStr,
}

/// A scalar TOML value, turned into text for [`compat_runtime::Value::parse`].
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum ScalarAst {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl ScalarAst {
    /// The text the value parser sees.
    pub fn text(&self) -> String {
        match self {
            ScalarAst::Bool(b) => b.to_string(),
            ScalarAst::Int(i) => i.to_string(),
            ScalarAst::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAst {
    pub name: SStr,
    pub parent: Option<SStr>,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub props: Vec<Spanned<PropAst>>,
    /// A CPU model: the catalogued features it has. The compiler gives it
    /// one bool property per feature of the catalogue (on for these).
    pub cpu_features: Option<Vec<SStr>>,
    pub vmstate: Option<Spanned<VmStateAst>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropAst {
    pub name: SStr,
    #[serde(rename = "type")]
    pub ty: SStr,
    pub min: Option<u64>,
    pub max: Option<u64>,
    #[serde(default)]
    pub auto: bool,
    #[serde(default)]
    pub power_of_two: bool,
    #[serde(default)]
    pub variants: Vec<String>,
    #[serde(default)]
    pub optional: bool,
    pub max_len: Option<u32>,
    pub default: Option<Spanned<ScalarAst>>,
    #[serde(default)]
    pub doc: String,
    /// `guest`, `stream` or `none` (required).
    pub effect: Option<SStr>,
    /// Why an `effect = "none"` property has no effect (required with it).
    pub why: Option<SStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateAst {
    pub name: SStr,
    pub version_id: Spanned<u32>,
    pub minimum_version_id: Spanned<u32>,
    #[serde(default)]
    pub fields: Vec<Spanned<FieldAst>>,
    #[serde(default)]
    pub subsection: Vec<Spanned<SubsectionAst>>,
}

/// `count = 4096` or `count = "field:num_queues"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum CountAst {
    Fixed(u32),
    Field(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldAst {
    pub name: SStr,
    pub wire: SStr,
    pub count: Option<Spanned<CountAst>>,
    pub max: Option<u32>,
    pub since: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsectionAst {
    pub name: SStr,
    pub gate: SStr,
    #[serde(default)]
    pub fields: Vec<Spanned<FieldAst>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaAst {
    pub series: SStr,
    pub version: SStr,
    #[serde(default)]
    pub entries: Vec<Spanned<EntryAst>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryAst {
    #[serde(rename = "type")]
    pub ty: SStr,
    pub property: SStr,
    pub value: Spanned<ScalarAst>,
    pub added_in: Option<SStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseAst {
    pub version: SStr,
    /// A TOML date (`date = 2024-04-23`).
    pub date: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    pub erratum: Vec<Spanned<ErratumAst>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErratumAst {
    pub id: SStr,
    #[serde(default)]
    pub summary: String,
    #[serde(rename = "type")]
    pub ty: SStr,
    pub property: SStr,
    pub shipped: Spanned<ScalarAst>,
    pub max_machine: SStr,
    pub fixed_in: SStr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprecationAst {
    pub id: SStr,
    pub feature: String,
    pub since: SStr,
    pub replacement: String,
}

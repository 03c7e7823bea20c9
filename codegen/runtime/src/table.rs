//! The static tables generated code is made of (`devices::generated::CATALOG`).

use crate::value::{PropType, Value};
use crate::version::MachineVersion;
use crate::vmstate::VmStateDesc;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Everything the compat compiler produced: families (with their machine
/// types and resolved property timelines), device types, deltas, releases and
/// deprecations.
#[derive(Debug, Serialize)]
pub struct Catalog {
    /// Machine families (`pc`, ...), each with its machine types.
    pub families: &'static [Family],
    /// Every device type, parents before children.
    pub device_types: &'static [DeviceType],
    /// Every compat delta as written in the TOML (for introspection/checkers).
    pub deltas: &'static [Delta],
    /// Release history, oldest first.
    pub releases: &'static [Release],
    /// Deprecated features.
    pub deprecations: &'static [Deprecation],
    /// The x86 CPU features this project knows (`compat/cpu/features.toml`).
    pub cpu_features: &'static [CpuFeature],
}

/// Where a guest finds a CPU feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "in", rename_all = "kebab-case")]
pub enum FeatureLoc {
    /// CPUID leaf `leaf`, subleaf `subleaf`, register `reg` (0 EAX, 1 EBX,
    /// 2 ECX, 3 EDX), bit `bit`.
    Cpuid {
        leaf: u32,
        subleaf: u32,
        reg: u8,
        bit: u8,
    },
    /// Bit `bit` of feature MSR `index` (`IA32_ARCH_CAPABILITIES`, 0x10a).
    Msr { index: u32, bit: u8 },
}

impl FeatureLoc {
    /// The reference's spelling: `CPUID[eax=07h,ecx=00h].EBX [bit 4]`,
    /// `MSR(10AH) [bit 8]`.
    pub fn describe(&self) -> String {
        self.describe_as(None)
    }

    /// [`describe`](Self::describe) with the feature's name before the
    /// bit, as the reference's enforce errors say it:
    /// `CPUID[eax=07h,ecx=00h].EBX.hle [bit 4]`, `MSR(10AH).taa-no [bit 8]`.
    pub fn describe_as(&self, name: Option<&str>) -> String {
        let name = name.map(|n| format!(".{n}")).unwrap_or_default();
        match *self {
            FeatureLoc::Cpuid {
                leaf,
                subleaf,
                reg,
                bit,
            } => {
                let r = ["EAX", "EBX", "ECX", "EDX"]
                    .get(usize::from(reg))
                    .copied()
                    .unwrap_or("?");
                format!("CPUID[eax={leaf:02X}h,ecx={subleaf:02X}h].{r}{name} [bit {bit}]")
            }
            FeatureLoc::Msr { index, bit } => format!("MSR({index:X}H){name} [bit {bit}]"),
        }
    }
}

/// What a feature bit means for a guest that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureKind {
    /// The CPU can do something.
    Feature,
    /// The CPU is not vulnerable to something (`taa-no`): a guest may only
    /// be told so where every host it can run on is not vulnerable.
    VulnerabilityAbsent,
}

/// One x86 CPU feature.
#[derive(Debug, Serialize)]
pub struct CpuFeature {
    /// The reference's name (`pcid`, `sse4.2`, `taa-no`).
    pub name: &'static str,
    /// Other spellings (`sse4_2`).
    pub aliases: &'static [&'static str],
    /// Where the guest finds it.
    pub loc: FeatureLoc,
    /// Whether a guest with it can migrate (`invtsc` cannot).
    pub migratable: bool,
    /// Capability or "vulnerability absent".
    pub kind: FeatureKind,
    /// One line.
    pub doc: &'static str,
}

/// A device type (QOM-like): name, parent, properties, VMState.
#[derive(Debug, Serialize)]
pub struct DeviceType {
    /// Type name, e.g. `virtio-blk-device`.
    pub name: &'static str,
    /// Parent type name, `None` for a root.
    pub parent: Option<&'static str>,
    /// This type then its ancestors up to the root.
    pub ancestors: &'static [&'static str],
    /// One-line description.
    pub doc: &'static str,
    /// Every property, inherited ones included (ancestors' first).
    pub props: &'static [PropDef],
    /// Its migration state, if it has any.
    pub vmstate: Option<&'static VmStateDesc>,
    /// A CPU model (`qemu64-x86_64-cpu`, `EPYC-v1-x86_64-cpu`): it has one
    /// bool property per catalogued CPU feature.
    pub cpu_model: bool,
}

impl DeviceType {
    /// The model name of a CPU model type (`EPYC-v1`, `qemu64`).
    pub fn model_name(&self) -> Option<&'static str> {
        if !self.cpu_model {
            return None;
        }
        self.name.strip_suffix("-x86_64-cpu")
    }

    /// A versioned CPU model (`EPYC-v1-x86_64-cpu` → `("EPYC", 1)`): never
    /// edited after a release, no delta may change it.
    pub fn model_version(&self) -> Option<(&'static str, u32)> {
        let (model, v) = self.model_name()?.rsplit_once("-v")?;
        Some((model, v.parse().ok()?))
    }
}

/// What a property changes, which decides whether a migration compares it
/// (`effect` in `compat/devices/*.toml`, required for every property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "kebab-case")]
pub enum Effect {
    /// What the guest sees (registers, feature bits, config space): compared.
    Guest,
    /// The migration stream's features: compared (both ends must agree).
    Stream,
    /// Neither, in this VMM (`why` says why): never compared.
    None {
        /// Why the property has no effect here.
        why: &'static str,
    },
}

impl Effect {
    /// Whether a migration compares a property with this effect.
    pub const fn compared(self) -> bool {
        !matches!(self, Effect::None { .. })
    }
}

/// A property definition.
#[derive(Debug, Serialize)]
pub struct PropDef {
    /// Property name, e.g. `num-queues`.
    pub name: &'static str,
    /// The type that declares it (an ancestor for inherited properties).
    pub owner: &'static str,
    /// Its type.
    pub ty: PropType,
    /// Its newest default.
    pub default: Value,
    /// One-line description.
    pub doc: &'static str,
    /// What it changes ([`Effect::Guest`] unless [`stream`](Self::stream)
    /// or [`inert`](Self::inert)).
    pub effect: Effect,
}

impl PropDef {
    /// Builds a definition (compact form for generated code).
    pub const fn new(
        name: &'static str,
        owner: &'static str,
        ty: PropType,
        default: Value,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            owner,
            ty,
            default,
            doc,
            effect: Effect::Guest,
        }
    }

    /// The property changes the migration stream, not the guest.
    pub const fn stream(mut self) -> Self {
        self.effect = Effect::Stream;
        self
    }

    /// The property changes nothing in this VMM, for reason `why`.
    pub const fn inert(mut self, why: &'static str) -> Self {
        self.effect = Effect::None { why };
        self
    }
}

/// A machine family (`pc`): its machine types, oldest first, and the resolved
/// property timelines shared by its machine types.
#[derive(Debug, Serialize)]
pub struct Family {
    /// Family name (`pc`).
    pub name: &'static str,
    /// One-line description.
    pub doc: &'static str,
    /// Alias naming the newest machine type (`pc` → `pc-8.2`).
    pub alias: Option<&'static str>,
    /// Delta series applied per version, in application order
    /// (`["hw_compat", "pc_compat"]`).
    pub series: &'static [&'static str],
    /// Machine types, oldest first.
    pub machines: &'static [MachineType],
    /// Per device type (sorted by name), per property (sorted by name): the
    /// compat steps. Properties without steps are absent (their default holds).
    pub timelines: &'static [TypeTimeline],
}

/// The compat steps of one device type's properties in one family.
#[derive(Debug, Serialize)]
pub struct TypeTimeline {
    /// Device type name.
    pub type_name: &'static str,
    /// Properties with at least one step, sorted by name.
    pub props: &'static [PropTimeline],
}

/// Resolved compat history of one property in one family: the value for
/// machine version `v` is the first step (ascending) with `version >= v`;
/// if none, the default.
#[derive(Debug, Serialize)]
pub struct PropTimeline {
    /// Property name.
    pub prop: &'static str,
    /// Steps by ascending version.
    pub steps: &'static [Step],
}

/// One step of a [`PropTimeline`].
#[derive(Debug, Serialize)]
pub struct Step {
    /// The delta version (`5.1` for `hw_compat_5_1`); reaches machines `<=` it.
    pub version: MachineVersion,
    /// The value the delta puts back.
    pub value: Value,
    /// Which delta and entry type set it.
    pub provenance: Provenance,
}

impl Step {
    /// A step set by delta `delta` through an entry naming type `via`, for
    /// machine versions `<= major.minor` (compact form for generated code).
    pub const fn compat(
        major: u16,
        minor: u16,
        value: Value,
        delta: &'static str,
        via: &'static str,
    ) -> Self {
        Self {
            version: MachineVersion::new(major, minor),
            value,
            provenance: Provenance::Compat {
                delta: Cow::Borrowed(delta),
                via: Cow::Borrowed(via),
            },
        }
    }
}

/// A versioned machine type (`pc-7.2`).
#[derive(Debug, Serialize)]
pub struct MachineType {
    /// Versioned name, `pc-7.2`: what is recorded and migrated.
    pub name: &'static str,
    /// Family name.
    pub family: &'static str,
    /// Version.
    pub version: MachineVersion,
    /// The alias, on the newest machine type only.
    pub alias: Option<&'static str>,
    /// Supported / deprecated / removed.
    pub lifecycle: Lifecycle,
    /// Release that introduced it.
    pub introduced_in: &'static str,
    /// Machine-level knobs.
    pub knobs: Knobs,
}

/// Machine-level settings that are not device properties.
#[derive(Debug, Serialize)]
pub struct Knobs {
    /// Maximum vCPUs.
    pub max_cpus: u32,
    /// Default vCPUs.
    pub default_cpus: u32,
    /// Default memory in MiB.
    pub memory_mib: u64,
    /// Device types the machine instantiates by default.
    pub devices: &'static [&'static str],
}

/// Where a machine type stands (computed by the compiler from the release
/// dates and the `[lifecycle]` rule of `compat/releases.toml`, or declared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Lifecycle {
    /// Usable for new VMs and migration.
    Supported,
    /// Still runs and accepts incoming migrations, with a warning.
    Deprecated {
        /// Release that deprecated it.
        since: &'static str,
        /// Why, in the reference's words ("machines more than 3 years old
        /// are subject to deletion after 6 years").
        reason: &'static str,
    },
    /// Gone: neither new VMs nor incoming migration.
    Removed {
        /// Release that removed it.
        since: &'static str,
        /// Why ("machines more than 6 years old are removed").
        reason: &'static str,
    },
}

impl Lifecycle {
    /// Whether the machine type still runs (new VMs and incoming
    /// migrations): supported and deprecated ones do.
    pub fn runs(&self) -> bool {
        !matches!(self, Lifecycle::Removed { .. })
    }

    /// The release that deprecated or removed it.
    pub fn since(&self) -> Option<&'static str> {
        match self {
            Lifecycle::Supported => None,
            Lifecycle::Deprecated { since, .. } | Lifecycle::Removed { since, .. } => Some(since),
        }
    }

    /// `supported`, `deprecated`, `removed`.
    pub fn label(&self) -> &'static str {
        match self {
            Lifecycle::Supported => "supported",
            Lifecycle::Deprecated { .. } => "deprecated",
            Lifecycle::Removed { .. } => "removed",
        }
    }
}

/// Where a property value came from, lowest to highest precedence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Provenance {
    /// The property's default.
    Default,
    /// A compat delta (`hw_compat_5_1`), through an entry naming `via`.
    Compat {
        /// Delta name.
        delta: Cow<'static, str>,
        /// The type named by the entry (an ancestor or the type itself).
        via: Cow<'static, str>,
    },
    /// `-global type.prop=value`.
    Global,
    /// `-device type,prop=value`.
    Device,
    /// Taken from an incoming migration stream's manifest.
    Stream,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Default => f.write_str("default"),
            Provenance::Compat { delta, .. } => f.write_str(delta),
            Provenance::Global => f.write_str("-global"),
            Provenance::Device => f.write_str("-device"),
            Provenance::Stream => f.write_str("stream"),
        }
    }
}

/// A compat delta as written (`hw_compat_7_1`).
#[derive(Debug, Serialize)]
pub struct Delta {
    /// `hw_compat_7_1`.
    pub name: &'static str,
    /// `hw_compat`.
    pub series: &'static str,
    /// `7.1`.
    pub version: MachineVersion,
    /// Entries in order.
    pub entries: &'static [DeltaEntry],
}

/// One `(type, property, value)` of a delta.
#[derive(Debug, Serialize)]
pub struct DeltaEntry {
    /// Type named (reaches its subtypes too).
    pub type_name: &'static str,
    /// Property.
    pub property: &'static str,
    /// Value put back.
    pub value: Value,
    /// Release that added the entry after the fact (retroactive edit), if any.
    pub added_in: Option<&'static str>,
}

impl DeltaEntry {
    /// Builds an entry (compact form for generated code).
    pub const fn new(
        type_name: &'static str,
        property: &'static str,
        value: Value,
        added_in: Option<&'static str>,
    ) -> Self {
        Self {
            type_name,
            property,
            value,
            added_in,
        }
    }
}

/// A release of this VMM.
#[derive(Debug, Serialize)]
pub struct Release {
    /// `8.0.1`.
    pub version: &'static str,
    /// Release date, ISO 8601.
    pub date: &'static str,
    /// Known mistakes this release shipped.
    pub errata: &'static [Erratum],
}

/// A release that presented a property value different from what its machine
/// types promise (e.g. 8.0's AER mask on `pc-<=7.2`).
#[derive(Debug, Serialize)]
pub struct Erratum {
    /// Short identifier.
    pub id: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Device type affected (and its subtypes).
    pub type_name: &'static str,
    /// Property affected.
    pub property: &'static str,
    /// Value the release actually used.
    pub shipped: Value,
    /// Affected machine types: versions `<=` this.
    pub max_machine: MachineVersion,
    /// Release that fixed it.
    pub fixed_in: &'static str,
}

/// A deprecated feature.
#[derive(Debug, Serialize)]
pub struct Deprecation {
    /// Short identifier (`block-migration`).
    pub id: &'static str,
    /// What is deprecated.
    pub feature: &'static str,
    /// Release that deprecated it.
    pub since: &'static str,
    /// What to use instead.
    pub replacement: &'static str,
}

//! Shared compat runtime: the types the generated compat tables are made of,
//! and the logic both the compiler (`codegen`) and the VMM need.
//!
//! * [`value`]: property types ([`PropType`]) and values ([`Value`]) with the
//!   one and only value parser, [`Value::parse`], used for TOML values by the
//!   compiler and for `-global`/`-device` by the VMM.
//! * [`table`]: the static tables `devices::generated` is made of:
//!   [`Catalog`], [`DeviceType`], [`PropDef`], [`Family`], [`MachineType`],
//!   releases, errata and deprecations.
//! * [`resolve`]: looking a machine type up and reading the resolved value and
//!   [`Provenance`] of every property ([`EffectiveConfig`]).
//! * [`overrides`]: [`Override`] parsing (`-global T.P=V`, `-device T,P=V`) and
//!   [`EffectiveConfig`], the serialisable effective guest-visible
//!   configuration that travels with a VM.
//! * [`props`]: helpers the generated typed property structs use.
//! * [`vmstate`]: VMState descriptors ([`VmStateDesc`], [`FieldDesc`],
//!   [`WireType`], [`SubsectionDesc`]).
//!
//! Resolution semantics (DESIGN.md §1): machine `F-X.Y` applies the delta of
//! every version `>= X.Y` older than the newest machine of its family, newest
//! first, oldest last; later entries win. The compiler resolves this into a
//! per-property *timeline* (see [`PropTimeline`]): the value for a machine is
//! the step with the smallest version `>=` the machine's version, else the
//! default. Precedence: default < deltas < `-global` < `-device`.

#![forbid(unsafe_code)]

pub mod deprecation;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod overrides;
pub mod props;
pub mod release;
pub mod resolve;
pub mod suggest;
pub mod table;
pub mod value;
pub mod version;
pub mod vmstate;

pub use overrides::{
    EffectiveConfig, EffectiveDevice, EffectiveProp, Override, OverrideError, PropDiff,
};
pub use props::{AutoOr, PropsError};
pub use release::{Lock, LockError, LockMachine, LockSection};

pub use table::{
    Catalog, CpuFeature, Delta, DeltaEntry, Deprecation, DeviceType, Effect, Erratum, Family,
    FeatureKind, FeatureLoc, Knobs, Lifecycle, MachineType, PropDef, PropTimeline, Provenance,
    Release, Step, TypeTimeline,
};
pub use value::{PropType, Value, ValueError};
pub use version::{MachineVersion, VersionError};
pub use vmstate::wire::{FieldData, SectionData, VmState, WireError};
pub use vmstate::{Count, FieldDesc, SubsectionDesc, VmStateDesc, WireType};

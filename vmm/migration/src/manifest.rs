//! The manifest: what the stream says about the guest, sent before any RAM.
//!
//! It is encoded as JSON inside the stream's manifest record (see
//! `docs/stream.md`). The configuration is a plain map so it is trivially
//! filled from the compiler's effective configuration (`compat-runtime`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One guest-visible property value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropValue {
    /// The value as the property parser spells it (`on`, `2`, `0x10`...).
    pub value: String,
    /// Where the value came from (`default`, `hw_compat_7_2`, `-global`, `-device`, `stream`...).
    pub provenance: String,
}

impl PropValue {
    /// A value with its provenance.
    pub fn new(value: impl Into<String>, provenance: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            provenance: provenance.into(),
        }
    }
}

/// The effective guest-visible configuration: device → property → value.
pub type GuestConfig = BTreeMap<String, BTreeMap<String, PropValue>>;

/// A device section the stream carries, with its VMState version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionInfo {
    /// Section name (VMState description name plus instance, e.g. `virtio-blk.0`).
    pub name: String,
    /// The VMState `version_id` the source writes.
    pub version_id: u32,
}

/// One device instance the guest sees: its id, type, where it sits, and the
/// guest-visible facts of its backend (a disk's capacity, read-only state,
/// block size and serial), values spelled as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInstance {
    /// Stable id (`virtio-blk0`): matched between source and destination.
    pub id: String,
    /// Device type (`virtio-blk-device`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Where the guest finds it (`virtio-mmio 0xd0000000 gsi 5`, `pci 00:01.0`).
    pub addr: String,
    /// Backend facts: fact → value.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// The instance's own property values, on top of its type's in
    /// `config` (`--device virtio-blk-device,drive=..,num-queues=3`).
    #[serde(default)]
    pub props: BTreeMap<String, PropValue>,
    /// The host-side name of its backend (`--drive id=`), if it has one: a
    /// destination adopting the stream puts the disk on its backend of the
    /// same name. Not compared (hosts name their files as they like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// The guest's CPU when chosen with `--cpu` (absent: the host's own):
/// its model and every catalogued CPUID feature it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCpu {
    /// `host`.
    pub model: String,
    /// Feature names as the catalogue spells them.
    pub features: std::collections::BTreeSet<String>,
}

/// The stream's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stream format version the source writes (equals the header's).
    pub format_version: u32,
    /// The source's release (`8.0.1`, or the next unreleased version).
    pub source_release: String,
    /// The resolved, versioned machine type (never an alias such as `pc`).
    pub machine_type: String,
    /// Guest RAM size in bytes, a multiple of the page size.
    pub ram_size: u64,
    /// Number of vCPUs; one vCPU record each.
    pub vcpus: u32,
    /// Every guest-visible property value, with provenance.
    pub config: GuestConfig,
    /// Every device section the stream will carry, once each.
    pub sections: Vec<SectionInfo>,
    /// Every device instance the guest sees (absent in a stream that does
    /// not list them: then only `config` is compared).
    #[serde(default)]
    pub devices: Vec<DeviceInstance>,
    /// The guest's CPU, if it was chosen (`--cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<GuestCpu>,
    /// The guest's TSC frequency in kHz, if the source knew it: a
    /// destination runs the guest's TSC at it, or refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsc_khz: Option<u32>,
    /// The effective CPUID table of vCPU 0 as given to KVM (at most
    /// [`MAX_CPUID_LEAVES`]): a destination presents the same or refuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid: Vec<CpuidLeaf>,
    /// Data channels besides the main connection (format 2; 0: the pages
    /// travel on the main connection).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub channels: u32,
    /// The compression method of page contents (format 2; `zstd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Ties the data channels to this stream (format 2, with channels).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session: u64,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The most CPUID entries a manifest may list (KVM's own limit is 80).
pub const MAX_CPUID_LEAVES: usize = 256;

/// One CPUID entry: leaf, subleaf, EAX, EBX, ECX, EDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidLeaf {
    pub leaf: u32,
    pub subleaf: u32,
    pub regs: [u32; 4],
}

impl Manifest {
    /// The section named `name`, if the manifest lists it.
    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Number of guest pages.
    pub fn pages(&self) -> u64 {
        self.ram_size / super::PAGE_SIZE as u64
    }
}

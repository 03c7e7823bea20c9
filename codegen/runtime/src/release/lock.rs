//! The lock file format (TOML) and its reading and writing.

use crate::vmstate::{Count, FieldDesc, VmStateDesc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The guest-visible hardware and migration layout of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Release name (`8.0.1`).
    pub release: String,
    /// Stream format version the release writes.
    pub stream_format: u32,
    /// Oldest stream format version the release reads.
    pub min_stream_format: u32,
    /// Errata (by id) that shaped what the release presented.
    #[serde(default)]
    pub errata: Vec<String>,
    /// Device type → parent type (for reporting a difference once, on the
    /// type that declares the property).
    #[serde(default)]
    pub parents: BTreeMap<String, String>,
    /// Every machine type the release knows, oldest first.
    #[serde(default)]
    pub machine: Vec<LockMachine>,
    /// Every VMState section the release sends and loads.
    #[serde(default)]
    pub section: Vec<LockSection>,
    /// Every versioned CPU model the release knows (`EPYC-v1-x86_64-cpu`)
    /// → its own properties' values: the same on every machine type (no
    /// delta may change a model version), so listed once, not per machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_model: BTreeMap<String, BTreeMap<String, String>>,
}

/// One machine type as a release presented it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockMachine {
    /// Versioned name (`pc-7.2`).
    pub name: String,
    /// Maximum vCPUs.
    pub max_cpus: u32,
    /// Default vCPUs.
    pub default_cpus: u32,
    /// Default memory in MiB.
    pub memory_mib: u64,
    /// Device types instantiated by default.
    pub devices: Vec<String>,
    /// Device type → property → value (canonical spelling).
    pub props: BTreeMap<String, BTreeMap<String, String>>,
}

/// One VMState section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSection {
    /// Section (description) name.
    pub name: String,
    /// Device type that owns it (its gates are that type's properties).
    pub device: String,
    /// Version sent.
    pub version_id: u32,
    /// Oldest version loaded.
    pub minimum_version_id: u32,
    /// Fields in wire order.
    pub fields: Vec<LockField>,
    /// Subsections in wire order.
    #[serde(default)]
    pub subsection: Vec<LockSubsection>,
}

/// One VMState subsection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSubsection {
    /// Subsection name.
    pub name: String,
    /// Bool property of the section's device deciding whether it is sent.
    pub gate: String,
    /// Fields in wire order.
    pub fields: Vec<LockField>,
}

/// One VMState field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockField {
    /// Field name.
    pub name: String,
    /// Wire type of one element.
    pub wire: String,
    /// Fixed element count, or the largest count of a variable array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u32>,
    /// Earlier field holding the element count of a variable array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len_field: Option<String>,
    /// Section version that introduced it.
    pub since: u32,
}

/// A lock file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lock file: {0}")]
pub struct LockError(pub String);

const HEADER: &str = "# Frozen by `cargo xtask release`: what this release presented. Never edit\n\
# or rewrite this file; `cargo xtask gen` checks the current tree against it.\n";

impl Lock {
    /// Parses a lock file.
    pub fn parse(text: &str) -> Result<Self, LockError> {
        toml::from_str(text).map_err(|e| LockError(e.message().trim().to_string()))
    }

    /// Serialises a lock file (deterministic).
    pub fn to_toml(&self) -> Result<String, LockError> {
        toml::to_string(self)
            .map(|body| format!("{HEADER}{body}"))
            .map_err(|e| LockError(e.to_string()))
    }

    /// A machine type by name.
    pub fn machine(&self, name: &str) -> Option<&LockMachine> {
        self.machine.iter().find(|m| m.name == name)
    }

    /// A section by name.
    pub fn section(&self, name: &str) -> Option<&LockSection> {
        self.section.iter().find(|s| s.name == name)
    }
}

impl LockMachine {
    /// One property value.
    pub fn prop(&self, device: &str, prop: &str) -> Option<&str> {
        self.props.get(device)?.get(prop).map(String::as_str)
    }
}

impl LockField {
    /// The lock form of a field descriptor.
    pub fn from_desc(f: &FieldDesc) -> Self {
        let (len, len_field) = match f.count {
            Count::One => (None, None),
            Count::Fixed { len } => (Some(len), None),
            Count::Field { field, max } => (Some(max), Some(field.to_string())),
        };
        Self {
            name: f.name.to_string(),
            wire: f.wire.name().to_string(),
            len,
            len_field,
            since: f.since,
        }
    }

    /// Bytes of one element times the (maximum) count.
    pub fn size(&self) -> usize {
        let elem = self
            .wire
            .parse::<crate::WireType>()
            .map(|w| w.size())
            .unwrap_or(1);
        elem * self.len.unwrap_or(1) as usize
    }
}

impl LockSection {
    /// The lock form of a VMState descriptor owned by `device`.
    pub fn from_desc(device: &str, d: &VmStateDesc) -> Self {
        Self {
            name: d.name.to_string(),
            device: device.to_string(),
            version_id: d.version_id,
            minimum_version_id: d.minimum_version_id,
            fields: d.fields.iter().map(LockField::from_desc).collect(),
            subsection: d
                .subsections
                .iter()
                .map(|s| LockSubsection {
                    name: s.name.to_string(),
                    gate: s.gate.to_string(),
                    fields: s.fields.iter().map(LockField::from_desc).collect(),
                })
                .collect(),
        }
    }

    /// The fields a stream of version `v` carries.
    pub fn fields_at(&self, v: u32) -> impl Iterator<Item = &LockField> {
        self.fields.iter().filter(move |f| f.since <= v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let mut props = BTreeMap::new();
        props.insert(
            "pci-device".to_string(),
            BTreeMap::from([("x-pcie-err-unc-mask".to_string(), "on".to_string())]),
        );
        Lock {
            cpu_model: BTreeMap::new(),
            release: "8.0".into(),
            stream_format: 1,
            min_stream_format: 1,
            errata: vec!["aer-uncor-mask".into()],
            parents: BTreeMap::from([("pcie-root-port".into(), "pci-device".into())]),
            machine: vec![LockMachine {
                name: "pc-7.2".into(),
                max_cpus: 288,
                default_cpus: 1,
                memory_mib: 512,
                devices: vec!["isa-serial".into()],
                props,
            }],
            section: vec![LockSection {
                name: "serial".into(),
                device: "isa-serial".into(),
                version_id: 3,
                minimum_version_id: 2,
                fields: vec![LockField {
                    name: "rx_fifo".into(),
                    wire: "buffer".into(),
                    len: Some(16),
                    len_field: Some("rx_len".into()),
                    since: 3,
                }],
                subsection: vec![],
            }],
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let l = sample();
        let text = l.to_toml().unwrap();
        assert!(text.starts_with("# Frozen"));
        assert_eq!(Lock::parse(&text).unwrap(), l);
        assert_eq!(
            l.machine("pc-7.2")
                .unwrap()
                .prop("pci-device", "x-pcie-err-unc-mask"),
            Some("on")
        );
        assert_eq!(l.section("serial").unwrap().fields[0].size(), 16);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Lock::parse("release = 3").is_err());
        assert!(Lock::parse("[[[").is_err());
        assert!(Lock::parse("").is_err());
    }
}

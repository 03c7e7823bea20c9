//! Device migration state through the generated VMState descriptors.
//!
//! Every migratable device implements [`Persist`]: it maps its runtime state
//! (`SerialDeviceState`, `MmioTransportState`, the ECAM config spaces) to the
//! typed state structs generated from `compat/devices/*.toml`
//! (`devices::generated::vmstate::*State`) and lets compat-runtime's generic
//! save/load ([`compat_runtime::vmstate::wire`]) produce and check the bytes.
//!
//! A [`Section`] is one VMState section: its description name, the version
//! its bytes were written at and the bytes themselves (which repeat name and
//! version, so a section is self-describing). Subsections are written only
//! when their gating property is on in the device's configuration (built from
//! the effective configuration); a subsection in the stream whose gate is off
//! here, or that this build does not know, is refused by name; a missing one
//! is fine.

use compat_runtime::vmstate::wire;
use compat_runtime::{SectionData, VmState, VmStateDesc, WireError};

/// One VMState section of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// VMState description name (`virtio-blk`). A name of the form
    /// `NAME/INSTANCE` is accepted by [`Persist::restore_sections`] and matched on `NAME`.
    pub name: String,
    /// Version the bytes were written at (the local `version_id` on save).
    pub version_id: u32,
    /// The section as written by compat-runtime's generic save.
    pub data: Vec<u8>,
}

/// Why a device state could not be saved or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The generic VMState load or save refused the bytes (version outside
    /// `[minimum_version_id, version_id]`, unknown subsection, truncated or
    /// corrupt data...); the message names the device and, where it applies,
    /// the field and both versions.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A section given to a device is not one it owns.
    #[error("{device}: unknown section `{name}` (this device loads {expected})")]
    UnknownSection {
        /// The device (its first section's name).
        device: String,
        /// The section name given.
        name: String,
        /// The sections the device loads.
        expected: String,
    },
    /// A section the device needs is absent.
    #[error("{device}: section `{section}` is missing")]
    MissingSection {
        /// The device.
        device: String,
        /// The missing section.
        section: String,
    },
    /// The same section was given twice.
    #[error("{device}: section `{section}` given more than once")]
    DuplicateSection {
        /// The device.
        device: String,
        /// The repeated section.
        section: String,
    },
    /// The section header and the bytes disagree on the version.
    #[error("{device}: section header says version {header}, but its bytes carry version {bytes}")]
    VersionMismatch {
        /// The section.
        device: String,
        /// [`Section::version_id`].
        header: u32,
        /// Version written in the bytes.
        bytes: u32,
    },
    /// The stream carries a subsection whose gating property is off here.
    #[error(
        "{device}: subsection `{subsection}` is in the stream, but its gate `{gate}` is off on this device"
    )]
    GateOff {
        /// The section.
        device: String,
        /// The subsection.
        subsection: String,
        /// The gating property.
        gate: String,
    },
    /// A field disagrees with this device's configuration or with another field.
    #[error("{device}: field `{field}`: the stream has {stream}, this device has {local}")]
    Mismatch {
        /// The section.
        device: String,
        /// The field (with an index for per-queue fields: `queue_size[1]`).
        field: String,
        /// The value in the stream.
        stream: String,
        /// The local value (or what the stream's other fields imply).
        local: String,
    },
    /// A field's value is not acceptable to the device model.
    #[error("{device}: field `{field}`: {why}")]
    BadValue {
        /// The section.
        device: String,
        /// The field.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// A runtime value does not fit the field's wire type (on save).
    #[error("{device}: field `{field}`: value {value} does not fit the wire type {wire}")]
    DoesNotFit {
        /// The section.
        device: String,
        /// The field.
        field: String,
        /// The runtime value.
        value: u64,
        /// The wire type.
        wire: String,
    },
}

/// A device whose migration state travels as VMState sections.
///
/// `save_sections` writes every section of [`descriptors`](Persist::descriptors), in
/// that order; `restore_sections` takes exactly those sections (any order), each once,
/// into a device built from the same configuration, and either applies all of
/// them or returns an error naming the device, section, field or versions.
pub trait Persist {
    /// The VMState descriptions of the sections this device writes, in order.
    fn descriptors(&self) -> Vec<&'static VmStateDesc>;
    /// The value of a bool property gating a subsection, from the
    /// configuration the device was built with (`None`: not a property of
    /// this device).
    fn gate(&self, property: &str) -> Option<bool>;
    /// Saves the device's state.
    fn save_sections(&self) -> Result<Vec<Section>, PersistError>;
    /// Restores state saved by [`save_sections`](Persist::save_sections) (possibly by another
    /// release, within the versions this build loads).
    fn restore_sections(&mut self, sections: &[Section]) -> Result<(), PersistError>;
    /// Whether section `name` (`NAME` or `NAME/INSTANCE`) is one of this
    /// device's: routes a stream's sections to devices.
    fn owns(&self, name: &str) -> bool {
        self.descriptors().iter().any(|d| d.name == base_name(name))
    }
}

/// Encodes typed state `state` as a section. Subsections whose gate is off
/// (per `gate`) are dropped: the caller builds them from the same
/// configuration, so this only guards against mistakes.
pub fn encode<S: VmState>(
    state: &S,
    gate: impl Fn(&str) -> Option<bool>,
) -> Result<Section, PersistError> {
    let desc = S::desc();
    let mut data = state.to_section();
    data.subsections.retain(|(name, _)| {
        desc.subsection(name)
            .is_some_and(|s| gate(s.gate) == Some(true))
    });
    Ok(Section {
        name: desc.name.to_string(),
        version_id: desc.version_id,
        data: wire::save(desc, &data)?,
    })
}

/// The base name of a section (`virtio-blk/0` → `virtio-blk`).
pub fn base_name(name: &str) -> &str {
    name.split_once('/').map_or(name, |(b, _)| b)
}

/// Checks that `sections` holds exactly the sections of `descs`, once each;
/// returns them in `descs` order.
pub fn pick<'a>(
    descs: &[&'static VmStateDesc],
    sections: &'a [Section],
) -> Result<Vec<&'a Section>, PersistError> {
    let device = descs.first().map_or("device", |d| d.name).to_string();
    let expected = || {
        descs
            .iter()
            .map(|d| format!("`{}`", d.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in sections {
        if !descs.iter().any(|d| d.name == base_name(&s.name)) {
            return Err(PersistError::UnknownSection {
                device,
                name: s.name.clone(),
                expected: expected(),
            });
        }
    }
    descs
        .iter()
        .map(|d| {
            let mut found = sections.iter().filter(|s| base_name(&s.name) == d.name);
            let first = found.next().ok_or_else(|| PersistError::MissingSection {
                device: device.clone(),
                section: d.name.to_string(),
            })?;
            if found.next().is_some() {
                return Err(PersistError::DuplicateSection {
                    device: device.clone(),
                    section: d.name.to_string(),
                });
            }
            Ok(first)
        })
        .collect()
}

/// The version written in a section's bytes (after its name), if readable.
fn bytes_version(data: &[u8]) -> Option<u32> {
    let n = usize::from(*data.first()?);
    let v = data.get(1 + n..1 + n + 4)?;
    Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// Decodes section `s` into typed state: the generic load (versions, unknown
/// subsections, counts, truncation), then the gate of every subsection
/// present must be on here.
pub fn decode<S: VmState>(
    s: &Section,
    gate: impl Fn(&str) -> Option<bool>,
) -> Result<S, PersistError> {
    let desc = S::desc();
    let data: SectionData = wire::load_exact(desc, &s.data)?;
    if let Some(v) = bytes_version(&s.data)
        && v != s.version_id
    {
        return Err(PersistError::VersionMismatch {
            device: desc.name.to_string(),
            header: s.version_id,
            bytes: v,
        });
    }
    for (name, _) in &data.subsections {
        let Some(sd) = desc.subsection(name) else {
            return Err(WireError::UnknownSubsection {
                device: desc.name.into(),
                name: name.clone(),
            }
            .into());
        };
        if gate(sd.gate) != Some(true) {
            return Err(PersistError::GateOff {
                device: desc.name.to_string(),
                subsection: name.clone(),
                gate: sd.gate.to_string(),
            });
        }
    }
    Ok(S::from_section(&data)?)
}

/// `value` as a narrower wire integer, or [`PersistError::DoesNotFit`].
pub fn fit<T: TryFrom<u64>>(
    device: &str,
    field: &str,
    wire: &str,
    value: u64,
) -> Result<T, PersistError> {
    T::try_from(value).map_err(|_| PersistError::DoesNotFit {
        device: device.into(),
        field: field.into(),
        value,
        wire: wire.into(),
    })
}

/// A [`PersistError::Mismatch`].
pub fn mismatch(
    device: &str,
    field: impl Into<String>,
    stream: impl std::fmt::Display,
    local: impl std::fmt::Display,
) -> PersistError {
    PersistError::Mismatch {
        device: device.into(),
        field: field.into(),
        stream: stream.to_string(),
        local: local.to_string(),
    }
}

/// Test helpers shared by the per-device persist tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Every truncation and a set of single-byte corruptions of every
    /// section must give an error or a successful restore, never a panic.
    /// Returns (truncations refused, corruptions refused).
    pub fn hostile_bytes<D: Persist>(
        saved: &[Section],
        mut fresh: impl FnMut() -> D,
    ) -> (usize, usize) {
        let (mut trunc, mut corrupt) = (0, 0);
        for (i, s) in saved.iter().enumerate() {
            for len in 0..s.data.len() {
                let mut secs = saved.to_vec();
                secs[i].data.truncate(len);
                let mut d = fresh();
                assert!(
                    d.restore_sections(&secs).is_err(),
                    "{}: truncated to {len}",
                    s.name
                );
                trunc += 1;
            }
            let n = s.data.len();
            let step = (n / 97).max(1);
            for pos in (0..n).step_by(step).chain([n.saturating_sub(1)]) {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut secs = saved.to_vec();
                    secs[i].data[pos] ^= x;
                    let mut d = fresh();
                    if d.restore_sections(&secs).is_err() {
                        corrupt += 1;
                    }
                }
            }
        }
        (trunc, corrupt)
    }

    /// Rewrites the version in a section's bytes (and header).
    pub fn with_version(s: &Section, v: u32) -> Section {
        let mut s = s.clone();
        let n = usize::from(s.data[0]);
        s.data[1 + n..1 + n + 4].copy_from_slice(&v.to_be_bytes());
        s.version_id = v;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::pci::{Ecam, PcieRootPortConfig};
    use crate::serial::Serial;
    use vmm_sys_util::eventfd::EventFd;

    fn devices() -> (Serial, Ecam) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let serial = Serial::new(Box::new(std::io::sink()), &evt).unwrap();
        let ecam = Ecam::new(&PcieRootPortConfig::for_test(1, 0, 0, true));
        (serial, ecam)
    }

    /// What the migration code does: list the sections (manifest), save
    /// every device, route the sections back by name through `dyn Persist`.
    #[test]
    fn machine_roundtrip_through_dyn_persist() {
        let (mut s, mut e) = devices();
        s.write(7, &[0x42]);
        e.write((1 << 15) + 4, &[0x06]);
        let src: [&dyn Persist; 2] = [&s, &e];
        let manifest: Vec<(&str, u32)> = src
            .iter()
            .flat_map(|d| d.descriptors())
            .map(|d| (d.name, d.version_id))
            .collect();
        assert_eq!(manifest, [("serial", 3), ("pcie-root-port", 1)]);
        let mut stream: Vec<Section> = Vec::new();
        for d in src {
            stream.extend(d.save_sections().unwrap());
        }
        let (mut s2, mut e2) = devices();
        let dst: [&mut dyn Persist; 2] = [&mut s2, &mut e2];
        for d in dst {
            let mine: Vec<Section> = stream.iter().filter(|x| d.owns(&x.name)).cloned().collect();
            d.restore_sections(&mine).unwrap();
        }
        let (mut a, mut b) = ([0u8], [0u8]);
        s2.read(7, &mut a);
        e2.read((1 << 15) + 4, &mut b);
        assert_eq!((a[0], b[0]), (0x42, 0x06));
        assert!(s2.owns("serial/0") && !s2.owns("serial-x") && !e2.owns("serial"));
    }
}

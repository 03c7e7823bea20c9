//! A machine's device state as stream sections: which devices persist, the
//! instance suffix of each (`virtio-mmio/0`, `virtio-blk/0`), and routing
//! incoming sections back to their device.

use super::kvm_vm::{KVM_VM_DESC, KVM_VM_SECTION};
use crate::builder::Devices;
use devices::bus::lock;
use devices::persist::Persist;
use migration::manifest::SectionInfo;
use migration::vm::VmError;

/// The persistable devices of a machine, each with the instance suffix its
/// sections carry (`None`: the plain VMState name).
pub(super) fn with_devices<R>(
    d: &Devices,
    mut f: impl FnMut(Option<usize>, &mut dyn Persist) -> Result<R, VmError>,
) -> Result<Vec<R>, VmError> {
    let mut out = Vec::new();
    if let Some(s) = &d.serial {
        out.push(f(None, &mut *lock(s))?);
    }
    for (i, b) in d.blocks.iter().enumerate() {
        out.push(f(Some(i), &mut *lock(b))?);
    }
    if let Some(e) = &d.ecam {
        out.push(f(None, &mut *lock(e))?);
    }
    Ok(out)
}

pub(super) fn instance_name(name: &str, instance: Option<usize>) -> String {
    match instance {
        Some(i) => format!("{name}/{i}"),
        None => name.to_string(),
    }
}

/// The device sections a machine writes, in order, with their versions.
pub fn section_infos(d: &Devices) -> Result<Vec<SectionInfo>, VmError> {
    let mut out: Vec<SectionInfo> = with_devices(d, |inst, p| {
        Ok(p.descriptors()
            .into_iter()
            .map(|desc| SectionInfo {
                name: instance_name(desc.name, inst),
                version_id: desc.version_id,
            })
            .collect::<Vec<_>>())
    })?
    .into_iter()
    .flatten()
    .collect();
    out.push(SectionInfo {
        name: KVM_VM_SECTION.into(),
        version_id: KVM_VM_DESC.version_id,
    });
    Ok(out)
}

pub(super) fn vm_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> VmError + '_ {
    move |e| VmError::new(format!("{what}: {e}"))
}

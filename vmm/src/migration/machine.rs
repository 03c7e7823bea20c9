//! The migration traits over the real KVM runtime ([`crate::builder::Machine`]).
//!
//! - [`MachineSource`]: a running machine as a [`MigrationSource`]. RAM goes
//!   through the `Vm` page API, the dirty bitmap is KVM's log OR'ed with the
//!   VMM-written pages, device state is every device's
//!   [`Persist::save_sections`] (virtio-mmio transports are instance-suffixed:
//!   `virtio-mmio/0`, `virtio-blk/0`, ...), vCPUs use [`super::vcpu_codec`],
//!   and the irqchip (PIC ×2, IOAPIC), PIT2 and kvmclock travel as the
//!   section [`KVM_VM_SECTION`] (serde of kvm-bindings' own structures).
//! - [`MachineTarget`]: builds the destination machine, paused, from the
//!   manifest's (adopted or explicitly matching) configuration, loads
//!   everything, and resumes the vCPUs only in [`MigrationTarget::start`].

use super::compat_check::{self, IncomingConfig, LocalRelease};
use super::config as mconfig;
use super::manifest::{Manifest, SectionInfo};
use super::stream::{Section, VcpuRecord};
use super::vcpu_codec;
use super::vm::{MigrationSource, MigrationTarget, VmError};
use super::{PAGE_SIZE, bitmap::DirtyBitmap};
use crate::builder::config::{self as bconfig, MachineConfig, RunRequest};
use crate::builder::{Devices, Machine};
use crate::vstate::vcpu::VmEvent;
use crate::vstate::vm::VmState;
use compat_runtime::Override;
use compat_runtime::deprecation::MachineUse;
use compat_runtime::vmstate::VmStateDesc;
use devices::bus::lock;
use devices::persist::{self, Persist};
use kvm_bindings::{kvm_clock_data, kvm_irqchip, kvm_pit_state2};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{Receiver, channel};

/// The release this build presents (the next, unreleased version).
pub const RELEASE: &str = crate::matrix::NEXT;

/// Name of the section carrying the irqchip, PIT2 and kvmclock state.
pub const KVM_VM_SECTION: &str = "kvm-vm";

/// The VMState description of [`KVM_VM_SECTION`]: its bytes are a JSON
/// object (serde of kvm-bindings' `kvm_irqchip` ×3, `kvm_pit_state2`,
/// `kvm_clock_data`), versioned as a whole.
pub static KVM_VM_DESC: VmStateDesc = VmStateDesc {
    name: KVM_VM_SECTION,
    version_id: 1,
    minimum_version_id: 1,
    fields: &[],
    subsections: &[],
};

/// Upper bound on the [`KVM_VM_SECTION`] bytes accepted (it is about 10 KiB of JSON).
const MAX_KVM_VM_BYTES: usize = 256 << 10;

#[derive(Serialize, Deserialize)]
struct KvmVmWire {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

fn encode_vm_state(s: &VmState) -> Result<Vec<u8>, VmError> {
    let w = KvmVmWire {
        pic_master: s.pic_master,
        pic_slave: s.pic_slave,
        ioapic: s.ioapic,
        pit: s.pit,
        clock: s.clock,
    };
    serde_json::to_vec(&w).map_err(|e| VmError::new(format!("section {KVM_VM_SECTION}: {e}")))
}

fn decode_vm_state(data: &[u8]) -> Result<VmState, VmError> {
    if data.len() > MAX_KVM_VM_BYTES {
        return Err(VmError::new(format!(
            "section {KVM_VM_SECTION}: {} bytes, more than the {MAX_KVM_VM_BYTES} allowed",
            data.len()
        )));
    }
    let w: KvmVmWire = serde_json::from_slice(data)
        .map_err(|e| VmError::new(format!("section {KVM_VM_SECTION}: {e}")))?;
    Ok(VmState {
        pic_master: w.pic_master,
        pic_slave: w.pic_slave,
        ioapic: w.ioapic,
        pit: w.pit,
        clock: w.clock,
    })
}

/// What this build accepts on an incoming stream (device sections plus [`KVM_VM_SECTION`]).
/// With `--as-release R`, release R's machine types and section versions
/// ([`crate::persona::local_release`]).
pub fn local_release() -> LocalRelease {
    crate::persona::local_release(&[&KVM_VM_DESC])
}

/// The persistable devices of a machine, each with the instance suffix its
/// sections carry (`None`: the plain VMState name).
fn with_devices<R>(
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

fn instance_name(name: &str, instance: Option<usize>) -> String {
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

fn vm_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> VmError + '_ {
    move |e| VmError::new(format!("{what}: {e}"))
}

/// A running machine as the source of a migration.
pub struct MachineSource<'a> {
    m: &'a Machine,
}

impl<'a> MachineSource<'a> {
    /// Wraps a started machine.
    pub fn new(m: &'a Machine) -> Self {
        Self { m }
    }
}

impl MigrationSource for MachineSource<'_> {
    fn manifest(&mut self) -> Result<Manifest, VmError> {
        let cfg = self.m.config();
        let ram = self.m.vm().ram_pages() * PAGE_SIZE as u64;
        let mut manifest = mconfig::manifest(
            crate::persona::release(),
            &cfg.effective,
            ram,
            u32::from(cfg.vcpus),
            section_infos(self.m.devices())?,
        );
        // `--as-release R`: R as the source release, R's section versions.
        crate::persona::announce(&mut manifest);
        Ok(manifest)
    }

    fn read_pages(&mut self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        self.m
            .vm()
            .read_pages(first_page, buf)
            .map_err(|e| vm_err("reading guest RAM")(&e))
    }

    fn start_dirty_tracking(&mut self) -> Result<(), VmError> {
        self.m
            .vm()
            .start_dirty_tracking()
            .map_err(|e| vm_err("dirty tracking")(&e))
    }

    fn take_dirty_bitmap(&mut self) -> Result<DirtyBitmap, VmError> {
        let vm = self.m.vm();
        let words = vm.take_dirty_pages().map_err(|e| vm_err("dirty log")(&e))?;
        Ok(DirtyBitmap::from_words(vm.ram_pages(), words))
    }

    fn stop_dirty_tracking(&mut self) -> Result<(), VmError> {
        self.m
            .vm()
            .stop_dirty_tracking()
            .map_err(|e| vm_err("dirty tracking")(&e))
    }

    fn set_throttle(&mut self, percent: u8) -> Result<(), VmError> {
        self.m
            .set_throttle(percent)
            .map_err(|e| vm_err("throttling the vCPUs")(&e))
    }

    fn pause(&mut self) -> Result<(), VmError> {
        self.m.pause().map_err(|e| vm_err("pausing the vCPUs")(&e))
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.m.resume();
        Ok(())
    }

    fn save_devices(&mut self) -> Result<Vec<Section>, VmError> {
        let mut out: Vec<Section> = with_devices(self.m.devices(), |inst, p| {
            let secs = p
                .save_sections()
                .map_err(|e| vm_err("saving device state")(&e))?;
            Ok(secs
                .into_iter()
                .map(|s| Section {
                    name: instance_name(&s.name, inst),
                    version_id: s.version_id,
                    data: s.data,
                })
                .collect::<Vec<_>>())
        })?
        .into_iter()
        .flatten()
        .collect();
        let st = self
            .m
            .vm()
            .save_state()
            .map_err(|e| vm_err("saving irqchip/PIT/clock")(&e))?;
        out.push(Section {
            name: KVM_VM_SECTION.into(),
            version_id: KVM_VM_DESC.version_id,
            data: encode_vm_state(&st)?,
        });
        Ok(out)
    }

    fn save_vcpus(&mut self) -> Result<Vec<VcpuRecord>, VmError> {
        let set = self
            .m
            .vcpus()
            .ok_or_else(|| VmError::new("the vCPUs are not running"))?;
        let states = set
            .save_states()
            .map_err(|e| vm_err("saving vCPU state")(&e))?;
        Ok(states
            .iter()
            .enumerate()
            .map(|(i, s)| VcpuRecord {
                index: i as u32,
                data: vcpu_codec::encode_vcpu(s),
            })
            .collect())
    }
}

/// How the destination was configured on its command line.
#[derive(Clone, Debug)]
pub struct IncomingSettings {
    /// `-M` if given.
    pub machine: Option<String>,
    /// `--global`/`--device` overrides (empty and no `-M`: adopt the stream's).
    pub overrides: Vec<Override>,
    /// `--smp`/`-m` if given: must match the stream's.
    pub cpus: Option<u32>,
    /// `-m` in bytes if given.
    pub mem_bytes: Option<u64>,
    /// The rest of the request (drives, serial) used to build the machine.
    pub base: RunRequest,
}

impl IncomingSettings {
    /// True when only `--incoming` (plus host resources) was given: adopt the stream.
    pub fn adopts(&self) -> bool {
        self.machine.is_none() && self.overrides.is_empty()
    }
}

/// The destination machine being built from a stream.
pub struct MachineTarget<'a> {
    settings: IncomingSettings,
    kernel: &'a [u8],
    append: Option<&'a str>,
    machine: Option<Machine>,
    events: Option<Receiver<VmEvent>>,
    config: Option<MachineConfig>,
    adopted: bool,
}

impl<'a> MachineTarget<'a> {
    /// A target that will build its machine with `kernel` (overwritten by the
    /// stream's RAM; only the device layout and the vCPUs matter).
    pub fn new(settings: IncomingSettings, kernel: &'a [u8], append: Option<&'a str>) -> Self {
        Self {
            settings,
            kernel,
            append,
            machine: None,
            events: None,
            config: None,
            adopted: false,
        }
    }

    /// Whether the configuration was adopted from the stream.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The configuration the machine was built with (after `validate`).
    pub fn config(&self) -> Option<&MachineConfig> {
        self.config.as_ref()
    }

    /// The started machine and its event channel (after `start`).
    pub fn into_machine(self) -> Option<(Machine, Receiver<VmEvent>)> {
        Some((self.machine?, self.events?))
    }

    fn machine(&self) -> Result<&Machine, VmError> {
        self.machine
            .as_ref()
            .ok_or_else(|| VmError::new("no machine was built (manifest not validated)"))
    }

    fn resolve_config(&mut self, m: &Manifest) -> Result<MachineConfig, VmError> {
        let catalog = bconfig::catalog();
        let local = local_release();
        let overrides = self.settings.overrides.clone();
        let resolve = |mt: &str| -> Result<_, String> {
            crate::persona::effective(mt, &overrides)
                .map(|e| mconfig::from_effective(&e))
                .map_err(|e| e.to_string())
        };
        let how = if self.settings.adopts() {
            IncomingConfig::Adopt
        } else {
            IncomingConfig::Explicit {
                machine_type: self
                    .settings
                    .machine
                    .as_deref()
                    .map(|n| crate::persona::machine_name(n).map(str::to_string))
                    .transpose()
                    .map_err(|e| VmError::new(format!("-M: {e}")))?,
                resolve: &resolve,
            }
        };
        let accepted = compat_check::check(m, &local, &how).map_err(VmError::new)?;
        let mut problems = Vec::new();
        if let Some(c) = self.settings.cpus.filter(|c| *c != m.vcpus) {
            problems.push(format!(
                "the stream's guest has {} vCPUs, this destination was started with --smp {c}",
                m.vcpus
            ));
        }
        if let Some(b) = self.settings.mem_bytes.filter(|b| *b != m.ram_size) {
            problems.push(format!(
                "the stream's guest has {} bytes of RAM, this destination was started with -m of {b} bytes",
                m.ram_size
            ));
        }
        if !problems.is_empty() {
            return Err(VmError::new(format!(
                "incompatible migration stream: {}",
                problems.join("; ")
            )));
        }
        let machine = catalog
            .machine_or_err(&accepted.machine_type)
            .map_err(VmError::new)?;
        crate::lifecycle::admit(catalog, machine.name, MachineUse::Incoming)
            .map_err(VmError::new)?;
        // As this build, or as `--as-release R` presents the machine type.
        let effective = if accepted.adopted {
            let base = crate::persona::base(machine).map_err(VmError::new)?;
            crate::persona::adopt(&base, m).map_err(VmError::new)?
        } else {
            crate::persona::effective(machine.name, &overrides).map_err(VmError::new)?
        };
        let knobs = crate::persona::knobs(machine).map_err(VmError::new)?;
        let req = RunRequest {
            machine: machine.name.to_string(),
            cpus: Some(m.vcpus),
            mem_bytes: Some(m.ram_size),
            overrides: overrides.clone(),
            ..self.settings.base.clone()
        };
        let cfg = bconfig::from_effective(&effective, &knobs, &req)
            .map_err(|e| VmError::new(format!("configuring the destination: {e}")))?;
        self.adopted = accepted.adopted;
        Ok(cfg)
    }
}

impl MigrationTarget for MachineTarget<'_> {
    fn validate(&mut self, m: &Manifest) -> Result<(), VmError> {
        let cfg = self.resolve_config(m)?;
        // Host resources: the stream's virtio-mmio devices need as many --drive.
        let streamed = m
            .sections
            .iter()
            .filter(|s| persist::base_name(&s.name) == "virtio-mmio")
            .count();
        if streamed != cfg.blocks.len() {
            return Err(VmError::new(format!(
                "the stream's guest has {streamed} virtio-blk device(s) (sections virtio-mmio/N), this destination has {} --drive",
                cfg.blocks.len()
            )));
        }
        let mut machine = Machine::build(&cfg, self.kernel, self.append, true)
            .map_err(|e| vm_err("building the destination VM")(&e))?;
        let ram = machine.vm().ram_pages() * PAGE_SIZE as u64;
        if ram != m.ram_size {
            return Err(VmError::new(format!(
                "the destination VM has {ram} bytes of RAM, the stream {}",
                m.ram_size
            )));
        }
        // Every section the stream lists must have an owner here, and every
        // section this machine needs must be in the stream.
        let local = section_infos(machine.devices())?;
        for s in &m.sections {
            if !local.iter().any(|l| l.name == s.name) {
                return Err(VmError::new(format!(
                    "section `{}` has no device on this destination",
                    s.name
                )));
            }
        }
        for l in &local {
            if m.section(&l.name).is_none() {
                return Err(VmError::new(format!(
                    "section `{}` is missing from the stream",
                    l.name
                )));
            }
        }
        let (tx, rx) = channel();
        machine
            .start_paused(tx)
            .map_err(|e| vm_err("starting the destination vCPUs paused")(&e))?;
        self.machine = Some(machine);
        self.events = Some(rx);
        self.config = Some(cfg);
        Ok(())
    }

    fn write_pages(&mut self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        self.machine()?
            .vm()
            .write_pages(first_page, data)
            .map_err(|e| vm_err("writing guest RAM")(&e))
    }

    fn write_zero_pages(&mut self, first_page: u64, count: u64) -> Result<(), VmError> {
        self.machine()?
            .vm()
            .zero_pages(first_page, count)
            .map_err(|e| vm_err("zeroing guest RAM")(&e))
    }

    fn load_devices(&mut self, sections: Vec<Section>) -> Result<(), VmError> {
        let m = self.machine()?;
        let mut vm_state = None;
        let mut by_device: Vec<Vec<persist::Section>> = Vec::new();
        // Route every section to its device (by name and instance).
        let mut routed = vec![false; sections.len()];
        with_devices(m.devices(), |inst, p| {
            let mine: Vec<persist::Section> = sections
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    let (base, i) = match s.name.split_once('/') {
                        Some((b, i)) => (b, Some(i)),
                        None => (s.name.as_str(), None),
                    };
                    let want = inst.map(|n| n.to_string());
                    p.owns(base) && i.map(str::to_string) == want
                })
                .map(|(k, s)| {
                    routed[k] = true;
                    persist::Section {
                        name: s.name.clone(),
                        version_id: s.version_id,
                        data: s.data.clone(),
                    }
                })
                .collect();
            by_device.push(mine);
            Ok(())
        })?;
        for (k, s) in sections.iter().enumerate() {
            if s.name == KVM_VM_SECTION {
                vm_state = Some(decode_vm_state(&s.data)?);
            } else if !routed[k] {
                return Err(VmError::new(format!(
                    "section `{}` has no device on this destination",
                    s.name
                )));
            }
        }
        let vm_state = vm_state
            .ok_or_else(|| VmError::new(format!("section `{KVM_VM_SECTION}` is missing")))?;
        let mut it = by_device.into_iter();
        with_devices(m.devices(), |inst, p| {
            let secs = it.next().unwrap_or_default();
            p.restore_sections(&secs).map_err(|e| match inst {
                Some(i) => VmError::new(format!("restoring device instance {i}: {e}")),
                None => VmError::new(format!("restoring device state: {e}")),
            })
        })?;
        m.vm()
            .restore_state(&vm_state)
            .map_err(|e| vm_err("restoring irqchip/PIT/clock")(&e))
    }

    fn load_vcpus(&mut self, vcpus: Vec<VcpuRecord>) -> Result<(), VmError> {
        let m = self.machine()?;
        let set = m
            .vcpus()
            .ok_or_else(|| VmError::new("the destination vCPUs were not created"))?;
        if vcpus.len() != set.len() {
            return Err(VmError::new(format!(
                "the stream has {} vCPU records, this destination {} vCPUs",
                vcpus.len(),
                set.len()
            )));
        }
        let states = vcpus
            .iter()
            .map(|v| {
                vcpu_codec::decode_vcpu(&v.data)
                    .map_err(|e| VmError::new(format!("vCPU {}: {e}", v.index)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        set.restore_states(&states)
            .map_err(|e| vm_err("restoring vCPU state")(&e))
    }

    fn start(&mut self) -> Result<(), VmError> {
        self.machine()?.resume();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_vm_state_round_trip_and_bounds() {
        let mut st = VmState {
            pic_master: kvm_irqchip::default(),
            pic_slave: kvm_irqchip {
                chip_id: 1,
                ..Default::default()
            },
            ioapic: kvm_irqchip {
                chip_id: 2,
                ..Default::default()
            },
            pit: kvm_pit_state2::default(),
            clock: kvm_clock_data::default(),
        };
        st.clock.clock = 123_456_789;
        st.pit.flags = 1;
        let bytes = encode_vm_state(&st).unwrap();
        assert!(bytes.len() < MAX_KVM_VM_BYTES);
        let back = decode_vm_state(&bytes).unwrap();
        assert_eq!(back.clock.clock, 123_456_789);
        assert_eq!(back.pit.flags, 1);
        assert_eq!(back.ioapic.chip_id, 2);
        assert!(decode_vm_state(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode_vm_state(b"{}").is_err());
        assert!(decode_vm_state(&vec![b' '; MAX_KVM_VM_BYTES + 1]).is_err());
    }

    #[test]
    fn local_release_knows_the_kvm_vm_section() {
        assert!(local_release().sections.contains_key(KVM_VM_SECTION));
    }
}

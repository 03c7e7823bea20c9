//! A running machine as a [`MigrationSource`].

use super::kvm_vm::{KVM_VM_DESC, KVM_VM_SECTION, encode_vm_state};
use super::sections::{instance_name, section_infos, vm_err, with_devices};
use super::vcpu_codec;
use crate::builder::Machine;
use crate::builder::config as bconfig;
use crate::release::persona::Persona;
use migration::PAGE_SIZE;
use migration::bitmap::DirtyBitmap;
use migration::config as mconfig;
use migration::guest_ram::SharedRam;
use migration::manifest::Manifest;
use migration::stream::{Section, VcpuRecord};
use migration::vm::{MigrationSource, RamAccess, VmError};

/// A running machine as the source of a migration.
pub struct MachineSource<'a> {
    m: &'a Machine,
    persona: &'a Persona,
}

impl<'a> MachineSource<'a> {
    /// Wraps a started machine; its manifest says what `persona` presents.
    pub fn new(m: &'a Machine, persona: &'a Persona) -> Self {
        Self { m, persona }
    }
}

impl MigrationSource for MachineSource<'_> {
    fn manifest(&mut self) -> Result<Manifest, VmError> {
        let cfg = self.m.config();
        let ram = self.m.vm().ram_pages() * PAGE_SIZE as u64;
        let mut manifest = mconfig::manifest(
            self.persona.release(),
            &cfg.effective,
            ram,
            u32::from(cfg.vcpus),
            section_infos(self.m.devices())?,
            self.m.instances(),
        );
        if let Some(c) = &cfg.cpu_choice {
            crate::cpu::choice::migration_blocker(bconfig::catalog(), c).map_err(VmError::new)?;
        }
        manifest.cpu = cfg.cpu_choice.clone();
        manifest.tsc_khz = self.m.tsc_khz();
        manifest.cpuid = self.m.vm().cpuid_table().to_vec();
        manifest.config =
            mconfig::instantiated(manifest.config, &cfg.device_types, bconfig::catalog());
        // `--as-release R`: R as the source release, R's section versions.
        self.persona.announce(&mut manifest, &cfg.origins);
        Ok(manifest)
    }

    fn max_format(&self) -> u32 {
        self.persona.max_stream_format()
    }

    fn ram(&self) -> Option<std::sync::Arc<dyn RamAccess>> {
        let ram = SharedRam::new(self.m.vm().memory().clone());
        Some(std::sync::Arc::new(ram))
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

//! The KVM VM: memory slots, in-kernel irqchip + PIT, irqfds, VM-wide state.

use std::sync::Arc;

use kvm_bindings::{
    CpuId, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY, kvm_clock_data,
    kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::Address;
use vmm_sys_util::eventfd::EventFd;

use super::memory::{self, GuestMemoryMmap};
use super::vcpu::{Vcpu, VcpuError};

/// TSS area KVM needs on Intel hosts (3 pages below 4 GiB, inside the MMIO hole).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Errors creating or driving the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM available and accessible?)")]
    OpenKvm(kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Creating a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// One KVM memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySlot {
    /// KVM slot number.
    pub slot: u32,
    /// Guest-physical base.
    pub guest_addr: u64,
    /// Bytes.
    pub size: u64,
    /// Host virtual address of the mapping.
    pub host_addr: u64,
}

/// VM-wide KVM state: interrupt controllers, PIT, kvmclock.
#[derive(Clone)]
pub struct VmState {
    /// PIC master (`KVM_IRQCHIP_PIC_MASTER`).
    pub pic_master: kvm_irqchip,
    /// PIC slave.
    pub pic_slave: kvm_irqchip,
    /// IOAPIC.
    pub ioapic: kvm_irqchip,
    /// PIT (channel state, flags).
    pub pit: kvm_pit_state2,
    /// kvmclock.
    pub clock: kvm_clock_data,
}

/// A KVM VM with its guest memory registered and an in-kernel irqchip + PIT2.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    memory: Arc<GuestMemoryMmap>,
    slots: Vec<MemorySlot>,
    cpuid: CpuId,
    msr_index: Arc<[u32]>,
}

impl Vm {
    /// Creates the VM, its irqchip and PIT, and registers `memory` (one slot
    /// per region, dirty logging off).
    pub fn new(memory: Arc<GuestMemoryMmap>) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let msr_index: Arc<[u32]> = kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .into();
        let slots = memory::regions(&memory)
            .into_iter()
            .enumerate()
            .map(|(i, (ga, size, host))| MemorySlot {
                slot: i as u32,
                guest_addr: ga.raw_value(),
                size,
                host_addr: host,
            })
            .collect();
        let vm = Self {
            kvm,
            fd,
            memory,
            slots,
            cpuid,
            msr_index,
        };
        for s in &vm.slots {
            vm.set_slot(s, false)?;
        }
        Ok(vm)
    }

    fn set_slot(&self, s: &MemorySlot, log_dirty: bool) -> Result<(), VmError> {
        let region = kvm_userspace_memory_region {
            slot: s.slot,
            guest_phys_addr: s.guest_addr,
            memory_size: s.size,
            userspace_addr: s.host_addr,
            flags: if log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
        };
        // SAFETY: host_addr..host_addr+size is a live mapping owned by
        // `self.memory` (an Arc kept for the VM's lifetime), so the guest
        // never sees freed memory.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))
    }

    /// The VM file descriptor (for ioctls not wrapped here).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The `/dev/kvm` handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Guest memory.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.memory
    }

    /// The KVM memory slots, one per RAM region.
    pub fn slots(&self) -> &[MemorySlot] {
        &self.slots
    }

    /// `KVM_GET_SUPPORTED_CPUID` as read at creation.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.cpuid
    }

    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs saved in a [`super::vcpu::VcpuState`].
    pub fn msr_index_list(&self) -> &Arc<[u32]> {
        &self.msr_index
    }

    /// Routes `evt` to GSI `gsi` (irqfd).
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(kvm_err("KVM_IRQFD"))
    }

    /// Creates vCPU `index` of `count` and configures its CPUID (APIC id = index).
    pub fn create_vcpu(&self, index: u8, count: u8) -> Result<Vcpu, VmError> {
        let fd = self
            .fd
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let vcpu = Vcpu::new(fd, index, self.msr_index.clone());
        vcpu.configure_cpuid(&self.cpuid, count)?;
        Ok(vcpu)
    }

    /// Turns KVM dirty-page logging on or off for memory slot `slot`.
    pub fn set_dirty_logging(&self, slot: u32, enable: bool) -> Result<(), VmError> {
        let s = *self
            .slots
            .iter()
            .find(|s| s.slot == slot)
            .ok_or(VmError::Kvm {
                what: "dirty logging (no such slot)",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            })?;
        self.set_slot(&s, enable)
    }

    /// Turns dirty logging on or off for every slot.
    pub fn set_dirty_logging_all(&self, enable: bool) -> Result<(), VmError> {
        for s in &self.slots {
            self.set_slot(s, enable)?;
        }
        Ok(())
    }

    /// `KVM_GET_DIRTY_LOG` of slot `slot` (pages the vCPUs wrote since the
    /// last call); bit *i* = page *i* of the slot. Logging must be on.
    pub fn dirty_log(&self, slot: u32) -> Result<Vec<u64>, VmError> {
        let s = self
            .slots
            .iter()
            .find(|s| s.slot == slot)
            .ok_or(VmError::Kvm {
                what: "KVM_GET_DIRTY_LOG (no such slot)",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            })?;
        self.fd
            .get_dirty_log(slot, s.size as usize)
            .map_err(kvm_err("KVM_GET_DIRTY_LOG"))
    }

    /// Reads irqchip, PIT and clock (vCPUs should be paused).
    pub fn save_state(&self) -> Result<VmState, VmError> {
        let chip = |id| -> Result<kvm_irqchip, VmError> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut c)
                .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
            Ok(c)
        };
        Ok(VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.fd.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
            clock: self.fd.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?,
        })
    }

    /// Writes irqchip, PIT and clock saved by [`save_state`](Self::save_state).
    pub fn restore_state(&self, s: &VmState) -> Result<(), VmError> {
        for c in [&s.pic_master, &s.pic_slave, &s.ioapic] {
            self.fd.set_irqchip(c).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        self.fd.set_pit2(&s.pit).map_err(kvm_err("KVM_SET_PIT2"))?;
        // Only the clock value is restorable; flags from GET_CLOCK are output-only.
        let clock = kvm_clock_data {
            clock: s.clock.clock,
            ..Default::default()
        };
        self.fd
            .set_clock(&clock)
            .map_err(kvm_err("KVM_SET_CLOCK"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm_ok() -> bool {
        std::path::Path::new("/dev/kvm").exists()
    }

    #[test]
    fn vm_state_roundtrip_and_dirty_log() {
        if !kvm_ok() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let mem = Arc::new(memory::create(4 << 20).unwrap());
        let vm = Vm::new(mem).unwrap();
        let st = vm.save_state().unwrap();
        vm.restore_state(&st).unwrap();
        assert_eq!(vm.slots().len(), 1);
        vm.set_dirty_logging(0, true).unwrap();
        let log = vm.dirty_log(0).unwrap();
        assert_eq!(log.len(), (4 << 20) / 4096 / 64);
        assert!(vm.set_dirty_logging(7, true).is_err());
        let _ = vm.create_vcpu(0, 1).unwrap();
    }
}

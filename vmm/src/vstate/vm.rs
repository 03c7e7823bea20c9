//! The KVM VM: memory slots, in-kernel irqchip + PIT, irqfds, VM-wide state.

use std::sync::{Arc, OnceLock};

use kvm_bindings::{
    CpuId, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY, Msrs, kvm_clock_data, kvm_irqchip,
    kvm_msr_entry, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VmFd};
use migration::guest_ram::{self, RamLayout};
use migration::manifest::CpuidLeaf;
use vm_memory::Address;
use vmm_sys_util::eventfd::EventFd;

use super::cpuid::{CpuIdentity, CpuidBit, ModelFacts};
use super::memory::{self, GuestMemoryMmap};
use super::vcpu::{Vcpu, VcpuError};

/// Page size of the migration page index space.
const PAGE: u64 = 4096;

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
    /// A page range outside guest RAM, or a guest-memory access failure.
    #[error("guest RAM: {0}")]
    Memory(String),
}

fn ram_err(e: migration::vm::VmError) -> VmError {
    VmError::Memory(e.to_string())
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
    /// Page index → guest-physical address (the slots in order).
    layout: RamLayout,
    cpuid: CpuId,
    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM may save.
    msr_candidates: Vec<u32>,
    /// Those of them a vCPU of this VM can read: what every vCPU state holds
    /// (found with the first vCPU, [`Vm::create_vcpu`]).
    msr_index: OnceLock<Arc<[u32]>>,
    /// The CPU model's family, model, stepping (none: the host's).
    identity: Option<CpuIdentity>,
    /// Feature MSR values every vCPU starts with (a chosen CPU's).
    feature_msrs: Vec<(u32, u64)>,
    /// The CPUID table vCPU 0 was given (what a migration compares).
    cpuid0: OnceLock<Vec<CpuidLeaf>>,
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
        let cpuid = super::cpuid::usable(&kvm).map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let msr_candidates = kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .to_vec();
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
            layout: RamLayout::of(&memory),
            memory,
            slots,
            cpuid,
            msr_candidates,
            msr_index: OnceLock::new(),
            identity: None,
            feature_msrs: Vec::new(),
            cpuid0: OnceLock::new(),
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

    /// The MSRs saved in every [`super::vcpu::VcpuState`]: those of
    /// `KVM_GET_MSR_INDEX_LIST` a vCPU can read (empty before the first vCPU).
    pub fn msr_index_list(&self) -> &[u32] {
        self.msr_index.get().map_or(&[], |l| l)
    }

    /// Finds (once per VM) which listed MSRs a vCPU can read: KVM lists some
    /// it then refuses (features this host or backend lacks), and
    /// `KVM_GET_MSRS` stops at the first refused one. Probing one by one
    /// keeps every readable MSR, so a state save can demand all of them.
    fn savable_msrs(&self, fd: &kvm_ioctls::VcpuFd) -> Result<Arc<[u32]>, VmError> {
        if let Some(l) = self.msr_index.get() {
            return Ok(l.clone());
        }
        let mut keep = Vec::with_capacity(self.msr_candidates.len());
        for &index in &self.msr_candidates {
            let entry = kvm_msr_entry {
                index,
                ..Default::default()
            };
            let mut one = Msrs::from_entries(&[entry]).map_err(|_| VmError::Kvm {
                what: "building an MSR list",
                source: kvm_ioctls::Error::new(libc::ENOMEM),
            })?;
            if fd.get_msrs(&mut one).map_err(kvm_err("KVM_GET_MSRS"))? == 1 {
                keep.push(index);
            }
        }
        tracing::debug!(
            "{} of {} listed MSRs are readable and saved with every vCPU",
            keep.len(),
            self.msr_candidates.len()
        );
        Ok(self.msr_index.get_or_init(|| keep.into()).clone())
    }

    /// Routes `evt` to GSI `gsi` (irqfd).
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(kvm_err("KVM_IRQFD"))
    }

    /// Presents the CPU model's facts (family, model, stepping; vendor,
    /// highest leaves, brand string where it names them) in every vCPU
    /// created from now on.
    pub fn set_cpu_model(&mut self, facts: &ModelFacts) {
        self.identity = facts.identity;
        super::cpuid::apply_model(&mut self.cpuid, facts);
    }

    /// Gives every vCPU created from now on these feature MSR values.
    pub fn set_feature_msrs(&mut self, values: Vec<(u32, u64)>) {
        self.feature_msrs = values;
    }

    /// Leaves out `bits` (features the guest's CPU does not have) in every
    /// vCPU created from now on.
    pub fn clear_cpuid_bits(&mut self, bits: &[CpuidBit]) {
        super::cpuid::clear_bits(&mut self.cpuid, bits);
    }

    /// Creates vCPU `index` of `count` and configures its CPUID (APIC id = index).
    pub fn create_vcpu(&self, index: u8, count: u8) -> Result<Vcpu, VmError> {
        let fd = self
            .fd
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let msrs = self.savable_msrs(&fd)?;
        let vcpu = Vcpu::new(fd, index, msrs);
        let table = vcpu.configure_cpuid(&self.cpuid, count, self.identity)?;
        if index == 0 {
            let leaves = table.as_slice().iter().map(|e| CpuidLeaf {
                leaf: e.function,
                subleaf: e.index,
                regs: [e.eax, e.ebx, e.ecx, e.edx],
            });
            let _ = self.cpuid0.set(leaves.collect());
        }
        vcpu.set_msr_values(&self.feature_msrs)?;
        Ok(vcpu)
    }

    /// The CPUID table vCPU 0 was given (empty before it exists).
    pub fn cpuid_table(&self) -> &[CpuidLeaf] {
        self.cpuid0.get().map_or(&[], Vec::as_slice)
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

    /// Guest RAM in 4 KiB pages: the concatenation of every slot, in
    /// guest-physical order (the page index space of migration).
    pub fn ram_pages(&self) -> u64 {
        self.layout.pages()
    }

    /// Copies `buf.len() / 4096` pages starting at page index `first_page` into `buf`.
    pub fn read_pages(&self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        guest_ram::read_pages(&self.memory, &self.layout, first_page, buf).map_err(ram_err)
    }

    /// Writes `data.len() / 4096` pages starting at page index `first_page`.
    pub fn write_pages(&self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        guest_ram::write_pages(&self.memory, &self.layout, first_page, data).map_err(ram_err)
    }

    /// Makes `count` pages from page index `first_page` read as zero. Pages
    /// that already are zero are left alone (never touched: no RSS growth).
    pub fn zero_pages(&self, first_page: u64, count: u64) -> Result<(), VmError> {
        guest_ram::write_zero_pages(&self.memory, &self.layout, first_page, count).map_err(ram_err)
    }

    /// Starts dirty-page tracking: KVM's dirty log on for every slot, the
    /// VMM-side bitmap cleared.
    pub fn start_dirty_tracking(&self) -> Result<(), VmError> {
        self.set_dirty_logging_all(true)?;
        for s in &self.slots {
            self.dirty_log(s.slot)?; // clear what KVM collected so far
        }
        let _ = memory::take_vmm_dirty(&self.memory);
        Ok(())
    }

    /// Stops KVM dirty logging on every slot.
    pub fn stop_dirty_tracking(&self) -> Result<(), VmError> {
        self.set_dirty_logging_all(false)
    }

    /// Returns and clears the pages dirtied since the last call (or since
    /// [`start_dirty_tracking`](Self::start_dirty_tracking)): KVM's dirty log
    /// OR the pages the VMM wrote, one bit per page of the [`ram_pages`](Self::ram_pages)
    /// index space (bit *i* of word *i / 64*).
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, VmError> {
        let vmm = memory::take_vmm_dirty(&self.memory);
        let mut out = vec![0u64; self.ram_pages().div_ceil(64) as usize];
        let mut base = 0u64;
        for (i, s) in self.slots.iter().enumerate() {
            let pages = s.size / PAGE;
            let kvm = self.dirty_log(s.slot)?;
            let theirs = vmm.get(i).map(Vec::as_slice).unwrap_or(&[]);
            if base.is_multiple_of(64) {
                // Word-aligned: OR whole words (bits past `pages` are never set).
                let first = (base / 64) as usize;
                for w in 0..pages.div_ceil(64) as usize {
                    let k = kvm.get(w).copied().unwrap_or(0) | theirs.get(w).copied().unwrap_or(0);
                    let valid = pages - w as u64 * 64;
                    let mask = if valid >= 64 {
                        u64::MAX
                    } else {
                        (1u64 << valid) - 1
                    };
                    out[first + w] |= k & mask;
                }
                base += pages;
                continue;
            }
            for p in 0..pages {
                let w = (p / 64) as usize;
                let bit = 1u64 << (p % 64);
                let dirty = kvm.get(w).is_some_and(|x| x & bit != 0)
                    || theirs.get(w).is_some_and(|x| x & bit != 0);
                if dirty {
                    let q = base + p;
                    out[(q / 64) as usize] |= 1 << (q % 64);
                }
            }
            base += pages;
        }
        Ok(out)
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
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn vm_state_roundtrip_and_dirty_log() {
        if !crate::vstate::testing::kvm_or_skip() {
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

    #[test]
    fn pages_across_slots_and_dirty_tracking() {
        if !crate::vstate::testing::kvm_or_skip() {
            return;
        }
        // 3 GiB + 8 KiB: slot 0 below the hole, 2 pages at 4 GiB.
        let mem = Arc::new(memory::create((3 << 30) + 8192).unwrap());
        let vm = Vm::new(mem).unwrap();
        let last_low = (3u64 << 30) / 4096 - 1;
        assert_eq!(vm.ram_pages(), last_low + 3);
        vm.start_dirty_tracking().unwrap();
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i / 4096 + 1) as u8).collect();
        vm.write_pages(last_low, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        vm.read_pages(last_low, &mut back).unwrap();
        assert_eq!(back, data);
        let mut hi = [0u8; 1];
        vm.memory()
            .read_slice(&mut hi, GuestAddress(4 << 30))
            .unwrap();
        assert_eq!(hi[0], 2, "page last_low+1 is the first page at 4 GiB");
        let dirty = vm.take_dirty_pages().unwrap();
        let set: Vec<u64> = (0..vm.ram_pages())
            .filter(|p| dirty[(p / 64) as usize] & (1 << (p % 64)) != 0)
            .collect();
        assert_eq!(set, vec![last_low, last_low + 1, last_low + 2]);
        assert!(vm.take_dirty_pages().unwrap().iter().all(|w| *w == 0));
        vm.zero_pages(last_low, 3).unwrap();
        vm.read_pages(last_low, &mut back).unwrap();
        assert!(back.iter().all(|b| *b == 0));
        assert!(
            vm.read_pages(last_low + 1, &mut back).is_err(),
            "beyond RAM"
        );
        vm.stop_dirty_tracking().unwrap();
    }
}

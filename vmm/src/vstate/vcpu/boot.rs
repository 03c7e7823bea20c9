//! The PVH entry state of a vCPU: what the loader's boot GDT and the
//! registers, FPU, MSRs and LAPIC look like at `XEN_ELFNOTE_PHYS32_ENTRY`.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_segment};

use super::{Vcpu, VcpuError};

// MSR numbers set at PVH entry.
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Where the boot GDT goes and which selectors PVH entry uses.
#[derive(Clone, Copy, Debug)]
pub struct PvhEntry {
    /// 32-bit entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub entry: u64,
    /// Guest-physical address of `hvm_start_info` (loaded into EBX).
    pub start_info: u64,
    /// Guest-physical address of the 4-entry boot GDT written by the loader.
    pub gdt_addr: u64,
}

/// The boot GDT matching [`Vcpu::setup_pvh`]: null, 32-bit code (0x08),
/// 32-bit data (0x10), 32-bit TSS (0x18).
pub const BOOT_GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];

impl Vcpu {
    /// Puts the vCPU in the PVH entry state: 32-bit protected mode, paging
    /// off, flat segments, EBX = start info; FPU, boot MSRs and LAPIC LINT0/1
    /// set up. Only the boot vCPU (index 0) runs; others wait for INIT/SIPI.
    pub fn setup_pvh(&self, boot: &PvhEntry) -> Result<(), VcpuError> {
        let mut sregs = self.fd.get_sregs().map_err(self.err("KVM_GET_SREGS"))?;
        let seg = |selector: u16, type_: u8| kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = seg(0x08, 0xb);
        let data = seg(0x10, 0x3);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            base: 0,
            limit: 0x67,
            selector: 0x18,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        sregs.gdt.base = boot.gdt_addr;
        sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.cr0 = 0x11; // PE | ET
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
        self.fd
            .set_sregs(&sregs)
            .map_err(self.err("KVM_SET_SREGS"))?;

        let regs = kvm_regs {
            rip: boot.entry,
            rbx: boot.start_info,
            rflags: 0x2,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(self.err("KVM_SET_REGS"))?;

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(self.err("KVM_SET_FPU"))?;

        self.set_msr_values(&[
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_CSTAR, 0),
            (MSR_KERNEL_GS_BASE, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_LSTAR, 0),
            (MSR_IA32_TSC, 0),
            (MSR_IA32_MISC_ENABLE, 1),          // fast strings
            (MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // MTRRs on, default write-back
        ])?;

        let mut lapic = self.fd.get_lapic().map_err(self.err("KVM_GET_LAPIC"))?;
        set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
        self.fd
            .set_lapic(&lapic)
            .map_err(self.err("KVM_SET_LAPIC"))?;
        Ok(())
    }
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, reg: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = lapic.regs[reg + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        lapic.regs[reg + i] = *x as _;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode() {
        let mut l = kvm_lapic_state::default();
        set_lvt_mode(&mut l, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(l.regs[APIC_LVT0 + 1] as u8, 7);
    }
}

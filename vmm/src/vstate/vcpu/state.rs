//! The complete state of a vCPU, read and written whole: an MSR KVM
//! refuses is an error naming it, never a shorter list.

use kvm_bindings::{
    Msrs, kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};

use super::{Vcpu, VcpuError};

/// The complete state of one vCPU, as the probe verified resumes exactly on
/// this machine's KVM: regs, sregs, FPU, XSAVE, XCRs, the MSRs of
/// `KVM_GET_MSR_INDEX_LIST`, LAPIC, MP state, vCPU events, debug registers.
pub struct VcpuState {
    /// General-purpose registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// Legacy FPU/SSE state.
    pub fpu: kvm_fpu,
    /// XSAVE area.
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Every MSR of the VM's savable list ([`crate::vstate::vm::Vm::msr_index_list`]).
    pub msrs: Vec<kvm_msr_entry>,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Multiprocessing state (runnable, halted, INIT-received...).
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs, SMI.
    pub events: kvm_vcpu_events,
    /// DR0-3, DR6, DR7.
    pub debug_regs: kvm_debugregs,
}

impl Clone for VcpuState {
    fn clone(&self) -> Self {
        Self {
            regs: self.regs,
            sregs: self.sregs,
            fpu: self.fpu,
            // The legacy 4 KiB XSAVE area only (no KVM_GET_XSAVE2 extension).
            xsave: kvm_xsave {
                region: self.xsave.region,
                ..Default::default()
            },
            xcrs: self.xcrs,
            msrs: self.msrs.clone(),
            lapic: self.lapic,
            mp_state: self.mp_state,
            events: self.events,
            debug_regs: self.debug_regs,
        }
    }
}

impl Vcpu {
    /// Reads the complete vCPU state (the vCPU must not be running: pause first).
    pub fn save_state(&self) -> Result<VcpuState, VcpuError> {
        let fd = &self.fd;
        let entries: Vec<kvm_msr_entry> = self
            .msr_index
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::MsrList(self.index))?;
        let n = fd.get_msrs(&mut msrs).map_err(self.err("KVM_GET_MSRS"))?;
        self.all_msrs("KVM_GET_MSRS", msrs.as_slice(), n)?;
        let msrs = msrs.as_slice().to_vec();
        Ok(VcpuState {
            sregs: fd.get_sregs().map_err(self.err("KVM_GET_SREGS"))?,
            regs: fd.get_regs().map_err(self.err("KVM_GET_REGS"))?,
            fpu: fd.get_fpu().map_err(self.err("KVM_GET_FPU"))?,
            xsave: fd.get_xsave().map_err(self.err("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(self.err("KVM_GET_XCRS"))?,
            lapic: fd.get_lapic().map_err(self.err("KVM_GET_LAPIC"))?,
            msrs,
            mp_state: fd.get_mp_state().map_err(self.err("KVM_GET_MP_STATE"))?,
            events: fd
                .get_vcpu_events()
                .map_err(self.err("KVM_GET_VCPU_EVENTS"))?,
            debug_regs: fd.get_debug_regs().map_err(self.err("KVM_GET_DEBUGREGS"))?,
        })
    }

    /// Writes a state read by [`save_state`](Self::save_state) (same order as
    /// the probe that verified exact resumption: sregs, regs, FPU, XSAVE,
    /// XCRs, LAPIC, MSRs, MP state, events, debug registers).
    pub fn restore_state(&self, s: &VcpuState) -> Result<(), VcpuError> {
        let fd = &self.fd;
        fd.set_sregs(&s.sregs).map_err(self.err("KVM_SET_SREGS"))?;
        fd.set_regs(&s.regs).map_err(self.err("KVM_SET_REGS"))?;
        fd.set_fpu(&s.fpu).map_err(self.err("KVM_SET_FPU"))?;
        // SAFETY: `s.xsave` is a complete kvm_xsave read by KVM_GET_XSAVE on a
        // vCPU with the same CPUID; no XSAVE2 extended buffer is involved.
        unsafe { fd.set_xsave(&s.xsave) }.map_err(self.err("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&s.xcrs).map_err(self.err("KVM_SET_XCRS"))?;
        fd.set_lapic(&s.lapic).map_err(self.err("KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&s.msrs).map_err(|_| VcpuError::MsrList(self.index))?;
        self.set_all_msrs(&msrs)?;
        fd.set_mp_state(s.mp_state)
            .map_err(self.err("KVM_SET_MP_STATE"))?;
        fd.set_vcpu_events(&s.events)
            .map_err(self.err("KVM_SET_VCPU_EVENTS"))?;
        fd.set_debug_regs(&s.debug_regs)
            .map_err(self.err("KVM_SET_DEBUGREGS"))?;
        Ok(())
    }

    /// Sets MSRs (`(index, value)`: the boot MSRs, feature MSRs such as
    /// `IA32_ARCH_CAPABILITIES`); one KVM refuses is an error naming it.
    pub fn set_msr_values(&self, values: &[(u32, u64)]) -> Result<(), VcpuError> {
        if values.is_empty() {
            return Ok(());
        }
        let entries: Vec<kvm_msr_entry> = values
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::MsrList(self.index))?;
        self.set_all_msrs(&msrs)
    }

    /// Writes MSRs; fewer written than given is an error naming the first refused.
    pub(super) fn set_all_msrs(&self, msrs: &Msrs) -> Result<(), VcpuError> {
        let n = self.fd.set_msrs(msrs).map_err(self.err("KVM_SET_MSRS"))?;
        self.all_msrs("KVM_SET_MSRS", msrs.as_slice(), n)
    }

    /// `KVM_GET_MSRS`/`KVM_SET_MSRS` stop at the first MSR they refuse and
    /// return how many they handled: anything short of all is an error.
    fn all_msrs(
        &self,
        what: &'static str,
        asked: &[kvm_msr_entry],
        done: usize,
    ) -> Result<(), VcpuError> {
        match asked.get(done) {
            None => Ok(()),
            Some(refused) => Err(VcpuError::MsrRefused {
                index: self.index,
                what,
                msr: refused.index,
                done,
                asked: asked.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::vstate::testing::kvm_or_skip;
    use crate::vstate::vcpu::{PvhEntry, VcpuError};
    use crate::vstate::{memory, vm::Vm};
    use kvm_bindings::kvm_msr_entry;
    use std::sync::Arc;

    /// No MSR has this number; KVM refuses to read or write it.
    const NO_SUCH_MSR: u32 = 0xdead_beef;

    fn vm() -> Vm {
        Vm::new(Arc::new(memory::create(4 << 20).unwrap())).unwrap()
    }

    #[test]
    fn pvh_setup_and_state_roundtrip() {
        if !kvm_or_skip() {
            return;
        }
        let vm = vm();
        let v = vm.create_vcpu(0, 1).unwrap();
        v.setup_pvh(&PvhEntry {
            entry: 0x10_0000,
            start_info: 0x6000,
            gdt_addr: 0x500,
        })
        .unwrap();
        let s = v.save_state().unwrap();
        assert_eq!(s.regs.rip, 0x10_0000);
        assert_eq!(s.regs.rbx, 0x6000);
        assert_eq!(s.sregs.cr0 & 1, 1);
        assert_eq!(
            s.msrs.len(),
            vm.msr_index_list().len(),
            "every savable MSR is saved"
        );
        let mut s2 = s.clone();
        s2.regs.rax = 42;
        v.restore_state(&s2).unwrap();
        assert_eq!(v.save_state().unwrap().regs.rax, 42);
        assert!(v.describe_regs().contains("rip=0x100000"));
    }

    #[test]
    fn a_refused_msr_on_save_is_an_error_naming_it() {
        if !kvm_or_skip() {
            return;
        }
        let vm = vm();
        let mut v = vm.create_vcpu(0, 1).unwrap();
        let mut list = vm.msr_index_list().to_vec();
        let at = list.len() / 2;
        list.insert(at, NO_SUCH_MSR);
        v.msr_index = list.into();
        match v.save_state() {
            Err(VcpuError::MsrRefused {
                what, msr, done, ..
            }) => {
                assert_eq!((what, msr, done), ("KVM_GET_MSRS", NO_SUCH_MSR, at));
            }
            other => panic!("expected a refused MSR, got {:?}", other.map(|_| ())),
        }
        let e = v
            .save_state()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("MSR 0xdeadbeef was refused"), "{e}");
    }

    #[test]
    fn a_refused_msr_on_restore_is_an_error_naming_it() {
        if !kvm_or_skip() {
            return;
        }
        let vm = vm();
        let v = vm.create_vcpu(0, 1).unwrap();
        let mut s = v.save_state().unwrap();
        s.msrs.push(kvm_msr_entry {
            index: NO_SUCH_MSR,
            data: 1,
            ..Default::default()
        });
        let e = v
            .restore_state(&s)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("KVM_SET_MSRS") && e.contains("MSR 0xdeadbeef was refused"),
            "{e}"
        );
    }
}

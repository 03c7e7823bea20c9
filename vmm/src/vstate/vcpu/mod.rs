//! vCPUs, one concern per file:
//!
//! - [`boot`]: the PVH entry registers (32-bit protected mode, boot MSRs, LAPIC LINT0/1);
//! - [`state`]: the complete architectural state, read and written whole or not at all;
//! - [`run`]: the run loop on each vCPU thread and the dispatch of KVM exits;
//! - [`set`]: the set of vCPU threads (what they are told: `directive`): start, pause/resume (signal kick +
//!   `immediate_exit`, [`kick`]), throttle, stop.

pub mod boot;
mod directive;
pub mod kick;
pub mod run;
pub mod set;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;

pub use boot::{BOOT_GDT, PvhEntry};
pub use run::{ExitContext, PWRBTN_STS, PowerPorts, VmEvent};
pub use set::{PAUSE_TIMEOUT, THROTTLE_PERIOD, VcpuSet};
pub use state::VcpuState;

/// Errors configuring a vCPU or moving its state.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A vCPU ioctl failed.
    #[error("vCPU {index}: {what} failed: {source}")]
    Kvm {
        /// vCPU index.
        index: u8,
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// KVM did not keep CPUID bits it was given.
    #[error("vCPU {index}: KVM dropped CPUID bits it was given with KVM_SET_CPUID2: {bits}")]
    CpuidDropped {
        /// vCPU index.
        index: u8,
        /// Each bit, named where the feature catalogue knows it.
        bits: String,
    },
    /// Building an MSR list failed.
    #[error("vCPU {0}: cannot build the MSR list")]
    MsrList(u8),
    /// KVM read or wrote fewer MSRs than asked: the state would be incomplete.
    #[error(
        "vCPU {index}: {what} handled {done} of {asked} MSRs; MSR {msr:#x} was refused (the vCPU state would be incomplete)"
    )]
    MsrRefused {
        /// vCPU index.
        index: u8,
        /// `KVM_GET_MSRS` or `KVM_SET_MSRS`.
        what: &'static str,
        /// The first MSR KVM did not handle.
        msr: u32,
        /// How many it handled.
        done: usize,
        /// How many were asked.
        asked: usize,
    },
    /// Spawning the vCPU thread failed.
    #[error("cannot spawn vCPU thread: {0}")]
    Spawn(std::io::Error),
    /// Installing the kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(std::io::Error),
    /// vCPUs did not stop in time.
    #[error("vCPUs did not pause within {0:?}")]
    PauseTimeout(Duration),
}

/// One vCPU file descriptor with its index.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    /// The MSRs saved and restored with the state (every one must go through).
    msr_index: Arc<[u32]>,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, index: u8, msr_index: Arc<[u32]>) -> Self {
        Self {
            fd,
            index,
            msr_index,
        }
    }

    fn err(&self, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError + use<> {
        let index = self.index;
        move |source| VcpuError::Kvm {
            index,
            what,
            source,
        }
    }

    /// The vCPU index (= APIC id).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The vCPU file descriptor.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Sets the CPUID for this vCPU from the supported list (APIC id,
    /// topology) and returns the table it set.
    pub fn configure_cpuid(
        &self,
        supported: &CpuId,
        count: u8,
        identity: Option<super::cpuid::CpuIdentity>,
    ) -> Result<CpuId, VcpuError> {
        let c = super::cpuid::for_vcpu(supported, self.index, count, identity);
        self.fd.set_cpuid2(&c).map_err(self.err("KVM_SET_CPUID2"))?;
        // Read back: a bit KVM did not keep would be a CPU the guest does
        // not see as configured (and another one after a migration).
        let back = self
            .fd
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(self.err("KVM_GET_CPUID2"))?;
        let lost = super::cpuid::dropped(&c, &back);
        if lost.is_empty() {
            Ok(c)
        } else {
            Err(VcpuError::CpuidDropped {
                index: self.index,
                bits: lost
                    .iter()
                    .map(|b| b.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }

    /// One-line register summary for crash reports.
    pub fn describe_regs(&self) -> String {
        let r = self.fd.get_regs();
        let s = self.fd.get_sregs();
        match (r, s) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                s.cs.selector,
                s.cr0,
                s.cr3,
                s.cr4,
                s.efer
            ),
            (Err(e), _) | (_, Err(e)) => format!("(registers unavailable: {e})"),
        }
    }
}

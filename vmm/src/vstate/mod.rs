//! KVM state: guest memory, the VM (irqchip, PIT, clock, dirty log) and vCPUs
//! (setup for PVH entry, run loop, pause/kick, full state save/restore).
//!
//! Migration building blocks, all on these types:
//!
//! * Pausing lives in [`vcpu::VcpuSet`]: `pause()`, `resume()`, `stop()`,
//!   `set_throttle()`, `save_states()`/`restore_states()` and `with_vcpus()`
//!   to read/write every vCPU's [`vcpu::VcpuState`] while they are parked
//!   (`crate::builder::Machine` forwards them).
//! * [`vm::Vm::save_state`] / [`vm::Vm::restore_state`]: irqchip (PIC ×2,
//!   IOAPIC), PIT2 and kvmclock as [`vm::VmState`].
//! * [`vm::Vm::set_dirty_logging`] / [`vm::Vm::dirty_log`]: KVM's per-slot
//!   dirty bitmap (pages the vCPUs wrote); pages the VMM wrote are in the
//!   vm-memory [`AtomicBitmap`](vm_memory::bitmap::AtomicBitmap) of each
//!   region ([`memory::take_vmm_dirty`]).

pub mod cpuid;
pub mod memory;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
pub(crate) mod testing;

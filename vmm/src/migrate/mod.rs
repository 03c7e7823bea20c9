//! The migration core's traits over the real KVM runtime ([`crate::builder::Machine`]).
//!
//! - [`MachineSource`]: a running machine as a
//!   [`migration::vm::MigrationSource`]. RAM goes through the `Vm` page API,
//!   the dirty bitmap is KVM's log OR'ed with the VMM-written pages, device
//!   state is every device's `Persist::save_sections` (virtio-mmio
//!   transports are instance-suffixed: `virtio-mmio/0`, `virtio-blk/0`, ...,
//!   [`sections`]), vCPUs use [`vcpu_codec`], and the irqchip, PIT2 and
//!   kvmclock travel as the section [`KVM_VM_SECTION`] ([`kvm_vm`]).
//! - [`MachineTarget`]: builds the destination machine, paused, from the
//!   manifest's (adopted or explicitly matching) configuration, loads
//!   everything, and resumes the vCPUs only in
//!   [`migration::vm::MigrationTarget::start`].
//!
//! What the process presents (this build, or `--as-release R`) is the
//! [`Persona`](crate::release::persona::Persona) each side is given.

pub mod kvm_vm;
pub mod sections;
pub mod source;
pub mod target;
pub mod vcpu_codec;

pub use kvm_vm::{KVM_VM_DESC, KVM_VM_SECTION};
pub use source::MachineSource;
pub use target::{IncomingSettings, MachineTarget};

#[cfg(test)]
mod tests;

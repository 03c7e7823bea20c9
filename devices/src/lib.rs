//! Device models, each configured from the generated compat tables.
//!
//! Every device takes a plain configuration struct (no `Default`: the values
//! come from the resolved machine type, see `vmm::builder::config`) and keeps
//! its guest-visible state in a plain `*State` struct so that it can be saved
//! and restored for migration.
//!
//! Guest memory is always [`GuestMemoryMmap`], whose regions carry an
//! [`AtomicBitmap`](vm_memory::bitmap::AtomicBitmap): every write a device
//! makes into guest memory through vm-memory marks the page dirty there, so
//! migration sees pages the VMM wrote (KVM's dirty log only sees the vCPUs').

pub mod bus;
pub mod disk;
pub mod generated;
pub mod pci;
pub mod persist;
pub mod serial;
pub mod virtio;

/// Guest memory as every device sees it: mmap-backed, with a dirty bitmap.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;

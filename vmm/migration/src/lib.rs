//! Live migration and snapshots, independent of KVM: this crate builds and
//! is tested without `kvm-ioctls` or `kvm-bindings`.
//!
//! The runtime plugs in through [`vm::MigrationSource`] (the running guest on
//! the source) and [`vm::MigrationTarget`] (the guest being built on the
//! destination). Everything else here is plain Rust over those traits:
//!
//! - [`stream`]: the versioned wire format (`docs/stream.md`) and its hostile-input decoder;
//! - [`manifest`], [`compat_check`] and [`instances`]: what the stream says about the
//!   guest, and the destination's decision to accept, adopt or refuse it (its
//!   configuration, its device instances) before any RAM moves;
//! - [`transport`] and [`status`]: `tcp:`/`unix:`/`file:` URIs and the return channel;
//! - [`precopy`] (source) and [`incoming`] (destination): the two drivers;
//! - [`channel`] and [`compress`]: the data channels of a multi-channel
//!   migration and the compression of page contents;
//! - [`ab`]: the a-b memory-consistency rule, shared with the end-to-end tests.

pub mod ab;
pub mod bitmap;
pub mod channel;
pub mod compat_check;
pub mod compress;
pub mod config;
pub mod guest_ram;
pub mod incoming;
pub mod instances;
pub mod manifest;
pub mod pagemap;
pub mod precopy;
pub mod progress;
pub mod secure;
pub mod status;
pub mod stream;
pub mod transport;
pub mod vm;

#[cfg(any(test, feature = "fake"))]
pub mod fake;
#[cfg(test)]
mod mem_vm_tests;
#[cfg(test)]
mod tests;

/// Guest page size used by the stream and the dirty bitmaps.
pub const PAGE_SIZE: usize = 4096;

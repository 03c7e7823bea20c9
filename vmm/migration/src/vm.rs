//! The traits the KVM runtime implements so the migration code can drive it.

use super::bitmap::DirtyBitmap;
use super::manifest::Manifest;
use super::stream::{Section, VcpuRecord};

/// An error reported by the runtime behind a migration trait; carries its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VmError(pub String);

impl VmError {
    /// Wraps anything displayable.
    pub fn new(msg: impl std::fmt::Display) -> Self {
        Self(msg.to_string())
    }
}

/// Guest RAM shared with the threads of a multi-channel migration (page
/// indexes as in [`MigrationSource::read_pages`]).
pub trait RamAccess: Send + Sync {
    /// Copies `buf.len() / PAGE_SIZE` pages from `first_page` into `buf`.
    fn read_pages(&self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError>;
    /// Writes `data.len() / PAGE_SIZE` pages from `first_page`.
    fn write_pages(&self, first_page: u64, data: &[u8]) -> Result<(), VmError>;
    /// Makes `count` pages from `first_page` read as zero.
    fn write_zero_pages(&self, first_page: u64, count: u64) -> Result<(), VmError>;
    /// Lets `fill` write pages `first_page..first_page + count` straight
    /// into guest memory (the stream's bytes land there without a copy):
    /// `None` where this RAM cannot (the caller then uses
    /// [`write_pages`](Self::write_pages)), else whether `fill` succeeded.
    fn land(
        &self,
        first_page: u64,
        count: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), ()>,
    ) -> Option<Result<(), ()>> {
        let _ = (first_page, count, fill);
        None
    }
}

/// The running guest on the migration source.
///
/// RAM is addressed by page index into the concatenation of the guest's RAM
/// regions (in guest-physical order); the runtime maps indexes to slots.
pub trait MigrationSource {
    /// The manifest describing this guest: machine type, effective
    /// configuration, RAM size, vCPU count, device sections and versions.
    fn manifest(&mut self) -> Result<Manifest, VmError>;
    /// Copies `buf.len() / PAGE_SIZE` pages starting at page `first_page` into `buf`.
    fn read_pages(&mut self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError>;
    /// Starts dirty-page logging (KVM dirty log and the VMM-side bitmap).
    fn start_dirty_tracking(&mut self) -> Result<(), VmError>;
    /// Returns and clears the pages dirtied since the last call (or since
    /// tracking started): KVM's dirty log OR'ed with pages the VMM wrote.
    fn take_dirty_bitmap(&mut self) -> Result<DirtyBitmap, VmError>;
    /// Stops dirty-page logging (after success, failure or cancel).
    fn stop_dirty_tracking(&mut self) -> Result<(), VmError>;
    /// Slows the vCPUs down to `(100 - percent)`% of their time; 0 removes the throttle.
    fn set_throttle(&mut self, percent: u8) -> Result<(), VmError>;
    /// Stops the vCPUs (and device activity that writes guest memory).
    fn pause(&mut self) -> Result<(), VmError>;
    /// Resumes a paused guest.
    fn resume(&mut self) -> Result<(), VmError>;
    /// Saves every device section named in the manifest (including irqchip, PIT, clock).
    fn save_devices(&mut self) -> Result<Vec<Section>, VmError>;
    /// Saves the state of every vCPU, index `0..manifest.vcpus`.
    fn save_vcpus(&mut self) -> Result<Vec<VcpuRecord>, VmError>;
    /// The newest stream format this source may write (a frozen release's:
    /// format 1 has no channels or compression).
    fn max_format(&self) -> u32 {
        super::stream::format::FORMAT_VERSION
    }
    /// Guest RAM for the channel threads (`None`: this source migrates on
    /// the main connection only).
    fn ram(&self) -> Option<std::sync::Arc<dyn RamAccess>> {
        None
    }
}

/// The guest being built on the migration destination.
pub trait MigrationTarget {
    /// Decides on the manifest before any RAM moves: accept (possibly adopting
    /// the stream's configuration and allocating RAM of `manifest.ram_size`),
    /// or refuse with an error that names the culprit.
    fn validate(&mut self, manifest: &Manifest) -> Result<(), VmError>;
    /// Writes `data.len() / PAGE_SIZE` pages starting at page `first_page`.
    fn write_pages(&mut self, first_page: u64, data: &[u8]) -> Result<(), VmError>;
    /// Sets `count` pages starting at `first_page` to zero.
    fn write_zero_pages(&mut self, first_page: u64, count: u64) -> Result<(), VmError>;
    /// Loads the device sections (every section of the manifest, once each).
    fn load_devices(&mut self, sections: Vec<Section>) -> Result<(), VmError>;
    /// Loads the vCPU states (one per vCPU, in index order).
    fn load_vcpus(&mut self, vcpus: Vec<VcpuRecord>) -> Result<(), VmError>;
    /// Starts the guest; only called once the whole stream checked out.
    fn start(&mut self) -> Result<(), VmError>;
    /// Guest RAM for the channel threads, once [`validate`](Self::validate)
    /// accepted a manifest (`None`: this destination takes no channels).
    fn ram(&self) -> Option<std::sync::Arc<dyn RamAccess>> {
        None
    }
}

//! Virtio devices over the virtio-mmio transport (virtio 1.2, version 2 register layout).
//!
//! [`MmioTransport`] owns the queues (virtio-queue) and the interrupt; a
//! [`VirtioDevice`] implements one device type. Queue notifications are
//! handled synchronously in the vCPU thread that wrote `QueueNotify`.
//! `persist.rs` maps a transport's state to the generated `virtio-mmio` and
//! `virtio-blk` VMState sections ([`Persist`](crate::persist::Persist)).

pub mod block;
mod mmio;
mod persist;

pub use mmio::{MMIO_WINDOW, MmioTransport, MmioTransportState, QueueSnapshot, TransportError};

use crate::GuestMemoryMmap;
use virtio_queue::Queue;

/// `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// `VIRTIO_RING_F_INDIRECT_DESC`.
pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
/// `VIRTIO_RING_F_EVENT_IDX`.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
/// `VIRTIO_F_RING_RESET` (virtio 1.2): per-queue reset.
pub const VIRTIO_F_RING_RESET: u32 = 40;

/// Device-specific half of a virtio device.
pub trait VirtioDevice: Send {
    /// Virtio device ID (2 = block).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits offered to the driver.
    fn avail_features(&self) -> u64;
    /// Called when the driver sets FEATURES_OK with the features it acked.
    fn ack_features(&mut self, features: u64);
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (read-only fields ignored).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Consumes the available buffers of queue `index`; returns true if any
    /// used buffer was added.
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool;
    /// Device reset (status written 0).
    fn reset(&mut self);
    /// The device's own state (the queues are the transport's).
    fn state(&self) -> VirtioDeviceState;
    /// Restores [`state`](Self::state); false if it belongs to another device type.
    fn restore(&mut self, state: &VirtioDeviceState) -> bool;
    /// What the guest sees of the device's backend, as `(fact, value)`
    /// (a disk's capacity, read-only state, block size, serial): compared
    /// between the two sides of a migration like any property.
    fn backend_facts(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Device-specific virtio state, per device type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VirtioDeviceState {
    /// virtio-blk.
    Block(block::BlockState),
}

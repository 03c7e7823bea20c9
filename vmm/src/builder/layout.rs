//! The guest-physical layout of `docs/architecture.md` (VMM contract, not
//! device properties).

use crate::vstate::vcpu::PowerPorts;

/// First virtio-mmio window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of a virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI of the first virtio-mmio device (device *i* uses `5 + i`).
pub const VIRTIO_MMIO_GSI_BASE: u32 = 5;
/// virtio-mmio devices that fit before the IOAPIC's 24 pins run out.
pub const VIRTIO_MMIO_MAX: usize = 16;
/// ECAM window of PCIe bus 0.
pub const ECAM_BASE: u64 = 0xe000_0000;
/// Device number of the PCIe root port on bus 0 (00.0 is the host bridge).
pub const ROOT_PORT_DEVICE: u8 = 1;
/// Device types a machine has at most one of, always at the same place:
/// `--device TYPE,PROP=VALUE` configures that instance.
pub const SINGLE_INSTANCE: &[&str] = &["isa-serial", "pcie-root-port"];

/// Power-off and reset ports.
pub const POWER: PowerPorts = PowerPorts {
    poweroff_port: 0x604,
    poweroff_value: 0x2000,
    reset_port: 0xcf9,
    reset_value: 0x6,
};

/// Window and GSI of virtio-mmio device `i`.
pub fn virtio_mmio(i: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE,
        VIRTIO_MMIO_GSI_BASE + i as u32,
    )
}

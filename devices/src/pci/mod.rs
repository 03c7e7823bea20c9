//! PCI Express: a host bridge with an ECAM window for bus 0, and a
//! `pcie-root-port` device carrying a PCIe capability and an AER extended
//! capability at 0x100.
//!
//! Files: `config.rs` (what the machine type decides), `config_space.rs`
//! (4 KiB config space with write and write-1-to-clear masks), `device.rs`
//! (host bridge, root port, the ECAM bus device), `state.rs` (migratable state),
//! `persist.rs` (the root port's config space ⇄ the generated VMState section
//! `pcie-root-port`).

mod config;
mod config_space;
mod device;
mod persist;
mod state;

pub use config::{PciHostConfig, PcieRootPortConfig};
pub use config_space::ConfigSpace;
pub use device::{ECAM_BUS0_SIZE, Ecam};
pub use state::{ConfigSpaceState, EcamState};

/// Offset of the AER extended capability in the root port's config space.
pub const AER_OFFSET: usize = 0x100;
/// `PCI_ERR_UNCOR_MASK` register offset within the AER capability.
pub const PCI_ERR_UNCOR_MASK: usize = 0x08;
/// QEMU's `PCI_ERR_UNC_MASK_DEFAULT` (`include/hw/pci/pcie_regs.h`):
/// `PCI_ERR_UNC_INTN | PCI_ERR_UNC_TLP_PRF_BLOCKED`.
pub const PCI_ERR_UNC_MASK_DEFAULT: u32 = 0x0040_0000 | 0x0200_0000;
/// QEMU's `PCI_ERR_UNC_SUPPORTED`: every uncorrectable error bit QEMU models.
pub const PCI_ERR_UNC_SUPPORTED: u32 = 0x0000_0010
    | 0x0000_0020
    | 0x0000_1000
    | 0x0000_2000
    | 0x0000_4000
    | 0x0000_8000
    | 0x0001_0000
    | 0x0002_0000
    | 0x0004_0000
    | 0x0008_0000
    | 0x0010_0000
    | 0x0020_0000
    | 0x0040_0000
    | 0x0080_0000
    | 0x0100_0000
    | 0x0200_0000;

//! The embedded guest.

/// The PVH-bootable guest ELF, assembled and linked by `build.rs`.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmm-guest.elf"));

/// Path of the same ELF in the build directory (for tools that want a file).
pub const ELF_PATH: &str = concat!(env!("OUT_DIR"), "/vmm-guest.elf");

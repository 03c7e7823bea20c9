//! PVH boot: load an ELF with a Xen `PHYS32_ENTRY` note (linux-loader), write
//! `hvm_start_info`, the E820-style memory map, the command line and a boot GDT.
//!
//! Addresses follow `docs/architecture.md`: start info at 0x6000, memory map
//! at 0x7000, command line at 0x20000, the ELF at its `p_paddr` (1 MiB).

use std::io::Cursor;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{KernelLoader, load_cmdline};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::vstate::memory::GuestMemoryMmap;
use crate::vstate::vcpu::{BOOT_GDT, PvhEntry};

/// Boot GDT address.
pub const GDT_ADDR: u64 = 0x500;
/// `hvm_start_info` address.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Memory map address.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Command line address.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Command line capacity (bytes, including the NUL).
pub const CMDLINE_MAX: usize = 4096;
/// Lowest address the kernel may be loaded at.
pub const HIMEM_START: u64 = 0x10_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Errors loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The image is not a loadable ELF.
    #[error("cannot load the guest ELF: {0}")]
    Load(#[from] linux_loader::loader::Error),
    /// The ELF has no PVH entry note.
    #[error(
        "the guest ELF has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note); only PVH ELFs can be booted"
    )]
    NotPvh,
    /// The command line is too long or has invalid characters.
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing boot structures failed.
    #[error("cannot write PVH boot parameters: {0}")]
    Params(#[from] linux_loader::configurator::Error),
    /// Writing to guest memory failed.
    #[error("cannot write guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// An MMIO window reserved in the memory map.
#[derive(Clone, Copy, Debug)]
pub struct Reserved {
    /// Base.
    pub addr: u64,
    /// Length.
    pub len: u64,
}

/// Builds the kernel command line: one `virtio_mmio.device=` per device,
/// `pci.ecam=` if present, then the user's text.
pub fn build_cmdline(
    virtio: &[(u64, u64, u32)],
    ecam: Option<u64>,
    user: Option<&str>,
) -> Result<Cmdline, BootError> {
    let mut c = Cmdline::new(CMDLINE_MAX).map_err(BootError::Cmdline)?;
    for &(addr, size, irq) in virtio {
        c.insert(
            "virtio_mmio.device",
            &format!("{}K@{addr:#x}:{irq}", size >> 10),
        )
        .map_err(BootError::Cmdline)?;
    }
    if let Some(e) = ecam {
        c.insert("pci.ecam", &format!("{e:#x}"))
            .map_err(BootError::Cmdline)?;
    }
    if let Some(u) = user.filter(|u| !u.trim().is_empty()) {
        c.insert_str(u.trim()).map_err(BootError::Cmdline)?;
    }
    Ok(c)
}

/// Loads `elf` and writes every PVH boot structure; returns the vCPU entry state.
pub fn load_pvh(
    mem: &GuestMemoryMmap,
    elf: &[u8],
    cmdline: &Cmdline,
    reserved: &[Reserved],
) -> Result<PvhEntry, BootError> {
    let res = Elf::load(
        mem,
        None,
        &mut Cursor::new(elf),
        Some(GuestAddress(HIMEM_START)),
    )?;
    let entry = match res.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => a.raw_value(),
        _ => return Err(BootError::NotPvh),
    };
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), cmdline)?;
    for (i, e) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + i as u64 * 8))?;
    }

    let mut memmap: Vec<hvm_memmap_table_entry> = mem
        .iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.start_addr().raw_value(),
            size: r.len(),
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    memmap.extend(reserved.iter().map(|r| hvm_memmap_table_entry {
        addr: r.addr,
        size: r.len,
        type_: E820_RESERVED,
        reserved: 0,
    }));
    memmap.sort_by_key(|e| e.addr);
    let start = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)?;
    Ok(PvhEntry {
        entry,
        start_info: START_INFO_ADDR,
        gdt_addr: GDT_ADDR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_layout() {
        let c = build_cmdline(
            &[(0xd000_0000, 0x1000, 5), (0xd000_1000, 0x1000, 6)],
            Some(0xe000_0000),
            Some("workload=disk"),
        )
        .unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 pci.ecam=0xe0000000 workload=disk"
        );
        assert!(build_cmdline(&[], None, Some(&"x".repeat(5000))).is_err());
    }

    #[test]
    fn rejects_non_elf() {
        let mem = crate::vstate::memory::create(4 << 20).unwrap();
        let c = build_cmdline(&[], None, None).unwrap();
        assert!(load_pvh(&mem, b"not an elf at all, definitely not", &c, &[]).is_err());
    }
}

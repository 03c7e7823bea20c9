//! Guest RAM layout and creation (vm-memory with a dirty bitmap).

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

pub use devices::GuestMemoryMmap;

/// Start of the 32-bit MMIO hole (RAM above it moves to 4 GiB).
pub const MMIO_HOLE_START: u64 = 3 << 30;
/// First address above the 32-bit MMIO hole.
pub const HIGH_RAM_START: u64 = 4 << 30;
/// Page size of the dirty bitmaps.
pub const PAGE_SIZE: usize = 4096;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Size zero or not page-aligned.
    #[error("guest memory size {0:#x} must be a non-zero multiple of 4 KiB")]
    BadSize(u64),
    /// mmap failed.
    #[error("cannot allocate {size} bytes of guest memory: {reason}")]
    Alloc {
        /// Requested bytes.
        size: u64,
        /// Why.
        reason: String,
    },
}

/// RAM ranges for `size` bytes: `0..min(size, 3 GiB)`, the rest from 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut v = vec![(GuestAddress(0), low as usize)];
    if size > low {
        v.push((GuestAddress(HIGH_RAM_START), (size - low) as usize));
    }
    v
}

/// Allocates guest RAM (anonymous, private, no swap reservation) with a
/// dirty bitmap per region.
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size == 0 || !size.is_multiple_of(PAGE_SIZE as u64) {
        return Err(MemoryError::BadSize(size));
    }
    let mem = GuestMemoryMmap::from_ranges(&ram_ranges(size)).map_err(|e| MemoryError::Alloc {
        size,
        reason: e.to_string(),
    })?;
    for region in mem.iter() {
        advise_huge_pages(region);
    }
    Ok(mem)
}

/// Asks for transparent huge pages on a RAM region (hosts in THP `madvise`
/// mode give them only on request). Untouched guest RAM then costs one fault
/// per 2 MiB instead of per 4 KiB when migration scans it for zero pages.
/// Advisory: a host that refuses keeps 4 KiB pages and nothing else changes.
fn advise_huge_pages(region: &vm_memory::GuestRegionMmap<AtomicBitmap>) {
    let ptr = region.as_ptr();
    let len = region.len() as usize;
    // SAFETY: `ptr..ptr+len` is exactly the anonymous mapping this region owns
    // and keeps alive; MADV_HUGEPAGE only changes how the kernel backs it, not
    // its contents or validity.
    let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!(
            "madvise(MADV_HUGEPAGE) on guest RAM failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Per region: (guest base, length, host address).
pub fn regions(mem: &GuestMemoryMmap) -> Vec<(GuestAddress, u64, u64)> {
    mem.iter()
        .map(|r| {
            let host = mem
                .get_host_address(r.start_addr())
                .map(|p| p as u64)
                .unwrap_or(0);
            (r.start_addr(), r.len(), host)
        })
        .collect()
}

pub use migration::guest_ram::take_vmm_dirty;

/// The last guest-physical address + 1 of RAM.
pub fn ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.last_addr().raw_value() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn layout_and_vmm_dirty_bitmap() {
        assert_eq!(ram_ranges(64 << 20), vec![(GuestAddress(0), 64 << 20)]);
        let r = ram_ranges(5 << 30);
        assert_eq!(r[1], (GuestAddress(4 << 30), 2 << 30));
        assert!(create(123).is_err());
        let mem = create(16 << 20).unwrap();
        let _ = take_vmm_dirty(&mem);
        mem.write_obj(0xabu8, GuestAddress(0x5000)).unwrap();
        let d = take_vmm_dirty(&mem);
        assert_eq!(d[0][0], 1 << 5);
        assert_eq!(take_vmm_dirty(&mem)[0][0], 0);
    }
}

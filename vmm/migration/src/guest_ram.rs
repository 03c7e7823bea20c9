//! Guest RAM by page index, the stream's numbering: pages `0..` run over the
//! vm-memory regions in guest-physical order. The runtime's
//! `MigrationSource`/`MigrationTarget` implementations use these instead of
//! doing the arithmetic themselves.

use super::PAGE_SIZE;
use super::bitmap::DirtyBitmap;
use super::vm::VmError;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Guest RAM as the runtime and the devices map it (regions carry the
/// bitmap of pages the VMM wrote).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;

const PAGE: u64 = PAGE_SIZE as u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    base: u64,
    pages: u64,
    first_page: u64,
}

/// Guest RAM and its layout, shared with the channel threads of a
/// multi-channel migration.
pub struct SharedRam {
    mem: std::sync::Arc<GuestMemoryMmap>,
    layout: RamLayout,
    /// Incoming pages may be written in place ([`SharedRam::landing`]).
    landing: bool,
}

impl SharedRam {
    /// `mem` addressed by page index (read and written with copies).
    pub fn new(mem: std::sync::Arc<GuestMemoryMmap>) -> Self {
        let layout = RamLayout::of(&mem);
        Self {
            mem,
            layout,
            landing: false,
        }
    }

    /// `mem` of a destination whose guest does not run yet: incoming pages
    /// are read from the stream straight into it
    /// ([`RamAccess::land`](super::vm::RamAccess::land)). Only for RAM that
    /// nothing else reads or writes until the stream ended: no vCPU runs,
    /// no device is active, and the stream's channels write disjoint pages
    /// (each page has one channel).
    pub fn landing(mem: std::sync::Arc<GuestMemoryMmap>) -> Self {
        Self {
            landing: true,
            ..Self::new(mem)
        }
    }
}

impl super::vm::RamAccess for SharedRam {
    fn read_pages(&self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        read_pages(&self.mem, &self.layout, first_page, buf)
    }

    fn write_pages(&self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        write_pages(&self.mem, &self.layout, first_page, data)
    }

    fn write_zero_pages(&self, first_page: u64, count: u64) -> Result<(), VmError> {
        write_zero_pages(&self.mem, &self.layout, first_page, count)
    }

    fn land(
        &self,
        first_page: u64,
        count: u64,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), ()>,
    ) -> Option<Result<(), ()>> {
        if !self.landing {
            return None;
        }
        let pieces = self.layout.pieces(first_page, count).ok()?;
        let [(addr, pages)] = pieces.as_slice() else {
            return None; // across two regions: the caller copies
        };
        let len = (*pages * PAGE) as usize;
        let vs = self.mem.get_slice(*addr, len).ok()?;
        let guard = vs.ptr_guard_mut();
        // SAFETY: `vs` covers `len` bytes of a guest RAM mapping that
        // `self.mem` keeps alive for this call. A landing RAM is only made
        // for a destination whose guest does not run yet and whose stream
        // writes each page from one thread (`SharedRam::landing`), so no
        // other access to these bytes happens while the slice lives.
        let bytes = unsafe { std::slice::from_raw_parts_mut(guard.as_ptr(), len) };
        let r = fill(bytes);
        vm_memory::bitmap::Bitmap::mark_dirty(vs.bitmap(), 0, len);
        Some(r)
    }
}

/// Where each page index lives in guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamLayout {
    regions: Vec<Region>,
}

impl RamLayout {
    /// The layout of `mem`'s regions.
    pub fn of(mem: &GuestMemoryMmap) -> Self {
        Self::from_regions(mem.iter().map(|r| (r.start_addr().0, r.len())))
    }

    /// A layout from `(guest base, length)` pairs (sorted here; partial pages dropped).
    pub fn from_regions(regions: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut rs: Vec<(u64, u64)> = regions.into_iter().collect();
        rs.sort_unstable();
        let mut first_page = 0;
        let regions = rs
            .into_iter()
            .map(|(base, len)| {
                let r = Region {
                    base,
                    pages: len / PAGE,
                    first_page,
                };
                first_page += r.pages;
                r
            })
            .collect();
        Self { regions }
    }

    /// Number of pages.
    pub fn pages(&self) -> u64 {
        self.regions.last().map_or(0, |r| r.first_page + r.pages)
    }

    /// RAM size in bytes (the manifest's `ram_size`).
    pub fn ram_size(&self) -> u64 {
        self.pages() * PAGE
    }

    /// Splits pages `first_page..first_page + count` into guest-physical
    /// pieces `(address, pages)` that each lie in one region.
    pub fn pieces(&self, first_page: u64, count: u64) -> Result<Vec<(GuestAddress, u64)>, VmError> {
        let end = first_page
            .checked_add(count)
            .filter(|e| *e <= self.pages())
            .ok_or_else(|| {
                VmError::new(format!(
                    "pages {first_page}+{count} are outside the guest's {} pages",
                    self.pages()
                ))
            })?;
        let mut out = Vec::new();
        for r in &self.regions {
            let lo = first_page.max(r.first_page);
            let hi = end.min(r.first_page + r.pages);
            if lo < hi {
                out.push((GuestAddress(r.base + (lo - r.first_page) * PAGE), hi - lo));
            }
        }
        Ok(out)
    }

    /// Joins one bitmap per region (KVM's dirty log of each memory slot, or
    /// the VMM's bitmaps) into one over page indexes.
    pub fn bitmap(&self, per_region: &[Vec<u64>]) -> DirtyBitmap {
        let mut map = DirtyBitmap::new(self.pages());
        for (r, words) in self.regions.iter().zip(per_region) {
            for (w, &word) in words.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let bit = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let page = w as u64 * 64 + bit;
                    if page < r.pages {
                        map.set(r.first_page + page);
                    }
                }
            }
        }
        map
    }
}

/// Returns and clears the pages the VMM (devices, loader) wrote since the
/// last call: one `Vec<u64>` bitmap per region, bit *i* = page *i* of the
/// region (same layout as KVM's dirty log).
pub fn take_vmm_dirty(mem: &GuestMemoryMmap) -> Vec<Vec<u64>> {
    mem.iter()
        .map(|r| {
            let bm: &AtomicBitmap = vm_memory::MmapRegion::bitmap(r);
            bm.get_and_reset()
        })
        .collect()
}

fn mem_err(e: impl std::fmt::Display) -> VmError {
    VmError::new(format!("guest memory: {e}"))
}

/// Copies `buf.len() / PAGE_SIZE` pages from `first_page` into `buf`.
pub fn read_pages(
    mem: &GuestMemoryMmap,
    layout: &RamLayout,
    first_page: u64,
    buf: &mut [u8],
) -> Result<(), VmError> {
    let mut at = 0;
    let mut backed = Vec::new();
    for (addr, pages) in layout.pieces(first_page, (buf.len() / PAGE_SIZE) as u64)? {
        let len = (pages * PAGE) as usize;
        let out = &mut buf[at..at + len];
        let host = mem.get_host_address(addr).map_err(mem_err)? as u64;
        if super::pagemap::backed(host, pages as usize, &mut backed).is_none() {
            mem.read_slice(out, addr).map_err(mem_err)?;
        } else {
            // Runs of backed pages are read; pages never backed read as zero.
            let mut i = 0;
            while i < backed.len() {
                let b = backed[i];
                let j = (i..backed.len())
                    .find(|&j| backed[j] != b)
                    .unwrap_or(backed.len());
                let run = &mut out[i * PAGE_SIZE..j * PAGE_SIZE];
                if b {
                    let a = GuestAddress(addr.0 + i as u64 * PAGE);
                    mem.read_slice(run, a).map_err(mem_err)?;
                } else {
                    run.fill(0);
                }
                i = j;
            }
        }
        at += len;
    }
    Ok(())
}

/// Writes whole pages from `data` at `first_page`.
pub fn write_pages(
    mem: &GuestMemoryMmap,
    layout: &RamLayout,
    first_page: u64,
    data: &[u8],
) -> Result<(), VmError> {
    let mut at = 0;
    for (addr, pages) in layout.pieces(first_page, (data.len() / PAGE_SIZE) as u64)? {
        let len = (pages * PAGE) as usize;
        mem.write_slice(&data[at..at + len], addr)
            .map_err(mem_err)?;
        at += len;
    }
    Ok(())
}

/// Zeroes `count` pages from `first_page`, writing only pages that are not
/// zero already: a fresh destination's untouched memory stays unallocated.
pub fn write_zero_pages(
    mem: &GuestMemoryMmap,
    layout: &RamLayout,
    first_page: u64,
    count: u64,
) -> Result<(), VmError> {
    const CHUNK: u64 = 256;
    let zeros = [0u8; PAGE_SIZE];
    let mut buf = vec![0u8; (CHUNK * PAGE) as usize];
    let mut backed = Vec::new();
    for (addr, pages) in layout.pieces(first_page, count)? {
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(CHUNK);
            let a = addr.0 + done * PAGE;
            // Pages the host never backed are zero already: not even read.
            let host = mem.get_host_address(GuestAddress(a)).map_err(mem_err)? as u64;
            if super::pagemap::backed(host, n as usize, &mut backed).is_some()
                && backed.iter().all(|b| !b)
            {
                done += n;
                continue;
            }
            let chunk = &mut buf[..(n * PAGE) as usize];
            mem.read_slice(chunk, GuestAddress(a)).map_err(mem_err)?;
            for (i, page) in chunk.chunks_exact(PAGE_SIZE).enumerate() {
                if page != zeros {
                    let at = GuestAddress(a + i as u64 * PAGE);
                    mem.write_slice(&zeros, at).map_err(mem_err)?;
                }
            }
            done += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_regions() -> (GuestMemoryMmap, RamLayout) {
        // 3 pages at 0, 70 pages at 1 MiB: page 3 of the stream is 1 MiB.
        let ranges = [
            (GuestAddress(0), 3 * PAGE_SIZE),
            (GuestAddress(1 << 20), 70 * PAGE_SIZE),
        ];
        let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        let layout = RamLayout::of(&mem);
        assert_eq!(
            layout,
            RamLayout::from_regions([(1 << 20, 70 * PAGE), (0, 3 * PAGE)])
        );
        (mem, layout)
    }

    #[test]
    fn pages_span_regions() {
        let (mem, l) = two_regions();
        assert_eq!(l.pages(), 73);
        assert_eq!(
            l.pieces(2, 3).unwrap(),
            vec![(GuestAddress(2 * PAGE), 1), (GuestAddress(1 << 20), 2)]
        );
        assert!(l.pieces(72, 2).is_err() && l.pieces(u64::MAX, 2).is_err());
        let data: Vec<u8> = (0..4 * PAGE_SIZE)
            .map(|i| (i / PAGE_SIZE) as u8 + 1)
            .collect();
        write_pages(&mem, &l, 1, &data).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(1 << 20)).unwrap(), 3);
        let mut back = vec![0; data.len()];
        read_pages(&mem, &l, 1, &mut back).unwrap();
        assert_eq!(back, data);
        write_zero_pages(&mem, &l, 2, 2).unwrap();
        read_pages(&mem, &l, 1, &mut back).unwrap();
        assert!(back[PAGE_SIZE..3 * PAGE_SIZE].iter().all(|b| *b == 0));
        assert_eq!(back[3 * PAGE_SIZE], 4);
    }

    #[test]
    fn per_region_bitmaps_join() {
        let (_, l) = two_regions();
        // Region 0 (3 pages): page 1, and a stray bit past its end; region 1: pages 0 and 69.
        let map = l.bitmap(&[vec![0b1010], vec![1, 1 << 5]]);
        assert_eq!(
            map.runs().collect::<Vec<_>>(),
            vec![(1, 1), (3, 1), (72, 1)]
        );
    }
}

//! Which pages of this process the kernel ever backed
//! (`/proc/self/pagemap`: present or swapped), so a pass over guest RAM
//! skips pages never populated: they read as zero, and reading them would
//! only fault the zero page in, one fault per page.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

/// Bit 63: page present; bit 62: page swapped.
const BACKED: u64 = (1 << 63) | (1 << 62);

fn file() -> Option<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// For the `pages` 4 KiB pages at host address `host`, whether each was
/// ever backed, into `out` (cleared first). `None` where the kernel does not
/// say (no pagemap): the caller reads every page.
pub fn backed(host: u64, pages: usize, out: &mut Vec<bool>) -> Option<()> {
    let f = file()?;
    let mut raw = vec![0u8; pages * 8];
    f.read_exact_at(&mut raw, (host / 4096) * 8).ok()?;
    out.clear();
    out.extend(raw.chunks_exact(8).map(|e| {
        u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]) & BACKED != 0
    }));
    Some(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn touched_pages_are_backed_untouched_ones_not() {
        // An anonymous mapping the test owns: only the page it writes is backed.
        let mut v: Vec<u8> = Vec::with_capacity(64 << 20);
        let base = v.as_ptr() as u64;
        let aligned = base.next_multiple_of(4096);
        let off = (aligned - base) as usize;
        v.resize(off + 4096 * 3, 0);
        // Vec::resize wrote zeros: those pages are backed now; the rest of the
        // 64 MiB capacity never was.
        let mut out = Vec::new();
        if super::backed(aligned, 3, &mut out).is_none() {
            eprintln!("SKIP: no /proc/self/pagemap");
            return;
        }
        assert_eq!(out, [true, true, true]);
        let far = aligned + (32 << 20);
        super::backed(far, 2, &mut out).expect("pagemap");
        assert_eq!(out, [false, false]);
    }
}

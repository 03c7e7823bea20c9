//! [`MemExport`]: an in-memory export, the reference implementation of
//! [`Export`] used by the tests (and handy for callers' tests).

use std::io;
use std::sync::{Mutex, MutexGuard};

use crate::export::Export;
use crate::wire::{STATE_HOLE, STATE_ZERO};

/// Granularity of [`MemExport`]'s block status: runs are whole 4 KiB
/// blocks (the last one may be short).
const BLOCK: u64 = 4096;

/// An in-memory export (`Mutex<Vec<u8>>`) for tests and as a reference:
/// block status reports every all-zero 4 KiB block as `HOLE | ZERO` and
/// everything else as data.
#[derive(Debug)]
pub struct MemExport {
    data: Mutex<Vec<u8>>,
}

impl MemExport {
    /// An all-zero export of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self::from_vec(vec![0; size])
    }

    /// An export holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        Self {
            data: Mutex::new(data),
        }
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic elsewhere while holding the lock leaves plain bytes: use them.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The byte range [offset, offset+len) of a buffer of `size` bytes, or an
/// `InvalidInput` error.
fn range(size: usize, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok();
    let end = offset
        .checked_add(len)
        .and_then(|e| usize::try_from(e).ok());
    match (start, end) {
        (Some(s), Some(e)) if e <= size => Ok(s..e),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range beyond the end of the export",
        )),
    }
}

impl Export for MemExport {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.lock();
        let r = range(d.len(), offset, buf.len() as u64)?;
        buf.copy_from_slice(&d[r]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.lock();
        let r = range(d.len(), offset, buf.len() as u64)?;
        d[r].copy_from_slice(buf);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_trim: bool) -> io::Result<()> {
        let mut d = self.lock();
        let r = range(d.len(), offset, len)?;
        d[r].fill(0);
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        // Trimmed ranges read back as zeroes, like a punched hole.
        self.write_zeroes(offset, len, true)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        let d = self.lock();
        let r = range(d.len(), offset, len)?;
        let mut runs: Vec<(u64, u32)> = Vec::new();
        let mut at = r.start;
        while at < r.end {
            // Blocks are aligned to BLOCK from the start of the export.
            let block_end = ((at as u64 / BLOCK + 1) * BLOCK).min(r.end as u64) as usize;
            let flags = if d[at..block_end].iter().all(|&b| b == 0) {
                STATE_HOLE | STATE_ZERO
            } else {
                0
            };
            let n = (block_end - at) as u64;
            match runs.last_mut() {
                Some(last) if last.1 == flags => last.0 += n,
                _ => runs.push((n, flags)),
            }
            at = block_end;
        }
        Ok(runs)
    }
}

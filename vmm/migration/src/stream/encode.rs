//! Writing a stream.

use super::format::*;
use super::{Section, VcpuRecord};
use crate::PAGE_SIZE;
use crate::manifest::Manifest;
use std::io::{self, Write};

/// Pages written by one call, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Pages sent as part of a zero run (no data on the wire).
    pub zero: u64,
    /// Pages sent with their contents.
    pub normal: u64,
}

/// Writes records to `W`, keeping the running CRC-32 and the byte count.
pub struct Encoder<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Encoder<W> {
    /// Starts a stream: writes the magic and the format version.
    pub fn new(w: W) -> io::Result<Self> {
        let mut e = Self {
            w,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        e.put(&MAGIC)?;
        e.put(&FORMAT_VERSION.to_le_bytes())?;
        Ok(e)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.crc.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Writes the manifest record.
    pub fn manifest(&mut self, m: &Manifest) -> io::Result<()> {
        let json = serde_json::to_vec(m).map_err(io::Error::other)?;
        let len = u32::try_from(json.len()).map_err(io::Error::other)?;
        self.put(&[TAG_MANIFEST])?;
        self.put(&len.to_le_bytes())?;
        self.put(&json)?;
        self.put(&crc32fast::hash(&json).to_le_bytes())
    }

    /// Writes pages `first_page..` from `data` (whole pages), sending runs of
    /// zero pages without their contents.
    pub fn pages(&mut self, first_page: u64, data: &[u8]) -> io::Result<PageStats> {
        let mut stats = PageStats::default();
        let pages: Vec<&[u8]> = data.chunks_exact(PAGE_SIZE).collect();
        let mut i = 0;
        while i < pages.len() {
            let zero = is_zero(pages[i]);
            let mut j = i + 1;
            while j < pages.len()
                && is_zero(pages[j]) == zero
                && (zero || j - i < MAX_RUN_PAGES as usize)
            {
                j += 1;
            }
            let first = first_page + i as u64;
            let count = (j - i) as u32;
            if zero {
                self.put(&[TAG_ZERO_PAGES])?;
                self.put(&first.to_le_bytes())?;
                self.put(&count.to_le_bytes())?;
                stats.zero += u64::from(count);
            } else {
                self.put(&[TAG_PAGES])?;
                self.put(&first.to_le_bytes())?;
                self.put(&count.to_le_bytes())?;
                self.put(&data[i * PAGE_SIZE..j * PAGE_SIZE])?;
                stats.normal += u64::from(count);
            }
            i = j;
        }
        Ok(stats)
    }

    /// Writes one device section.
    pub fn section(&mut self, s: &Section) -> io::Result<()> {
        let name_len = u16::try_from(s.name.len()).map_err(io::Error::other)?;
        let len = u32::try_from(s.data.len()).map_err(io::Error::other)?;
        self.put(&[TAG_SECTION])?;
        self.put(&name_len.to_le_bytes())?;
        self.put(s.name.as_bytes())?;
        self.put(&s.version_id.to_le_bytes())?;
        self.put(&len.to_le_bytes())?;
        self.put(&s.data)
    }

    /// Writes one vCPU record.
    pub fn vcpu(&mut self, v: &VcpuRecord) -> io::Result<()> {
        let len = u32::try_from(v.data.len()).map_err(io::Error::other)?;
        self.put(&[TAG_VCPU])?;
        self.put(&v.index.to_le_bytes())?;
        self.put(&len.to_le_bytes())?;
        self.put(&v.data)
    }

    /// Writes a sync point (the caller flushes and waits for "synced").
    pub fn sync(&mut self) -> io::Result<()> {
        self.put(&[TAG_SYNC])
    }

    /// Writes the end marker and the CRC-32 of everything before it, flushes,
    /// and hands back the writer.
    pub fn end(mut self) -> io::Result<W> {
        self.put(&[TAG_END])?;
        let crc = self.crc.clone().finalize();
        self.w.write_all(&crc.to_le_bytes())?;
        self.bytes += 4;
        self.w.flush()?;
        Ok(self.w)
    }
}

fn is_zero(page: &[u8]) -> bool {
    // OR-reduce each 64-byte block (no early exit inside a block, so the
    // inner loop vectorises); stop at the first non-zero block.
    page.chunks_exact(64).all(|block| {
        block
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0xff; 8])))
            .fold(0, |acc, w| acc | w)
            == 0
    })
}

#[cfg(test)]
mod zero_tests {
    use super::is_zero;

    #[test]
    fn a_single_set_byte_anywhere_makes_a_page_non_zero() {
        let mut page = vec![0u8; 4096];
        assert!(is_zero(&page));
        for at in [0, 7, 8, 63, 64, 2049, 4095] {
            page[at] = 1;
            assert!(!is_zero(&page), "byte {at} missed");
            page[at] = 0;
        }
    }
}

//! Writing a stream.

use super::format::*;
use super::{Section, VcpuRecord};
use crate::PAGE_SIZE;
use crate::compress::Compression;
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
    /// Compresses runs of non-zero pages (format 2, `--compress zstd`).
    zstd: Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>,
}

impl<W: Write> Encoder<W> {
    /// Starts a stream of the default format (no channels, no compression).
    pub fn new(w: W) -> io::Result<Self> {
        Self::versioned(w, DEFAULT_FORMAT_VERSION)
    }

    /// Starts a stream: writes the magic and format `version`.
    pub fn versioned(w: W, version: u32) -> io::Result<Self> {
        let mut e = Self::bare(w);
        e.put(&MAGIC)?;
        e.put(&version.to_le_bytes())?;
        Ok(e)
    }

    /// Starts data channel `index` of stream `session` (format 2).
    pub fn channel(w: W, session: u64, index: u32) -> io::Result<Self> {
        let mut e = Self::bare(w);
        e.put(&CHANNEL_MAGIC)?;
        e.put(&FORMAT_VERSION.to_le_bytes())?;
        e.put(&session.to_le_bytes())?;
        e.put(&index.to_le_bytes())?;
        Ok(e)
    }

    fn bare(w: W) -> Self {
        Self {
            w,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            zstd: None,
        }
    }

    /// Compresses every later run of non-zero pages with `c` (sent raw
    /// where that is not smaller).
    pub fn compress(&mut self, c: Compression) -> io::Result<()> {
        self.zstd = match c {
            Compression::None => None,
            Compression::Zstd { level } => Some((
                zstd::bulk::Compressor::new(level)?,
                vec![0; zstd::zstd_safe::compress_bound(MAX_RUN_PAGES as usize * PAGE_SIZE)],
            )),
        };
        Ok(())
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
                self.data_run(first, count, &data[i * PAGE_SIZE..j * PAGE_SIZE])?;
                stats.normal += u64::from(count);
            }
            i = j;
        }
        Ok(stats)
    }

    /// One run of non-zero pages: compressed where that is smaller.
    fn data_run(&mut self, first: u64, count: u32, raw: &[u8]) -> io::Result<()> {
        if let Some((c, out)) = self.zstd.as_mut() {
            let n = c.compress_to_buffer(raw, out.as_mut_slice())?;
            if n < raw.len() {
                let len = u32::try_from(n).map_err(io::Error::other)?;
                let frame = std::mem::take(out);
                let r = self
                    .put(&[TAG_ZPAGES])
                    .and_then(|()| self.put(&first.to_le_bytes()))
                    .and_then(|()| self.put(&count.to_le_bytes()))
                    .and_then(|()| self.put(&len.to_le_bytes()))
                    .and_then(|()| self.put(&frame[..n]));
                if let Some((_, out)) = self.zstd.as_mut() {
                    *out = frame;
                }
                return r;
            }
        }
        self.put(&[TAG_PAGES])?;
        self.put(&first.to_le_bytes())?;
        self.put(&count.to_le_bytes())?;
        self.put(raw)
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

    /// Writes the end marker and the CRC-32 of everything before it, and
    /// flushes (a data channel's end; its writer is dropped with it).
    pub fn end_in_place(&mut self) -> io::Result<()> {
        self.put(&[TAG_END])?;
        let crc = self.crc.clone().finalize();
        self.w.write_all(&crc.to_le_bytes())?;
        self.bytes += 4;
        self.w.flush()
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

pub(crate) fn is_zero(page: &[u8]) -> bool {
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

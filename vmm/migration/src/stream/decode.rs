//! Reading a stream from hostile input.

use super::error::DecodeError;
use super::format::*;
use super::{Section, VcpuRecord};
use crate::PAGE_SIZE;
use crate::manifest::Manifest;
use crate::vm::RamAccess;
use std::collections::BTreeMap;
use std::io::{self, Read};

/// One decoded record after the manifest.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// Non-zero pages `first_page..first_page + data.len() / PAGE_SIZE`.
    Pages { first_page: u64, data: &'a [u8] },
    /// `count` non-zero pages from `first_page`, already written into guest
    /// RAM ([`Decoder::land_in`]).
    Landed { first_page: u64, count: u64 },
    /// `count` zero pages from `first_page`.
    ZeroPages { first_page: u64, count: u64 },
    /// A device section (name and version already checked against the manifest).
    Section(Section),
    /// A vCPU state (index already checked against the manifest).
    Vcpu(VcpuRecord),
    /// A sync point: answer "synced" on the return channel.
    Sync,
    /// The end marker; the checksum matched and nothing listed is missing.
    End,
}

/// What the manifest allows, kept for checking later records.
struct Expect {
    pages: u64,
    vcpus: Vec<bool>,
    sections: BTreeMap<String, (u32, bool)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Manifest,
    Ram,
    State,
    Done,
}

/// Reads records one at a time, checking each against the manifest and [`Limits`].
pub struct Decoder<R: Read> {
    r: R,
    crc: crc32fast::Hasher,
    offset: u64,
    limits: Limits,
    phase: Phase,
    expect: Option<Expect>,
    buf: Vec<u8>,
    /// A data channel: pages, sync points and the end only.
    channel: bool,
    /// Decompresses `ZPAGES` records (the manifest names `zstd`).
    unzstd: Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>,
    /// Guest RAM that raw page runs are read straight into.
    land: Option<std::sync::Arc<dyn RamAccess>>,
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header (magic and format version).
    pub fn new(r: R, limits: Limits) -> Result<Self, DecodeError> {
        let mut d = Self::bare(r, limits);
        let mut magic = [0; 8];
        d.fill(&mut magic)?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let found = d.u32()?;
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(DecodeError::UnsupportedVersion {
                found,
                min: MIN_FORMAT_VERSION,
                max: FORMAT_VERSION,
            });
        }
        Ok(d)
    }

    fn bare(r: R, limits: Limits) -> Self {
        Self {
            r,
            crc: crc32fast::Hasher::new(),
            offset: 0,
            limits,
            phase: Phase::Manifest,
            expect: None,
            buf: Vec::new(),
            channel: false,
            unzstd: None,
            land: None,
        }
    }

    /// Reads raw page runs straight into `ram` where it can take them in
    /// place ([`RamAccess::land`]): they come back as [`Record::Landed`].
    pub fn land_in(&mut self, ram: std::sync::Arc<dyn RamAccess>) {
        self.land = Some(ram);
    }

    /// Reads the header of a data channel of the stream `m` announced (its
    /// session; an index below its channel count), ready for its page
    /// records; returns the channel's index too.
    pub fn channel(r: R, limits: Limits, m: &Manifest) -> Result<(Self, u32), DecodeError> {
        let mut d = Self::bare(r, limits);
        let mut magic = [0; 8];
        d.fill(&mut magic)?;
        if magic != CHANNEL_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let found = d.u32()?;
        if found != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found,
                min: FORMAT_VERSION,
                max: FORMAT_VERSION,
            });
        }
        let (session, index) = (d.u64()?, d.u32()?);
        if session != m.session || index >= m.channels {
            return Err(DecodeError::ForeignChannel {
                session,
                index,
                channels: m.channels,
            });
        }
        d.channel = true;
        d.use_compression(m)?;
        d.expect = Some(Expect {
            pages: m.pages(),
            vcpus: Vec::new(),
            sections: BTreeMap::new(),
        });
        d.phase = Phase::Ram;
        Ok((d, index))
    }

    fn use_compression(&mut self, m: &Manifest) -> Result<(), DecodeError> {
        self.unzstd = match m.compression.as_deref() {
            None => None,
            Some("zstd") => Some((
                zstd::bulk::Decompressor::new().map_err(DecodeError::Io)?,
                Vec::new(),
            )),
            Some(other) => {
                return Err(DecodeError::ManifestInvalid(format!(
                    "unknown compression method `{other}`"
                )));
            }
        };
        Ok(())
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<(), DecodeError> {
        match self.r.read_exact(out) {
            Ok(()) => {
                self.crc.update(out);
                self.offset += out.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn io_error(&self, e: io::Error) -> DecodeError {
        let offset = self.offset;
        match e.kind() {
            io::ErrorKind::UnexpectedEof => DecodeError::Truncated { offset },
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => DecodeError::Stalled { offset },
            _ => DecodeError::Io(e),
        }
    }

    /// Reads `len` bytes without allocating them up front (a lying length
    /// costs only what actually arrives).
    fn bytes(&mut self, len: u32) -> Result<Vec<u8>, DecodeError> {
        let mut v = Vec::new();
        let got = (&mut self.r)
            .take(u64::from(len))
            .read_to_end(&mut v)
            .map_err(|e| self.io_error(e))?;
        self.crc.update(&v);
        self.offset += got as u64;
        if got != len as usize {
            return Err(DecodeError::Truncated {
                offset: self.offset,
            });
        }
        Ok(v)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let mut b = [0; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let mut b = [0; 2];
        self.fill(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads the manifest, which must be the first record, and checks it
    /// against [`Limits`].
    pub fn read_manifest(&mut self) -> Result<Manifest, DecodeError> {
        if self.phase != Phase::Manifest {
            return Err(DecodeError::OutOfOrder {
                record: "manifest",
                offset: self.offset,
            });
        }
        let offset = self.offset;
        let tag = self.u8()?;
        if tag != TAG_MANIFEST {
            return Err(DecodeError::ManifestNotFirst { tag, offset });
        }
        let len = self.u32()?;
        if len > self.limits.max_manifest_len {
            return Err(DecodeError::ManifestTooLarge {
                len,
                max: self.limits.max_manifest_len,
            });
        }
        let json = self.bytes(len)?;
        if self.u32()? != crc32fast::hash(&json) {
            return Err(DecodeError::ManifestChecksum);
        }
        let m: Manifest = serde_json::from_slice(&json)
            .map_err(|e| DecodeError::ManifestInvalid(e.to_string()))?;
        self.expect = Some(self.check_manifest(&m)?);
        self.use_compression(&m)?;
        self.phase = Phase::Ram;
        Ok(m)
    }

    fn check_manifest(&self, m: &Manifest) -> Result<Expect, DecodeError> {
        let bad = |s: String| Err(DecodeError::ManifestInvalid(s));
        let l = &self.limits;
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&m.format_version) {
            return Err(DecodeError::UnsupportedVersion {
                found: m.format_version,
                min: MIN_FORMAT_VERSION,
                max: FORMAT_VERSION,
            });
        }
        if m.ram_size == 0
            || !m.ram_size.is_multiple_of(PAGE_SIZE as u64)
            || m.ram_size > l.max_ram_size
        {
            return bad(format!(
                "RAM size {} is zero, not page-aligned or above {}",
                m.ram_size, l.max_ram_size
            ));
        }
        if m.format_version < FORMAT_VERSION && (m.channels > 0 || m.compression.is_some()) {
            return bad(format!(
                "stream format {} has no channels or compression",
                m.format_version
            ));
        }
        if m.channels > MAX_CHANNELS {
            return bad(format!(
                "{} data channels (at most {MAX_CHANNELS})",
                m.channels
            ));
        }
        if m.vcpus == 0 || m.vcpus > l.max_vcpus {
            return bad(format!("{} vCPUs (1..={} allowed)", m.vcpus, l.max_vcpus));
        }
        if m.sections.len() > l.max_sections {
            return bad(format!(
                "{} sections (at most {})",
                m.sections.len(),
                l.max_sections
            ));
        }
        let mut sections = BTreeMap::new();
        for s in &m.sections {
            if s.name.is_empty() || s.name.len() > MAX_NAME_LEN {
                return Err(DecodeError::BadSectionName);
            }
            if sections
                .insert(s.name.clone(), (s.version_id, false))
                .is_some()
            {
                return Err(DecodeError::SectionRepeated(s.name.clone()));
            }
        }
        Ok(Expect {
            pages: m.pages(),
            vcpus: vec![false; m.vcpus as usize],
            sections,
        })
    }

    /// Reads the next record. After [`Record::End`] every call fails.
    pub fn next_record(&mut self) -> Result<Record<'_>, DecodeError> {
        let Some(mut expect) = self.expect.take() else {
            return Err(DecodeError::OutOfOrder {
                record: "record before the manifest",
                offset: self.offset,
            });
        };
        let r = self.record(&mut expect);
        self.expect = Some(expect);
        match r? {
            Decoded::Pages(first_page) => Ok(Record::Pages {
                first_page,
                data: &self.buf,
            }),
            Decoded::Other(r) => Ok(r),
        }
    }

    /// A page run's `first_page` and `count`: 1..=`max` pages inside the
    /// guest's `pages`.
    fn run(&mut self, max: u32, pages: u64) -> Result<(u64, u32), DecodeError> {
        let first_page = self.u64()?;
        let count = self.u32()?;
        if count == 0 || count > max {
            return Err(DecodeError::BadRunLength { count, max });
        }
        if first_page
            .checked_add(u64::from(count))
            .is_none_or(|end| end > pages)
        {
            return Err(DecodeError::PageRange {
                first_page,
                count: u64::from(count),
                pages,
            });
        }
        Ok((first_page, count))
    }

    fn record(&mut self, ex: &mut Expect) -> Result<Decoded, DecodeError> {
        if self.phase == Phase::Done {
            return Err(DecodeError::AfterEnd);
        }
        let offset = self.offset;
        let tag = self.u8()?;
        match tag {
            TAG_PAGES | TAG_ZERO_PAGES => {
                if self.phase != Phase::Ram {
                    return Err(DecodeError::OutOfOrder {
                        record: "page",
                        offset,
                    });
                }
                let max = if tag == TAG_PAGES {
                    MAX_RUN_PAGES
                } else {
                    u32::MAX
                };
                let (first_page, count) = self.run(max, ex.pages)?;
                if tag == TAG_ZERO_PAGES {
                    return Ok(Decoded::Other(Record::ZeroPages {
                        first_page,
                        count: u64::from(count),
                    }));
                }
                if let Some(ram) = self.land.clone() {
                    let mut failed = None;
                    let mut fill = |b: &mut [u8]| self.fill(b).map_err(|e| failed = Some(e));
                    match ram.land(first_page, u64::from(count), &mut fill) {
                        Some(Ok(())) => {
                            return Ok(Decoded::Other(Record::Landed {
                                first_page,
                                count: u64::from(count),
                            }));
                        }
                        Some(Err(())) => {
                            return Err(failed.unwrap_or(DecodeError::Truncated {
                                offset: self.offset,
                            }));
                        }
                        None => {}
                    }
                }
                let mut buf = std::mem::take(&mut self.buf);
                buf.resize(count as usize * PAGE_SIZE, 0);
                let r = self.fill(&mut buf);
                self.buf = buf;
                r?;
                Ok(Decoded::Pages(first_page))
            }
            TAG_ZPAGES if self.unzstd.is_some() && self.phase == Phase::Ram => {
                let (first_page, count) = self.run(MAX_RUN_PAGES, ex.pages)?;
                let len = self.u32()?;
                let raw = count as usize * PAGE_SIZE;
                if len as usize > zstd::zstd_safe::compress_bound(raw) {
                    return Err(DecodeError::BadFrame { offset });
                }
                let frame = self.bytes(len)?;
                let mut buf = std::mem::take(&mut self.buf);
                buf.resize(raw, 0);
                let n = match self.unzstd.as_mut() {
                    Some((z, _)) => z.decompress_to_buffer(&frame, &mut buf).ok(),
                    None => None,
                };
                self.buf = buf;
                if n != Some(raw) {
                    return Err(DecodeError::BadFrame { offset });
                }
                Ok(Decoded::Pages(first_page))
            }
            TAG_SECTION | TAG_VCPU if self.channel => Err(DecodeError::OutOfOrder {
                record: "device or vCPU state on a data channel",
                offset,
            }),
            TAG_SECTION => {
                self.phase = Phase::State;
                let name_len = self.u16()?;
                if name_len == 0 || usize::from(name_len) > MAX_NAME_LEN {
                    return Err(DecodeError::BadSectionName);
                }
                let name = String::from_utf8(self.bytes(u32::from(name_len))?)
                    .map_err(|_| DecodeError::BadSectionName)?;
                let version_id = self.u32()?;
                let Some((manifest, seen)) = ex.sections.get_mut(&name) else {
                    return Err(DecodeError::SectionNotInManifest(name));
                };
                if *seen {
                    return Err(DecodeError::SectionRepeated(name));
                }
                if version_id != *manifest {
                    let manifest = *manifest;
                    return Err(DecodeError::SectionVersion {
                        name,
                        found: version_id,
                        manifest,
                    });
                }
                *seen = true;
                let len = self.u32()?;
                let max = self.limits.max_section_len;
                if len > max {
                    return Err(DecodeError::SectionTooLarge { name, len, max });
                }
                let data = self.bytes(len)?;
                Ok(Decoded::Other(Record::Section(Section {
                    name,
                    version_id,
                    data,
                })))
            }
            TAG_VCPU => {
                self.phase = Phase::State;
                let index = self.u32()?;
                let vcpus = ex.vcpus.len() as u32;
                let Some(seen) = ex.vcpus.get_mut(index as usize) else {
                    return Err(DecodeError::VcpuIndex { index, vcpus });
                };
                if std::mem::replace(seen, true) {
                    return Err(DecodeError::VcpuRepeated(index));
                }
                let len = self.u32()?;
                let max = self.limits.max_vcpu_len;
                if len > max {
                    return Err(DecodeError::VcpuTooLarge { index, len, max });
                }
                let data = self.bytes(len)?;
                Ok(Decoded::Other(Record::Vcpu(VcpuRecord { index, data })))
            }
            TAG_SYNC => {
                if self.phase != Phase::Ram {
                    return Err(DecodeError::OutOfOrder {
                        record: "sync",
                        offset,
                    });
                }
                Ok(Decoded::Other(Record::Sync))
            }
            TAG_END => {
                let computed = self.crc.clone().finalize();
                let expected = self.u32()?;
                if expected != computed {
                    return Err(DecodeError::Checksum { expected, computed });
                }
                if let Some((name, _)) = ex.sections.iter().find(|(_, (_, seen))| !seen) {
                    return Err(DecodeError::MissingSection(name.clone()));
                }
                if let Some(i) = ex.vcpus.iter().position(|seen| !seen) {
                    return Err(DecodeError::MissingVcpu(i as u32));
                }
                self.phase = Phase::Done;
                Ok(Decoded::Other(Record::End))
            }
            tag => Err(DecodeError::UnknownTag { tag, offset }),
        }
    }
}

enum Decoded {
    Pages(u64),
    Other(Record<'static>),
}

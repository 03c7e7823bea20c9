//! Wire constants of the stream format (see `docs/stream.md`).

/// First eight bytes of every stream.
pub const MAGIC: [u8; 8] = *b"VMMIGRT\0";
/// The newest stream format version this build writes and reads: 2 adds
/// data channels and compressed page runs (`docs/stream.md`).
pub const FORMAT_VERSION: u32 = 2;
/// The format of a stream without channels or compression (what every
/// release writes by default, so older releases can read it).
pub const DEFAULT_FORMAT_VERSION: u32 = 1;
/// The oldest stream format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;

/// Record tag: the manifest (JSON, with its own CRC).
pub const TAG_MANIFEST: u8 = 0x01;
/// Record tag: a run of non-zero pages with their contents.
pub const TAG_PAGES: u8 = 0x02;
/// Record tag: a run of zero pages.
pub const TAG_ZERO_PAGES: u8 = 0x03;
/// Record tag: a device section.
pub const TAG_SECTION: u8 = 0x04;
/// Record tag: a vCPU state.
pub const TAG_VCPU: u8 = 0x05;
/// Record tag: sync point; a destination with a return channel answers
/// "synced" once it has processed everything before it.
pub const TAG_SYNC: u8 = 0x06;
/// Record tag (format 2): a run of non-zero pages, compressed with the
/// manifest's method.
pub const TAG_ZPAGES: u8 = 0x07;
/// Record tag: the end marker, followed by the stream's CRC-32.
pub const TAG_END: u8 = 0xEE;

/// First eight bytes of every data channel (format 2).
pub const CHANNEL_MAGIC: [u8; 8] = *b"VMMCHAN\0";
/// Most data channels besides the main connection.
pub const MAX_CHANNELS: u32 = 16;

/// Most pages in one `PAGES` record (1 MiB of data).
pub const MAX_RUN_PAGES: u32 = 256;
/// Longest section name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Bounds the decoder enforces on top of the manifest's own counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest record, in bytes.
    pub max_manifest_len: u32,
    /// Largest guest RAM a manifest may announce, in bytes.
    pub max_ram_size: u64,
    /// Most vCPUs a manifest may announce.
    pub max_vcpus: u32,
    /// Most device sections a manifest may list.
    pub max_sections: usize,
    /// Largest device section, in bytes.
    pub max_section_len: u32,
    /// Largest vCPU record, in bytes.
    pub max_vcpu_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_len: 1 << 20,
            max_ram_size: 1 << 40,
            max_vcpus: 1024,
            max_sections: 4096,
            max_section_len: 16 << 20,
            max_vcpu_len: 1 << 20,
        }
    }
}

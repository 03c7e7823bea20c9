//! Everything that can be wrong with an incoming stream.

/// A stream the decoder refuses; the offset is in bytes from the stream start.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("reading the migration stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("migration stream truncated at byte {offset} (the source stopped sending)")]
    Truncated { offset: u64 },
    #[error("the source stopped sending at byte {offset} (time-out)")]
    Stalled { offset: u64 },
    #[error("not a migration stream (bad magic)")]
    BadMagic,
    #[error("stream format version {found} is not supported (this build reads {min}..={max})")]
    UnsupportedVersion { found: u32, min: u32, max: u32 },
    #[error("the first record at byte {offset} is not the manifest (tag {tag:#04x})")]
    ManifestNotFirst { tag: u8, offset: u64 },
    #[error("manifest of {len} bytes exceeds the limit of {max}")]
    ManifestTooLarge { len: u32, max: u32 },
    #[error("manifest checksum mismatch")]
    ManifestChecksum,
    #[error("manifest is not valid: {0}")]
    ManifestInvalid(String),
    #[error("record tag {tag:#04x} at byte {offset} is unknown")]
    UnknownTag { tag: u8, offset: u64 },
    #[error("{record} record at byte {offset} is out of order")]
    OutOfOrder { record: &'static str, offset: u64 },
    #[error("page run {first_page}+{count} is outside the guest's {pages} pages")]
    PageRange {
        first_page: u64,
        count: u64,
        pages: u64,
    },
    #[error("page run of {count} pages is empty or longer than {max}")]
    BadRunLength { count: u32, max: u32 },
    #[error("section name is empty, too long or not UTF-8")]
    BadSectionName,
    #[error("section `{0}` is not listed in the manifest")]
    SectionNotInManifest(String),
    #[error("section `{name}` has version {found} but the manifest says {manifest}")]
    SectionVersion {
        name: String,
        found: u32,
        manifest: u32,
    },
    #[error("section `{0}` appears twice")]
    SectionRepeated(String),
    #[error("section `{name}` of {len} bytes exceeds the limit of {max}")]
    SectionTooLarge { name: String, len: u32, max: u32 },
    #[error("section `{0}` listed in the manifest is missing from the stream")]
    MissingSection(String),
    #[error("vCPU {index} is out of range (the manifest has {vcpus} vCPUs)")]
    VcpuIndex { index: u32, vcpus: u32 },
    #[error("vCPU {0} appears twice")]
    VcpuRepeated(u32),
    #[error("vCPU {index} record of {len} bytes exceeds the limit of {max}")]
    VcpuTooLarge { index: u32, len: u32, max: u32 },
    #[error("vCPU {0} is missing from the stream")]
    MissingVcpu(u32),
    #[error(
        "stream checksum mismatch: the stream says {expected:#010x}, the data gives {computed:#010x}"
    )]
    Checksum { expected: u32, computed: u32 },
    #[error("the stream already ended")]
    AfterEnd,
    #[error("damaged compressed frame at byte {offset}")]
    BadFrame { offset: u64 },
    #[error(
        "not a data channel of this stream (session {session:#x}, channel {index}; the stream has {channels})"
    )]
    ForeignChannel {
        session: u64,
        index: u32,
        channels: u32,
    },
}

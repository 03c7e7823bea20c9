//! Wire constants of the NBD protocol (fixed newstyle) and the small
//! big-endian encode/decode helpers both sides share.
//!
//! Every number here is taken from the NBD protocol specification
//! (`doc/proto.md` of the NBD project).

use std::io::{self, Read};

/// `NBDMAGIC`, first word of the server greeting.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second word of the greeting and the prefix of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: the 124 zero bytes after EXPORT_NAME may be omitted.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: the client speaks fixed newstyle.
pub const C_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: the client does not want the 124 zero bytes.
pub const C_NO_ZEROES: u32 = 2;

/// Option: choose an export and enter transmission (no reply header).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: upgrade the connection to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: enable structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Option: extended headers (not supported here).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a LIST.
pub const REP_SERVER: u32 = 2;
/// Option reply: one information item of INFO/GO.
pub const REP_INFO: u32 = 3;
/// Option reply: one metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Bit set on every error reply type.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option error: the option is not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Option error: forbidden by policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// Option error: malformed option.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// Option error: not supported on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
/// Option error: TLS must be negotiated first.
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// Option error: the client must request block sizes.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
/// Option error: the option data is too large.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// Information item: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information item: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information item: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information item: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: the other flags are meaningful.
pub const TF_HAS_FLAGS: u16 = 1;
/// Transmission flag: the export is read-only.
pub const TF_READ_ONLY: u16 = 2;
/// Transmission flag: FLUSH is supported.
pub const TF_SEND_FLUSH: u16 = 4;
/// Transmission flag: the FUA command flag is supported.
pub const TF_SEND_FUA: u16 = 8;
/// Transmission flag: TRIM is supported.
pub const TF_SEND_TRIM: u16 = 32;
/// Transmission flag: WRITE_ZEROES is supported.
pub const TF_SEND_WRITE_ZEROES: u16 = 64;
/// Transmission flag: several connections see one consistent export.
pub const TF_CAN_MULTI_CONN: u16 = 256;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (payload follows).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Command: cache (prefetch hint).
pub const CMD_CACHE: u16 = 5;
/// Command: write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: block status.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1;
/// Command flag: WRITE_ZEROES must not punch holes.
pub const CMD_FLAG_NO_HOLE: u16 = 2;
/// Command flag: don't fragment a structured READ reply.
pub const CMD_FLAG_DF: u16 = 4;
/// Command flag: BLOCK_STATUS answers with exactly one descriptor.
pub const CMD_FLAG_REQ_ONE: u16 = 8;
/// Command flag: WRITE_ZEROES must fail rather than be slow.
pub const CMD_FLAG_FAST_ZERO: u16 = 16;
/// Every command flag this crate knows.
pub const CMD_FLAGS_KNOWN: u16 = 0x1f;

/// Structured reply flag: last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Chunk type: no payload.
pub const CHUNK_NONE: u16 = 0;
/// Chunk type: u64 offset then data.
pub const CHUNK_OFFSET_DATA: u16 = 1;
/// Chunk type: u64 offset, u32 size of a run of zeroes.
pub const CHUNK_OFFSET_HOLE: u16 = 2;
/// Chunk type: u32 context id, then (u32 length, u32 flags) descriptors.
pub const CHUNK_BLOCK_STATUS: u16 = 5;
/// Bit set on every error chunk type.
pub const CHUNK_FLAG_ERROR: u16 = 1 << 15;
/// Chunk type: u32 errno, u16 message length, message.
pub const CHUNK_ERROR: u16 = CHUNK_FLAG_ERROR | 1;
/// Chunk type: as [`CHUNK_ERROR`] followed by a u64 offset.
pub const CHUNK_ERROR_OFFSET: u16 = CHUNK_FLAG_ERROR | 2;

/// `base:allocation` flag: the range is a hole (unallocated).
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` flag: the range reads as zeroes.
pub const STATE_ZERO: u32 = 2;
/// The only metadata context this crate knows.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Id the server gives to `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// Wire errno: operation not permitted.
pub const EPERM: u32 = 1;
/// Wire errno: I/O error.
pub const EIO: u32 = 5;
/// Wire errno: out of memory.
pub const ENOMEM: u32 = 12;
/// Wire errno: invalid argument.
pub const EINVAL: u32 = 22;
/// Wire errno: no space left.
pub const ENOSPC: u32 = 28;
/// Wire errno: value too large.
pub const EOVERFLOW: u32 = 75;
/// Wire errno: operation not supported.
pub const ENOTSUP: u32 = 95;
/// Wire errno: server shutting down.
pub const ESHUTDOWN: u32 = 108;

/// Largest READ/WRITE payload (and the advertised maximum block size).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Preferred block size advertised by the server.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Largest option data the server reads and parses.
pub const MAX_OPTION_DATA: u32 = 64 << 10;
/// Option data above this closes the connection instead of being skipped.
pub const MAX_OPTION_DISCARD: u32 = 1 << 20;
/// Longest export name or metadata context name accepted.
pub const MAX_NAME: usize = 4096;
/// Options accepted before transmission starts.
pub const MAX_OPTIONS: u32 = 100;

/// The symbolic name of an option number, for messages.
pub fn option_name(opt: u32) -> &'static str {
    match opt {
        OPT_EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        OPT_ABORT => "NBD_OPT_ABORT",
        OPT_LIST => "NBD_OPT_LIST",
        OPT_STARTTLS => "NBD_OPT_STARTTLS",
        OPT_INFO => "NBD_OPT_INFO",
        OPT_GO => "NBD_OPT_GO",
        OPT_STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        OPT_LIST_META_CONTEXT => "NBD_OPT_LIST_META_CONTEXT",
        OPT_SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        OPT_EXTENDED_HEADERS => "NBD_OPT_EXTENDED_HEADERS",
        _ => "unknown option",
    }
}

/// The symbolic name of an option reply type, for messages.
pub fn reply_name(rep: u32) -> &'static str {
    match rep {
        REP_ACK => "NBD_REP_ACK",
        REP_SERVER => "NBD_REP_SERVER",
        REP_INFO => "NBD_REP_INFO",
        REP_META_CONTEXT => "NBD_REP_META_CONTEXT",
        REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP",
        REP_ERR_POLICY => "NBD_REP_ERR_POLICY",
        REP_ERR_INVALID => "NBD_REP_ERR_INVALID",
        REP_ERR_PLATFORM => "NBD_REP_ERR_PLATFORM",
        REP_ERR_TLS_REQD => "NBD_REP_ERR_TLS_REQD",
        REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN",
        REP_ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN",
        REP_ERR_BLOCK_SIZE_REQD => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        REP_ERR_TOO_BIG => "NBD_REP_ERR_TOO_BIG",
        _ => "unknown reply",
    }
}

/// The symbolic name of a wire errno, for messages.
pub fn errno_name(errno: u32) -> &'static str {
    match errno {
        EPERM => "EPERM",
        EIO => "EIO",
        ENOMEM => "ENOMEM",
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        EOVERFLOW => "EOVERFLOW",
        ENOTSUP => "ENOTSUP",
        ESHUTDOWN => "ESHUTDOWN",
        _ => "unknown errno",
    }
}

/// The wire errno for an export's I/O error: the kinds NBD names keep
/// their meaning, everything else is `EIO`.
pub fn errno_of(e: &io::Error) -> u32 {
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => EPERM,
        io::ErrorKind::OutOfMemory => ENOMEM,
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ENOSPC,
        io::ErrorKind::Unsupported => ENOTSUP,
        _ => match e.raw_os_error().and_then(|n| u32::try_from(n).ok()) {
            Some(n @ (EPERM | EIO | ENOMEM | EINVAL | ENOSPC | EOVERFLOW | ENOTSUP)) => n,
            _ => EIO,
        },
    }
}

/// Appends big-endian integers to a message being built.
pub trait Put {
    /// Appends a u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a u32.
    fn put_u32(&mut self, v: u32);
    /// Appends a u64.
    fn put_u64(&mut self, v: u64);
}

impl Put for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
}

/// A cursor over received bytes; every read is checked (`None` when short).
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N).and_then(|b| b.try_into().ok())
    }
    /// The next big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    /// The next big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    /// The next big-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// Fills `buf`; `Ok(false)` when the peer closed before its first byte
/// (a clean end at a message boundary), `UnexpectedEof` when it closed
/// part-way through.
pub fn read_exact_or_eof(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads exactly `len` bytes into a new buffer whose allocation grows
/// with what actually arrives (at most doubling what was received, never
/// beyond `len`): a peer announcing a length it never sends cannot make
/// us allocate it. The caller bounds `len`.
pub fn read_payload(r: &mut dyn Read, len: usize) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    while v.len() < len {
        let start = v.len();
        let step = (len - start).min(start.max(64 << 10));
        v.reserve_exact(step);
        v.resize(start + step, 0);
        r.read_exact(&mut v[start..])?;
    }
    Ok(v)
}

/// Reads and drops exactly `len` bytes.
pub fn discard(r: &mut dyn Read, len: u64) -> io::Result<()> {
    let n = io::copy(&mut r.take(len), &mut io::sink())?;
    if n != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads a big-endian u16.
pub fn read_u16(r: &mut dyn Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

/// Reads a big-endian u32.
pub fn read_u32(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Reads a big-endian u64.
pub fn read_u64(r: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

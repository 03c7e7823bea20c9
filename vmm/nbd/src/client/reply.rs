//! Reading and validating the server's replies to one request: simple
//! replies, and structured chunks until DONE.

use std::collections::BTreeMap;
use std::io::Read;

use super::ClientError;
use crate::wire::*;

/// Chunks accepted in one structured reply.
const MAX_CHUNKS: usize = 1 << 16;
/// Largest BLOCK_STATUS chunk accepted (about 128 Ki descriptors).
const MAX_STATUS_CHUNK: u32 = 1 << 20;
/// Largest error chunk: errno, message length, message, offset.
const MAX_ERROR_CHUNK: u32 = 6 + 0xffff + 8;

/// What the request expects back.
pub(super) enum Expect<'a> {
    /// No data (WRITE, FLUSH, TRIM, WRITE_ZEROES).
    Nothing,
    /// READ data for exactly this buffer.
    Data(&'a mut [u8]),
    /// BLOCK_STATUS descriptors for `len` bytes of context `id`, appended
    /// to `out`.
    Status {
        id: u32,
        len: u32,
        out: &'a mut Vec<(u64, u32)>,
    },
}

/// The request a reply answers.
pub(super) struct Pending<'a> {
    pub(super) cookie: u64,
    pub(super) offset: u64,
    pub(super) structured: bool,
    pub(super) expect: Expect<'a>,
}

fn protocol<T>(msg: impl Into<String>) -> Result<T, ClientError> {
    Err(ClientError::Protocol(msg.into()))
}

/// Disjoint byte ranges of a READ buffer received so far.
#[derive(Default)]
struct Coverage(BTreeMap<u64, u64>);

impl Coverage {
    fn add(&mut self, start: u64, len: u64) -> Result<(), ClientError> {
        let end = start + len;
        let before = self.0.range(..=start).next_back().map(|(&s, &e)| (s, e));
        let after = self.0.range(start..).next().map(|(&s, &e)| (s, e));
        if before.is_some_and(|(_, e)| e > start) || after.is_some_and(|(s, _)| s < end) {
            return protocol("overlapping read chunks");
        }
        let (mut s, mut e) = (start, end);
        if let Some((bs, be)) = before
            && be == start
        {
            self.0.remove(&bs);
            s = bs;
        }
        if let Some((as_, ae)) = after
            && as_ == end
        {
            self.0.remove(&as_);
            e = ae;
        }
        self.0.insert(s, e);
        Ok(())
    }

    fn covers(&self, len: u64) -> bool {
        len == 0 || (self.0.len() == 1 && self.0.get(&0) == Some(&len))
    }
}

/// Reads the whole reply to `p`: its data lands in the caller's buffer;
/// a server error becomes [`ClientError::Server`] after the reply ended.
pub(super) fn read_reply(s: &mut dyn Read, p: Pending<'_>) -> Result<(), ClientError> {
    let Pending {
        cookie,
        offset,
        structured,
        mut expect,
    } = p;
    let magic = read_u32(s)?;
    if magic == SIMPLE_REPLY_MAGIC {
        let (errno, got) = (read_u32(s)?, read_u64(s)?);
        if got != cookie {
            return protocol(format!("reply cookie {got} for request {cookie}"));
        }
        if errno != 0 {
            return Err(ClientError::Server {
                errno,
                message: String::new(),
            });
        }
        return match expect {
            Expect::Nothing => Ok(()),
            Expect::Data(buf) if !structured => Ok(s.read_exact(buf)?),
            Expect::Data(_) => protocol("successful simple reply to a structured READ"),
            Expect::Status { .. } => protocol("simple reply to NBD_CMD_BLOCK_STATUS"),
        };
    }
    if !structured {
        return protocol(format!("bad reply magic {magic:#x}"));
    }
    let mut magic = magic;
    let mut coverage = Coverage::default();
    let mut error: Option<ClientError> = None;
    let mut status_seen = false;
    for _ in 0..MAX_CHUNKS {
        if magic != STRUCTURED_REPLY_MAGIC {
            return protocol(format!("bad reply magic {magic:#x}"));
        }
        let (flags, ty, got, len) = (read_u16(s)?, read_u16(s)?, read_u64(s)?, read_u32(s)?);
        if got != cookie {
            return protocol(format!("chunk cookie {got} for request {cookie}"));
        }
        let done = flags & REPLY_FLAG_DONE != 0;
        match (ty, &mut expect) {
            (CHUNK_NONE, _) => {
                if len != 0 || !done {
                    return protocol("NBD_REPLY_TYPE_NONE with a payload or without DONE");
                }
            }
            (CHUNK_OFFSET_DATA, Expect::Data(buf)) => {
                if len <= 8 || u64::from(len) - 8 > buf.len() as u64 {
                    return protocol(format!("OFFSET_DATA chunk of {len} bytes"));
                }
                let n = u64::from(len) - 8;
                let rel = within(read_u64(s)?, n, offset, buf.len())?;
                coverage.add(rel, n)?;
                s.read_exact(&mut buf[rel as usize..(rel + n) as usize])?;
            }
            (CHUNK_OFFSET_HOLE, Expect::Data(buf)) => {
                if len != 12 {
                    return protocol(format!("OFFSET_HOLE chunk of {len} bytes"));
                }
                let (at, n) = (read_u64(s)?, u64::from(read_u32(s)?));
                if n == 0 {
                    return protocol("empty OFFSET_HOLE chunk");
                }
                let rel = within(at, n, offset, buf.len())?;
                coverage.add(rel, n)?;
                buf[rel as usize..(rel + n) as usize].fill(0);
            }
            (CHUNK_BLOCK_STATUS, Expect::Status { id, len: want, out }) => {
                if len < 12 || (len - 4) % 8 != 0 || len > MAX_STATUS_CHUNK {
                    return protocol(format!("BLOCK_STATUS chunk of {len} bytes"));
                }
                let data = read_payload(s, len as usize)?;
                if status_seen {
                    return protocol("second BLOCK_STATUS chunk");
                }
                status_seen = true;
                descriptors(&data, *id, *want, out)?;
            }
            (t, _) if t & CHUNK_FLAG_ERROR != 0 => {
                if !(6..=MAX_ERROR_CHUNK).contains(&len) {
                    return protocol(format!("error chunk of {len} bytes"));
                }
                let data = read_payload(s, len as usize)?;
                let e = error_chunk(t, &data)?;
                error.get_or_insert(e);
            }
            (t, _) => return protocol(format!("unexpected chunk type {t} for this request")),
        }
        if done {
            if let Some(e) = error {
                return Err(e);
            }
            return match expect {
                Expect::Data(buf) if !coverage.covers(buf.len() as u64) => {
                    protocol("READ reply did not cover the whole request")
                }
                Expect::Status { .. } if !status_seen => {
                    protocol("BLOCK_STATUS reply without a BLOCK_STATUS chunk")
                }
                _ => Ok(()),
            };
        }
        magic = read_u32(s)?;
    }
    protocol(format!("more than {MAX_CHUNKS} chunks in one reply"))
}

/// The position of [at, at+n) in the request's buffer, if inside it.
fn within(at: u64, n: u64, offset: u64, buf_len: usize) -> Result<u64, ClientError> {
    match at.checked_sub(offset) {
        Some(rel) if rel.checked_add(n).is_some_and(|e| e <= buf_len as u64) => Ok(rel),
        _ => protocol(format!("chunk at {at}+{n} outside the request")),
    }
}

/// Parses BLOCK_STATUS descriptors, clamped to `want` bytes.
fn descriptors(
    data: &[u8],
    id: u32,
    want: u32,
    out: &mut Vec<(u64, u32)>,
) -> Result<(), ClientError> {
    let mut c = Cursor::new(data);
    let got = c.u32().unwrap_or_default();
    if got != id {
        return protocol(format!("block status for context {got}, not {id}"));
    }
    let mut total = 0u64;
    while let (Some(n), Some(flags)) = (c.u32(), c.u32()) {
        if n == 0 {
            return protocol("zero-length block status descriptor");
        }
        if total >= u64::from(want) {
            return protocol("block status descriptors beyond the request");
        }
        // The last extent may run past the request: clamp it.
        let n = u64::from(n).min(u64::from(want) - total);
        out.push((n, flags));
        total += n;
    }
    Ok(())
}

/// The server error an error chunk carries.
fn error_chunk(ty: u16, data: &[u8]) -> Result<ClientError, ClientError> {
    let mut c = Cursor::new(data);
    let (Some(errno), Some(mlen)) = (c.u32(), c.u16()) else {
        return protocol("short error chunk");
    };
    let Some(msg) = c.bytes(usize::from(mlen)) else {
        return protocol("error message longer than its chunk");
    };
    let tail = c.remaining();
    if (ty == CHUNK_ERROR && tail != 0) || (ty == CHUNK_ERROR_OFFSET && tail != 8) {
        return protocol("malformed error chunk");
    }
    if errno == 0 {
        return protocol("error chunk with errno 0");
    }
    Ok(ClientError::Server {
        errno,
        message: String::from_utf8_lossy(msg).into_owned(),
    })
}

//! A blocking NBD client (the mirror job's side): negotiates with
//! [`Client::connect`], then one request at a time, split to the server's
//! maximum block size, every reply validated.
//!
//! Time-outs are the caller's business (socket time-outs); they surface
//! as [`ClientError::Io`]. After an I/O or protocol error the connection
//! is out of sync and every later request fails.

mod handshake;
mod reply;

use std::io::{self, Write};

use crate::wire::*;
use crate::{Stream, Upgrade};
use reply::{Expect, Pending};

/// Largest buffer of zeroes written when the server lacks WRITE_ZEROES.
const ZERO_CHUNK: u32 = 1 << 20;

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing the stream failed (including time-outs).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The TLS upgrade after STARTTLS failed.
    #[error("TLS upgrade failed: {0}")]
    Tls(#[source] io::Error),
    /// The server broke the protocol (the connection is unusable).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The server refused an option during negotiation.
    #[error("server refused {}: {}{}", option_name(*.option), reply_name(*.reply), suffix(.message))]
    Refused {
        /// The option (`NBD_OPT_*`).
        option: u32,
        /// The error reply type (`NBD_REP_ERR_*`).
        reply: u32,
        /// The server's message.
        message: String,
    },
    /// The server failed a request.
    #[error("server error {} ({errno}){}", errno_name(*.errno), suffix(.message))]
    Server {
        /// The wire errno (`EPERM`, `EINVAL`...).
        errno: u32,
        /// The server's message (structured replies only).
        message: String,
    },
    /// The request does not fit in the export.
    #[error("range {offset}+{len} beyond the export's {size} bytes")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Its length.
        len: u64,
        /// The export size.
        size: u64,
    },
    /// The request makes no sense (e.g. a zero-length block status).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The server did not negotiate what this needs.
    #[error("not supported by the server: {0}")]
    Unsupported(&'static str),
}

/// A connected client in transmission.
pub struct Client {
    s: Box<dyn Stream>,
    size: u64,
    flags: u16,
    structured: bool,
    meta_id: Option<u32>,
    block: (u32, u32, u32),
    /// Largest READ/WRITE sent in one request.
    max_request: u32,
    cookie: u64,
    broken: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("size", &self.size)
            .field("flags", &self.flags)
            .field("structured", &self.structured)
            .field("meta_id", &self.meta_id)
            .field("block", &self.block)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Client {
    /// Fixed-newstyle handshake: STARTTLS first if `tls` is given,
    /// STRUCTURED_REPLY, SET_META_CONTEXT base:allocation, GO with
    /// `export` (INFO_BLOCK_SIZE requested). Fails with a typed error
    /// naming the server's reply (unknown export → the server's message).
    pub fn connect(
        stream: Box<dyn Stream>,
        export: &str,
        tls: Option<&dyn Upgrade>,
    ) -> Result<Client, ClientError> {
        let n = handshake::handshake(stream, export, tls)?;
        let flags = if n.flags & TF_HAS_FLAGS != 0 {
            n.flags
        } else {
            0
        };
        let (min, _, max) = n.block;
        // Our own bound too; keep splits aligned to the minimum block size.
        let max = max.min(MAX_PAYLOAD);
        let max_request = (max - max % min).max(min);
        Ok(Client {
            s: n.s,
            size: n.size,
            flags,
            structured: n.structured,
            meta_id: n.meta_id,
            block: n.block,
            max_request,
            cookie: 0,
            broken: false,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the server advertised the export read-only.
    pub fn read_only(&self) -> bool {
        self.flags & TF_READ_ONLY != 0
    }

    /// The transmission flags (`TF_*`), 0 if the server sent none.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The server's (minimum, preferred, maximum) block sizes.
    pub fn block_size(&self) -> (u32, u32, u32) {
        self.block
    }

    /// Whether block status (`base:allocation`) is available.
    pub fn has_block_status(&self) -> bool {
        self.meta_id.is_some()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Protocol(
                "connection unusable after an earlier error".into(),
            ));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(ClientError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    fn send(&mut self, ty: u16, flags: u16, offset: u64, len: u32, data: &[u8]) -> io::Result<u64> {
        self.cookie = self.cookie.wrapping_add(1);
        let mut h = Vec::with_capacity(28);
        h.put_u32(REQUEST_MAGIC);
        h.put_u16(flags);
        h.put_u16(ty);
        h.put_u64(self.cookie);
        h.put_u64(offset);
        h.put_u32(len);
        self.s.write_all(&h)?;
        self.s.write_all(data)?;
        self.s.flush()?;
        Ok(self.cookie)
    }

    /// One request and its reply; marks the connection broken unless the
    /// failure was a clean server error.
    fn roundtrip(
        &mut self,
        ty: u16,
        flags: u16,
        offset: u64,
        len: u32,
        data: &[u8],
        expect: Expect<'_>,
    ) -> Result<(), ClientError> {
        let r = self
            .send(ty, flags, offset, len, data)
            .map_err(ClientError::from)
            .and_then(|cookie| {
                let p = Pending {
                    cookie,
                    offset,
                    structured: self.structured,
                    expect,
                };
                reply::read_reply(&mut *self.s, p)
            });
        if let Err(e) = &r
            && !matches!(e, ClientError::Server { .. })
        {
            self.broken = true;
        }
        r
    }

    /// Fills `buf` from `offset`, in requests of at most the maximum block size.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ClientError> {
        self.check(offset, buf.len() as u64)?;
        let step = self.max_request as usize;
        let mut at = offset;
        for piece in buf.chunks_mut(step) {
            let n = piece.len() as u32;
            self.roundtrip(CMD_READ, 0, at, n, &[], Expect::Data(piece))?;
            at += u64::from(n);
        }
        Ok(())
    }

    /// Writes `data` at `offset`; `fua` makes it durable before returning
    /// (FUA when the server has it, else a flush).
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), ClientError> {
        self.check(offset, data.len() as u64)?;
        let native_fua = fua && self.flags & TF_SEND_FUA != 0;
        let flags = if native_fua { CMD_FLAG_FUA } else { 0 };
        let mut at = offset;
        for piece in data.chunks(self.max_request as usize) {
            let n = piece.len() as u32;
            self.roundtrip(CMD_WRITE, flags, at, n, piece, Expect::Nothing)?;
            at += u64::from(n);
        }
        if fua && !native_fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Largest TRIM/WRITE_ZEROES request: a multiple of the maximum block
    /// size that fits the 32-bit length.
    fn big_step(&self) -> u64 {
        let m = u64::from(self.max_request);
        (u64::from(u32::MAX) / m) * m
    }

    /// Zeroes `len` bytes; `no_hole` forbids the server to punch a hole.
    /// Falls back to writing zeroes when the server lacks WRITE_ZEROES.
    pub fn write_zeroes(
        &mut self,
        offset: u64,
        len: u64,
        no_hole: bool,
    ) -> Result<(), ClientError> {
        self.check(offset, len)?;
        if self.flags & TF_SEND_WRITE_ZEROES == 0 {
            let zeroes = vec![0; ZERO_CHUNK.min(self.max_request) as usize];
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(zeroes.len() as u64);
                self.write(at, &zeroes[..n as usize], false)?;
                at += n;
            }
            return Ok(());
        }
        let flags = if no_hole { CMD_FLAG_NO_HOLE } else { 0 };
        self.ranged(CMD_WRITE_ZEROES, flags, offset, len)
    }

    /// Discards `len` bytes (contents afterwards unspecified).
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<(), ClientError> {
        self.check(offset, len)?;
        if self.flags & TF_SEND_TRIM == 0 {
            return Err(ClientError::Unsupported("trim"));
        }
        self.ranged(CMD_TRIM, 0, offset, len)
    }

    /// A TRIM or WRITE_ZEROES over [offset, offset+len) in big steps.
    fn ranged(&mut self, ty: u16, flags: u16, offset: u64, len: u64) -> Result<(), ClientError> {
        let step = self.big_step();
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(step);
            self.roundtrip(ty, flags, at, n as u32, &[], Expect::Nothing)?;
            at += n;
        }
        Ok(())
    }

    /// Makes completed writes durable (a no-op if the server has no FLUSH).
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.check(0, 0)?;
        if self.flags & TF_SEND_FLUSH == 0 {
            return Ok(());
        }
        self.roundtrip(CMD_FLUSH, 0, 0, 0, &[], Expect::Nothing)
    }

    /// Runs of (length, flags) from base:allocation starting at offset (at least one).
    pub fn block_status(&mut self, offset: u64, len: u32) -> Result<Vec<(u64, u32)>, ClientError> {
        self.check(offset, u64::from(len))?;
        let Some(id) = self.meta_id else {
            return Err(ClientError::Unsupported("base:allocation block status"));
        };
        if len == 0 {
            return Err(ClientError::InvalidArgument("zero-length block status"));
        }
        let mut out = Vec::new();
        let expect = Expect::Status {
            id,
            len,
            out: &mut out,
        };
        self.roundtrip(CMD_BLOCK_STATUS, 0, offset, len, &[], expect)?;
        Ok(out)
    }

    /// Sends NBD_CMD_DISC and closes the connection.
    pub fn disconnect(mut self) -> Result<(), ClientError> {
        self.send(CMD_DISC, 0, 0, 0, &[])?;
        Ok(())
    }
}

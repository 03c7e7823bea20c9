//! The server side: [`serve`] runs one connection (negotiation, then
//! transmission) to its end. The caller accepts connections, runs each
//! on its own thread and logs what [`serve`] returns; all state here is
//! per connection.
//!
//! Where the protocol leaves a choice, this server:
//!
//! - accepts clients without `NBD_FLAG_C_FIXED_NEWSTYLE` (and answers
//!   them like fixed-newstyle ones); unknown client flags close;
//! - refuses a name over 4096 bytes or not UTF-8 with `ERR_INVALID`
//!   (closes for EXPORT_NAME, which has no error reply);
//! - always sends `NBD_INFO_BLOCK_SIZE` (1, 4096, 32 MiB), and
//!   `NBD_INFO_NAME` / `NBD_INFO_DESCRIPTION` only when asked;
//! - knows one metadata context, `base:allocation` (id 1): LIST with no
//!   query or the namespace query `base:` lists it, SET needs its full
//!   name; every SET replaces the selection, which only counts if GO /
//!   EXPORT_NAME then picks the same export;
//! - advertises `HAS_FLAGS | SEND_FLUSH | CAN_MULTI_CONN` (no
//!   per-connection caches), plus `SEND_FUA | SEND_TRIM |
//!   SEND_WRITE_ZEROES` when writable, else `READ_ONLY`;
//! - under structured replies answers every request with chunks (NONE or
//!   ERROR for data-less commands); READ sends OFFSET_HOLE for zero runs
//!   of at least 4 KiB (at most 9 chunks), a single OFFSET_DATA with DF;
//! - answers zero-length READ, WRITE and BLOCK_STATUS with `EINVAL`, and
//!   zero-length TRIM / WRITE_ZEROES / CACHE with success (no-op);
//! - answers FAST_ZERO with `ENOTSUP` (it cannot promise fast zeroing),
//!   unknown command flag bits with `EINVAL`, and ignores known flags that
//!   do not apply to the command;
//! - checks in this order: WRITE payload consumed, flags, read-only
//!   (`EPERM`), length, range (`EINVAL` on overflow, `ENOSPC` past the end
//!   for WRITE / WRITE_ZEROES, `EINVAL` past the end otherwise);
//! - replies `EINVAL` to a WRITE over 32 MiB, then closes (its payload
//!   cannot be skipped safely); a READ over 32 MiB only gets `EINVAL`.

mod negotiate;
mod transmit;

use std::fmt;
use std::io;

use crate::export::Exports;
use crate::{Stream, Upgrade};

/// What a connection did, for the caller's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The export transmission ran on, if it got that far.
    pub export: Option<String>,
    /// Whether STARTTLS upgraded the connection.
    pub tls: bool,
    /// Whether structured replies were negotiated.
    pub structured: bool,
    /// Options received.
    pub options: u32,
    /// Transmission requests received.
    pub requests: u64,
    /// Largest buffer allocated for the peer's data on this connection
    /// (option data, a WRITE payload, a READ buffer), in bytes.
    pub max_buffer: usize,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.export {
            Some(e) => write!(f, "export {e:?}, ")?,
            None => write!(f, "no export, ")?,
        }
        write!(f, "{} options, {} requests", self.options, self.requests)?;
        if self.tls {
            write!(f, ", tls")?;
        }
        Ok(())
    }
}

/// How a connection ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent `NBD_OPT_ABORT`.
    Abort,
    /// The client sent `NBD_CMD_DISC` (the export was flushed).
    Disconnect,
    /// The client closed the stream between two messages.
    Closed,
}

/// A connection that ended cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Why it ended.
    pub end: End,
    /// What it did.
    pub stats: Stats,
}

/// Why a connection was ended by the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeErrorKind {
    /// The peer closed the stream in the middle of a message.
    #[error("peer closed the connection in the middle of a message")]
    Truncated,
    /// Reading or writing the stream failed.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
    /// The peer broke the protocol in a way the connection cannot survive
    /// (bad magic, unknown client flags, too many options, an unknown
    /// export with EXPORT_NAME, an oversized WRITE...).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The TLS upgrade after STARTTLS failed.
    #[error("TLS upgrade failed: {0}")]
    Tls(#[source] io::Error),
}

impl From<io::Error> for ServeErrorKind {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Io(e)
        }
    }
}

/// A connection the server ended on an error, with what it did before.
#[derive(Debug, thiserror::Error)]
#[error("{kind} ({stats})")]
pub struct ServeError {
    /// What went wrong.
    pub kind: ServeErrorKind,
    /// What the connection did before.
    pub stats: Stats,
}

/// One connection's stream and running statistics.
pub(crate) struct Conn {
    pub(crate) s: Box<dyn Stream>,
    pub(crate) stats: Stats,
}

impl Conn {
    /// Records a buffer allocated for peer data.
    pub(crate) fn note_buffer(&mut self, capacity: usize) {
        self.stats.max_buffer = self.stats.max_buffer.max(capacity);
    }

    /// Writes one whole message and flushes it.
    pub(crate) fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for p in parts {
            self.s.write_all(p)?;
        }
        self.s.flush()
    }
}

/// Serves one connection to its end: fixed-newstyle negotiation against
/// `exports` (TLS required when `tls` is given), then transmission on the
/// chosen export. Returns how it ended, or the error that ended it; the
/// stream is dropped (closed) on return either way.
pub fn serve(
    stream: Box<dyn Stream>,
    exports: &dyn Exports,
    tls: Option<&dyn Upgrade>,
) -> Result<Summary, ServeError> {
    let mut conn = Conn {
        s: stream,
        stats: Stats::default(),
    };
    let r = match negotiate::negotiate(&mut conn, exports, tls) {
        Ok(negotiate::Negotiated::End(end)) => Ok(end),
        Ok(negotiate::Negotiated::Transmit(session)) => transmit::transmit(&mut conn, &session),
        Err(e) => Err(e),
    };
    match r {
        Ok(end) => {
            tracing::debug!(?end, stats = %conn.stats, "nbd connection ended");
            Ok(Summary {
                end,
                stats: conn.stats,
            })
        }
        Err(kind) => {
            tracing::debug!(error = %kind, stats = %conn.stats, "nbd connection failed");
            Err(ServeError {
                kind,
                stats: conn.stats,
            })
        }
    }
}

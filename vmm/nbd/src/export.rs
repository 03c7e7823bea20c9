//! What the server serves: the [`Export`] a connection reads and writes,
//! and the named set of them ([`Exports`]) a client chooses from.

use std::io;
use std::sync::Arc;

/// Storage behind one export. Shared by every connection to it, so
/// implementations synchronise internally. Offsets and lengths are
/// checked against [`Export::size`] by the server before any call.
pub trait Export: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Zero `len` bytes; `may_trim` (no NO_HOLE flag) lets the export punch a hole.
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()>;
    /// Discards `len` bytes (contents afterwards unspecified).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Allocation runs covering at least the start of [offset, offset+len):
    /// (length, NBD_STATE_* flags), in order, each length > 0, total ≤ len.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>>;
}

/// One export as the server offers it.
#[derive(Clone)]
pub struct ExportEntry {
    /// The name clients ask for.
    pub name: String,
    /// Free text sent on `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// Whether clients may write (else the export is advertised read-only
    /// and writes fail with `EPERM`).
    pub writable: bool,
    /// The storage.
    pub export: Arc<dyn Export>,
}

impl std::fmt::Debug for ExportEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportEntry")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("writable", &self.writable)
            .field("size", &self.export.size())
            .finish()
    }
}

/// The exports a server offers. Looked up on every INFO/GO/EXPORT_NAME,
/// so the set may change while connections run.
pub trait Exports: Send + Sync {
    /// The export called `name` (the empty name is the client asking for
    /// a default; map it here if there is one).
    fn lookup(&self, name: &str) -> Option<ExportEntry>;
    /// Names to answer `NBD_OPT_LIST` with.
    fn names(&self) -> Vec<String>;
}

/// A fixed list of exports, looked up by exact name.
impl Exports for Vec<ExportEntry> {
    fn lookup(&self, name: &str) -> Option<ExportEntry> {
        self.iter().find(|e| e.name == name).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.iter().map(|e| e.name.clone()).collect()
    }
}

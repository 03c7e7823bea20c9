//! Shared test plumbing: exports, a server thread, a pass-through TLS
//! upgrader, and a raw-bytes client for hostile tests.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wire::*;
use crate::{Client, ExportEntry, Exports, MemExport, ServeError, Stream, Summary, Upgrade, serve};

/// Size of the "disk" export.
pub const DISK: usize = 1 << 20;

/// The "disk" contents: data in [0, 4K) and [64K, 68K), zeroes elsewhere.
pub fn disk_contents() -> Vec<u8> {
    let mut d = vec![0; DISK];
    for (i, b) in d[..4096].iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    d[65536..69632].fill(0xab);
    d
}

/// Exports "disk" (writable, sparse), "ro" (read-only) and the backing
/// MemExport of "disk".
pub fn exports() -> (Arc<Vec<ExportEntry>>, Arc<MemExport>) {
    let disk = Arc::new(MemExport::from_vec(disk_contents()));
    let ro = Arc::new(MemExport::from_vec(vec![7; 8192]));
    let list = vec![
        ExportEntry {
            name: "disk".into(),
            description: "a sparse test disk".into(),
            writable: true,
            export: disk.clone(),
        },
        ExportEntry {
            name: "ro".into(),
            description: String::new(),
            writable: false,
            export: ro,
        },
    ];
    (Arc::new(list), disk)
}

/// Counts upgrades and hands the same stream back.
#[derive(Default)]
pub struct Passthrough(pub AtomicUsize);

impl Upgrade for Passthrough {
    fn upgrade(&self, s: Box<dyn Stream>) -> io::Result<Box<dyn Stream>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(s)
    }
}

/// The server end of a connection being served.
pub type Served = JoinHandle<Result<Summary, ServeError>>;

/// Serves one connection on a thread; returns the client end.
pub fn spawn(exports: Arc<dyn Exports>, tls: Option<Arc<dyn Upgrade>>) -> (UnixStream, Served) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let h = std::thread::spawn(move || serve(Box::new(b), &*exports, tls.as_deref()));
    (a, h)
}

/// A connected client to "disk" (or `name`) and the server thread.
pub fn client(name: &str) -> (Client, Served, Arc<MemExport>) {
    let (ex, disk) = exports();
    let (s, h) = spawn(ex, None);
    let c = Client::connect(Box::new(s), name, None).unwrap();
    (c, h, disk)
}

/// A client speaking raw bytes.
pub struct Raw(pub UnixStream);

impl Raw {
    /// Connects to a fresh server over the standard exports.
    pub fn new() -> (Raw, Served) {
        let (ex, _) = exports();
        let (s, h) = spawn(ex, None);
        (Raw(s), h)
    }

    /// Reads the greeting and sends client flags.
    pub fn hello(&mut self, flags: u32) {
        let mut g = [0; 18];
        self.0.read_exact(&mut g).unwrap();
        assert_eq!(&g[..8], &NBD_MAGIC.to_be_bytes());
        assert_eq!(&g[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(&g[16..], &3u16.to_be_bytes());
        self.send(&flags.to_be_bytes());
    }

    /// Writes bytes (ignoring a server that already closed).
    pub fn send(&mut self, b: &[u8]) {
        let _ = self.0.write_all(b);
    }

    /// Sends an option.
    pub fn opt(&mut self, opt: u32, data: &[u8]) {
        let mut v = Vec::new();
        v.put_u64(IHAVEOPT);
        v.put_u32(opt);
        v.put_u32(data.len() as u32);
        v.extend_from_slice(data);
        self.send(&v);
    }

    /// Reads an option reply: (option, type, data).
    pub fn reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0; 20];
        self.0.read_exact(&mut h).unwrap();
        let mut c = Cursor::new(&h);
        assert_eq!(c.u64(), Some(REPLY_MAGIC));
        let (opt, ty, len) = (c.u32().unwrap(), c.u32().unwrap(), c.u32().unwrap());
        let mut d = vec![0; len as usize];
        self.0.read_exact(&mut d).unwrap();
        (opt, ty, d)
    }

    /// Option data naming an export, with info requests (INFO/GO).
    pub fn info_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut d = Vec::new();
        d.put_u32(name.len() as u32);
        d.extend_from_slice(name.as_bytes());
        d.put_u16(infos.len() as u16);
        for i in infos {
            d.put_u16(*i);
        }
        d
    }

    /// Option data for META_CONTEXT options.
    pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        d.put_u32(name.len() as u32);
        d.extend_from_slice(name.as_bytes());
        d.put_u32(queries.len() as u32);
        for q in queries {
            d.put_u32(q.len() as u32);
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    /// GO on `name`, reading replies up to the ACK; returns their types.
    pub fn go(&mut self, name: &str) -> Vec<u32> {
        self.opt(OPT_GO, &Self::info_data(name, &[]));
        let mut types = Vec::new();
        loop {
            let (opt, ty, _) = self.reply();
            assert_eq!(opt, OPT_GO);
            types.push(ty);
            if ty == REP_ACK || ty & REP_FLAG_ERROR != 0 {
                return types;
            }
        }
    }

    /// Handshake, optional structured replies + base:allocation, GO "disk".
    pub fn transmission(&mut self, structured: bool) {
        self.hello(C_FIXED_NEWSTYLE | C_NO_ZEROES);
        if structured {
            self.opt(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.reply().1, REP_ACK);
            self.opt(
                OPT_SET_META_CONTEXT,
                &Self::meta_data("disk", &[BASE_ALLOCATION]),
            );
            assert_eq!(self.reply().1, REP_META_CONTEXT);
            assert_eq!(self.reply().1, REP_ACK);
        }
        assert_eq!(self.go("disk").last(), Some(&REP_ACK));
    }

    /// Sends a request header.
    pub fn req(&mut self, flags: u16, ty: u16, cookie: u64, offset: u64, len: u32) {
        let mut v = Vec::new();
        v.put_u32(REQUEST_MAGIC);
        v.put_u16(flags);
        v.put_u16(ty);
        v.put_u64(cookie);
        v.put_u64(offset);
        v.put_u32(len);
        self.send(&v);
    }

    /// Reads a simple reply: (error, cookie).
    pub fn simple(&mut self) -> (u32, u64) {
        let mut h = [0; 16];
        self.0.read_exact(&mut h).unwrap();
        let mut c = Cursor::new(&h);
        assert_eq!(c.u32(), Some(SIMPLE_REPLY_MAGIC));
        (c.u32().unwrap(), c.u64().unwrap())
    }

    /// Reads a structured chunk: (flags, type, cookie, payload).
    pub fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let mut h = [0; 20];
        self.0.read_exact(&mut h).unwrap();
        let mut c = Cursor::new(&h);
        assert_eq!(c.u32(), Some(STRUCTURED_REPLY_MAGIC));
        let (f, t, k, l) = (
            c.u16().unwrap(),
            c.u16().unwrap(),
            c.u64().unwrap(),
            c.u32().unwrap(),
        );
        let mut d = vec![0; l as usize];
        self.0.read_exact(&mut d).unwrap();
        (f, t, k, d)
    }

    /// The errno of a structured ERROR chunk (asserting DONE).
    pub fn chunk_errno(&mut self) -> u32 {
        let (f, t, _, d) = self.chunk();
        assert_eq!((f, t), (REPLY_FLAG_DONE, CHUNK_ERROR));
        u32::from_be_bytes(d[..4].try_into().unwrap())
    }

    /// Asserts the server closed its end (after draining what it sent).
    pub fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        let _ = self.0.read_to_end(&mut rest);
        let mut b = [0; 1];
        assert_eq!(self.0.read(&mut b).unwrap_or(0), 0);
    }

    /// A simple-reply READ of `len` bytes at `offset` that must succeed.
    pub fn good_read(&mut self, offset: u64, len: u32) -> Vec<u8> {
        self.req(0, CMD_READ, 99, offset, len);
        assert_eq!(self.simple(), (0, 99));
        let mut d = vec![0; len as usize];
        self.0.read_exact(&mut d).unwrap();
        d
    }
}

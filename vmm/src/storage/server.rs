//! The NBD server of `nbd-server-start`: one listener (unix or inet), a
//! thread per connection (at most [`MAX_CONNECTIONS`]), the exports of
//! `block-export-add` / `nbd-server-add`, TLS when credentials are given.

use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use devices::bus::lock;
use devices::disk::Disk;

use migration::secure::{Sock, TlsServer};

use super::addr::Addr;
use super::tls::ServerUpgrade;

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(300);

/// A drive as an NBD export.
pub struct DiskExport(pub Arc<Disk>);

impl nbd::Export for DiskExport {
    fn size(&self) -> u64 {
        self.0.len().unwrap_or(0)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.0.write_zeroes(offset, len, may_trim)
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.write_zeroes(offset, len, true)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        Ok(self
            .0
            .extents(offset, len)?
            .into_iter()
            .filter(|x| x.len > 0)
            .map(|x| {
                let flags = if x.data {
                    0
                } else {
                    nbd::wire::STATE_HOLE | nbd::wire::STATE_ZERO
                };
                (x.len, flags)
            })
            .collect())
    }
}

/// One export: its QMP id, the drive it shows, and the entry clients see.
#[derive(Clone)]
pub struct Export {
    pub id: String,
    pub node: String,
    pub entry: nbd::ExportEntry,
}

#[derive(Default)]
struct Table(RwLock<BTreeMap<String, Export>>);

impl nbd::Exports for Table {
    fn lookup(&self, name: &str) -> Option<nbd::ExportEntry> {
        self.0
            .read()
            .ok()?
            .values()
            .find(|e| e.entry.name == name)
            .map(|e| e.entry.clone())
    }
    fn names(&self) -> Vec<String> {
        self.0
            .read()
            .map(|t| t.values().map(|e| e.entry.name.clone()).collect())
            .unwrap_or_default()
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn shutdown(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

/// A running NBD server.
pub struct NbdServer {
    pub addr: Addr,
    stop: Arc<AtomicBool>,
    table: Arc<Table>,
    conns: Arc<Mutex<Vec<(u64, Conn)>>>,
    /// A unix socket this server created (removed on stop).
    socket: Option<PathBuf>,
}

impl NbdServer {
    /// Listens on `addr` (a unix socket path must not exist yet); `tls`
    /// makes TLS mandatory for every client.
    pub fn start(addr: Addr, tls: Option<Arc<TlsServer>>) -> Result<NbdServer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let table = Arc::new(Table::default());
        let conns: Arc<Mutex<Vec<(u64, Conn)>>> = Arc::default();
        let (accept, socket): (Box<dyn FnMut() -> io::Result<Option<Conn>> + Send>, _) = match &addr
        {
            Addr::Unix(p) => {
                let l = UnixListener::bind(p)
                    .map_err(|e| format!("Failed to bind socket to {}: {e}", p.display()))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                (
                    Box::new(move || match l.accept() {
                        Ok((s, _)) => Ok(Some(Conn::Unix(s))),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                        Err(e) => Err(e),
                    }),
                    Some(p.clone()),
                )
            }
            Addr::Inet { host, port } => {
                let l = TcpListener::bind((host.as_str(), *port))
                    .map_err(|e| format!("Failed to bind socket to {host}:{port}: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                (
                    Box::new(move || match l.accept() {
                        Ok((s, _)) => Ok(Some(Conn::Tcp(s))),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                        Err(e) => Err(e),
                    }),
                    None,
                )
            }
        };
        let server = NbdServer {
            addr,
            stop: stop.clone(),
            table: table.clone(),
            conns: conns.clone(),
            socket,
        };
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(accept, stop, table, conns, active, tls))
            .map_err(|e| e.to_string())?;
        Ok(server)
    }

    /// Adds an export; its name must be new.
    pub fn add(&self, e: Export) -> Result<(), String> {
        let mut t = self.table.0.write().map_err(|e| e.to_string())?;
        if t.contains_key(&e.id) {
            return Err(format!("Block export id '{}' is already in use", e.id));
        }
        if t.values().any(|x| x.entry.name == e.entry.name) {
            return Err(format!(
                "NBD server already has export named '{}'",
                e.entry.name
            ));
        }
        t.insert(e.id.clone(), e);
        Ok(())
    }

    /// Removes an export by id (or, with `by_name`, by export name).
    pub fn remove(&self, key: &str, by_name: bool) -> Result<Export, String> {
        let mut t = self.table.0.write().map_err(|e| e.to_string())?;
        let id = t
            .values()
            .find(|e| {
                if by_name {
                    e.entry.name == key
                } else {
                    e.id == key
                }
            })
            .map(|e| e.id.clone());
        match id.and_then(|id| t.remove(&id)) {
            Some(e) => Ok(e),
            None if by_name => Err(format!("Export '{key}' is not found")),
            None => Err(format!("Export '{key}' is not found")),
        }
    }

    /// Every export.
    pub fn exports(&self) -> Vec<Export> {
        self.table
            .0
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops listening and closes every connection.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for (_, c) in lock(&self.conns).drain(..) {
            c.shutdown();
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    mut accept: Box<dyn FnMut() -> io::Result<Option<Conn>> + Send>,
    stop: Arc<AtomicBool>,
    table: Arc<Table>,
    conns: Arc<Mutex<Vec<(u64, Conn)>>>,
    active: Arc<AtomicUsize>,
    tls: Option<Arc<TlsServer>>,
) {
    let mut next = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let c = match accept() {
            Ok(Some(c)) => c,
            Ok(None) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => {
                tracing::warn!("nbd: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            tracing::warn!("nbd: {MAX_CONNECTIONS} connections served already; one refused");
            c.shutdown();
            continue;
        }
        let (sock, copy) = match c {
            Conn::Unix(s) => match (s.try_clone(), s.set_nonblocking(false)) {
                (Ok(k), Ok(())) => (Sock::Unix(s), Conn::Unix(k)),
                _ => continue,
            },
            Conn::Tcp(s) => match (s.try_clone(), s.set_nonblocking(false)) {
                (Ok(k), Ok(())) => {
                    let _ = s.set_nodelay(true);
                    (Sock::Tcp(s), Conn::Tcp(k))
                }
                _ => continue,
            },
        };
        let _ = sock.set_read_timeout(Some(IDLE));
        // With credentials, STARTTLS starts the session on another handle.
        let upgrade = match &tls {
            Some(t) => match sock.try_clone() {
                Ok(s) => Some(ServerUpgrade {
                    sock: s,
                    tls: t.clone(),
                }),
                Err(_) => continue,
            },
            None => None,
        };
        let stream: Box<dyn nbd::Stream> = Box::new(sock);
        next += 1;
        let id = next;
        lock(&conns).push((id, copy));
        active.fetch_add(1, Ordering::SeqCst);
        let (t, c, a) = (table.clone(), conns.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-{id}"))
            .spawn(move || {
                let up = upgrade.as_ref().map(|u| u as &dyn nbd::Upgrade);
                match nbd::serve(stream, t.as_ref(), up) {
                    Ok(s) => tracing::info!("nbd: connection {id} ended: {s:?}"),
                    Err(e) => tracing::warn!("nbd: connection {id}: {e}"),
                }
                lock(&c).retain(|(i, _)| *i != id);
                a.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            lock(&conns).retain(|(i, _)| *i != id);
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

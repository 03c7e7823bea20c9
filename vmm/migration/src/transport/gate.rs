//! A waiting destination that survives strangers: it accepts connections
//! until one authenticates (with credentials) and carries a valid header
//! and manifest; a connection that fails the handshake, is plaintext where
//! TLS is required, sends garbage or stalls is dropped, logged with its
//! peer address, and the destination keeps waiting. At most
//! [`MAX_HANDSHAKES`] connections are examined at once (more are dropped
//! at once), each for at most [`HANDSHAKE_TIMEOUT`].

use super::{BUF, Bound, Incoming, Listener, READ_TIMEOUT, poll_accept};
use crate::secure::seal;
use crate::secure::{Sock, TlsServer};
use crate::stream::{Decoder, Limits};
use std::io::{self, BufReader, Cursor, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// How long a connection may take to authenticate and send its manifest.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections examined at once.
pub const MAX_HANDSHAKES: usize = 32;

/// Records what is read through it.
struct Tee<'a, R> {
    inner: &'a mut R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

type Stream = (Box<dyn Read + Send>, Box<dyn Write + Send>, Sock);

/// The session (or the plain socket) of an accepted connection.
fn open(sock: Sock, tls: Option<&TlsServer>) -> Result<Stream, String> {
    let raw = sock.try_clone().map_err(|e| e.to_string())?;
    match tls {
        Some(t) => {
            let s = t
                .accept(sock, HANDSHAKE_TIMEOUT)
                .map_err(|e| e.to_string())?;
            let (r, w) = s.split().map_err(|e| e.to_string())?;
            Ok((Box::new(r), Box::new(w), raw))
        }
        None => {
            let back = sock.try_clone().map_err(|e| e.to_string())?;
            Ok((Box::new(sock), Box::new(back), raw))
        }
    }
}

/// Authenticates an accepted connection and reads its header and
/// manifest; the connection with those bytes put back in front.
fn admit(sock: Sock, tls: Option<&TlsServer>) -> Result<Incoming, String> {
    let (reader, back, raw) = open(sock, tls)?;
    raw.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(BUF, reader);
    let mut tee = Tee {
        inner: &mut reader,
        seen: Vec::new(),
    };
    Decoder::new(&mut tee, Limits::default())
        .and_then(|mut d| d.read_manifest())
        .map_err(|e| format!("no valid header and manifest: {e}"))?;
    let seen = tee.seen;
    raw.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let chained: Box<dyn Read + Send> = Box::new(Cursor::new(seen).chain(reader));
    Ok(Incoming {
        reader: BufReader::with_capacity(BUF, chained),
        back: Some(back),
    })
}

fn nonblocking(b: &Bound, on: bool) -> io::Result<()> {
    match b {
        Bound::Tcp(l) => l.set_nonblocking(on),
        Bound::Unix(l, _) => l.set_nonblocking(on),
        Bound::File(_) => Ok(()),
    }
}

/// One pending connection, if any (`WouldBlock` when none), and who it is.
fn try_accept(b: &Bound) -> io::Result<(Sock, String)> {
    match b {
        Bound::Tcp(l) => {
            let (s, peer) = l.accept()?;
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            Ok((Sock::Tcp(s), peer.to_string()))
        }
        Bound::Unix(l, p) => {
            let (s, _) = l.accept()?;
            s.set_nonblocking(false)?;
            Ok((Sock::Unix(s), format!("unix:{}", p.display())))
        }
        Bound::File(_) => Err(io::Error::other("a snapshot file has no connections")),
    }
}

impl Listener {
    /// Waits for the source (or opens the snapshot, checking its seal).
    pub fn accept(&self) -> io::Result<Incoming> {
        if let Bound::File(p) = &self.bound {
            return self.open_snapshot(p);
        }
        let (tx, rx) = mpsc::channel();
        let examining = Arc::new(AtomicUsize::new(0));
        nonblocking(&self.bound, true)?;
        let r = loop {
            if let Ok(inc) = rx.try_recv() {
                break Ok(inc);
            }
            let (sock, peer) = match try_accept(&self.bound) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            if examining.load(Ordering::SeqCst) >= MAX_HANDSHAKES {
                tracing::warn!(
                    "incoming: dropped a connection from {peer}: {MAX_HANDSHAKES} are being examined"
                );
                continue;
            }
            examining.fetch_add(1, Ordering::SeqCst);
            let (tx, n, tls) = (tx.clone(), examining.clone(), self.tls.clone());
            let spawned = std::thread::Builder::new()
                .name("incoming-gate".into())
                .spawn(move || {
                    match admit(sock, tls.as_deref()) {
                        Ok(inc) => {
                            let _ = tx.send(inc);
                        }
                        Err(why) => {
                            tracing::warn!("incoming: dropped a connection from {peer}: {why}")
                        }
                    }
                    n.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                examining.fetch_sub(1, Ordering::SeqCst);
            }
        };
        nonblocking(&self.bound, false)?;
        r
    }

    fn open_snapshot(&self, p: &std::path::Path) -> io::Result<Incoming> {
        let mut f = std::fs::File::open(p)?;
        let mut head = [0u8; 8];
        let n = f.read(&mut head)?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
        let sealed = seal::is_sealed(&head[..n]);
        let psk = self.tls.as_ref().and_then(|t| t.creds().psk().cloned());
        let reader: Box<dyn Read + Send> = match (sealed, psk) {
            (true, Some(k)) => Box::new(
                seal::open(BufReader::with_capacity(BUF, f), &k.identity, &k.key)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            ),
            (true, None) => {
                return Err(io::Error::other(
                    "the snapshot is sealed: give --tls-creds psk:FILE with its key",
                ));
            }
            (false, Some(_)) => {
                return Err(io::Error::other(
                    "the snapshot is not sealed, but credentials were given: refused (it may have been replaced)",
                ));
            }
            (false, None) => Box::new(f),
        };
        Ok(Incoming {
            reader: BufReader::with_capacity(BUF, reader),
            back: None,
        })
    }

    /// Waits (at most `timeout`) for a data channel's connection: one that
    /// authenticates (with credentials) or starts with the channel magic
    /// (without); others are dropped and logged.
    pub fn accept_channel(&self, timeout: Duration) -> io::Result<Box<dyn Read + Send>> {
        let deadline = Instant::now() + timeout;
        loop {
            nonblocking(&self.bound, true)?;
            let r = poll_accept(|| try_accept(&self.bound), deadline);
            nonblocking(&self.bound, false)?;
            let (sock, peer) = r?;
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            match self.channel(sock, left.min(HANDSHAKE_TIMEOUT)) {
                Ok(r) => return Ok(r),
                Err(why) => {
                    tracing::warn!("incoming: dropped a channel connection from {peer}: {why}")
                }
            }
        }
    }

    /// An authenticated session is a channel (its header is checked when
    /// the stream is read: the source writes every channel's header only
    /// once all are connected). A plain connection must start with the
    /// channel magic.
    fn channel(&self, sock: Sock, timeout: Duration) -> Result<Box<dyn Read + Send>, String> {
        let raw = sock.try_clone().map_err(|e| e.to_string())?;
        if let Some(t) = &self.tls {
            let s = t.accept(sock, timeout).map_err(|e| e.to_string())?;
            raw.set_read_timeout(Some(READ_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let r = s.split().map_err(|e| e.to_string())?.0;
            return Ok(Box::new(BufReader::with_capacity(BUF, r)));
        }
        let mut r = sock;
        raw.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|e| format!("no channel header: {e}"))?;
        if magic != crate::stream::format::CHANNEL_MAGIC {
            return Err("not a data channel (bad magic)".into());
        }
        raw.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Box::new(BufReader::with_capacity(
            BUF,
            Cursor::new(magic).chain(r),
        )))
    }
}

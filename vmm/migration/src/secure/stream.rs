//! The byte streams under and over a TLS session: the socket ([`Sock`]),
//! its read buffer ([`Buffered`]), and a session split into a reading and
//! a writing half ([`TlsStream`]).

use rustls::{ClientConnection, ServerConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The socket under a session.
#[derive(Debug)]
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    /// Another handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    /// Sets the read time-out.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// Sets the write time-out.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_write_timeout(t),
            Sock::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

/// Reads through a 256 KiB buffer: rustls reads a socket 4 KiB at a time,
/// which costs four system calls per 16 KiB record without it. Writes go
/// straight to the socket (rustls already writes whole records, vectored).
pub(super) struct Buffered {
    sock: Sock,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl Buffered {
    pub(super) fn new(sock: Sock) -> Self {
        Self {
            sock,
            buf: vec![0u8; 256 << 10].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }
}

impl Read for Buffered {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if out.len() >= self.buf.len() {
                return self.sock.read(out);
            }
            self.len = self.sock.read(&mut self.buf)?;
            self.pos = 0;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Buffered {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.sock.write(b)
    }
    fn write_vectored(&mut self, b: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.sock {
            Sock::Tcp(s) => s.write_vectored(b),
            Sock::Unix(s) => s.write_vectored(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

pub(super) enum Inner {
    Client(StreamOwned<ClientConnection, Buffered>),
    Server(StreamOwned<ServerConnection, Buffered>),
}

/// An authenticated session; [`TlsStream::split`] for its two halves.
pub struct TlsStream {
    inner: Arc<Mutex<Inner>>,
    raw: Sock,
}

impl TlsStream {
    pub(super) fn new(inner: Inner, raw: Sock) -> Self {
        Self {
            inner: Arc::new(Mutex::new(inner)),
            raw,
        }
    }

    /// The reading and the writing half (they take the session in turn).
    pub fn split(self) -> io::Result<(TlsReader, TlsWriter)> {
        let raw = self.raw.try_clone()?;
        Ok((
            TlsReader {
                inner: self.inner.clone(),
                raw: self.raw,
            },
            TlsWriter {
                inner: self.inner,
                raw,
            },
        ))
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reading half of a session.
pub struct TlsReader {
    inner: Arc<Mutex<Inner>>,
    raw: Sock,
}

impl TlsReader {
    /// The socket under the session (for its time-outs).
    pub fn socket(&self) -> &Sock {
        &self.raw
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut *lock(&self.inner) {
            Inner::Client(s) => s.read(buf),
            Inner::Server(s) => s.read(buf),
        }
    }
}

/// The writing half of a session.
pub struct TlsWriter {
    inner: Arc<Mutex<Inner>>,
    raw: Sock,
}

impl TlsWriter {
    /// The socket under the session (for its time-outs).
    pub fn socket(&self) -> &Sock {
        &self.raw
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *lock(&self.inner) {
            Inner::Client(s) => s.write(buf),
            Inner::Server(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut *lock(&self.inner) {
            Inner::Client(s) => s.flush(),
            Inner::Server(s) => s.flush(),
        }
    }
}

//! Migration URIs (`tcp:HOST:PORT`, `unix:PATH`, `file:PATH`) and their connections.
//!
//! Sockets are full duplex: the stream goes source → destination and the
//! return channel ([`super::status`]) comes back on the same connection.
//! `file:` is a snapshot: there is no return channel.
//!
//! With credentials every connection is a TLS 1.3 session ([`secure`](crate::secure))
//! and a snapshot is sealed; a waiting destination admits the first peer
//! that authenticates and sends a valid header and manifest, dropping the
//! others ([`gate`]).

mod gate;
mod tls;

pub use gate::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
pub use tls::{connect_secure, listen_secure};

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where a stream goes to or comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uri {
    /// `tcp:HOST:PORT`
    Tcp(String),
    /// `unix:PATH`
    Unix(PathBuf),
    /// `file:PATH` (a snapshot)
    File(PathBuf),
}

/// A URI or connection problem.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("`{0}` is not a migration URI (expected tcp:HOST:PORT, unix:PATH or file:PATH)")]
    BadUri(String),
    #[error("{what} {uri}: {source}")]
    Io {
        what: &'static str,
        uri: String,
        source: io::Error,
    },
}

impl FromStr for Uri {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, TransportError> {
        let bad = || TransportError::BadUri(s.to_string());
        let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match scheme {
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad());
                }
                Ok(Uri::Tcp(rest.to_string()))
            }
            "unix" => Ok(Uri::Unix(rest.into())),
            "file" => Ok(Uri::File(rest.into())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Tcp(a) => write!(f, "tcp:{a}"),
            Uri::Unix(p) => write!(f, "unix:{}", p.display()),
            Uri::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// The read half of a return channel, with a settable time-out.
pub trait BackChannel: Read + Send {
    /// Sets the read time-out (`None`: block).
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl BackChannel for TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

impl BackChannel for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

/// The source's side of a connection.
pub struct Outgoing {
    /// Where the stream is written (buffered).
    pub writer: BufWriter<Box<dyn Write + Send>>,
    /// Where status comes back; `None` for a snapshot file.
    pub back: Option<Box<dyn BackChannel>>,
}

const BUF: usize = 1 << 20;
/// A source whose writes make no progress this long gives up (never hangs).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A destination that receives nothing this long mid-stream gives up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl Outgoing {
    /// Wraps a connected unix socket (tests use a socket pair).
    pub fn unix(s: UnixStream) -> io::Result<Self> {
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let back = s.try_clone()?;
        Ok(Self {
            writer: BufWriter::with_capacity(BUF, Box::new(s)),
            back: Some(Box::new(back)),
        })
    }

    /// Wraps a connected TCP socket.
    pub fn tcp(s: TcpStream) -> io::Result<Self> {
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let back = s.try_clone()?;
        Ok(Self {
            writer: BufWriter::with_capacity(BUF, Box::new(s)),
            back: Some(Box::new(back)),
        })
    }
}

/// Opens the source's side: connects a socket or creates the snapshot file.
pub fn connect(uri: &Uri) -> Result<Outgoing, TransportError> {
    let io = |source| TransportError::Io {
        what: "cannot connect to",
        uri: uri.to_string(),
        source,
    };
    match uri {
        Uri::Tcp(a) => Outgoing::tcp(TcpStream::connect(a).map_err(io)?).map_err(io),
        Uri::Unix(p) => Outgoing::unix(UnixStream::connect(p).map_err(io)?).map_err(io),
        Uri::File(p) => Ok(Outgoing {
            writer: BufWriter::with_capacity(BUF, Box::new(File::create(p).map_err(io)?)),
            back: None,
        }),
    }
}

/// The destination's side of a connection.
pub struct Incoming {
    /// Where the stream is read from (buffered).
    pub reader: BufReader<Box<dyn Read + Send>>,
    /// Where status goes back; `None` for a snapshot file.
    pub back: Option<Box<dyn Write + Send>>,
}

impl Incoming {
    /// Wraps a connected unix socket (tests use a socket pair).
    pub fn unix(s: UnixStream) -> io::Result<Self> {
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        let back = s.try_clone()?;
        Ok(Self {
            reader: BufReader::with_capacity(BUF, Box::new(s)),
            back: Some(Box::new(back)),
        })
    }
}

/// Binds a unix socket at `path` that only this user can connect to (mode
/// 0600): it is created in a fresh private (0700) directory, its mode set,
/// then renamed into place, so it is never reachable with the umask's
/// wider permissions. `path` must not exist (a rename would replace it).
pub fn bind_private_unix(path: &std::path::Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let dir = path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(format!(
            ".{}.{}.tmp",
            name.unwrap_or_default(),
            std::process::id()
        ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let tmp = dir.join("s");
    let bound = UnixListener::bind(&tmp)
        .and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map(|()| l)
        })
        .and_then(|l| std::fs::rename(&tmp, path).map(|()| l));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    bound
}

/// What a destination is bound to.
pub(crate) enum Bound {
    /// Bound TCP socket.
    Tcp(TcpListener),
    /// Bound unix socket (the path is removed on drop).
    Unix(UnixListener, PathBuf),
    /// Snapshot file to read.
    File(PathBuf),
}

/// A destination waiting for its stream, with the credentials its peers
/// must have (none: any peer that sends a valid header and manifest).
pub struct Listener {
    pub(crate) bound: Bound,
    pub(crate) tls: Option<std::sync::Arc<crate::secure::TlsServer>>,
}

/// Binds the destination's side (a file is only opened by [`Listener::accept`]).
pub fn listen(uri: &Uri) -> Result<Listener, TransportError> {
    let io = |source| TransportError::Io {
        what: "cannot listen on",
        uri: uri.to_string(),
        source,
    };
    let bound = match uri {
        Uri::Tcp(a) => Bound::Tcp(TcpListener::bind(a).map_err(io)?),
        Uri::Unix(p) => {
            if p.exists() {
                return Err(io(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the path exists (remove it first)",
                )));
            }
            Bound::Unix(bind_private_unix(p).map_err(io)?, p.clone())
        }
        Uri::File(p) => Bound::File(p.clone()),
    };
    Ok(Listener { bound, tls: None })
}

impl Listener {
    /// The URI a source should use (resolves `tcp:...:0` to the bound port).
    pub fn uri(&self) -> io::Result<Uri> {
        Ok(match &self.bound {
            Bound::Tcp(l) => Uri::Tcp(l.local_addr()?.to_string()),
            Bound::Unix(_, p) => Uri::Unix(p.clone()),
            Bound::File(p) => Uri::File(p.clone()),
        })
    }
}

/// How long a destination waits for each data channel to connect.
pub const CHANNEL_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls a non-blocking `accept` until it yields or `deadline` passes.
pub(crate) fn poll_accept<T>(
    mut accept: impl FnMut() -> io::Result<T>,
    deadline: std::time::Instant,
) -> io::Result<T> {
    loop {
        match accept() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no data channel connected in time",
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Bound::Unix(_, p) = &self.bound {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert_eq!(
            "tcp:127.0.0.1:4444".parse::<Uri>().unwrap(),
            Uri::Tcp("127.0.0.1:4444".into())
        );
        assert_eq!(
            "tcp:[::1]:4444".parse::<Uri>().unwrap(),
            Uri::Tcp("[::1]:4444".into())
        );
        assert_eq!(
            "unix:/tmp/m.sock".parse::<Uri>().unwrap(),
            Uri::Unix("/tmp/m.sock".into())
        );
        assert_eq!(
            "file:snap.bin".parse::<Uri>().unwrap().to_string(),
            "file:snap.bin"
        );
        for bad in [
            "",
            "tcp:",
            "tcp:host",
            "tcp:host:x",
            "tcp::1",
            "ftp:x",
            "unix:",
            "x",
        ] {
            assert!(bad.parse::<Uri>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_listen_connect_and_back_channel() {
        use crate::vm::MigrationSource;
        let l = listen(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
        let uri = l.uri().unwrap();
        // A valid header and manifest, then bytes of the stream.
        let m = crate::fake::FakeSource::new(crate::fake::GuestSpec::ab(16))
            .manifest()
            .unwrap();
        let mut start = Vec::new();
        let mut e = crate::stream::Encoder::new(&mut start).unwrap();
        e.manifest(&m).unwrap();
        e.flush().unwrap();
        drop(e);
        start.extend_from_slice(b"hello");
        let want = start.clone();
        let t = std::thread::spawn(move || {
            let mut i = l.accept().unwrap();
            let mut s = vec![0; want.len()];
            i.reader.read_exact(&mut s).unwrap();
            i.back.unwrap().write_all(b"ok").unwrap();
            s
        });
        // Strangers first: garbage, and one that says nothing; both are
        // dropped (the silent one after its time-out) and the source is
        // admitted meanwhile.
        let a = tcp_addr(&uri);
        let mut garbage = std::net::TcpStream::connect(a).unwrap();
        garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let _silent = std::net::TcpStream::connect(a).unwrap();
        let mut o = connect(&uri).unwrap();
        o.writer.write_all(&start).unwrap();
        o.writer.flush().unwrap();
        let mut back = o.back.unwrap();
        back.set_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0; 2];
        back.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
        assert_eq!(
            t.join().unwrap(),
            start,
            "the manifest's bytes are put back in front"
        );
    }

    fn tcp_addr(u: &Uri) -> &str {
        match u {
            Uri::Tcp(a) => a,
            _ => unreachable!("a tcp URI"),
        }
    }

    #[test]
    fn unix_listener_removes_its_socket() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vmm-tr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.sock");
        let l = listen(&Uri::Unix(p.clone())).unwrap();
        assert!(p.exists());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only this user may connect");
        assert!(
            listen(&Uri::Unix(p.clone())).is_err(),
            "an existing path is never replaced"
        );
        drop(l);
        assert!(!p.exists());
        assert!(connect(&Uri::Unix(p)).is_err());
        let _ = std::fs::remove_dir(dir);
    }
}

//! NBD's `STARTTLS` over the migration's TLS sessions (`migration::secure`,
//! docs/tls.md): the same credentials (`DIR` of x509 files or `psk:FILE`),
//! both ways authenticated. The NBD negotiation runs in plain text up to
//! `NBD_OPT_STARTTLS`; then the session starts on another handle of the same
//! socket and the negotiation goes on inside it.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use migration::secure::stream::{TlsReader, TlsWriter};
use migration::secure::{Creds, Sock, TlsClient, TlsServer};

/// A handshake gives up after this long.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A session's two halves as one stream.
struct Duplex {
    r: TlsReader,
    w: TlsWriter,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn duplex(s: migration::secure::TlsStream) -> io::Result<Box<dyn nbd::Stream>> {
    let (r, w) = s.split()?;
    Ok(Box::new(Duplex { r, w }))
}

/// The server's credentials and allowed client subjects (`tls-authz`).
pub fn server(creds: &str, authz: Vec<String>) -> Result<Arc<TlsServer>, String> {
    let c = Creds::load(creds).map_err(|e| e.to_string())?;
    TlsServer::new(c, authz)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// A client's credentials and the name the server's certificate must have
/// (default: the address's host).
pub fn client(creds: &str, hostname: Option<String>) -> Result<Arc<TlsClient>, String> {
    let c = Creds::load(creds).map_err(|e| e.to_string())?;
    TlsClient::new(c, hostname)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The server side of one connection.
pub struct ServerUpgrade {
    pub sock: Sock,
    pub tls: Arc<TlsServer>,
}

impl nbd::Upgrade for ServerUpgrade {
    fn upgrade(&self, plain: Box<dyn nbd::Stream>) -> io::Result<Box<dyn nbd::Stream>> {
        // The plain handle goes; the session runs on this one.
        drop(plain);
        let s = self
            .tls
            .accept(self.sock.try_clone()?, HANDSHAKE)
            .map_err(io::Error::other)?;
        duplex(s)
    }
}

/// The client side of one connection to `host`.
pub struct ClientUpgrade {
    pub sock: Sock,
    pub tls: Arc<TlsClient>,
    pub host: String,
}

impl nbd::Upgrade for ClientUpgrade {
    fn upgrade(&self, plain: Box<dyn nbd::Stream>) -> io::Result<Box<dyn nbd::Stream>> {
        drop(plain);
        let s = self
            .tls
            .connect(self.sock.try_clone()?, &self.host, HANDSHAKE)
            .map_err(io::Error::other)?;
        duplex(s)
    }
}

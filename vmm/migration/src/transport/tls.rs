//! Connections with credentials: a TLS session on each socket, a sealed
//! file for a snapshot.

use super::{BUF, BackChannel, Bound, Listener, Outgoing, TransportError, Uri, WRITE_TIMEOUT};
use crate::secure::seal::SealWriter;
use crate::secure::{Creds, Sock, TlsClient, TlsServer, session::TlsReader};
use std::io::{self, BufWriter};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

impl BackChannel for TlsReader {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(t)
    }
}

/// The host part of `tcp:HOST:PORT` (what the destination's certificate
/// must name unless `tls-hostname` says otherwise).
fn host_of(uri: &Uri) -> String {
    match uri {
        Uri::Tcp(a) => a
            .rsplit_once(':')
            .map_or(a.as_str(), |(h, _)| h)
            .to_string(),
        _ => "localhost".to_string(),
    }
}

/// [`super::connect`] with `tls`: a socket carries a TLS session
/// (authenticated both ways before any byte of the stream), a `file:`
/// snapshot is sealed with the pre-shared key.
pub fn connect_secure(uri: &Uri, tls: Option<&TlsClient>) -> Result<Outgoing, TransportError> {
    let Some(tls) = tls else {
        return super::connect(uri);
    };
    let io = |source| TransportError::Io {
        what: "cannot connect securely to",
        uri: uri.to_string(),
        source,
    };
    let sock = match uri {
        Uri::Tcp(a) => {
            let s = TcpStream::connect(a).map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            Sock::Tcp(s)
        }
        Uri::Unix(p) => Sock::Unix(UnixStream::connect(p).map_err(io)?),
        Uri::File(p) => {
            let psk = tls.creds().psk().ok_or_else(|| {
                io(io::Error::other(
                    "a snapshot is sealed with a pre-shared key: give --tls-creds psk:FILE",
                ))
            })?;
            let f = std::fs::File::create(p).map_err(io)?;
            let w = SealWriter::new(BufWriter::with_capacity(BUF, f), &psk.identity, &psk.key)
                .map_err(io)?;
            return Ok(Outgoing {
                writer: BufWriter::with_capacity(BUF, Box::new(w)),
                back: None,
            });
        }
    };
    let s = tls
        .connect(sock, &host_of(uri), super::HANDSHAKE_TIMEOUT)
        .map_err(|e| io(io::Error::other(e.to_string())))?;
    let (r, w) = s.split().map_err(io)?;
    w.socket()
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(io)?;
    w.socket().set_read_timeout(None).map_err(io)?;
    Ok(Outgoing {
        writer: BufWriter::with_capacity(BUF, Box::new(w)),
        back: Some(Box::new(r)),
    })
}

/// [`super::listen`] requiring peers with `creds` (x509: a client
/// certificate the CA signed, with a subject in `authz` if it is not
/// empty; PSK: the key proof). A `file:` snapshot must be sealed with the
/// pre-shared key.
pub fn listen_secure(
    uri: &Uri,
    creds: Option<&Creds>,
    authz: Vec<String>,
) -> Result<Listener, TransportError> {
    let mut l = super::listen(uri)?;
    let Some(creds) = creds else {
        return Ok(l);
    };
    let bad = |why: String| TransportError::Io {
        what: "cannot listen securely on",
        uri: uri.to_string(),
        source: io::Error::other(why),
    };
    if matches!(l.bound, Bound::File(_)) && creds.psk().is_none() {
        return Err(bad(
            "a snapshot is sealed with a pre-shared key: give --tls-creds psk:FILE".into(),
        ));
    }
    let server = TlsServer::new(creds.clone(), authz).map_err(|e| bad(e.to_string()))?;
    l.tls = Some(Arc::new(server));
    Ok(l)
}

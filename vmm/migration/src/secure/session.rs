//! TLS 1.3 (rustls) on a migration connection, both ends authenticated:
//!
//! - x509: the destination (server) presents `server-cert.pem` and requires
//!   a client certificate signed by the directory's CA, optionally with a
//!   subject on an allow-list (the reference's `tls-authz`); the source
//!   (client) requires the destination's certificate to be signed by the CA
//!   and to name `tls-hostname` (or the URI's host);
//! - PSK: rustls has no external pre-shared keys, so both ends run TLS 1.3
//!   with throw-away self-signed certificates and then prove they hold the
//!   key over the session: the source sends its identity and
//!   HMAC-SHA256(key, "vmm psk source" ‖ exporter), the destination checks
//!   it and answers HMAC-SHA256(key, "vmm psk destination" ‖ exporter).
//!   The exporter (RFC 8446 §7.5) is bound to this session's handshake, so
//!   a man in the middle, who has two sessions, cannot relay a proof; a
//!   peer without the key learns nothing about it.
//!
//! A [`TlsStream`] splits into a reader and a writer over one session (the
//! source writes the stream and reads the return channel in turn, the
//! destination the other way round).

use super::creds::{Creds, Pair};
use super::stream::{Buffered, Inner};
pub use super::stream::{Sock, TlsReader, TlsStream, TlsWriter};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SignatureScheme, StreamOwned};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS set-up: {0}")]
    Config(String),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("TLS peer refused: {0}")]
    Peer(String),
}

/// The ring provider with AES-128-GCM first (the fastest suite on hosts
/// with AES instructions; the peer may still pick another of the list).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

fn cfg_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// A throw-away self-signed certificate (PSK sessions authenticate by the
/// key, not by it).
fn ephemeral() -> Result<Pair, TlsError> {
    let c = rcgen::generate_simple_self_signed(vec!["vmm-psk".to_string()]).map_err(cfg_err)?;
    Ok(Pair {
        chain: vec![c.cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()).into(),
    })
}

/// Accepts any server certificate: only for PSK sessions, whose peer is
/// authenticated by the key proof after the handshake.
#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(cfg_err)?;
    }
    Ok(roots)
}

/// A source's side: its credentials and the name the destination must
/// have (`tls-hostname`).
pub struct TlsClient {
    creds: Creds,
    hostname: Option<String>,
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// A client for `creds`; x509 needs the directory's client pair.
    pub fn new(creds: Creds, hostname: Option<String>) -> Result<Self, TlsError> {
        let p = provider();
        let builder = ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(cfg_err)?;
        let config = match &creds {
            Creds::X509(x) => {
                let client = x.client.clone().ok_or_else(|| {
                    TlsError::Config(format!(
                        "{}: no client-cert.pem/client-key.pem (a source needs them)",
                        x.dir.display()
                    ))
                })?;
                builder
                    .with_root_certificates(roots(&x.ca)?)
                    .with_client_auth_cert(client.chain, client.key)
                    .map_err(cfg_err)?
            }
            Creds::Psk { .. } => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(
                    p.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
        };
        Ok(Self {
            creds,
            hostname,
            config: Arc::new(config),
        })
    }

    /// The credentials.
    pub fn creds(&self) -> &Creds {
        &self.creds
    }

    /// Runs the handshake on `sock` (bounded by `timeout`) with a
    /// destination that must be `host` unless `tls-hostname` names another.
    pub fn connect(
        &self,
        sock: Sock,
        host: &str,
        timeout: Duration,
    ) -> Result<TlsStream, TlsError> {
        let name = match &self.creds {
            Creds::Psk { .. } => "vmm-psk".to_string(),
            Creds::X509(_) => self.hostname.clone().unwrap_or_else(|| host.to_string()),
        };
        let name = ServerName::try_from(
            name.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| TlsError::Config(format!("destination name `{name}`: {e}")))?;
        let conn = ClientConnection::new(self.config.clone(), name).map_err(cfg_err)?;
        let raw = sock.try_clone().map_err(TlsError::Handshake)?;
        let mut s = StreamOwned::new(conn, Buffered::new(sock));
        handshake(&raw, timeout, |r| {
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            if let Some(psk) = self.creds.psk() {
                let exporter = exporter(&s.conn)?;
                let mut hello = vec![psk.identity.len() as u8];
                hello.extend_from_slice(psk.identity.as_bytes());
                hello.extend_from_slice(&proof(&psk.key, SOURCE, &exporter));
                s.write_all(&hello)?;
                s.flush()?;
                let mut status = [0u8; 1];
                s.read_exact(&mut status)?;
                if status[0] != 0 {
                    // The destination says why (bounded), then closes.
                    let mut len = [0u8; 1];
                    s.read_exact(&mut len)?;
                    let mut why = vec![0u8; usize::from(len[0])];
                    s.read_exact(&mut why)?;
                    *r = Some(TlsError::Peer(format!(
                        "the destination refused: {}",
                        String::from_utf8_lossy(&why)
                    )));
                    return Ok(());
                }
                let mut theirs = [0u8; 32];
                s.read_exact(&mut theirs)?;
                if !verify(&psk.key, DESTINATION, &exporter, &theirs) {
                    *r = Some(TlsError::Peer(
                        "the destination does not hold this pre-shared key".into(),
                    ));
                }
            }
            Ok(())
        })?;
        Ok(TlsStream::new(Inner::Client(s), raw))
    }
}

/// A source's TLS side as migration parameters carry it (compared by
/// identity).
#[derive(Clone)]
pub struct SharedClient(pub Arc<TlsClient>);

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({})", self.0.creds.describe())
    }
}

impl PartialEq for SharedClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A destination's side: its credentials and the client subjects allowed
/// (`tls-authz`; empty: any certificate the CA signed).
pub struct TlsServer {
    creds: Creds,
    authz: Vec<String>,
    config: Arc<ServerConfig>,
}

const SOURCE: &[u8] = b"vmm psk source";
const DESTINATION: &[u8] = b"vmm psk destination";

fn exporter<D>(c: &rustls::ConnectionCommon<D>) -> io::Result<[u8; 32]> {
    c.export_keying_material([0u8; 32], b"EXPORTER-vmm-migration-psk", None)
        .map_err(io::Error::other)
}

/// The key and the message a side's proof is the HMAC-SHA256 of:
/// `who` (which side) followed by the session's exporter.
fn proof_input(key: &[u8], who: &[u8], exporter: &[u8]) -> (ring::hmac::Key, Vec<u8>) {
    let mut msg = who.to_vec();
    msg.extend_from_slice(exporter);
    (ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg)
}

fn proof(key: &[u8], who: &[u8], exporter: &[u8]) -> Vec<u8> {
    let (k, msg) = proof_input(key, who, exporter);
    ring::hmac::sign(&k, &msg).as_ref().to_vec()
}

fn verify(key: &[u8], who: &[u8], exporter: &[u8], tag: &[u8]) -> bool {
    let (k, msg) = proof_input(key, who, exporter);
    ring::hmac::verify(&k, &msg, tag).is_ok()
}

/// Runs `f` with the socket's time-outs set to `timeout`; an I/O error is a
/// handshake error, a refusal `f` records wins.
fn handshake(
    raw: &Sock,
    timeout: Duration,
    f: impl FnOnce(&mut Option<TlsError>) -> io::Result<()>,
) -> Result<(), TlsError> {
    raw.set_read_timeout(Some(timeout))
        .map_err(TlsError::Handshake)?;
    raw.set_write_timeout(Some(timeout))
        .map_err(TlsError::Handshake)?;
    let mut refused = None;
    f(&mut refused).map_err(TlsError::Handshake)?;
    refused.map_or(Ok(()), Err)
}

/// A subject as `CN=a,O=b` (no spaces after the commas).
fn normalize(dn: &str) -> String {
    dn.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

impl TlsServer {
    /// A server for `creds`; x509 needs the directory's server pair.
    pub fn new(creds: Creds, authz: Vec<String>) -> Result<Self, TlsError> {
        let p = provider();
        let builder = ServerConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(cfg_err)?;
        let config = match &creds {
            Creds::X509(x) => {
                let server = x.server.clone().ok_or_else(|| {
                    TlsError::Config(format!(
                        "{}: no server-cert.pem/server-key.pem (a destination needs them)",
                        x.dir.display()
                    ))
                })?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(&x.ca)?),
                    p,
                )
                .build()
                .map_err(cfg_err)?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(server.chain, server.key)
                    .map_err(cfg_err)?
            }
            Creds::Psk { .. } => {
                let e = ephemeral()?;
                builder
                    .with_no_client_auth()
                    .with_single_cert(e.chain, e.key)
                    .map_err(cfg_err)?
            }
        };
        let mut config = config;
        // No session tickets: a data channel never reads, and unread
        // tickets in its socket would turn its close into a reset.
        config.send_tls13_tickets = 0;
        Ok(Self {
            creds,
            authz: authz.iter().map(|a| normalize(a)).collect(),
            config: Arc::new(config),
        })
    }

    /// The credentials.
    pub fn creds(&self) -> &Creds {
        &self.creds
    }

    /// Runs the handshake on an accepted `sock`, bounded by `timeout`, and
    /// checks the peer: an x509 subject on the allow-list, or the PSK proof.
    pub fn accept(&self, sock: Sock, timeout: Duration) -> Result<TlsStream, TlsError> {
        let conn = ServerConnection::new(self.config.clone()).map_err(cfg_err)?;
        let raw = sock.try_clone().map_err(TlsError::Handshake)?;
        let mut s = StreamOwned::new(conn, Buffered::new(sock));
        handshake(&raw, timeout, |r| {
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            match &self.creds {
                Creds::X509(_) => *r = self.authorized(&s.conn).err(),
                Creds::Psk { .. } => {
                    let exporter = exporter(&s.conn)?;
                    let mut len = [0u8; 1];
                    s.read_exact(&mut len)?;
                    let mut id = vec![0u8; usize::from(len[0])];
                    s.read_exact(&mut id)?;
                    let mut tag = [0u8; 32];
                    s.read_exact(&mut tag)?;
                    let id = String::from_utf8_lossy(&id).into_owned();
                    let why = match self.creds.psk_of(&id) {
                        Some(k) if verify(&k.key, SOURCE, &exporter, &tag) => {
                            s.write_all(&[0])?;
                            s.write_all(&proof(&k.key, DESTINATION, &exporter))?;
                            s.flush()?;
                            return Ok(());
                        }
                        Some(_) => format!("wrong pre-shared key for identity `{id}`"),
                        None => format!("unknown pre-shared key identity `{id}`"),
                    };
                    // Tell the source why (the text reveals nothing of the
                    // keys), then refuse.
                    let text = &why.as_bytes()[..why.len().min(255)];
                    let mut msg = vec![1, text.len() as u8];
                    msg.extend_from_slice(text);
                    let _ = s.write_all(&msg).and_then(|()| s.flush());
                    *r = Some(TlsError::Peer(why));
                }
            }
            Ok(())
        })?;
        Ok(TlsStream::new(Inner::Server(s), raw))
    }

    fn authorized(&self, c: &ServerConnection) -> Result<(), TlsError> {
        if self.authz.is_empty() {
            return Ok(());
        }
        let cert = c
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| TlsError::Peer("no client certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| TlsError::Peer(format!("client certificate: {e}")))?;
        let subject = normalize(&parsed.subject().to_string());
        if self.authz.contains(&subject) {
            Ok(())
        } else {
            Err(TlsError::Peer(format!(
                "client subject `{subject}` is not in tls-authz"
            )))
        }
    }
}

#[cfg(test)]
mod tests;

//! Migration credentials, in the reference's layouts:
//!
//! - x509: a directory with `ca-cert.pem`, `server-cert.pem`,
//!   `server-key.pem`, `client-cert.pem`, `client-key.pem` (the reference's
//!   `tls-creds-x509` `dir`); a destination needs the CA and the server
//!   pair, a source the CA and the client pair;
//! - a pre-shared key: a file of `identity:hexkey` lines (the reference's
//!   `keys.psk` of `tls-creds-psk`); the first line is this side's key, a
//!   destination accepts any identity in the file.
//!
//! On the command line: `--tls-creds DIR` or `--tls-creds psk:FILE`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Longest credentials file read.
const MAX_FILE: u64 = 1 << 20;
/// Shortest key accepted, in bytes (128 bits).
pub const MIN_PSK: usize = 16;

/// Why credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Bad(String),
}

fn file_err(path: &Path, why: impl ToString) -> CredsError {
    CredsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CredsError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| file_err(path, e))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(file_err(path, format!("longer than {MAX_FILE} bytes")));
    }
    Ok(buf)
}

/// A certificate chain and its key.
pub struct Pair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Pair {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pair({} certificates, key)", self.chain.len())
    }
}

/// The x509 credentials of a directory.
#[derive(Clone, Debug)]
pub struct X509 {
    pub dir: PathBuf,
    pub ca: Vec<CertificateDer<'static>>,
    pub server: Option<Pair>,
    pub client: Option<Pair>,
}

/// One pre-shared key.
#[derive(Clone)]
pub struct Psk {
    pub identity: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk({}, {} bytes)", self.identity, self.key.len())
    }
}

/// Credentials for TLS (and, for a PSK, sealed snapshots).
#[derive(Clone, Debug)]
pub enum Creds {
    X509(X509),
    /// This side's key first, then every other key of the file.
    Psk {
        file: PathBuf,
        keys: Vec<Psk>,
    },
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredsError> {
    let pem = read_bounded(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn pair(dir: &Path, who: &str) -> Result<Option<Pair>, CredsError> {
    let (c, k) = (
        dir.join(format!("{who}-cert.pem")),
        dir.join(format!("{who}-key.pem")),
    );
    if !c.exists() && !k.exists() {
        return Ok(None);
    }
    let chain = certs(&c)?;
    let key = PrivateKeyDer::from_pem_slice(&read_bounded(&k)?)
        .map_err(|e| file_err(&k, format!("not a PEM private key: {e}")))?;
    Ok(Some(Pair { chain, key }))
}

/// Parses a `keys.psk` file: `identity:hexkey` lines.
pub fn parse_psk(text: &str) -> Result<Vec<Psk>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, hex) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected identity:hexkey", n + 1))?;
        if id.is_empty() || id.len() > 255 {
            return Err(format!("line {}: the identity must be 1..255 bytes", n + 1));
        }
        let key =
            decode_hex(hex.trim()).ok_or_else(|| format!("line {}: the key is not hex", n + 1))?;
        if key.len() < MIN_PSK {
            return Err(format!(
                "line {}: the key has {} bytes, at least {MIN_PSK} are needed",
                n + 1,
                key.len()
            ));
        }
        keys.push(Psk {
            identity: id.to_string(),
            key,
        });
    }
    if keys.is_empty() {
        return Err("no identity:hexkey line".into());
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Creds {
    /// `DIR` (x509) or `psk:FILE`.
    pub fn load(arg: &str) -> Result<Self, CredsError> {
        if let Some(file) = arg.strip_prefix("psk:") {
            let path = PathBuf::from(file);
            let text = read_bounded(&path)?;
            let text = String::from_utf8(text).map_err(|_| file_err(&path, "not UTF-8"))?;
            let keys = parse_psk(&text).map_err(|e| file_err(&path, e))?;
            return Ok(Creds::Psk { file: path, keys });
        }
        let dir = PathBuf::from(arg);
        if !dir.is_dir() {
            return Err(file_err(
                &dir,
                "not a directory (x509: a directory with ca-cert.pem...; a key: psk:FILE)",
            ));
        }
        let ca = certs(&dir.join("ca-cert.pem"))?;
        let (server, client) = (pair(&dir, "server")?, pair(&dir, "client")?);
        Ok(Creds::X509(X509 {
            dir,
            ca,
            server,
            client,
        }))
    }

    /// What the command line said (`DIR`, `psk:FILE`).
    pub fn describe(&self) -> String {
        match self {
            Creds::X509(x) => format!("x509 {}", x.dir.display()),
            Creds::Psk { file, .. } => format!("psk:{}", file.display()),
        }
    }

    /// This side's pre-shared key, for a PSK.
    pub fn psk(&self) -> Option<&Psk> {
        match self {
            Creds::Psk { keys, .. } => keys.first(),
            Creds::X509(_) => None,
        }
    }

    /// The key of `identity`, for a PSK destination.
    pub fn psk_of(&self, identity: &str) -> Option<&Psk> {
        match self {
            Creds::Psk { keys, .. } => keys.iter().find(|k| k.identity == identity),
            Creds::X509(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_files_in_the_references_format() {
        let k = parse_psk("# a comment\nqemu:000102030405060708090a0b0c0d0e0f\nother:ffffffffffffffffffffffffffffffff\n")
            .unwrap();
        assert_eq!(
            (k[0].identity.as_str(), k[0].key.len(), k[0].key[15]),
            ("qemu", 16, 15)
        );
        assert_eq!(k[1].identity, "other");
        for bad in [
            "",
            "qemu",
            "qemu:zz",
            "qemu:0102",
            ":00112233445566778899aabbccddeeff",
            "q:0",
        ] {
            assert!(parse_psk(bad).is_err(), "{bad:?}");
        }
    }
}

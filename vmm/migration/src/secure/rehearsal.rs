//! Throw-away x509 credentials for a rehearsal (`vmm tls gen DIR`): a CA
//! and a server and a client certificate it signs, in the reference's
//! directory layout. Not for production: the CA key is written beside the
//! certificates and nothing revokes them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::Path;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub files: Vec<String>,
    /// The subjects, for `tls-authz`.
    pub server_subject: String,
    pub client_subject: String,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(|e| format!("{}: {e} (never overwritten)", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a CA, a server certificate for `names` (DNS names or IP
/// addresses; always `localhost`, `127.0.0.1` and `::1` too) and a client
/// certificate into `dir` (created; existing files are never replaced).
pub fn generate(dir: &Path, names: &[String]) -> Result<Generated, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "vmm rehearsal CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "vmm");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let ca_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for n in names {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    let leaf = |cn: &str,
                sans: &[String],
                usage: ExtendedKeyUsagePurpose|
     -> Result<(String, String), String> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "vmm");
        p.subject_alt_names = sans
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(err),
            })
            .collect::<Result<_, _>>()?;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf("destination", &all, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_cert, client_key) = leaf("source", &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    write(dir, "ca-cert.pem", &ca_cert.pem(), false)?;
    write(dir, "ca-key.pem", &ca_pem, true)?;
    write(dir, "server-cert.pem", &server_cert, false)?;
    write(dir, "server-key.pem", &server_key, true)?;
    write(dir, "client-cert.pem", &client_cert, false)?;
    write(dir, "client-key.pem", &client_key, true)?;
    Ok(Generated {
        files: [
            "ca-cert.pem",
            "ca-key.pem",
            "server-cert.pem",
            "server-key.pem",
            "client-cert.pem",
            "client-key.pem",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        server_subject: "CN=destination,O=vmm".into(),
        client_subject: "CN=source,O=vmm".into(),
    })
}

/// A fresh random pre-shared key file (`identity:hexkey`, 32 bytes), mode 0600.
pub fn psk_file(path: &Path, identity: &str) -> Result<(), String> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| "no randomness".to_string())?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write(dir, &name, &format!("{identity}:{hex}\n"), true)
}

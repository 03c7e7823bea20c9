//! Sessions over socket pairs: both authentications, and every way a peer
//! is refused.

use super::*;
use crate::secure::rehearsal;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

const T: Duration = Duration::from_secs(10);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmm-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn x509(name: &str) -> Creds {
    let d = dir(name);
    rehearsal::generate(&d, &[]).unwrap();
    Creds::load(&d.display().to_string()).unwrap()
}

/// Runs a server on one end of a pair and a client on the other: both results.
fn pair(
    server: TlsServer,
    client: TlsClient,
    host: &str,
) -> (Result<TlsStream, TlsError>, Result<TlsStream, TlsError>) {
    let (a, b) = UnixStream::pair().unwrap();
    let s = std::thread::spawn(move || server.accept(Sock::Unix(a), T));
    let c = client.connect(Sock::Unix(b), host, T);
    (s.join().unwrap(), c)
}

fn talk(s: TlsStream, c: TlsStream) {
    let (mut sr, mut sw) = s.split().unwrap();
    let (mut cr, mut cw) = c.split().unwrap();
    let t = std::thread::spawn(move || {
        let mut got = vec![0u8; 5];
        sr.read_exact(&mut got).unwrap();
        sw.write_all(b"ok").unwrap();
        sw.flush().unwrap();
        got
    });
    cw.write_all(b"hello").unwrap();
    cw.flush().unwrap();
    let mut back = [0u8; 2];
    cr.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ok");
    assert_eq!(t.join().unwrap(), b"hello");
}

#[test]
fn x509_both_ways_with_the_hostname_and_authz() {
    let creds = x509("ok");
    let server = TlsServer::new(creds.clone(), vec!["CN=source, O=vmm".into()]).unwrap();
    let client = TlsClient::new(creds, None).unwrap();
    let (s, c) = pair(server, client, "localhost");
    talk(s.unwrap(), c.unwrap());
}

#[test]
fn x509_refusals() {
    let creds = x509("refusals");
    // A destination whose certificate does not name tls-hostname.
    let server = TlsServer::new(creds.clone(), vec![]).unwrap();
    let client = TlsClient::new(creds.clone(), Some("elsewhere.example".into())).unwrap();
    let (_, c) = pair(server, client, "localhost");
    assert!(matches!(c, Err(TlsError::Handshake(_))), "{:?}", c.err());
    // A client whose subject is not allowed.
    let server = TlsServer::new(creds.clone(), vec!["CN=someone-else,O=vmm".into()]).unwrap();
    let (s, _) = pair(
        server,
        TlsClient::new(creds.clone(), None).unwrap(),
        "localhost",
    );
    let e = s.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("CN=source,O=vmm") && e.contains("tls-authz"),
        "{e}"
    );
    // A client certificate from another CA.
    let other = x509("other-ca");
    let server = TlsServer::new(creds, vec![]).unwrap();
    let (s, c) = pair(server, TlsClient::new(other, None).unwrap(), "localhost");
    assert!(s.is_err() && c.is_err());
}

fn psk(name: &str, line: &str) -> Creds {
    let d = dir(name);
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("keys.psk");
    std::fs::write(&f, line).unwrap();
    Creds::load(&format!("psk:{}", f.display())).unwrap()
}

#[test]
fn psk_proves_the_key_both_ways() {
    let k = psk("psk", "qemu:00112233445566778899aabbccddeeff\n");
    let (s, c) = pair(
        TlsServer::new(k.clone(), vec![]).unwrap(),
        TlsClient::new(k, None).unwrap(),
        "whatever",
    );
    talk(s.unwrap(), c.unwrap());
}

#[test]
fn a_wrong_psk_or_identity_is_refused_on_both_sides() {
    let good = psk("psk-good", "qemu:00112233445566778899aabbccddeeff\n");
    let wrong = psk("psk-wrong", "qemu:ffeeddccbbaa99887766554433221100\n");
    let (s, c) = pair(
        TlsServer::new(good.clone(), vec![]).unwrap(),
        TlsClient::new(wrong, None).unwrap(),
        "h",
    );
    let e = s.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("wrong pre-shared key"), "{e}");
    let c = c.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        c.contains("the destination refused: wrong pre-shared key"),
        "the source is told why: {c}"
    );
    let stranger = psk("psk-id", "mallory:00112233445566778899aabbccddeeff\n");
    let (s, _) = pair(
        TlsServer::new(good, vec![]).unwrap(),
        TlsClient::new(stranger, None).unwrap(),
        "h",
    );
    let e = s.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("unknown pre-shared key identity `mallory`"),
        "{e}"
    );
}

#[test]
fn plaintext_garbage_and_silence_fail_the_handshake_in_bounded_time() {
    let creds = x509("garbage");
    let server = TlsServer::new(creds, vec![]).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(server.accept(Sock::Unix(a), T).is_err());
    let (a, _b) = UnixStream::pair().unwrap();
    let t0 = std::time::Instant::now();
    assert!(
        server
            .accept(Sock::Unix(a), Duration::from_millis(200))
            .is_err()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

//! Migrations of the fake VM over TLS (x509 and PSK, with data channels)
//! and sealed snapshots, over real sockets.

use super::{Creds, SharedClient, TlsClient, rehearsal};
use crate::PAGE_SIZE;
use crate::ab::check_ab_image;
use crate::fake::{FakeSource, FakeTarget, GuestSpec, IMAGE_PAGES};
use crate::incoming;
use crate::precopy::{self, CancelToken, Outcome, Params};
use crate::transport::{self, Uri};
use std::io::Write;
use std::sync::Arc;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vmm-sec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn x509(name: &str) -> Creds {
    let d = tmp(name).join("creds");
    rehearsal::generate(&d, &[]).unwrap();
    Creds::load(&d.display().to_string()).unwrap()
}

fn psk(name: &str) -> Creds {
    let f = tmp(name).join("keys.psk");
    rehearsal::psk_file(&f, "qemu").unwrap();
    Creds::load(&format!("psk:{}", f.display())).unwrap()
}

/// Migration parameters with `channels` and TLS with `creds`.
fn tls_params(creds: &Creds, channels: u32) -> Params {
    let client = TlsClient::new(creds.clone(), None).unwrap();
    Params {
        channels,
        tls: Some(SharedClient(Arc::new(client))),
        ..Params::default()
    }
}

fn migrate_over_tls(creds: Creds, channels: u32) {
    let pages = 2048;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    src.wait_rounds(1);
    let l = transport::listen_secure(&"tcp:127.0.0.1:0".parse().unwrap(), Some(&creds), vec![])
        .unwrap();
    let uri = l.uri().unwrap();
    // A stranger first: plaintext garbage on the TLS port.
    let Uri::Tcp(addr) = &uri else { unreachable!() };
    let mut stranger = std::net::TcpStream::connect(addr).unwrap();
    stranger.write_all(&[0x56; 64]).unwrap();
    let dest = std::thread::spawn(move || {
        let mut t = FakeTarget::default();
        let r = incoming::receive_on(&l, &mut t);
        (t, r)
    });
    let params = tls_params(&creds, channels);
    let sum = precopy::migrate_to(
        &mut src,
        &uri,
        &params,
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap();
    let (t, dr) = dest.join().unwrap();
    dr.unwrap();
    assert_eq!(sum.outcome, Outcome::Handover);
    let range = &t.ram[IMAGE_PAGES as usize * PAGE_SIZE..pages as usize * PAGE_SIZE];
    check_ab_image(range, PAGE_SIZE).expect("consistent over TLS");
    assert!(t.ram == src.ram());
}

#[test]
fn x509_with_two_channels() {
    migrate_over_tls(x509("x509"), 2);
}

#[test]
fn psk_on_one_stream() {
    migrate_over_tls(psk("psk"), 0);
}

#[test]
fn a_refusal_names_the_culprit_inside_the_session() {
    let creds = x509("refusal");
    let mut src = FakeSource::new(GuestSpec::ab(256));
    let l = transport::listen_secure(&"tcp:127.0.0.1:0".parse().unwrap(), Some(&creds), vec![])
        .unwrap();
    let uri = l.uri().unwrap();
    let dest = std::thread::spawn(move || {
        let mut t = FakeTarget {
            local_machine: Some("pc-5.1".into()),
            ..Default::default()
        };
        incoming::receive_on(&l, &mut t).map(|_| ())
    });
    let params = tls_params(&creds, 0);
    let e = precopy::migrate_to(
        &mut src,
        &uri,
        &params,
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pc-5.1"), "{e}");
    assert!(dest.join().unwrap().is_err());
    assert!(!src.is_paused(), "the source runs on");
}

#[test]
fn a_sealed_snapshot_restores_and_one_flipped_byte_is_refused() {
    let creds = psk("seal");
    let path = tmp("seal-file").join("snap.bin");
    let uri = Uri::File(path.clone());
    let mut src = FakeSource::new(GuestSpec::ab(512));
    let params = tls_params(&creds, 0);
    precopy::migrate_to(
        &mut src,
        &uri,
        &params,
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(super::seal::is_sealed(&bytes));
    // Without the key, and with a plain listener: refused.
    let mut t = FakeTarget::default();
    let e = incoming::receive_from(&uri, &mut t)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sealed"), "{e}");
    let l = transport::listen_secure(&uri, Some(&creds), vec![]).unwrap();
    let mut t = FakeTarget::default();
    incoming::receive_on(&l, &mut t).unwrap();
    assert!(t.ram == src.ram());
    let mut bad = bytes;
    let at = bad.len() / 2;
    bad[at] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let mut t = FakeTarget::default();
    let e = incoming::receive_on(&l, &mut t).unwrap_err().to_string();
    assert!(e.contains("altered"), "{e}");
    assert!(
        !t.started && t.ram.iter().all(|b| *b == 0),
        "nothing was loaded"
    );
}

//! Multi-channel migrations end to end over real sockets, with the fake VM.

use crate::PAGE_SIZE;
use crate::ab::check_ab_image;
use crate::compress::Compression;
use crate::fake::{FakeSource, FakeTarget, GuestSpec, IMAGE_PAGES};
use crate::incoming::{self, IncomingError, IncomingSummary};
use crate::precopy::{self, CancelToken, MigrateError, Outcome, Params, Summary};
use crate::transport;
use std::thread;

fn over_tcp(
    src: &mut FakeSource,
    params: &Params,
) -> (
    Result<Summary, MigrateError>,
    FakeTarget,
    Result<IncomingSummary, IncomingError>,
) {
    let l = transport::listen(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
    let uri = l.uri().unwrap();
    let dest = thread::spawn(move || {
        let mut t = FakeTarget::default();
        let r = incoming::receive_on(&l, &mut t);
        (t, r)
    });
    let r = precopy::migrate_to(src, &uri, params, &mut |_| {}, &CancelToken::default());
    let (t, dr) = dest.join().unwrap();
    (r, t, dr)
}

fn params(channels: u32, compression: Compression) -> Params {
    Params {
        channels,
        compression,
        ..Params::default()
    }
}

#[test]
fn ab_over_four_channels_with_zstd_is_consistent_and_identical() {
    let pages = 4096;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    src.wait_rounds(1);
    let (r, t, dr) = over_tcp(&mut src, &params(4, Compression::Zstd { level: 1 }));
    let (sum, dsum) = (r.unwrap(), dr.unwrap());
    assert_eq!(sum.outcome, Outcome::Handover);
    assert!(t.started);
    let range = &t.ram[IMAGE_PAGES as usize * PAGE_SIZE..pages as usize * PAGE_SIZE];
    check_ab_image(range, PAGE_SIZE).expect("destination memory is consistent");
    assert!(
        t.ram == src.ram(),
        "destination RAM differs from the stopped source"
    );
    assert_eq!(dsum.manifest.channels, 4);
    assert_eq!(dsum.manifest.compression.as_deref(), Some("zstd"));
    assert_eq!(sum.bytes, dsum.bytes, "both ends count every connection");
    assert_eq!(
        (sum.pages_normal, sum.pages_zero),
        (dsum.pages_normal, dsum.pages_zero)
    );
}

#[test]
fn zstd_moves_fewer_bytes_for_compressible_pages_and_never_sends_zero_pages() {
    let pages = 2048;
    let still = GuestSpec {
        ab: false,
        ..GuestSpec::ab(pages)
    };
    let mut a = FakeSource::new(still.clone());
    let (r, t, _) = over_tcp(&mut a, &params(2, Compression::None));
    let plain = r.unwrap();
    assert!(t.ram == a.ram());
    let mut b = FakeSource::new(still);
    let (r, t, _) = over_tcp(&mut b, &params(2, Compression::Zstd { level: 3 }));
    let packed = r.unwrap();
    assert!(t.ram == b.ram());
    assert!(
        packed.bytes * 2 < plain.bytes,
        "zstd {} bytes, none {}",
        packed.bytes,
        plain.bytes
    );
    // Zero pages travel as runs: the whole zero range costs almost nothing.
    assert!(
        plain.bytes < (IMAGE_PAGES + 64) * PAGE_SIZE as u64,
        "{}",
        plain.bytes
    );
}

#[test]
fn compression_alone_works_on_the_main_connection_and_in_a_snapshot() {
    let pages = 512;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    let (r, t, dr) = over_tcp(&mut src, &params(0, Compression::Zstd { level: 1 }));
    r.unwrap();
    dr.unwrap();
    assert!(t.ram == src.ram());
    let dir = std::env::temp_dir().join(format!("vmm-zsnap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uri = transport::Uri::File(dir.join("snap.bin"));
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    let p = params(0, Compression::Zstd { level: 1 });
    precopy::migrate_to(&mut src, &uri, &p, &mut |_| {}, &CancelToken::default()).unwrap();
    let mut t = FakeTarget::default();
    incoming::receive_from(&uri, &mut t).unwrap();
    assert!(t.ram == src.ram());
    // Channels need a socket.
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    let e = precopy::migrate_to(
        &mut src,
        &uri,
        &params(2, Compression::None),
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("data channels need a tcp: or unix: destination"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stripes_keep_each_page_on_one_channel() {
    use super::channel_of;
    assert_eq!(channel_of(0, 4), 0);
    assert_eq!(channel_of(255, 4), 0);
    assert_eq!(channel_of(256, 4), 1);
    assert_eq!(channel_of(4 * 256, 4), 0);
    assert_eq!(channel_of(7, 1), 0);
}

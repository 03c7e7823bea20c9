//! Client ↔ server round trips over a unix socket pair.

use std::sync::Arc;

use super::harness::*;
use crate::wire::*;
use crate::{ClientError, End, ExportEntry, MemExport};

#[test]
fn read_write_zeroes_trim_flush() {
    let (mut c, h, disk) = client("disk");
    assert_eq!(c.size(), DISK as u64);
    assert!(!c.read_only());
    assert!(c.has_block_status());
    assert_eq!(c.block_size(), (1, 4096, 32 << 20));

    let mut buf = vec![0; 8192];
    c.read(0, &mut buf).unwrap();
    assert_eq!(buf, disk_contents()[..8192]);

    c.write(100_000, b"hello nbd", false).unwrap();
    c.write(200_000, &[5; 5000], true).unwrap();
    let mut got = [0; 9];
    c.read(100_000, &mut got).unwrap();
    assert_eq!(&got, b"hello nbd");

    c.write_zeroes(0, 100, false).unwrap();
    c.write_zeroes(200_000, 10, true).unwrap();
    c.trim(65536, 4096).unwrap();
    c.flush().unwrap();
    c.disconnect().unwrap();

    let s = h.join().unwrap().unwrap();
    assert_eq!(s.end, End::Disconnect);
    assert_eq!(s.stats.export.as_deref(), Some("disk"));
    assert!(s.stats.structured);

    let mut want = disk_contents();
    want[100_000..100_009].copy_from_slice(b"hello nbd");
    want[200_000..205_000].fill(5);
    want[..100].fill(0);
    want[200_000..200_010].fill(0);
    want[65536..69632].fill(0);
    assert_eq!(disk.contents(), want);
}

#[test]
fn block_status_reports_holes() {
    let (mut c, h, _) = client("disk");
    let runs = c.block_status(0, 128 << 10).unwrap();
    let hz = STATE_HOLE | STATE_ZERO;
    assert_eq!(runs, vec![(4096, 0), (61440, hz), (4096, 0), (61440, hz)]);
    // From an unaligned offset, at most the asked length.
    let runs = c.block_status(4000, 200).unwrap();
    assert_eq!(runs, vec![(96, 0), (104, hz)]);
    c.disconnect().unwrap();
    assert_eq!(h.join().unwrap().unwrap().stats.requests, 3);
}

#[test]
fn reads_over_holes_are_reassembled() {
    let (mut c, h, _) = client("disk");
    let mut all = vec![0xee; DISK];
    c.read(0, &mut all).unwrap();
    assert_eq!(all, disk_contents());
    let mut part = vec![0xee; 70_000];
    c.read(1000, &mut part).unwrap();
    assert_eq!(part, disk_contents()[1000..71_000]);
    c.disconnect().unwrap();
    h.join().unwrap().unwrap();
}

#[test]
fn structured_read_sends_hole_chunks() {
    let (mut r, h) = Raw::new();
    r.transmission(true);
    r.req(0, CMD_READ, 7, 0, 128 << 10);
    let mut kinds = Vec::new();
    loop {
        let (f, t, k, d) = r.chunk();
        assert_eq!(k, 7);
        let at = u64::from_be_bytes(d[..8].try_into().unwrap());
        let n = match t {
            CHUNK_OFFSET_DATA => d.len() as u64 - 8,
            CHUNK_OFFSET_HOLE => u64::from(u32::from_be_bytes(d[8..12].try_into().unwrap())),
            t => panic!("chunk type {t}"),
        };
        kinds.push((t, at, n));
        if f & REPLY_FLAG_DONE != 0 {
            break;
        }
    }
    let (d, o) = (CHUNK_OFFSET_DATA, CHUNK_OFFSET_HOLE);
    assert_eq!(
        kinds,
        vec![
            (d, 0, 4096),
            (o, 4096, 61440),
            (d, 65536, 4096),
            (o, 69632, 61440)
        ]
    );
    // DF: one data chunk.
    r.req(CMD_FLAG_DF, CMD_READ, 8, 0, 128 << 10);
    let (f, t, _, data) = r.chunk();
    assert_eq!(
        (f, t, data.len()),
        (REPLY_FLAG_DONE, CHUNK_OFFSET_DATA, 8 + (128 << 10))
    );
    drop(r);
    assert_eq!(h.join().unwrap().unwrap().end, End::Closed);
}

#[test]
fn large_requests_are_split() {
    let size = 40 << 20;
    let big = Arc::new(MemExport::new(size));
    let list = vec![ExportEntry {
        name: "big".into(),
        description: String::new(),
        writable: true,
        export: big.clone(),
    }];
    let (s, h) = spawn(Arc::new(list), None);
    let mut c = crate::Client::connect(Box::new(s), "big", None).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i / 4096) as u8 ^ (i as u8)).collect();
    c.write(0, &data, false).unwrap();
    let mut back = vec![0; size];
    c.read(0, &mut back).unwrap();
    assert!(back == data);
    c.write_zeroes(0, size as u64, false).unwrap();
    c.disconnect().unwrap();
    let s = h.join().unwrap().unwrap();
    // 2 writes + 2 reads + 1 write-zeroes + DISC.
    assert_eq!(s.stats.requests, 6);
    assert!(s.stats.max_buffer <= 32 << 20);
    assert!(big.contents().iter().all(|&b| b == 0));
}

#[test]
fn read_only_export_refuses_writes() {
    let (mut c, h, _) = client("ro");
    assert!(c.read_only());
    let e = c.write(0, b"x", false).unwrap_err();
    assert!(matches!(e, ClientError::Server { errno: EPERM, .. }), "{e}");
    assert!(e.to_string().contains("EPERM"), "{e}");
    let e = c.write_zeroes(0, 10, false).unwrap_err();
    assert!(
        matches!(e, ClientError::Server { .. } | ClientError::Unsupported(_)),
        "{e}"
    );
    let mut b = [0; 4];
    c.read(8188, &mut b).unwrap();
    assert_eq!(b, [7; 4]);
    c.disconnect().unwrap();
    h.join().unwrap().unwrap();
}

#[test]
fn client_checks_ranges_locally() {
    let (mut c, h, _) = client("disk");
    let e = c.read(DISK as u64 - 1, &mut [0; 2]).unwrap_err();
    assert!(matches!(e, ClientError::OutOfRange { .. }), "{e}");
    assert!(matches!(
        c.block_status(0, 0),
        Err(ClientError::InvalidArgument(_))
    ));
    // Still usable.
    c.read(0, &mut [0; 2]).unwrap();
    c.disconnect().unwrap();
    h.join().unwrap().unwrap();
}

#[test]
fn simple_replies_without_structured() {
    let (mut r, h) = Raw::new();
    r.transmission(false);
    assert_eq!(r.good_read(65536, 4), vec![0xab; 4]);
    r.req(0, CMD_WRITE, 3, 10, 3);
    r.send(b"abc");
    assert_eq!(r.simple(), (0, 3));
    assert_eq!(r.good_read(10, 3), b"abc");
    r.req(0, CMD_BLOCK_STATUS, 4, 0, 4096);
    assert_eq!(r.simple(), (EINVAL, 4));
    r.req(0, CMD_DISC, 5, 0, 0);
    r.assert_closed();
    let s = h.join().unwrap().unwrap();
    assert_eq!((s.end, s.stats.requests), (End::Disconnect, 5));
}

#[test]
fn concurrent_connections_share_the_export() {
    let (ex, disk) = exports();
    let handles: Vec<_> = (0..4u8)
        .map(|i| {
            let ex = ex.clone();
            std::thread::spawn(move || {
                let (s, h) = spawn(ex, None);
                let mut c = crate::Client::connect(Box::new(s), "disk", None).unwrap();
                let at = 300_000 + u64::from(i) * 10_000;
                c.write(at, &[i + 1; 10_000], false).unwrap();
                let mut back = vec![0; 10_000];
                c.read(at, &mut back).unwrap();
                assert!(back.iter().all(|&b| b == i + 1));
                c.disconnect().unwrap();
                h.join().unwrap().unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().end, End::Disconnect);
    }
    let d = disk.contents();
    for i in 0..4usize {
        let at = 300_000 + i * 10_000;
        assert!(d[at..at + 10_000].iter().all(|&b| b as usize == i + 1));
    }
}

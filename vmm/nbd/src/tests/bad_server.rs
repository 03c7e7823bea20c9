//! A misbehaving server written with raw bytes: the client validates
//! every reply and reports what was wrong.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::wire::*;
use crate::{Client, ClientError};

/// Reply bytes for the first request, given its cookie.
type Script = Box<dyn FnOnce(u64) -> Vec<u8> + Send>;

fn opt_reply(s: &mut UnixStream, opt: u32, ty: u32, data: &[u8]) {
    let mut v = Vec::new();
    v.put_u64(REPLY_MAGIC);
    v.put_u32(opt);
    v.put_u32(ty);
    v.put_u32(data.len() as u32);
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
}

/// A fake server: negotiates (GO answered ERR_UNSUP when `old`, then
/// EXPORT_NAME), then answers the first request with `script`.
fn fake(old: bool, script: Script) -> (Client, JoinHandle<()>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let h = std::thread::spawn(move || {
        let mut g = Vec::new();
        g.put_u64(NBD_MAGIC);
        g.put_u64(IHAVEOPT);
        g.put_u16(FLAG_FIXED_NEWSTYLE);
        b.write_all(&g).unwrap();
        let mut flags = [0; 4];
        b.read_exact(&mut flags).unwrap();
        assert_eq!(flags, C_FIXED_NEWSTYLE.to_be_bytes());
        loop {
            let mut h = [0; 16];
            b.read_exact(&mut h).unwrap();
            let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
            let len = u32::from_be_bytes(h[12..].try_into().unwrap());
            let mut d = vec![0; len as usize];
            b.read_exact(&mut d).unwrap();
            match opt {
                OPT_STRUCTURED_REPLY => opt_reply(&mut b, opt, REP_ACK, &[]),
                OPT_SET_META_CONTEXT => {
                    let ctx = [&9u32.to_be_bytes()[..], BASE_ALLOCATION.as_bytes()].concat();
                    opt_reply(&mut b, opt, REP_META_CONTEXT, &ctx);
                    opt_reply(&mut b, opt, REP_ACK, &[]);
                }
                OPT_GO if old => opt_reply(&mut b, opt, REP_ERR_UNSUP, &[]),
                OPT_GO => {
                    let mut i = Vec::new();
                    i.put_u16(INFO_EXPORT);
                    i.put_u64(4096);
                    i.put_u16(TF_HAS_FLAGS | TF_SEND_FLUSH);
                    opt_reply(&mut b, opt, REP_INFO, &i);
                    opt_reply(&mut b, opt, REP_ACK, &[]);
                    break;
                }
                OPT_EXPORT_NAME => {
                    let mut r = Vec::new();
                    r.put_u64(4096);
                    r.put_u16(TF_HAS_FLAGS);
                    r.extend_from_slice(&[0; 124]);
                    b.write_all(&r).unwrap();
                    break;
                }
                o => panic!("unexpected option {o}"),
            }
        }
        let mut req = [0; 28];
        if b.read_exact(&mut req).is_err() {
            return;
        }
        let cookie = u64::from_be_bytes(req[8..16].try_into().unwrap());
        let _ = b.write_all(&script(cookie));
        let _ = b.shutdown(std::net::Shutdown::Write);
        // Hold the connection until the client is done.
        let _ = b.read_to_end(&mut Vec::new());
    });
    let c = Client::connect(Box::new(a), "x", None).unwrap();
    (c, h)
}

fn chunk(flags: u16, ty: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_u32(STRUCTURED_REPLY_MAGIC);
    v.put_u16(flags);
    v.put_u16(ty);
    v.put_u64(cookie);
    v.put_u32(payload.len() as u32);
    v.extend_from_slice(payload);
    v
}

fn data(at: u64, bytes: &[u8]) -> Vec<u8> {
    [&at.to_be_bytes()[..], bytes].concat()
}

/// The error of an 8-byte read at 0 answered by `script`.
fn read_error(script: Script) -> ClientError {
    let (mut c, h) = fake(false, script);
    let e = c.read(0, &mut [0; 8]).unwrap_err();
    // A broken connection stays broken.
    if !matches!(e, ClientError::Server { .. }) {
        assert!(matches!(
            c.read(0, &mut [0; 1]),
            Err(ClientError::Protocol(_))
        ));
    }
    drop(c);
    h.join().unwrap();
    e
}

fn assert_protocol(e: ClientError, what: &str) {
    match e {
        ClientError::Protocol(m) => assert!(m.contains(what), "{m}"),
        e => panic!("{e}"),
    }
}

#[test]
fn wrong_cookie() {
    let e = read_error(Box::new(|k| {
        chunk(1, CHUNK_OFFSET_DATA, k + 1, &data(0, &[0; 8]))
    }));
    assert_protocol(e, "cookie");
}

#[test]
fn bad_reply_magic() {
    assert_protocol(read_error(Box::new(|_| vec![0x11; 32])), "magic");
}

#[test]
fn data_outside_the_request() {
    let e = read_error(Box::new(|k| {
        chunk(1, CHUNK_OFFSET_DATA, k, &data(100, &[0; 4]))
    }));
    assert_protocol(e, "outside");
    let e = read_error(Box::new(|k| {
        chunk(
            1,
            CHUNK_OFFSET_HOLE,
            k,
            &[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5],
        )
    }));
    assert_protocol(e, "outside");
}

#[test]
fn oversized_chunk_is_not_allocated() {
    let e = read_error(Box::new(|k| {
        let mut v = chunk(1, CHUNK_OFFSET_DATA, k, &[]);
        v[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        v
    }));
    assert_protocol(e, "OFFSET_DATA");
}

#[test]
fn incomplete_and_overlapping_reads() {
    let e = read_error(Box::new(|k| {
        chunk(1, CHUNK_OFFSET_DATA, k, &data(0, &[1; 4]))
    }));
    assert_protocol(e, "cover");
    let e = read_error(Box::new(|k| {
        let mut v = chunk(0, CHUNK_OFFSET_DATA, k, &data(0, &[1; 6]));
        v.extend(chunk(1, CHUNK_OFFSET_DATA, k, &data(4, &[1; 4])));
        v
    }));
    assert_protocol(e, "overlapping");
}

#[test]
fn success_in_pieces_and_holes() {
    let (mut c, h) = fake(
        false,
        Box::new(|k| {
            let mut v = chunk(0, CHUNK_OFFSET_DATA, k, &data(6, &[6, 7]));
            v.extend(chunk(
                0,
                CHUNK_OFFSET_HOLE,
                k,
                &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4],
            ));
            v.extend(chunk(1, CHUNK_OFFSET_DATA, k, &data(0, &[9, 9])));
            v
        }),
    );
    let mut b = [0xff; 8];
    c.read(0, &mut b).unwrap();
    assert_eq!(b, [9, 9, 0, 0, 0, 0, 6, 7]);
    drop(c);
    h.join().unwrap();
}

#[test]
fn error_chunks_become_server_errors() {
    let e = read_error(Box::new(|k| {
        let mut p = Vec::new();
        p.put_u32(EIO);
        p.put_u16(4);
        p.extend_from_slice(b"boom");
        let mut v = chunk(0, CHUNK_ERROR, k, &p);
        v.extend(chunk(1, CHUNK_NONE, k, &[]));
        v
    }));
    match &e {
        ClientError::Server { errno, message } => {
            assert_eq!((*errno, message.as_str()), (EIO, "boom"))
        }
        e => panic!("{e}"),
    }
    assert_eq!(e.to_string(), "server error EIO (5): boom");
}

#[test]
fn missing_done_and_simple_success_to_structured_read() {
    let e = read_error(Box::new(|k| {
        chunk(0, CHUNK_OFFSET_DATA, k, &data(0, &[0; 8]))
    }));
    assert!(matches!(e, ClientError::Io(_)), "{e}");
    let e = read_error(Box::new(|k| {
        let mut v = Vec::new();
        v.put_u32(SIMPLE_REPLY_MAGIC);
        v.put_u32(0);
        v.put_u64(k);
        v
    }));
    assert_protocol(e, "simple reply");
}

#[test]
fn block_status_validation() {
    let status = |id: u32, descs: &[(u32, u32)]| {
        let mut p = Vec::new();
        p.put_u32(id);
        for (l, f) in descs {
            p.put_u32(*l);
            p.put_u32(*f);
        }
        p
    };
    let p = status(3, &[(10, 0)]);
    let (mut c, h) = fake(
        false,
        Box::new(move |k| chunk(1, CHUNK_BLOCK_STATUS, k, &p)),
    );
    assert_protocol(c.block_status(0, 10).unwrap_err(), "context");
    drop(c);
    h.join().unwrap();

    // The last extent may run past the request: clamped.
    let p = status(9, &[(4, 3), (100, 0)]);
    let (mut c, h) = fake(
        false,
        Box::new(move |k| chunk(1, CHUNK_BLOCK_STATUS, k, &p)),
    );
    assert_eq!(c.block_status(0, 10).unwrap(), vec![(4, 3), (6, 0)]);
    drop(c);
    h.join().unwrap();

    let p = status(9, &[(10, 0), (5, 0)]);
    let (mut c, h) = fake(
        false,
        Box::new(move |k| chunk(1, CHUNK_BLOCK_STATUS, k, &p)),
    );
    assert_protocol(c.block_status(0, 10).unwrap_err(), "beyond");
    drop(c);
    h.join().unwrap();
}

#[test]
fn export_name_fallback_when_go_is_unsupported() {
    let (mut c, h) = fake(
        true,
        Box::new(|k| {
            let mut v = Vec::new();
            v.put_u32(SIMPLE_REPLY_MAGIC);
            v.put_u32(0);
            v.put_u64(k);
            v
        }),
    );
    assert_eq!(c.size(), 4096);
    assert_eq!(c.block_size(), (1, 4096, 32 << 20));
    // Without SEND_WRITE_ZEROES the client writes zeroes itself.
    c.write_zeroes(0, 16, false).unwrap();
    drop(c);
    h.join().unwrap();
}

//! A hostile client written with raw bytes: the server answers with
//! errors where it can, closes where it must, and never panics.

use super::harness::*;
use crate::ServeErrorKind;
use crate::wire::*;

fn protocol_error(h: Served) -> String {
    let e = h.join().unwrap().unwrap_err();
    assert!(matches!(e.kind, ServeErrorKind::Protocol(_)), "{e}");
    e.to_string()
}

#[test]
fn bad_client_flags_close() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE | 8);
    r.assert_closed();
    assert!(protocol_error(h).contains("client flags"));
}

#[test]
fn bad_option_magic_closes() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    r.send(&[0x55; 16]);
    r.assert_closed();
    assert!(protocol_error(h).contains("option magic"));
}

#[test]
fn oversized_option_data() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE | C_NO_ZEROES);
    r.opt(OPT_GO, &vec![0; 100 << 10]);
    assert_eq!(r.reply().1, REP_ERR_TOO_BIG);
    assert_eq!(r.go("disk").last(), Some(&REP_ACK));
    drop(r);
    let s = h.join().unwrap().unwrap();
    assert!(s.stats.max_buffer <= 64 << 10, "{}", s.stats.max_buffer);

    // Beyond the discard bound: closed without reading it.
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    let mut head = Vec::new();
    head.put_u64(IHAVEOPT);
    head.put_u32(OPT_INFO);
    head.put_u32(u32::MAX);
    r.send(&head);
    r.assert_closed();
    protocol_error(h);
}

#[test]
fn too_many_options_close() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    for _ in 0..MAX_OPTIONS {
        r.opt(OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(r.reply().1, REP_ACK);
    }
    r.opt(OPT_STRUCTURED_REPLY, &[]);
    r.assert_closed();
    assert!(protocol_error(h).contains("options"));
}

#[test]
fn out_of_range_requests_keep_the_connection() {
    let (mut r, h) = Raw::new();
    r.transmission(false);
    let end = DISK as u64;
    r.req(0, CMD_READ, 1, end - 1, 2);
    assert_eq!(r.simple(), (EINVAL, 1));
    r.req(0, CMD_READ, 2, u64::MAX, 2);
    assert_eq!(r.simple(), (EINVAL, 2));
    r.req(0, CMD_WRITE, 3, end, 4);
    r.send(b"abcd");
    assert_eq!(r.simple(), (ENOSPC, 3));
    r.req(0, CMD_WRITE, 4, u64::MAX - 1, 4);
    r.send(b"abcd");
    assert_eq!(r.simple(), (EINVAL, 4));
    r.req(0, CMD_WRITE_ZEROES, 5, end - 10, 11);
    assert_eq!(r.simple(), (ENOSPC, 5));
    r.req(0, CMD_TRIM, 6, end, 1);
    assert_eq!(r.simple(), (EINVAL, 6));
    r.req(0, CMD_CACHE, 7, end, 1);
    assert_eq!(r.simple(), (EINVAL, 7));
    r.req(0, CMD_READ, 8, 0, 0);
    assert_eq!(r.simple(), (EINVAL, 8));
    r.req(0, CMD_WRITE, 9, 0, 0);
    assert_eq!(r.simple(), (EINVAL, 9));
    r.req(0, CMD_WRITE_ZEROES, 10, 0, 1);
    r.req(CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 11, 0, 1);
    assert_eq!(r.simple(), (0, 10));
    assert_eq!(r.simple(), (ENOTSUP, 11));
    assert_eq!(r.good_read(0, 3), [0, 2, 3]);
    drop(r);
    let s = h.join().unwrap().unwrap();
    assert_eq!(s.stats.requests, 12);
}

#[test]
fn huge_read_is_refused_and_connection_survives() {
    let (mut r, h) = Raw::new();
    r.transmission(true);
    r.req(0, CMD_READ, 1, 0, u32::MAX);
    assert_eq!(r.chunk_errno(), EINVAL);
    r.req(0, CMD_READ, 2, 0, 2);
    let (f, t, k, d) = r.chunk();
    assert_eq!((f, t, k), (REPLY_FLAG_DONE, CHUNK_OFFSET_DATA, 2));
    assert_eq!(d, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    drop(r);
    let s = h.join().unwrap().unwrap();
    assert!(s.stats.max_buffer < 1 << 20);
}

#[test]
fn huge_write_is_refused_then_closed() {
    for structured in [false, true] {
        let (mut r, h) = Raw::new();
        r.transmission(structured);
        r.req(0, CMD_WRITE, 1, 0, u32::MAX);
        r.send(&[0; 4096]);
        if structured {
            assert_eq!(r.chunk_errno(), EINVAL);
        } else {
            assert_eq!(r.simple(), (EINVAL, 1));
        }
        r.assert_closed();
        let e = h.join().unwrap().unwrap_err();
        assert!(matches!(e.kind, ServeErrorKind::Protocol(_)), "{e}");
        assert!(e.stats.max_buffer < 1 << 20, "{}", e.stats.max_buffer);
    }
}

#[test]
fn unknown_command_type_and_flags() {
    let (mut r, h) = Raw::new();
    r.transmission(true);
    r.req(0, 42, 1, 0, 0);
    assert_eq!(r.chunk_errno(), EINVAL);
    r.req(0x100, CMD_READ, 2, 0, 1);
    assert_eq!(r.chunk_errno(), EINVAL);
    // A WRITE with bad flags still has its payload consumed.
    r.req(0x8000, CMD_WRITE, 3, 0, 3);
    r.send(b"xyz");
    assert_eq!(r.chunk_errno(), EINVAL);
    r.req(0, CMD_FLUSH, 4, 0, 0);
    assert_eq!(r.chunk(), (REPLY_FLAG_DONE, CHUNK_NONE, 4, vec![]));
    r.req(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 5, 0, 1 << 20);
    let (_, t, _, d) = r.chunk();
    assert_eq!(t, CHUNK_BLOCK_STATUS);
    assert_eq!(d, [0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 0]);
    drop(r);
    h.join().unwrap().unwrap();
}

#[test]
fn read_only_refuses_after_consuming_payload() {
    let (ex, _) = exports();
    let (s, h) = spawn(ex, None);
    let mut r = Raw(s);
    r.hello(C_FIXED_NEWSTYLE | C_NO_ZEROES);
    assert_eq!(r.go("ro").last(), Some(&REP_ACK));
    r.req(0, CMD_WRITE, 1, 0, 5);
    r.send(b"hello");
    assert_eq!(r.simple(), (EPERM, 1));
    r.req(0, CMD_TRIM, 2, 0, 5);
    assert_eq!(r.simple(), (EPERM, 2));
    r.req(0, CMD_WRITE_ZEROES, 3, 0, 5);
    assert_eq!(r.simple(), (EPERM, 3));
    assert_eq!(r.good_read(0, 2), [7, 7]);
    drop(r);
    h.join().unwrap().unwrap();
}

#[test]
fn bad_request_magic_closes() {
    let (mut r, h) = Raw::new();
    r.transmission(false);
    r.send(&[0x42; 28]);
    r.assert_closed();
    assert!(protocol_error(h).contains("request magic"));
}

#[test]
fn disconnect_mid_request_is_an_error() {
    let (mut r, h) = Raw::new();
    r.transmission(false);
    r.send(&REQUEST_MAGIC.to_be_bytes());
    r.send(&[0; 6]);
    drop(r);
    let e = h.join().unwrap().unwrap_err();
    assert!(matches!(e.kind, ServeErrorKind::Truncated), "{e}");

    // Mid-payload.
    let (mut r, h) = Raw::new();
    r.transmission(true);
    r.req(0, CMD_WRITE, 1, 0, 1000);
    r.send(&[1; 500]);
    drop(r);
    let e = h.join().unwrap().unwrap_err();
    assert!(matches!(e.kind, ServeErrorKind::Truncated), "{e}");
    assert_eq!(e.stats.requests, 1);

    // Mid-option.
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    r.send(&IHAVEOPT.to_be_bytes());
    drop(r);
    let e = h.join().unwrap().unwrap_err();
    assert!(matches!(e.kind, ServeErrorKind::Truncated), "{e}");
}

//! The option phase: LIST, INFO, unknown exports, TLS, meta contexts,
//! EXPORT_NAME.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::harness::*;
use crate::wire::*;
use crate::{Client, ClientError, End, ServeErrorKind, Upgrade};

#[test]
fn list_exports() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_LIST, &[]);
    let mut names = Vec::new();
    loop {
        let (opt, ty, d) = r.reply();
        assert_eq!(opt, OPT_LIST);
        if ty == REP_ACK {
            break;
        }
        assert_eq!(ty, REP_SERVER);
        let n = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
        names.push(String::from_utf8(d[4..4 + n].to_vec()).unwrap());
    }
    assert_eq!(names, ["disk", "ro"]);
    r.opt(OPT_LIST, b"junk");
    assert_eq!(r.reply().1, REP_ERR_INVALID);
    r.opt(OPT_ABORT, &[]);
    assert_eq!(r.reply().1, REP_ACK);
    let s = h.join().unwrap().unwrap();
    assert_eq!((s.end, s.stats.options), (End::Abort, 3));
}

#[test]
fn info_then_go() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE | C_NO_ZEROES);
    r.opt(
        OPT_INFO,
        &Raw::info_data("disk", &[INFO_NAME, INFO_DESCRIPTION]),
    );
    let (_, ty, d) = r.reply();
    assert_eq!(ty, REP_INFO);
    let mut want = Vec::new();
    want.put_u16(INFO_EXPORT);
    want.put_u64(DISK as u64);
    want.put_u16(
        TF_HAS_FLAGS
            | TF_SEND_FLUSH
            | TF_CAN_MULTI_CONN
            | TF_SEND_FUA
            | TF_SEND_TRIM
            | TF_SEND_WRITE_ZEROES,
    );
    assert_eq!(d, want);
    let (_, _, d) = r.reply();
    assert_eq!(d, [&[0, 1][..], b"disk"].concat());
    let (_, _, d) = r.reply();
    assert_eq!(d, [&[0, 2][..], b"a sparse test disk"].concat());
    let (_, _, d) = r.reply();
    assert_eq!(d, [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]);
    assert_eq!(r.reply().1, REP_ACK);
    // Malformed INFO: info count does not match.
    let mut bad = Raw::info_data("disk", &[1]);
    bad.pop();
    r.opt(OPT_INFO, &bad);
    assert_eq!(r.reply().1, REP_ERR_INVALID);
    assert_eq!(r.go("disk"), [REP_INFO, REP_INFO, REP_ACK]);
    assert_eq!(r.good_read(0, 2), [1, 2]);
    drop(r);
    assert_eq!(
        h.join().unwrap().unwrap().stats.export.as_deref(),
        Some("disk")
    );
}

#[test]
fn unknown_export_names_it() {
    let (ex, _) = exports();
    let (s, h) = spawn(ex, None);
    let e = Client::connect(Box::new(s), "nope", None).unwrap_err();
    match &e {
        ClientError::Refused {
            option,
            reply,
            message,
        } => {
            assert_eq!((*option, *reply), (OPT_GO, REP_ERR_UNKNOWN));
            assert!(message.contains("nope"), "{message}");
        }
        e => panic!("{e}"),
    }
    assert!(e.to_string().contains("NBD_REP_ERR_UNKNOWN"), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(h.join().unwrap().unwrap().end, End::Closed);

    // GO itself (without structured replies) names it too.
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_GO, &Raw::info_data("nope", &[]));
    let (_, ty, msg) = r.reply();
    assert_eq!(ty, REP_ERR_UNKNOWN);
    assert!(String::from_utf8(msg).unwrap().contains("nope"));
    // The negotiation continues.
    assert_eq!(r.go("disk").last(), Some(&REP_ACK));
    drop(r);
    h.join().unwrap().unwrap();
}

#[test]
fn tls_required() {
    let (ex, _) = exports();
    let up = Arc::new(Passthrough::default());
    let (s, h) = spawn(ex.clone(), Some(up.clone() as Arc<dyn Upgrade>));
    let e = Client::connect(Box::new(s), "disk", None).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Refused {
                reply: REP_ERR_TLS_REQD,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(h.join().unwrap().unwrap().end, End::Closed);

    let (s, h) = spawn(ex, Some(up.clone() as Arc<dyn Upgrade>));
    let client_up = Passthrough::default();
    let mut c = Client::connect(Box::new(s), "disk", Some(&client_up)).unwrap();
    let mut b = [0; 3];
    c.read(0, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3]);
    c.disconnect().unwrap();
    let s = h.join().unwrap().unwrap();
    assert!(s.stats.tls);
    assert_eq!(up.0.load(Ordering::SeqCst), 1);
    assert_eq!(client_up.0.load(Ordering::SeqCst), 1);
}

#[test]
fn tls_state_machine() {
    let (ex, _) = exports();
    let up: Arc<dyn Upgrade> = Arc::new(Passthrough::default());
    let (s, h) = spawn(ex.clone(), Some(up.clone()));
    let mut r = Raw(s);
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_LIST, &[]);
    assert_eq!(r.reply().1, REP_ERR_TLS_REQD);
    r.opt(OPT_GO, &Raw::info_data("disk", &[]));
    assert_eq!(r.reply().1, REP_ERR_TLS_REQD);
    r.opt(OPT_STARTTLS, b"x");
    assert_eq!(r.reply().1, REP_ERR_INVALID);
    r.opt(OPT_STARTTLS, &[]);
    assert_eq!(r.reply().1, REP_ACK);
    r.opt(OPT_STARTTLS, &[]);
    assert_eq!(r.reply().1, REP_ERR_INVALID);
    assert_eq!(r.go("disk").last(), Some(&REP_ACK));
    drop(r);
    assert!(h.join().unwrap().unwrap().stats.tls);

    // EXPORT_NAME before STARTTLS closes the connection.
    let (s, h) = spawn(ex.clone(), Some(up));
    let mut r = Raw(s);
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_EXPORT_NAME, b"disk");
    r.assert_closed();
    let e = h.join().unwrap().unwrap_err();
    assert!(matches!(e.kind, ServeErrorKind::Protocol(_)), "{e}");

    // No upgrader: STARTTLS is unsupported, the rest works.
    let (s, h) = spawn(ex, None);
    let mut r = Raw(s);
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_STARTTLS, &[]);
    assert_eq!(r.reply().1, REP_ERR_UNSUP);
    assert_eq!(r.go("disk").last(), Some(&REP_ACK));
    drop(r);
    h.join().unwrap().unwrap();
}

#[test]
fn meta_contexts() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_LIST_META_CONTEXT, &Raw::meta_data("disk", &[]));
    assert_eq!(r.reply().1, REP_ERR_INVALID, "needs structured replies");
    r.opt(OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(r.reply().1, REP_ERR_INVALID);
    r.opt(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(r.reply().1, REP_ACK);
    let ctx = [&1u32.to_be_bytes()[..], BASE_ALLOCATION.as_bytes()].concat();
    for q in [
        &[][..],
        &["base:"],
        &["base:allocation", "qemu:dirty-bitmap:x"],
    ] {
        r.opt(OPT_LIST_META_CONTEXT, &Raw::meta_data("disk", q));
        assert_eq!(
            r.reply(),
            (OPT_LIST_META_CONTEXT, REP_META_CONTEXT, ctx.clone())
        );
        assert_eq!(r.reply().1, REP_ACK);
    }
    r.opt(OPT_LIST_META_CONTEXT, &Raw::meta_data("disk", &["other:"]));
    assert_eq!(r.reply().1, REP_ACK);
    r.opt(OPT_LIST_META_CONTEXT, &Raw::meta_data("nope", &[]));
    assert_eq!(r.reply().1, REP_ERR_UNKNOWN);
    let mut bad = Raw::meta_data("disk", &["base:allocation"]);
    bad.push(0);
    r.opt(OPT_SET_META_CONTEXT, &bad);
    assert_eq!(r.reply().1, REP_ERR_INVALID);
    // Selected for another export: not active on "disk".
    r.opt(
        OPT_SET_META_CONTEXT,
        &Raw::meta_data("ro", &[BASE_ALLOCATION]),
    );
    assert_eq!(r.reply().1, REP_META_CONTEXT);
    assert_eq!(r.reply().1, REP_ACK);
    assert_eq!(r.go("disk").last(), Some(&REP_ACK));
    r.req(0, CMD_BLOCK_STATUS, 1, 0, 4096);
    assert_eq!(r.chunk_errno(), EINVAL);
    drop(r);
    h.join().unwrap().unwrap();
}

#[test]
fn export_name_with_and_without_zeroes() {
    for no_zeroes in [true, false] {
        let (mut r, h) = Raw::new();
        r.hello(if no_zeroes {
            C_FIXED_NEWSTYLE | C_NO_ZEROES
        } else {
            C_FIXED_NEWSTYLE
        });
        r.opt(OPT_EXPORT_NAME, b"disk");
        let mut head = [0; 10];
        std::io::Read::read_exact(&mut r.0, &mut head).unwrap();
        assert_eq!(&head[..8], &(DISK as u64).to_be_bytes());
        if !no_zeroes {
            let mut z = [1; 124];
            std::io::Read::read_exact(&mut r.0, &mut z).unwrap();
            assert_eq!(z, [0; 124]);
        }
        assert_eq!(r.good_read(0, 3), [1, 2, 3]);
        r.req(0, CMD_DISC, 0, 0, 0);
        r.assert_closed();
        assert_eq!(h.join().unwrap().unwrap().end, End::Disconnect);
    }
    // Unknown export: closed.
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE);
    r.opt(OPT_EXPORT_NAME, b"nope");
    r.assert_closed();
    let e = h.join().unwrap().unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn unknown_options_are_unsupported() {
    let (mut r, h) = Raw::new();
    r.hello(C_FIXED_NEWSTYLE | C_NO_ZEROES);
    for opt in [OPT_EXTENDED_HEADERS, 4, 42, u32::MAX] {
        r.opt(opt, b"whatever");
        let want = format!("option {opt} ({}) is not supported", option_name(opt));
        assert_eq!(r.reply(), (opt, REP_ERR_UNSUP, want.into_bytes()));
    }
    assert_eq!(r.go("disk").last(), Some(&REP_ACK));
    drop(r);
    h.join().unwrap().unwrap();
}

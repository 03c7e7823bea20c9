//! The transmission phase: requests on the chosen export until the client
//! disconnects, closes, or breaks the protocol.

use std::io;

use super::negotiate::Session;
use super::{Conn, End, ServeErrorKind};
use crate::export::Export;
use crate::wire::*;

/// Zero runs at least this long are sent as OFFSET_HOLE chunks.
const MIN_HOLE: u64 = 4096;
/// At most this many chunks per structured READ reply (plus one tail).
const MAX_READ_CHUNKS: usize = 8;
/// At most this many descriptors in a BLOCK_STATUS reply.
const MAX_DESCRIPTORS: usize = 1 << 16;

/// A request header.
struct Request {
    flags: u16,
    ty: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

/// A failed command: the wire errno and a message.
struct Fail(u32, String);

fn fail<T>(errno: u32, msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail(errno, msg.into()))
}

fn io_fail(e: &io::Error) -> Fail {
    Fail(errno_of(e), e.to_string())
}

/// Whether the request loop goes on.
enum Flow {
    Continue,
    Disconnect,
}

/// Serves requests until the connection ends.
pub(crate) fn transmit(conn: &mut Conn, sess: &Session) -> Result<End, ServeErrorKind> {
    loop {
        let mut h = [0; 28];
        if !read_exact_or_eof(&mut *conn.s, &mut h)? {
            return Ok(End::Closed);
        }
        let mut c = Cursor::new(&h);
        let fields = (c.u32(), c.u16(), c.u16(), c.u64(), c.u64(), c.u32());
        let (Some(magic), Some(flags), Some(ty), Some(cookie), Some(offset), Some(len)) = fields
        else {
            return Err(ServeErrorKind::Protocol("short request header".into()));
        };
        if magic != REQUEST_MAGIC {
            return Err(ServeErrorKind::Protocol(format!(
                "bad request magic {magic:#x}"
            )));
        }
        conn.stats.requests += 1;
        let req = Request {
            flags,
            ty,
            cookie,
            offset,
            len,
        };
        if let Flow::Disconnect = request(conn, sess, &req)? {
            if let Err(e) = sess.entry.export.flush() {
                tracing::warn!(error = %e, "nbd: flush on disconnect failed");
            }
            return Ok(End::Disconnect);
        }
    }
}

/// `Ok` when [offset, offset+len) lies within the export; `beyond` is the
/// errno for a range past the end.
fn check_range(exp: &dyn Export, offset: u64, len: u64, beyond: u32) -> Result<(), Fail> {
    match offset.checked_add(len) {
        None => fail(EINVAL, "offset + length overflows"),
        Some(end) if end > exp.size() => fail(beyond, "range beyond the end of the export"),
        Some(_) => Ok(()),
    }
}

fn writable(sess: &Session) -> Result<(), Fail> {
    if sess.entry.writable {
        Ok(())
    } else {
        fail(EPERM, "export is read-only")
    }
}

fn fua(exp: &dyn Export, req: &Request) -> Result<(), Fail> {
    if req.flags & CMD_FLAG_FUA != 0 {
        exp.flush().map_err(|e| io_fail(&e))?;
    }
    Ok(())
}

/// Handles one request and sends its reply.
fn request(conn: &mut Conn, sess: &Session, req: &Request) -> Result<Flow, ServeErrorKind> {
    let exp = &*sess.entry.export;
    // A WRITE's payload is consumed first so the stream stays in sync.
    let mut payload = Vec::new();
    if req.ty == CMD_WRITE {
        if req.len > MAX_PAYLOAD {
            let msg = "write larger than the maximum block size";
            send_result(conn, sess, req.cookie, Err(Fail(EINVAL, msg.into())))?;
            return Err(ServeErrorKind::Protocol(format!(
                "NBD_CMD_WRITE of {} bytes (payload cannot be skipped)",
                req.len
            )));
        }
        payload = read_payload(&mut *conn.s, req.len as usize)?;
        conn.note_buffer(payload.capacity());
    }
    if req.flags & !CMD_FLAGS_KNOWN != 0 {
        let msg = format!("unknown command flags {:#x}", req.flags);
        send_result(conn, sess, req.cookie, fail(EINVAL, msg))?;
        return Ok(Flow::Continue);
    }
    let result = match req.ty {
        CMD_READ => return read(conn, sess, req).map(|()| Flow::Continue),
        CMD_BLOCK_STATUS => return block_status(conn, sess, req).map(|()| Flow::Continue),
        CMD_DISC => return Ok(Flow::Disconnect),
        CMD_WRITE => write(sess, req, &payload),
        CMD_FLUSH => exp.flush().map_err(|e| io_fail(&e)),
        CMD_TRIM => trim(sess, req),
        CMD_WRITE_ZEROES => write_zeroes(sess, req),
        CMD_CACHE => check_range(exp, req.offset, u64::from(req.len), EINVAL),
        other => fail(EINVAL, format!("unknown command type {other}")),
    };
    send_result(conn, sess, req.cookie, result)?;
    Ok(Flow::Continue)
}

fn write(sess: &Session, req: &Request, payload: &[u8]) -> Result<(), Fail> {
    let exp = &*sess.entry.export;
    writable(sess)?;
    if req.len == 0 {
        return fail(EINVAL, "zero-length write");
    }
    check_range(exp, req.offset, u64::from(req.len), ENOSPC)?;
    exp.write_at(payload, req.offset).map_err(|e| io_fail(&e))?;
    fua(exp, req)
}

fn trim(sess: &Session, req: &Request) -> Result<(), Fail> {
    let exp = &*sess.entry.export;
    writable(sess)?;
    check_range(exp, req.offset, u64::from(req.len), EINVAL)?;
    if req.len > 0 {
        exp.trim(req.offset, u64::from(req.len))
            .map_err(|e| io_fail(&e))?;
    }
    fua(exp, req)
}

fn write_zeroes(sess: &Session, req: &Request) -> Result<(), Fail> {
    let exp = &*sess.entry.export;
    writable(sess)?;
    if req.flags & CMD_FLAG_FAST_ZERO != 0 {
        return fail(ENOTSUP, "fast zeroing is not supported");
    }
    check_range(exp, req.offset, u64::from(req.len), ENOSPC)?;
    if req.len > 0 {
        let may_trim = req.flags & CMD_FLAG_NO_HOLE == 0;
        exp.write_zeroes(req.offset, u64::from(req.len), may_trim)
            .map_err(|e| io_fail(&e))?;
    }
    fua(exp, req)
}

/// A structured chunk header.
fn chunk_header(flags: u16, ty: u16, cookie: u64, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + 12);
    h.put_u32(STRUCTURED_REPLY_MAGIC);
    h.put_u16(flags);
    h.put_u16(ty);
    h.put_u64(cookie);
    h.put_u32(len as u32);
    h
}

/// An error chunk (with an offset for ERROR_OFFSET), flagged DONE.
fn error_chunk(conn: &mut Conn, cookie: u64, f: &Fail, at: Option<u64>) -> io::Result<()> {
    let msg = truncate_str(&f.1, 1024).as_bytes();
    let ty = if at.is_some() {
        CHUNK_ERROR_OFFSET
    } else {
        CHUNK_ERROR
    };
    let len = 6 + msg.len() + if at.is_some() { 8 } else { 0 };
    let mut c = chunk_header(REPLY_FLAG_DONE, ty, cookie, len);
    c.put_u32(f.0);
    c.put_u16(msg.len() as u16);
    c.extend_from_slice(msg);
    if let Some(at) = at {
        c.put_u64(at);
    }
    conn.send(&[&c])
}

/// The reply to a command without data: a simple reply, or NONE / ERROR
/// with DONE under structured replies.
fn send_result(
    conn: &mut Conn,
    sess: &Session,
    cookie: u64,
    r: Result<(), Fail>,
) -> io::Result<()> {
    if let Err(f) = &r {
        tracing::debug!(errno = errno_name(f.0), msg = %f.1, "nbd request failed");
    }
    if sess.structured {
        return match r {
            Ok(()) => conn.send(&[&chunk_header(REPLY_FLAG_DONE, CHUNK_NONE, cookie, 0)]),
            Err(f) => error_chunk(conn, cookie, &f, None),
        };
    }
    let mut h = Vec::with_capacity(16);
    h.put_u32(SIMPLE_REPLY_MAGIC);
    h.put_u32(r.err().map_or(0, |f| f.0));
    h.put_u64(cookie);
    conn.send(&[&h])
}

/// One piece of a structured READ reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Data(u64, u64),
    Hole(u64, u64),
}

/// Splits [offset, offset+len) into data and hole chunks from the
/// export's block status (zero runs of at least [`MIN_HOLE`] become
/// holes); anything the status does not cover is data.
fn plan_read(exp: &dyn Export, offset: u64, len: u64) -> Vec<Piece> {
    let end = offset + len;
    let runs = exp.block_status(offset, len).unwrap_or_default();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut at = offset;
    let push =
        |pieces: &mut Vec<Piece>, hole: bool, at: u64, n: u64| match (pieces.last_mut(), hole) {
            (Some(Piece::Data(_, l)), false) | (Some(Piece::Hole(_, l)), true) => *l += n,
            _ => pieces.push(if hole {
                Piece::Hole(at, n)
            } else {
                Piece::Data(at, n)
            }),
        };
    for (n, flags) in runs {
        if at >= end || n == 0 || pieces.len() >= MAX_READ_CHUNKS {
            break;
        }
        let n = n.min(end - at);
        push(&mut pieces, flags & STATE_ZERO != 0 && n >= MIN_HOLE, at, n);
        at += n;
    }
    if at < end {
        push(&mut pieces, false, at, end - at);
    }
    pieces
}

fn read(conn: &mut Conn, sess: &Session, req: &Request) -> Result<(), ServeErrorKind> {
    let exp = &*sess.entry.export;
    let (offset, len) = (req.offset, u64::from(req.len));
    let check = if req.len == 0 {
        fail(EINVAL, "zero-length read")
    } else if req.len > MAX_PAYLOAD {
        fail(EINVAL, "read larger than the maximum block size")
    } else {
        check_range(exp, offset, len, EINVAL)
    };
    if let Err(f) = check {
        return Ok(send_result(conn, sess, req.cookie, Err(f))?);
    }
    if !sess.structured {
        let mut buf = vec![0; req.len as usize];
        conn.note_buffer(buf.capacity());
        if let Err(e) = exp.read_at(&mut buf, offset) {
            return Ok(send_result(conn, sess, req.cookie, Err(io_fail(&e)))?);
        }
        let mut h = Vec::with_capacity(16);
        h.put_u32(SIMPLE_REPLY_MAGIC);
        h.put_u32(0);
        h.put_u64(req.cookie);
        return Ok(conn.send(&[&h, &buf])?);
    }
    let pieces = if req.flags & CMD_FLAG_DF != 0 {
        vec![Piece::Data(offset, len)]
    } else {
        plan_read(exp, offset, len)
    };
    let biggest = pieces.iter().map(|p| match p {
        Piece::Data(_, n) => *n,
        Piece::Hole(..) => 0,
    });
    let mut buf = vec![0; biggest.max().unwrap_or(0) as usize];
    conn.note_buffer(buf.capacity());
    let last = pieces.len().saturating_sub(1);
    for (i, p) in pieces.into_iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        match p {
            Piece::Hole(at, n) => {
                let mut c = chunk_header(flags, CHUNK_OFFSET_HOLE, req.cookie, 12);
                c.put_u64(at);
                c.put_u32(n as u32);
                conn.send(&[&c])?;
            }
            Piece::Data(at, n) => {
                let data = &mut buf[..n as usize];
                if let Err(e) = exp.read_at(data, at) {
                    return Ok(error_chunk(conn, req.cookie, &io_fail(&e), Some(at))?);
                }
                let mut c = chunk_header(flags, CHUNK_OFFSET_DATA, req.cookie, 8 + n as usize);
                c.put_u64(at);
                conn.send(&[&c, data])?;
            }
        }
    }
    Ok(())
}

fn block_status(conn: &mut Conn, sess: &Session, req: &Request) -> Result<(), ServeErrorKind> {
    let exp = &*sess.entry.export;
    let (offset, len) = (req.offset, u64::from(req.len));
    let runs = if !sess.structured || !sess.meta {
        fail(
            EINVAL,
            "block status needs structured replies and base:allocation",
        )
    } else if len == 0 {
        fail(EINVAL, "zero-length block status")
    } else {
        check_range(exp, offset, len, EINVAL)
            .and_then(|()| exp.block_status(offset, len).map_err(|e| io_fail(&e)))
    };
    let runs = match runs {
        Ok(r) => r,
        Err(f) => return Ok(send_result(conn, sess, req.cookie, Err(f))?),
    };
    // Trust but bound the export: positive lengths, total within the request.
    let mut descs: Vec<(u32, u32)> = Vec::new();
    let mut left = len;
    let max = if req.flags & CMD_FLAG_REQ_ONE != 0 {
        1
    } else {
        MAX_DESCRIPTORS
    };
    for (n, flags) in runs {
        if n == 0 || left == 0 || descs.len() >= max {
            break;
        }
        let n = n.min(left);
        descs.push((n as u32, flags & (STATE_HOLE | STATE_ZERO)));
        left -= n;
    }
    if descs.is_empty() {
        descs.push((req.len, 0));
    }
    let mut c = chunk_header(
        REPLY_FLAG_DONE,
        CHUNK_BLOCK_STATUS,
        req.cookie,
        4 + 8 * descs.len(),
    );
    c.put_u32(BASE_ALLOCATION_ID);
    for (n, flags) in descs {
        c.put_u32(n);
        c.put_u32(flags);
    }
    Ok(conn.send(&[&c])?)
}

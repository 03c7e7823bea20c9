//! The client's option phase: greeting, STARTTLS (when given an
//! upgrader), STRUCTURED_REPLY, SET_META_CONTEXT `base:allocation`, GO
//! (falling back to EXPORT_NAME on a server without GO).

use std::io::Write;

use super::ClientError;
use crate::wire::*;
use crate::{Stream, Upgrade};

/// Option replies accepted for one option before the server is deemed
/// to be flooding us.
const MAX_REPLIES: usize = 64;
/// Greeting word of an oldstyle server.
const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;

/// Minimum, preferred and maximum block sizes.
pub(super) type BlockSizes = (u32, u32, u32);

/// What the option phase learnt.
pub(super) struct Negotiated {
    pub(super) s: Box<dyn Stream>,
    pub(super) size: u64,
    pub(super) flags: u16,
    pub(super) structured: bool,
    pub(super) meta_id: Option<u32>,
    /// Minimum, preferred, maximum block sizes (defaults when not sent).
    pub(super) block: BlockSizes,
}

fn protocol<T>(msg: impl Into<String>) -> Result<T, ClientError> {
    Err(ClientError::Protocol(msg.into()))
}

fn send_option(s: &mut dyn Stream, opt: u32, data: &[u8]) -> Result<(), ClientError> {
    let mut h = Vec::with_capacity(16 + data.len());
    h.put_u64(IHAVEOPT);
    h.put_u32(opt);
    h.put_u32(data.len() as u32);
    h.extend_from_slice(data);
    s.write_all(&h)?;
    s.flush()?;
    Ok(())
}

/// Reads one option reply to `opt`: its type and (bounded) data.
fn read_reply(s: &mut dyn Stream, opt: u32) -> Result<(u32, Vec<u8>), ClientError> {
    let magic = read_u64(s)?;
    if magic != REPLY_MAGIC {
        return protocol(format!("bad option reply magic {magic:#x}"));
    }
    let (echo, ty, len) = (read_u32(s)?, read_u32(s)?, read_u32(s)?);
    if echo != opt {
        return protocol(format!(
            "reply to option {echo} while waiting for {}",
            option_name(opt)
        ));
    }
    if len > MAX_OPTION_DATA {
        return protocol(format!("option reply of {len} bytes"));
    }
    Ok((ty, read_payload(s, len as usize)?))
}

fn refused(opt: u32, ty: u32, data: &[u8]) -> ClientError {
    if ty & REP_FLAG_ERROR == 0 {
        return ClientError::Protocol(format!("unexpected reply {ty:#x} to {}", option_name(opt)));
    }
    ClientError::Refused {
        option: opt,
        reply: ty,
        message: String::from_utf8_lossy(data).into_owned(),
    }
}

/// Sends an option without data that must be acknowledged.
fn simple_option(s: &mut dyn Stream, opt: u32) -> Result<(), ClientError> {
    send_option(s, opt, &[])?;
    match read_reply(s, opt)? {
        (REP_ACK, _) => Ok(()),
        (ty, data) => Err(refused(opt, ty, &data)),
    }
}

fn put_name(v: &mut Vec<u8>, name: &str) {
    v.put_u32(name.len() as u32);
    v.extend_from_slice(name.as_bytes());
}

/// Runs the option phase on a fresh connection.
pub(super) fn handshake(
    mut s: Box<dyn Stream>,
    export: &str,
    tls: Option<&dyn Upgrade>,
) -> Result<Negotiated, ClientError> {
    if export.len() > MAX_NAME {
        return Err(ClientError::InvalidArgument(
            "export name longer than 4096 bytes",
        ));
    }
    let magic = read_u64(&mut *s)?;
    if magic != NBD_MAGIC {
        return protocol(format!("bad greeting magic {magic:#x}"));
    }
    match read_u64(&mut *s)? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => return protocol("oldstyle servers are not supported"),
        m => return protocol(format!("bad greeting option magic {m:#x}")),
    }
    let hflags = read_u16(&mut *s)?;
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return protocol("server does not speak fixed newstyle");
    }
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let cflags = C_FIXED_NEWSTYLE | if no_zeroes { C_NO_ZEROES } else { 0 };
    s.write_all(&cflags.to_be_bytes())?;

    if let Some(up) = tls {
        simple_option(&mut *s, OPT_STARTTLS)?;
        s = up.upgrade(s).map_err(ClientError::Tls)?;
    }

    let structured = match simple_option(&mut *s, OPT_STRUCTURED_REPLY) {
        Ok(()) => true,
        Err(ClientError::Refused {
            reply: REP_ERR_UNSUP,
            ..
        }) => false,
        Err(e) => return Err(e),
    };
    let meta_id = if structured {
        set_meta_context(&mut *s, export)?
    } else {
        None
    };
    match go(&mut *s, export) {
        Err(ClientError::Refused {
            reply: REP_ERR_UNSUP,
            ..
        }) => {
            let (size, flags) = export_name(&mut *s, export, no_zeroes)?;
            Ok(Negotiated {
                s,
                size,
                flags,
                structured,
                meta_id,
                block: (1, PREFERRED_BLOCK, MAX_PAYLOAD),
            })
        }
        Err(e) => Err(e),
        Ok((size, flags, block)) => Ok(Negotiated {
            s,
            size,
            flags,
            structured,
            meta_id,
            block,
        }),
    }
}

/// Selects `base:allocation`; its id if the server has it.
fn set_meta_context(s: &mut dyn Stream, export: &str) -> Result<Option<u32>, ClientError> {
    let opt = OPT_SET_META_CONTEXT;
    let mut d = Vec::new();
    put_name(&mut d, export);
    d.put_u32(1);
    put_name(&mut d, BASE_ALLOCATION);
    send_option(s, opt, &d)?;
    let mut id = None;
    for _ in 0..MAX_REPLIES {
        match read_reply(s, opt)? {
            (REP_ACK, _) => return Ok(id),
            (REP_META_CONTEXT, data) => {
                let mut c = Cursor::new(&data);
                let Some(n) = c.u32() else {
                    return protocol("short NBD_REP_META_CONTEXT");
                };
                if c.bytes(c.remaining()) == Some(BASE_ALLOCATION.as_bytes()) {
                    id = Some(n);
                }
            }
            // No contexts, or no such export: GO will say so.
            (REP_ERR_UNSUP | REP_ERR_UNKNOWN, _) => return Ok(None),
            (ty, data) => return Err(refused(opt, ty, &data)),
        }
    }
    protocol("too many replies to NBD_OPT_SET_META_CONTEXT")
}

/// GO: size, transmission flags and block sizes.
fn go(s: &mut dyn Stream, export: &str) -> Result<(u64, u16, BlockSizes), ClientError> {
    let opt = OPT_GO;
    let mut d = Vec::new();
    put_name(&mut d, export);
    d.put_u16(1);
    d.put_u16(INFO_BLOCK_SIZE);
    send_option(s, opt, &d)?;
    let mut info = None;
    let mut block = (1, PREFERRED_BLOCK, MAX_PAYLOAD);
    for _ in 0..MAX_REPLIES {
        match read_reply(s, opt)? {
            (REP_ACK, _) => {
                let Some((size, flags)) = info else {
                    return protocol("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");
                };
                return Ok((size, flags, block));
            }
            (REP_INFO, data) => {
                let mut c = Cursor::new(&data);
                match c.u16() {
                    Some(INFO_EXPORT) => match (c.u64(), c.u16(), c.remaining()) {
                        (Some(size), Some(flags), 0) => info = Some((size, flags)),
                        _ => return protocol("malformed NBD_INFO_EXPORT"),
                    },
                    Some(INFO_BLOCK_SIZE) => match (c.u32(), c.u32(), c.u32(), c.remaining()) {
                        (Some(min), Some(pref), Some(max), 0)
                            if min > 0 && min <= pref && min <= max =>
                        {
                            block = (min, pref, max)
                        }
                        _ => return protocol("malformed NBD_INFO_BLOCK_SIZE"),
                    },
                    Some(_) => {}
                    None => return protocol("empty NBD_REP_INFO"),
                }
            }
            (ty, data) => return Err(refused(opt, ty, &data)),
        }
    }
    protocol("too many replies to NBD_OPT_GO")
}

/// The EXPORT_NAME fallback for servers without GO.
fn export_name(
    s: &mut dyn Stream,
    export: &str,
    no_zeroes: bool,
) -> Result<(u64, u16), ClientError> {
    send_option(s, OPT_EXPORT_NAME, export.as_bytes())?;
    let closed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ClientError::Protocol(format!(
                "server closed the connection on NBD_OPT_EXPORT_NAME {export:?} (unknown export?)"
            ))
        } else {
            ClientError::Io(e)
        }
    };
    let size = read_u64(s).map_err(closed)?;
    let flags = read_u16(s).map_err(closed)?;
    if !no_zeroes {
        discard(s, 124).map_err(closed)?;
    }
    Ok((size, flags))
}

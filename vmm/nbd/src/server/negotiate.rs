//! The option phase: greeting, client flags, then options until the
//! client aborts or chooses an export (GO / EXPORT_NAME).

use std::io;

use super::{Conn, End, ServeErrorKind};
use crate::export::{ExportEntry, Exports};
use crate::wire::*;
use crate::{Stream, Upgrade};

/// Where the option phase ended.
pub(crate) enum Negotiated {
    /// The connection is over.
    End(End),
    /// Transmission starts on this export.
    Transmit(Session),
}

/// What transmission needs to know from the negotiation.
pub(crate) struct Session {
    /// The chosen export.
    pub(crate) entry: ExportEntry,
    /// Structured replies were negotiated.
    pub(crate) structured: bool,
    /// `base:allocation` was selected for this export.
    pub(crate) meta: bool,
}

/// Negotiation state of one connection.
struct State<'a> {
    exports: &'a dyn Exports,
    tls: Option<&'a dyn Upgrade>,
    tls_done: bool,
    no_zeroes: bool,
    structured: bool,
    /// The export `base:allocation` was selected for by SET_META_CONTEXT.
    meta: Option<String>,
}

/// An option handler's verdict: `Ok(None)` to keep negotiating.
type Step = Result<Option<Negotiated>, ServeErrorKind>;

/// The transmission flags advertised for an export.
pub(crate) fn transmission_flags(e: &ExportEntry) -> u16 {
    let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_CAN_MULTI_CONN;
    if e.writable {
        f |= TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;
    } else {
        f |= TF_READ_ONLY;
    }
    f
}

/// Runs the option phase.
pub(crate) fn negotiate(
    conn: &mut Conn,
    exports: &dyn Exports,
    tls: Option<&dyn Upgrade>,
) -> Result<Negotiated, ServeErrorKind> {
    let mut hello = Vec::with_capacity(18);
    hello.put_u64(NBD_MAGIC);
    hello.put_u64(IHAVEOPT);
    hello.put_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    conn.send(&[&hello])?;

    let mut cf = [0; 4];
    if !read_exact_or_eof(&mut *conn.s, &mut cf)? {
        return Ok(Negotiated::End(End::Closed));
    }
    let client_flags = u32::from_be_bytes(cf);
    if client_flags & !(C_FIXED_NEWSTYLE | C_NO_ZEROES) != 0 {
        return Err(ServeErrorKind::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let mut st = State {
        exports,
        tls,
        tls_done: false,
        no_zeroes: client_flags & C_NO_ZEROES != 0,
        structured: false,
        meta: None,
    };

    loop {
        let mut head = [0; 16];
        if !read_exact_or_eof(&mut *conn.s, &mut head)? {
            return Ok(Negotiated::End(End::Closed));
        }
        let mut c = Cursor::new(&head);
        let (magic, opt, len) = match (c.u64(), c.u32(), c.u32()) {
            (Some(m), Some(o), Some(l)) => (m, o, l),
            _ => return Err(ServeErrorKind::Protocol("short option header".into())),
        };
        if magic != IHAVEOPT {
            return Err(ServeErrorKind::Protocol(format!(
                "bad option magic {magic:#x}"
            )));
        }
        conn.stats.options += 1;
        if conn.stats.options > MAX_OPTIONS {
            return Err(ServeErrorKind::Protocol(format!(
                "more than {MAX_OPTIONS} options"
            )));
        }
        if len > MAX_OPTION_DATA {
            if opt == OPT_EXPORT_NAME || len > MAX_OPTION_DISCARD {
                return Err(ServeErrorKind::Protocol(format!(
                    "{} with {len} bytes of data",
                    option_name(opt)
                )));
            }
            discard(&mut *conn.s, u64::from(len))?;
            error(conn, opt, REP_ERR_TOO_BIG, "option data too large")?;
            continue;
        }
        let data = read_payload(&mut *conn.s, len as usize)?;
        conn.note_buffer(data.capacity());
        tracing::trace!(option = option_name(opt), len, "nbd option");
        if let Some(done) = st.option(conn, opt, &data)? {
            return Ok(done);
        }
    }
}

/// Sends one option reply.
fn reply(conn: &mut Conn, opt: u32, ty: u32, data: &[u8]) -> io::Result<()> {
    let mut h = Vec::with_capacity(20);
    h.put_u64(REPLY_MAGIC);
    h.put_u32(opt);
    h.put_u32(ty);
    h.put_u32(data.len() as u32);
    conn.send(&[&h, data])
}

/// Sends an error reply with a message.
fn error(conn: &mut Conn, opt: u32, ty: u32, msg: &str) -> io::Result<()> {
    tracing::debug!(
        option = option_name(opt),
        reply = reply_name(ty),
        msg,
        "nbd option refused"
    );
    reply(conn, opt, ty, truncate_str(msg, 1024).as_bytes())
}

/// A name of at most [`MAX_NAME`] bytes of UTF-8.
fn name(bytes: &[u8]) -> Result<&str, &'static str> {
    if bytes.len() > MAX_NAME {
        return Err("name too long");
    }
    std::str::from_utf8(bytes).map_err(|_| "name is not UTF-8")
}

/// A u32-length-prefixed name.
fn prefixed_name<'a>(c: &mut Cursor<'a>) -> Result<&'a str, &'static str> {
    let n = c.u32().ok_or("truncated name length")? as usize;
    name(c.bytes(n).ok_or("name length beyond option data")?)
}

/// INFO/GO data: the name and the requested information items.
fn parse_info(data: &[u8]) -> Result<(&str, Vec<u16>), &'static str> {
    let mut c = Cursor::new(data);
    let name = prefixed_name(&mut c)?;
    let n = usize::from(c.u16().ok_or("truncated information request count")?);
    if c.remaining() != 2 * n {
        return Err("information requests do not match the option length");
    }
    let infos = (0..n).filter_map(|_| c.u16()).collect();
    Ok((name, infos))
}

/// META_CONTEXT data: the export name and the queries.
fn parse_meta(data: &[u8]) -> Result<(&str, Vec<&str>), &'static str> {
    let mut c = Cursor::new(data);
    let name = prefixed_name(&mut c)?;
    let n = c.u32().ok_or("truncated query count")?;
    // Each query takes at least 4 bytes: bound the count by the data.
    if n as usize > c.remaining() / 4 {
        return Err("query count beyond option data");
    }
    let mut queries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        queries.push(prefixed_name(&mut c)?);
    }
    if c.remaining() != 0 {
        return Err("trailing bytes after the queries");
    }
    Ok((name, queries))
}

impl State<'_> {
    /// Handles one option.
    fn option(&mut self, conn: &mut Conn, opt: u32, data: &[u8]) -> Step {
        if self.tls.is_some() && !self.tls_done {
            match opt {
                OPT_STARTTLS | OPT_ABORT => {}
                OPT_EXPORT_NAME => {
                    return Err(ServeErrorKind::Protocol(
                        "NBD_OPT_EXPORT_NAME before STARTTLS".into(),
                    ));
                }
                _ => {
                    let msg = "TLS is required: send NBD_OPT_STARTTLS first";
                    error(conn, opt, REP_ERR_TLS_REQD, msg)?;
                    return Ok(None);
                }
            }
        }
        match opt {
            OPT_EXPORT_NAME => self.export_name(conn, data),
            OPT_ABORT => {
                // The client may not wait for the ACK: ignore a closed stream.
                let _ = reply(conn, opt, REP_ACK, &[]);
                Ok(Some(Negotiated::End(End::Abort)))
            }
            OPT_LIST => self.list(conn, data),
            OPT_STARTTLS => self.starttls(conn, data),
            OPT_INFO | OPT_GO => self.info(conn, opt, data),
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error(conn, opt, REP_ERR_INVALID, "option takes no data")?;
                } else {
                    self.structured = true;
                    conn.stats.structured = true;
                    reply(conn, opt, REP_ACK, &[])?;
                }
                Ok(None)
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => self.meta(conn, opt, data),
            _ => {
                let msg = format!("option {opt} ({}) is not supported", option_name(opt));
                error(conn, opt, REP_ERR_UNSUP, &msg)?;
                Ok(None)
            }
        }
    }

    fn export_name(&mut self, conn: &mut Conn, data: &[u8]) -> Step {
        let name = name(data).map_err(|e| ServeErrorKind::Protocol(e.into()))?;
        let Some(entry) = self.exports.lookup(name) else {
            return Err(ServeErrorKind::Protocol(format!(
                "NBD_OPT_EXPORT_NAME: unknown export {name:?}"
            )));
        };
        let mut r = Vec::with_capacity(134);
        r.put_u64(entry.export.size());
        r.put_u16(transmission_flags(&entry));
        if !self.no_zeroes {
            r.extend_from_slice(&[0; 124]);
        }
        conn.send(&[&r])?;
        Ok(Some(self.session(conn, entry)))
    }

    fn session(&self, conn: &mut Conn, entry: ExportEntry) -> Negotiated {
        conn.stats.export = Some(entry.name.clone());
        let meta = self.meta.as_deref() == Some(entry.name.as_str());
        Negotiated::Transmit(Session {
            entry,
            structured: self.structured,
            meta,
        })
    }

    fn list(&mut self, conn: &mut Conn, data: &[u8]) -> Step {
        if !data.is_empty() {
            error(
                conn,
                OPT_LIST,
                REP_ERR_INVALID,
                "NBD_OPT_LIST takes no data",
            )?;
            return Ok(None);
        }
        for n in self.exports.names() {
            let mut r = Vec::with_capacity(4 + n.len());
            r.put_u32(n.len() as u32);
            r.extend_from_slice(n.as_bytes());
            reply(conn, OPT_LIST, REP_SERVER, &r)?;
        }
        reply(conn, OPT_LIST, REP_ACK, &[])?;
        Ok(None)
    }

    fn starttls(&mut self, conn: &mut Conn, data: &[u8]) -> Step {
        let Some(up) = self.tls else {
            error(conn, OPT_STARTTLS, REP_ERR_UNSUP, "TLS is not configured")?;
            return Ok(None);
        };
        if !data.is_empty() {
            error(
                conn,
                OPT_STARTTLS,
                REP_ERR_INVALID,
                "STARTTLS takes no data",
            )?;
        } else if self.tls_done {
            error(
                conn,
                OPT_STARTTLS,
                REP_ERR_INVALID,
                "TLS already negotiated",
            )?;
        } else {
            reply(conn, OPT_STARTTLS, REP_ACK, &[])?;
            let plain: Box<dyn Stream> = std::mem::replace(&mut conn.s, Box::new(io::empty()));
            conn.s = up.upgrade(plain).map_err(ServeErrorKind::Tls)?;
            self.tls_done = true;
            conn.stats.tls = true;
        }
        Ok(None)
    }

    fn info(&mut self, conn: &mut Conn, opt: u32, data: &[u8]) -> Step {
        let (name, infos) = match parse_info(data) {
            Ok(v) => v,
            Err(e) => {
                error(conn, opt, REP_ERR_INVALID, e)?;
                return Ok(None);
            }
        };
        let Some(entry) = self.exports.lookup(name) else {
            error(
                conn,
                opt,
                REP_ERR_UNKNOWN,
                &format!("unknown export {name:?}"),
            )?;
            return Ok(None);
        };
        let mut r = Vec::with_capacity(12);
        r.put_u16(INFO_EXPORT);
        r.put_u64(entry.export.size());
        r.put_u16(transmission_flags(&entry));
        reply(conn, opt, REP_INFO, &r)?;
        let text_item = |item: u16, text: &str| {
            let mut r = Vec::with_capacity(2 + text.len());
            r.put_u16(item);
            r.extend_from_slice(truncate_str(text, MAX_NAME).as_bytes());
            r
        };
        if infos.contains(&INFO_NAME) {
            reply(conn, opt, REP_INFO, &text_item(INFO_NAME, &entry.name))?;
        }
        if infos.contains(&INFO_DESCRIPTION) {
            let item = text_item(INFO_DESCRIPTION, &entry.description);
            reply(conn, opt, REP_INFO, &item)?;
        }
        let mut r = Vec::with_capacity(14);
        r.put_u16(INFO_BLOCK_SIZE);
        r.put_u32(1);
        r.put_u32(PREFERRED_BLOCK);
        r.put_u32(MAX_PAYLOAD);
        reply(conn, opt, REP_INFO, &r)?;
        reply(conn, opt, REP_ACK, &[])?;
        if opt == OPT_GO {
            return Ok(Some(self.session(conn, entry)));
        }
        Ok(None)
    }

    fn meta(&mut self, conn: &mut Conn, opt: u32, data: &[u8]) -> Step {
        let set = opt == OPT_SET_META_CONTEXT;
        if set {
            // Every SET replaces the selection, even one that fails.
            self.meta = None;
        }
        if !self.structured {
            let msg = "metadata contexts need NBD_OPT_STRUCTURED_REPLY first";
            error(conn, opt, REP_ERR_INVALID, msg)?;
            return Ok(None);
        }
        let (name, queries) = match parse_meta(data) {
            Ok(v) => v,
            Err(e) => {
                error(conn, opt, REP_ERR_INVALID, e)?;
                return Ok(None);
            }
        };
        if self.exports.lookup(name).is_none() {
            error(
                conn,
                opt,
                REP_ERR_UNKNOWN,
                &format!("unknown export {name:?}"),
            )?;
            return Ok(None);
        }
        // LIST: no query lists everything, "base:" is the whole namespace.
        // SET: only the full context name selects it.
        let matched = if set {
            queries.contains(&BASE_ALLOCATION)
        } else {
            queries.is_empty()
                || queries
                    .iter()
                    .any(|q| *q == "base:" || *q == BASE_ALLOCATION)
        };
        if matched {
            let mut r = Vec::with_capacity(4 + BASE_ALLOCATION.len());
            r.put_u32(BASE_ALLOCATION_ID);
            r.extend_from_slice(BASE_ALLOCATION.as_bytes());
            reply(conn, opt, REP_META_CONTEXT, &r)?;
            if set {
                self.meta = Some(name.to_owned());
            }
        }
        reply(conn, opt, REP_ACK, &[])?;
        Ok(None)
    }
}

//! QMP, the reference's management protocol, on `vmm run --qmp
//! unix:PATH[,server=on,wait=off]`: the greeting, `qmp_capabilities`
//! negotiation, `execute` with its `id` echoed, `return` / `error` (`class`,
//! `desc`), and events with a `timestamp` (to the connection whose command
//! caused them). A first set of commands, each with the reference's name
//! and reply shape; the rest answer `CommandNotFound`.

mod migrate;

use super::protocol::Request;
use super::state::{MAX_LINE, State};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The commands this server knows, as `query-commands` lists them.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-version",
    "query-status",
    "query-name",
    "stop",
    "cont",
    "system_reset",
    "quit",
    "migrate",
    "migrate_cancel",
    "query-migrate",
    "migrate-set-parameters",
    "query-migrate-parameters",
    "migrate-set-capabilities",
    "query-migrate-capabilities",
];

/// `--qmp unix:PATH[,server=on][,wait=off]` (the reference's `-qmp` syntax):
/// the socket path. Other transports and `server=off` are refused.
pub fn parse_arg(arg: &str) -> Result<std::path::PathBuf, String> {
    let mut parts = arg.split(',');
    let path = parts
        .next()
        .and_then(|p| p.strip_prefix("unix:"))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("--qmp {arg}: expected unix:PATH[,server=on][,wait=off]"))?;
    for opt in parts {
        match opt {
            "server" | "server=on" | "wait=off" | "nowait" => {}
            _ => {
                return Err(format!(
                    "--qmp {arg}: `{opt}` is not supported (this vmm listens, never waits)"
                ));
            }
        }
    }
    Ok(path.into())
}

type Reply = Result<Value, (&'static str, String)>;

fn timestamp() -> Value {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({ "seconds": t.as_secs(), "microseconds": t.subsec_micros() })
}

fn write(out: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut s = v.to_string();
    s.push_str("\r\n");
    out.write_all(s.as_bytes())
}

fn event(out: &mut UnixStream, name: &str) {
    event_with(out, name, json!({}));
}

fn event_with(out: &mut UnixStream, name: &str, data: Value) {
    let _ = write(
        out,
        &json!({ "event": name, "data": data, "timestamp": timestamp() }),
    );
}

/// Serves one QMP connection.
pub(super) fn connection(st: &Arc<State>, conn: UnixStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let greeting = json!({ "QMP": {
        "version": { "qemu": { "major": 10, "minor": 2, "micro": 0 },
                     "package": format!("vmm {}", env!("CARGO_PKG_VERSION")) },
        "capabilities": [] } });
    if write(&mut out, &greeting).is_err() {
        return;
    }
    let mut reader = BufReader::new(conn);
    let mut negotiated = false;
    loop {
        let line = match next_object(&mut reader) {
            Ok(Some(m)) => m,
            Ok(None) | Err(None) => return,
            Err(Some(desc)) => {
                let e = json!({ "error": { "class": "GenericError", "desc": desc } });
                let _ = write(&mut out, &e);
                return;
            }
        };
        let (reply, id, cmd) = match serde_json::from_str::<Value>(&line) {
            Ok(v) => {
                let id = v.get("id").cloned();
                let cmd = v.get("execute").and_then(Value::as_str).map(str::to_string);
                let args = v.get("arguments").cloned().unwrap_or_else(|| json!({}));
                let r = match (&cmd, negotiated) {
                    (None, _) => Err((
                        "GenericError",
                        "QMP input lacks member 'execute'".to_string(),
                    )),
                    (Some(c), false) if c == "qmp_capabilities" => {
                        negotiated = true;
                        Ok(json!({}))
                    }
                    (Some(_), false) => Err((
                        "CommandNotFound",
                        "Expecting capabilities negotiation with 'qmp_capabilities'".to_string(),
                    )),
                    (Some(c), true) => execute(st, c, &args, &out),
                };
                (r, id, cmd)
            }
            Err(e) => (
                Err(("GenericError", format!("JSON parse error, {e}"))),
                None,
                None,
            ),
        };
        let mut msg = match &reply {
            Ok(r) => json!({ "return": r }),
            Err((class, desc)) => json!({ "error": { "class": class, "desc": desc } }),
        };
        if let Some(id) = id {
            msg["id"] = id;
        }
        if write(&mut out, &msg).is_err() {
            return;
        }
        if reply.is_ok() {
            match cmd.as_deref() {
                Some("stop") => event(&mut out, "STOP"),
                Some("cont") => event(&mut out, "RESUME"),
                Some("system_reset") => event(&mut out, "RESET"),
                Some("quit") => {
                    event(&mut out, "SHUTDOWN");
                    st.quitting.store(true, Ordering::SeqCst);
                    st.handler.answered(&Request::Quit);
                    let _ = UnixStream::connect(&st.path);
                    return;
                }
                _ => {}
            }
        }
    }
}

/// The next JSON object of a QMP stream (clients send objects back to
/// back, with or without newlines): bytes up to the `}` that closes the
/// first `{`, strings and escapes respected, at most [`MAX_LINE`] bytes.
/// `Ok(None)`: the client closed; `Err(Some(why))`: refused input.
fn next_object(r: &mut impl BufRead) -> Result<Option<String>, Option<String>> {
    let (mut buf, mut depth, mut in_str, mut esc) = (Vec::new(), 0u32, false, false);
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(_) => return Err(None),
        }
        let b = byte[0];
        if depth == 0 && b != b'{' {
            if b.is_ascii_whitespace() {
                continue;
            }
            return Err(Some("JSON parse error, expecting an object".into()));
        }
        buf.push(b);
        if buf.len() as u64 > MAX_LINE {
            return Err(Some(format!("command longer than {MAX_LINE} bytes")));
        }
        match (in_str, esc, b) {
            (true, true, _) => esc = false,
            (true, false, b'\\') => esc = true,
            (true, false, b'"') => in_str = false,
            (true, false, _) => {}
            (false, _, b'"') => in_str = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return String::from_utf8(buf)
                        .map(Some)
                        .map_err(|_| Some("not UTF-8".into()));
                }
            }
            _ => {}
        }
    }
}

/// One command after negotiation.
fn execute(st: &Arc<State>, cmd: &str, args: &Value, out: &UnixStream) -> Reply {
    let h = &st.handler;
    let fail = |e: migration::vm::VmError| ("GenericError", e.to_string());
    match cmd {
        "qmp_capabilities" => Err((
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored".into(),
        )),
        "query-commands" => Ok(Value::Array(
            COMMANDS.iter().map(|c| json!({ "name": c })).collect(),
        )),
        "query-version" => Ok(json!({
            "qemu": { "major": 10, "minor": 2, "micro": 0 },
            "package": format!("vmm {}", env!("CARGO_PKG_VERSION")),
        })),
        "query-name" => Ok(json!({})),
        "query-status" => {
            let s = h.status().map_err(fail)?;
            let status = match s.state.as_str() {
                "migrating" => "finish-migrate",
                "incoming" => "inmigrate",
                other => other,
            };
            Ok(json!({ "running": s.state == "running", "singlestep": false, "status": status }))
        }
        "stop" => h.stop().map(|()| json!({})).map_err(fail),
        "cont" => h.cont().map(|()| json!({})).map_err(fail),
        "system_reset" => h.system_reset().map(|()| json!({})).map_err(fail),
        "quit" => h.quit().map(|()| json!({})).map_err(fail),
        "migrate" => migrate::start(st, args, out),
        "migrate_cancel" => migrate::cancel(st),
        "query-migrate" => migrate::query(st),
        "migrate-set-parameters" => migrate::set_parameters(st, args),
        "query-migrate-parameters" => migrate::query_parameters(st),
        "migrate-set-capabilities" => migrate::set_capabilities(st, args),
        "query-migrate-capabilities" => migrate::query_capabilities(st),
        other => Err((
            "CommandNotFound",
            format!("The command {other} has not been found"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_split_from_a_stream_with_or_without_newlines() {
        let mut r = std::io::Cursor::new(
            br#"{"execute":"a"}{"execute":"b","arguments":{"s":"}{\"x"}}
 {"id":[1,{"k":2}]}"#
                .to_vec(),
        );
        let a = next_object(&mut r).unwrap().unwrap();
        assert_eq!(a, r#"{"execute":"a"}"#);
        let b = next_object(&mut r).unwrap().unwrap();
        assert!(serde_json::from_str::<Value>(&b).is_ok(), "{b}");
        let c = next_object(&mut r).unwrap().unwrap();
        assert_eq!(c, r#"{"id":[1,{"k":2}]}"#);
        assert_eq!(next_object(&mut r), Ok(None));
        let mut junk = std::io::Cursor::new(b"x{}".to_vec());
        assert!(matches!(next_object(&mut junk), Err(Some(_))));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_LINE as usize));
        let mut big = std::io::Cursor::new(big.into_bytes());
        assert!(matches!(next_object(&mut big), Err(Some(_))));
    }

    #[test]
    fn the_references_qmp_option_syntax() {
        assert_eq!(
            parse_arg("unix:/tmp/q.sock").unwrap(),
            std::path::PathBuf::from("/tmp/q.sock")
        );
        assert!(parse_arg("unix:/tmp/q.sock,server=on,wait=off").is_ok());
        for bad in [
            "tcp:1.2.3.4:5",
            "unix:",
            "unix:/x,server=off",
            "/tmp/q.sock",
        ] {
            assert!(parse_arg(bad).is_err(), "{bad}");
        }
    }
}

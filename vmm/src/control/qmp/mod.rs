//! QMP, the reference's management protocol, the one control protocol of
//! this VMM (`vmm run --qmp unix:PATH[,server=on,wait=off]` or `--control
//! PATH`): the greeting, `qmp_capabilities` negotiation, `execute` with its
//! `id` echoed, `return` / `error` (`class`, `desc`), and events with a
//! `timestamp` to every negotiated connection. Every command is listed in
//! [`COMMANDS`] and documented in `docs/control.md`; the rest answer
//! `CommandNotFound`.

mod basic;
mod block;
mod migrate;
mod qom;
mod query;
mod vmm;

use super::events::{Writer, send};
use super::handler::Answered;
use super::state::{MAX_COMMAND, State};
use qmp::wire::{Splitter, WireError};
use qmp::{Args, Command, QmpError};
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The version this server claims (the reference's it follows).
pub const VERSION: (u64, u64, u64) = (10, 2, 0);

/// The commands this server knows, as `query-commands` lists them.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-version",
    "query-status",
    "query-name",
    "query-machines",
    "query-cpus-fast",
    "query-cpu-definitions",
    "query-cpu-model-expansion",
    "qom-list",
    "qom-get",
    "stop",
    "cont",
    "system_reset",
    "system_powerdown",
    "quit",
    "migrate",
    "migrate-incoming",
    "migrate_cancel",
    "query-migrate",
    "migrate-set-parameters",
    "query-migrate-parameters",
    "migrate-set-capabilities",
    "query-migrate-capabilities",
    "x-vmm-status",
    "x-vmm-query-provenance",
    "x-vmm-verify-ab",
    "x-vmm-query-matrix",
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

/// What the greeting and `query-version` name in `package`.
fn package() -> String {
    format!("vmm {}", env!("CARGO_PKG_VERSION"))
}

/// A command's result.
type Reply = Result<Value, QmpError>;

/// A handler's error as a `GenericError`.
fn fail(e: migration::vm::VmError) -> QmpError {
    QmpError::generic(e.to_string())
}

/// Serves one QMP connection until it closes, idles out, sends what cannot
/// be cut into objects, or `quit` succeeds.
pub(super) fn connection(st: &Arc<State>, conn: UnixStream) {
    let Ok(out) = conn.try_clone() else {
        return;
    };
    let out: Writer = Arc::new(Mutex::new(out));
    let _ = out
        .lock()
        .map(|w| w.set_write_timeout(Some(super::events::WRITE_TIMEOUT)));
    let (major, minor, micro) = VERSION;
    let package = package();
    if send(&out, &qmp::command::greeting(major, minor, micro, &package)).is_err() {
        return;
    }
    let mut reader = conn;
    let mut split = Splitter::new(MAX_COMMAND);
    let mut events_id = None;
    loop {
        let bytes = match split.next(&mut reader) {
            Ok(Some(b)) => b,
            Ok(None) | Err(WireError::Io(_)) => break,
            Err(e) => {
                // The stream cannot be resynchronised: say why and close.
                let _ = send(
                    &out,
                    &qmp::command::answer(&Err(QmpError::generic(e.to_string())), None),
                );
                break;
            }
        };
        let (reply, id, name) = match Command::parse(&bytes) {
            Ok(c) => {
                let r = match (c.name.as_str(), events_id) {
                    ("qmp_capabilities", None) => capabilities(&c.args).inspect(|_| {
                        events_id = Some(st.events.add(out.clone()));
                    }),
                    (_, None) => Err(QmpError {
                        class: qmp::ErrorClass::CommandNotFound,
                        desc: "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
                    }),
                    (name, Some(_)) => execute(st, name, &c.args),
                };
                (r, c.id, c.name)
            }
            Err((e, id)) => (Err(e), id, String::new()),
        };
        let sent = send(&out, &qmp::command::answer(&reply, id));
        if reply.is_ok() && name == "quit" {
            st.quitting.store(true, Ordering::SeqCst);
            st.handler.answered(Answered::Quit);
            break;
        }
        if sent.is_err() {
            break;
        }
    }
    if let Some(id) = events_id {
        st.events.remove(id);
    }
}

/// `qmp_capabilities` (the only capability, `oob`, is not offered).
fn capabilities(args: &Args) -> Reply {
    args.only(&["enable"])?;
    match args.opt_array("enable")? {
        Some(caps) if !caps.is_empty() => Err(QmpError::generic(format!(
            "Capability '{}' not available",
            caps[0].as_str().unwrap_or("?")
        ))),
        _ => Ok(serde_json::json!({})),
    }
}

/// One command after negotiation.
fn execute(st: &Arc<State>, name: &str, args: &Args) -> Reply {
    match name {
        "qmp_capabilities" => Err(QmpError {
            class: qmp::ErrorClass::CommandNotFound,
            desc: "Capabilities negotiation is already complete, command ignored".into(),
        }),
        "migrate" => migrate::start(st, args),
        "migrate-incoming" => migrate::incoming(st, args),
        "migrate_cancel" => migrate::cancel(st, args),
        "query-migrate" => migrate::query(st, args),
        "migrate-set-parameters" => migrate::set_parameters(st, args),
        "query-migrate-parameters" => migrate::query_parameters(st, args),
        "migrate-set-capabilities" => migrate::set_capabilities(st, args),
        "query-migrate-capabilities" => migrate::query_capabilities(st, args),
        "qom-list" => qom::list(st, args),
        "qom-get" => qom::get(st, args),
        "query-machines" => query::machines(args),
        "query-cpus-fast" => query::cpus(st, args),
        "query-cpu-definitions" => query::cpu_definitions(args),
        "query-cpu-model-expansion" => query::cpu_model_expansion(args),
        n if n.starts_with("x-vmm-") => vmm::execute(st, n, args),
        n if block::COMMANDS.contains(&n) => block::execute(st, n, args),
        n => basic::execute(st, n, args),
    }
}

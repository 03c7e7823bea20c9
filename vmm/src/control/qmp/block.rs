//! QMP's storage-migration commands, in the reference's argument shapes:
//! the NBD server (`nbd-server-start`/`-stop`, `block-export-add`/`-del`,
//! `nbd-server-add`/`-remove`, `query-block-exports`), NBD target nodes
//! (`blockdev-add` with `driver: nbd`, `blockdev-del`), mirror jobs
//! (`blockdev-mirror`, `drive-mirror` with `sync: full`, `query-block-jobs`,
//! `block-job-cancel`, `block-job-complete`) and `query-block`.

use super::Reply;
use crate::control::state::State;
use crate::storage::addr::Addr;
use crate::storage::tls;
use qmp::{Args, QmpError};
use serde_json::{Value, json};

fn generic(e: String) -> QmpError {
    QmpError::generic(e)
}

fn done(r: Result<(), String>) -> Reply {
    r.map(|()| json!({})).map_err(generic)
}

/// Arguments the reference takes that change nothing here: accepted and
/// ignored (their values are the reference's defaults' meaning).
const INERT_MIRROR: &[&str] = &[
    "speed",
    "granularity",
    "buf-size",
    "on-source-error",
    "on-target-error",
    "filter-node-name",
    "copy-mode",
    "auto-finalize",
    "auto-dismiss",
    "replaces",
    "unmap",
];

fn sync_full(args: &Args) -> Result<(), QmpError> {
    match args.str("sync")? {
        "full" => Ok(()),
        other => Err(QmpError::generic(format!(
            "sync '{other}' is not supported: this VMM mirrors with sync=full only"
        ))),
    }
}

fn mirror_args(args: &Args, own: &[&str]) -> Result<(), QmpError> {
    let known: Vec<&str> = own.iter().chain(INERT_MIRROR).copied().collect();
    args.only(&known)
}

/// `tls-authz`: one subject or a list of them (clients allowed in).
fn authz(args: &Args) -> Result<Vec<String>, QmpError> {
    match args.get("tls-authz") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'tls-authz', expected: string")
                })
            })
            .collect(),
        Some(_) => Err(QmpError::generic(
            "Invalid parameter type for 'tls-authz', expected: string",
        )),
    }
}

/// One of the commands above.
pub fn execute(st: &State, name: &str, args: &Args) -> Reply {
    let s = &st.storage;
    match name {
        "query-block" => {
            args.only(&[])?;
            Ok(s.query_block())
        }
        "nbd-server-start" => {
            args.only(&[
                "addr",
                "tls-creds",
                "tls-authz",
                "max-connections",
                "handshake-max-seconds",
            ])?;
            let addr = args
                .get("addr")
                .ok_or_else(|| QmpError::generic("Parameter 'addr' is missing"))?;
            let addr = Addr::from_qmp(addr).map_err(generic)?;
            let tls = match args.opt_str("tls-creds")? {
                Some(c) => Some(tls::server(c, authz(args)?).map_err(generic)?),
                None => None,
            };
            done(s.nbd_start(addr, tls))
        }
        "nbd-server-stop" => {
            args.only(&[])?;
            done(s.nbd_stop())
        }
        "block-export-add" => {
            args.only(&[
                "type",
                "id",
                "node-name",
                "name",
                "writable",
                "description",
                "writethrough",
                "allocation-depth",
            ])?;
            match args.str("type")? {
                "nbd" => {}
                other => {
                    return Err(QmpError::generic(format!(
                        "Parameter 'type' does not accept value '{other}' (only nbd)"
                    )));
                }
            }
            done(s.export_add(
                args.str("id")?,
                args.str("node-name")?,
                args.opt_str("name")?,
                args.opt_bool("writable")?.unwrap_or(false),
                args.opt_str("description")?,
            ))
        }
        "nbd-server-add" => {
            args.only(&["device", "name", "writable", "description"])?;
            let device = args.str("device")?;
            let name = args.opt_str("name")?;
            // The export's id is its name, as the reference does for this command.
            let id = name.unwrap_or(device);
            done(s.export_add(
                id,
                device,
                name,
                args.opt_bool("writable")?.unwrap_or(false),
                args.opt_str("description")?,
            ))
        }
        "block-export-del" => {
            args.only(&["id", "mode"])?;
            done(s.export_del(args.str("id")?, false))
        }
        "nbd-server-remove" => {
            args.only(&["name", "mode"])?;
            done(s.export_del(args.str("name")?, true))
        }
        "query-block-exports" => {
            args.only(&[])?;
            Ok(s.query_exports())
        }
        "blockdev-add" => blockdev_add(st, args),
        "blockdev-del" => {
            args.only(&["node-name"])?;
            done(s.node_del(args.str("node-name")?))
        }
        "blockdev-mirror" => {
            mirror_args(args, &["job-id", "device", "target", "sync"])?;
            sync_full(args)?;
            let device = args.str("device")?;
            let job = args.opt_str("job-id")?.unwrap_or(device);
            done(s.mirror(job, device, Ok(args.str("target")?)))
        }
        "drive-mirror" => {
            mirror_args(
                args,
                &[
                    "job-id",
                    "device",
                    "target",
                    "sync",
                    "format",
                    "mode",
                    "node-name",
                ],
            )?;
            sync_full(args)?;
            if let Some(m) = args.opt_str("mode")?
                && m != "existing"
            {
                return Err(QmpError::generic(format!(
                    "mode '{m}' is not supported: the NBD target exists already (mode=existing)"
                )));
            }
            if let Some(f) = args.opt_str("format")?
                && f != "raw"
                && f != "nbd"
            {
                return Err(QmpError::generic(format!(
                    "format '{f}' is not supported (raw)"
                )));
            }
            let device = args.str("device")?;
            let job = args.opt_str("job-id")?.unwrap_or(device);
            done(s.mirror(job, device, Err(args.str("target")?)))
        }
        "query-block-jobs" => {
            args.only(&[])?;
            Ok(s.jobs_info())
        }
        "block-job-cancel" => {
            args.only(&["device", "force"])?;
            done(s.job_cancel(
                args.str("device")?,
                args.opt_bool("force")?.unwrap_or(false),
            ))
        }
        "block-job-complete" => {
            args.only(&["device"])?;
            done(s.job_complete(args.str("device")?))
        }
        other => Err(QmpError::not_found(other)),
    }
}

/// `blockdev-add {"driver": "nbd", "node-name", "server": SocketAddress,
/// "export"}`: a target node for `blockdev-mirror`.
fn blockdev_add(st: &State, args: &Args) -> Reply {
    args.only(&[
        "driver",
        "node-name",
        "server",
        "export",
        "tls-creds",
        "tls-hostname",
        "reconnect-delay",
        "open-timeout",
        "read-only",
        "cache",
        "discard",
        "detect-zeroes",
        "auto-read-only",
    ])?;
    match args.str("driver")? {
        "nbd" => {}
        other => {
            return Err(QmpError::generic(format!(
                "blockdev-add driver '{other}' is not supported here (nbd targets only: the guest's drives come from --drive)"
            )));
        }
    }
    let name = args.str("node-name")?;
    let server: &Value = args
        .get("server")
        .ok_or_else(|| QmpError::generic("Parameter 'server' is missing"))?;
    let addr = Addr::from_qmp(server).map_err(generic)?;
    let export = args.opt_str("export")?.unwrap_or("").to_string();
    let tls = match args.opt_str("tls-creds")? {
        Some(c) => {
            let host = args.opt_str("tls-hostname")?.map(str::to_string);
            Some(tls::client(c, host).map_err(generic)?)
        }
        None => None,
    };
    done(st.storage.node_add(name, addr, export, tls))
}

/// The names [`execute`] answers.
pub const COMMANDS: &[&str] = &[
    "query-block",
    "nbd-server-start",
    "nbd-server-stop",
    "block-export-add",
    "block-export-del",
    "nbd-server-add",
    "nbd-server-remove",
    "query-block-exports",
    "blockdev-add",
    "blockdev-del",
    "blockdev-mirror",
    "drive-mirror",
    "query-block-jobs",
    "block-job-cancel",
    "block-job-complete",
];

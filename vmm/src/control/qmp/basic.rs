//! The run-state commands: `query-commands`, `query-version`,
//! `query-status`, `query-name`, `stop`, `cont`, `system_reset`,
//! `system_powerdown`, `quit`.

use super::{COMMANDS, Reply, VERSION, fail};
use crate::control::state::State;
use qmp::{Args, QmpError};
use serde_json::{Value, json};

/// One of the commands above; any other name is `CommandNotFound`.
pub fn execute(st: &State, name: &str, args: &Args) -> Reply {
    let h = &st.handler;
    let done = |r: Result<(), migration::vm::VmError>| r.map(|()| json!({})).map_err(fail);
    let known = COMMANDS.contains(&name);
    if known {
        args.only(&[])?;
    }
    match name {
        "query-commands" => Ok(Value::Array(
            COMMANDS
                .iter()
                .chain(super::block::COMMANDS)
                .map(|c| json!({ "name": c }))
                .collect(),
        )),
        "query-version" => {
            let (major, minor, micro) = VERSION;
            Ok(json!({
                "qemu": { "major": major, "minor": minor, "micro": micro },
                "package": super::package(),
            }))
        }
        "query-name" => Ok(json!({})),
        "query-status" => {
            let s = h.status().map_err(fail)?;
            let stopped = s
                .migration
                .as_ref()
                .is_some_and(|p| p.phase == migration::precopy::Phase::Stopped);
            let (running, status) = run_state(&s.state, stopped);
            Ok(json!({ "running": running, "singlestep": false, "status": status }))
        }
        "stop" => done(h.stop()),
        "cont" => done(h.cont()),
        "system_reset" => done(h.system_reset()),
        "system_powerdown" => done(h.system_powerdown()),
        "quit" => done(h.quit()),
        other => Err(QmpError::not_found(other)),
    }
}

/// This VMM's run state in the reference's `RunState` names (a guest
/// being migrated runs until the migration `stopped` it), and whether the
/// vCPUs run.
pub fn run_state(state: &str, stopped: bool) -> (bool, &str) {
    match state {
        "migrating" if stopped => (false, "finish-migrate"),
        "migrating" | "running" => (true, "running"),
        "incoming" => (false, "inmigrate"),
        other => (false, other),
    }
}

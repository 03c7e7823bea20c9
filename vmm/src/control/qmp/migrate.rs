//! QMP's migration commands: `migrate` (runs in the background, `MIGRATION`
//! events to the connection that started it), `query-migrate`,
//! `migrate_cancel`, `migrate-set-parameters` / `query-migrate-parameters`
//! (`downtime-limit`, `max-bandwidth`, `multifd-channels`,
//! `multifd-compression`, `multifd-zstd-level`) and
//! `migrate-set-capabilities` / `query-migrate-capabilities` (`multifd`;
//! `return-path` and `auto-converge` are always on here).

use super::{Reply, event_with};
use crate::control::protocol::{MigrateRequest, Request};
use crate::control::state::{QmpMigration, State};
use migration::precopy::Outcome;
use serde_json::{Value, json};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

fn shared(st: &State) -> std::sync::MutexGuard<'_, QmpMigration> {
    st.qmp.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad(desc: String) -> (&'static str, String) {
    ("GenericError", desc)
}

/// `migrate-set-parameters`.
pub fn set_parameters(st: &State, args: &Value) -> Reply {
    let mut s = shared(st);
    let obj = args.as_object().cloned().unwrap_or_default();
    for (k, v) in &obj {
        let n = || {
            v.as_u64()
                .ok_or_else(|| bad(format!("Parameter '{k}' expects a number")))
        };
        match k.as_str() {
            "downtime-limit" => s.downtime_limit = n()?,
            "max-bandwidth" => s.max_bandwidth = n()?,
            "multifd-channels" => s.channels = ranged(k, n()?, 16)?,
            "multifd-zstd-level" => s.zstd_level = ranged(k, n()?, 19)?,
            "multifd-compression" => match v.as_str() {
                Some(c @ ("none" | "zstd")) => s.compression = c.to_string(),
                _ => {
                    return Err(bad(format!(
                        "Parameter 'multifd-compression' expects none or zstd, not {v}"
                    )));
                }
            },
            other => return Err(bad(format!("Parameter '{other}' is not supported"))),
        }
    }
    Ok(json!({}))
}

/// `v` of parameter `k` if it is in `1..=max`.
fn ranged(k: &str, v: u64, max: u32) -> Result<u32, (&'static str, String)> {
    u32::try_from(v)
        .ok()
        .filter(|v| (1..=max).contains(v))
        .ok_or_else(|| bad(format!("Parameter '{k}' expects 1..{max}, not {v}")))
}

/// `query-migrate-parameters`.
pub fn query_parameters(st: &State) -> Reply {
    let s = shared(st);
    Ok(json!({
        "downtime-limit": s.downtime_limit,
        "max-bandwidth": s.max_bandwidth,
        "multifd-channels": s.channels,
        "multifd-compression": s.compression,
        "multifd-zstd-level": s.zstd_level,
    }))
}

/// `migrate-set-capabilities`.
pub fn set_capabilities(st: &State, args: &Value) -> Reply {
    let caps = args
        .get("capabilities")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Parameter 'capabilities' is missing".into()))?;
    let mut s = shared(st);
    for c in caps {
        let name = c
            .get("capability")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let on = c.get("state").and_then(Value::as_bool).unwrap_or(false);
        match (name, on) {
            ("multifd", on) => s.multifd = on,
            ("return-path" | "auto-converge", true) => {}
            ("return-path" | "auto-converge", false) => {
                return Err(bad(format!("capability '{name}' is always on in this vmm")));
            }
            _ => return Err(bad(format!("capability '{name}' is not supported"))),
        }
    }
    Ok(json!({}))
}

/// `query-migrate-capabilities`.
pub fn query_capabilities(st: &State) -> Reply {
    let s = shared(st);
    Ok(json!([
        { "capability": "multifd", "state": s.multifd },
        { "capability": "return-path", "state": true },
        { "capability": "auto-converge", "state": true },
    ]))
}

/// `migrate`: starts the migration on its own thread and returns at once.
pub fn start(st: &Arc<State>, args: &Value, out: &UnixStream) -> Reply {
    let uri = args
        .get("uri")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Parameter 'uri' is missing".into()))?
        .to_string();
    let mut events = out.try_clone().map_err(|e| bad(e.to_string()))?;
    let cancel = st
        .begin_migration()
        .map_err(|_| bad("There's a migration process in progress".into()))?;
    let req = {
        let mut s = shared(st);
        s.status = Some("active");
        (s.summary, s.error) = (None, None);
        MigrateRequest {
            uri,
            downtime_limit: s.downtime_limit,
            max_bandwidth: (s.max_bandwidth > 0).then_some(s.max_bandwidth),
            channels: if s.multifd { s.channels } else { 0 },
            compress: (s.multifd && s.compression == "zstd")
                .then(|| format!("zstd:{}", s.zstd_level)),
        }
    };
    let st = st.clone();
    std::thread::spawn(move || {
        event_with(&mut events, "MIGRATION", json!({ "status": "active" }));
        let r = st.handler.migrate(&req, &mut |_| {}, &cancel);
        st.end_migration();
        let status = {
            let mut s = shared(&st);
            let status = match &r {
                Ok(_) => "completed",
                Err(_) if cancel.is_cancelled() => "cancelled",
                Err(_) => "failed",
            };
            s.status = Some(status);
            match &r {
                Ok(sum) => s.summary = Some(sum.clone()),
                Err(e) => s.error = Some(e.to_string()),
            }
            status
        };
        event_with(&mut events, "MIGRATION", json!({ "status": status }));
        if matches!(&r, Ok(s) if s.outcome == Outcome::Handover) {
            st.handler.answered(&Request::Migrate(req));
        }
    });
    Ok(json!({}))
}

/// `query-migrate`.
pub fn query(st: &State) -> Reply {
    let progress = st.handler.status().ok().and_then(|s| s.migration);
    let s = shared(st);
    Ok(match s.status {
        None => json!({}),
        Some("active") => {
            let f = |g: fn(&migration::precopy::Progress) -> u64| progress.as_ref().map_or(0, g);
            json!({ "status": "active", "ram": {
                "transferred": f(|p| p.bytes),
                "remaining": f(|p| p.dirty_pages * 4096),
                "dirty-sync-count": f(|p| u64::from(p.iteration)),
                "normal": f(|p| p.pages_normal),
                "duplicate": f(|p| p.pages_zero),
            } })
        }
        Some(status) => {
            let mut v = json!({ "status": status });
            if let Some(sum) = &s.summary {
                v["total-time"] = json!(sum.total_ms as u64);
                v["downtime"] = json!(sum.downtime_ms as u64);
                v["ram"] = json!({
                    "transferred": sum.bytes,
                    "remaining": 0,
                    "dirty-sync-count": sum.iterations,
                    "normal": sum.pages_normal,
                    "duplicate": sum.pages_zero,
                });
            }
            if let Some(e) = &s.error {
                v["error-desc"] = json!(e);
            }
            v
        }
    })
}

/// `migrate_cancel`.
pub fn cancel(st: &State) -> Reply {
    st.cancel_migration();
    Ok(json!({}))
}

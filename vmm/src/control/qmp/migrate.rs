//! QMP's migration commands: `migrate` (runs in the background; `MIGRATION`
//! events for each status change, `MIGRATION_PASS` for each pass, `STOP`
//! when the guest stops for the switch-over), `migrate-incoming` (a
//! `--incoming defer` destination), `query-migrate`, `migrate_cancel`,
//! `migrate-set-parameters` / `query-migrate-parameters`
//! (`downtime-limit`, `max-bandwidth`, `multifd-channels`,
//! `multifd-compression`, `multifd-zstd-level`) and
//! `migrate-set-capabilities` / `query-migrate-capabilities` (`multifd`,
//! `events`; `return-path` and `auto-converge` are always on here).

use super::{Reply, fail};
use crate::control::handler::Answered;
use crate::control::state::State;
use crate::control::types::MigrateRequest;
use migration::precopy::{Outcome, Phase, Progress, Summary};
use qmp::{Args, QmpError};
use serde_json::{Value, json};
use std::sync::Arc;

/// `migrate-set-parameters`.
pub fn set_parameters(st: &State, args: &Args) -> Reply {
    args.only(&[
        "downtime-limit",
        "max-bandwidth",
        "multifd-channels",
        "multifd-zstd-level",
        "multifd-compression",
        "tls-creds",
        "tls-hostname",
        "tls-authz",
    ])?;
    // Every argument is checked before any is applied.
    let downtime = args.opt_u64("downtime-limit")?;
    if downtime.is_some_and(|d| d > 2_000_000) {
        return Err(QmpError::generic(
            "Parameter 'downtime-limit' expects an integer in the range of 0 to 2000000 milliseconds",
        ));
    }
    let bandwidth = args.opt_u64("max-bandwidth")?;
    let channels = args
        .opt_u64("multifd-channels")?
        .map(|v| ranged("multifd-channels", v, 16))
        .transpose()?;
    let level = args
        .opt_u64("multifd-zstd-level")?
        .map(|v| ranged("multifd-zstd-level", v, 19))
        .transpose()?;
    let compression = match args.opt_str("multifd-compression")? {
        None => None,
        Some(c @ ("none" | "zstd")) => Some(c.to_string()),
        Some(other) => {
            return Err(QmpError::generic(format!(
                "Parameter 'multifd-compression' does not accept value '{other}' (none or zstd)"
            )));
        }
    };
    let creds = args.opt_str("tls-creds")?;
    if let Some(c) = creds.filter(|c| !c.is_empty()) {
        migration::secure::Creds::load(c)
            .map_err(|e| QmpError::generic(format!("Parameter 'tls-creds': {e}")))?;
    }
    let hostname = args.opt_str("tls-hostname")?;
    let authz = match args.get("tls-authz") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => Some(Vec::new()),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'tls-authz', expected: string")
                })?,
        ),
        Some(_) => {
            return Err(QmpError::generic(
                "Invalid parameter type for 'tls-authz', expected: string",
            ));
        }
    };
    let mut s = st.qmp();
    if let Some(c) = creds {
        s.tls_creds = c.to_string();
    }
    if let Some(h) = hostname {
        s.tls_hostname = h.to_string();
    }
    if let Some(a) = authz {
        s.tls_authz = a;
    }
    s.downtime_limit = downtime.unwrap_or(s.downtime_limit);
    s.max_bandwidth = bandwidth.unwrap_or(s.max_bandwidth);
    s.channels = channels.unwrap_or(s.channels);
    s.zstd_level = level.unwrap_or(s.zstd_level);
    if let Some(c) = compression {
        s.compression = c;
    }
    Ok(json!({}))
}

/// `v` of parameter `k` if it is in `1..=max`.
fn ranged(k: &str, v: u64, max: u32) -> Result<u32, QmpError> {
    u32::try_from(v)
        .ok()
        .filter(|v| (1..=max).contains(v))
        .ok_or_else(|| QmpError::generic(format!("Parameter '{k}' expects 1..{max}, not {v}")))
}

/// `query-migrate-parameters`.
pub fn query_parameters(st: &State, args: &Args) -> Reply {
    args.only(&[])?;
    let s = st.qmp();
    Ok(json!({
        "downtime-limit": s.downtime_limit,
        "max-bandwidth": s.max_bandwidth,
        "multifd-channels": s.channels,
        "multifd-compression": s.compression,
        "multifd-zstd-level": s.zstd_level,
        "tls-creds": s.tls_creds,
        "tls-hostname": s.tls_hostname,
        "tls-authz": s.tls_authz.join(" "),
    }))
}

/// `migrate-set-capabilities`.
pub fn set_capabilities(st: &State, args: &Args) -> Reply {
    args.only(&["capabilities"])?;
    let caps = args
        .opt_array("capabilities")?
        .ok_or_else(|| QmpError::generic("Parameter 'capabilities' is missing"))?;
    let mut wanted = Vec::new();
    for c in caps {
        let name = c.get("capability").and_then(Value::as_str);
        let on = c.get("state").and_then(Value::as_bool);
        let (Some(name), Some(on)) = (name, on) else {
            return Err(QmpError::generic(
                "Invalid parameter type for 'capabilities', expected: {capability, state}",
            ));
        };
        match (name, on) {
            ("multifd" | "events", _) | ("return-path" | "auto-converge", true) => {
                wanted.push((name, on))
            }
            ("return-path" | "auto-converge", false) => {
                return Err(QmpError::generic(format!(
                    "Capability '{name}' is always on in this vmm"
                )));
            }
            _ => {
                return Err(QmpError::generic(format!(
                    "Capability '{name}' is not supported by this vmm"
                )));
            }
        }
    }
    if st.qmp().status.is_some_and(|s| !finished(s)) {
        return Err(QmpError::generic("There's a migration process in progress"));
    }
    let mut s = st.qmp();
    for (name, on) in wanted {
        match name {
            "multifd" => s.multifd = on,
            "events" => s.events = on,
            _ => {}
        }
    }
    Ok(json!({}))
}

/// `query-migrate-capabilities`.
pub fn query_capabilities(st: &State, args: &Args) -> Reply {
    args.only(&[])?;
    let s = st.qmp();
    Ok(json!([
        { "capability": "multifd", "state": s.multifd },
        { "capability": "events", "state": s.events },
        { "capability": "return-path", "state": true },
        { "capability": "auto-converge", "state": true },
    ]))
}

fn finished(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// Records a status change and tells every connection (`MIGRATION`, when
/// the `events` capability is on, as in the reference).
fn set_status(st: &State, status: &'static str) {
    let events = {
        let mut s = st.qmp();
        s.status = Some(status);
        s.events
    };
    if events {
        st.events.emit("MIGRATION", json!({ "status": status }));
    }
}

/// `migrate`: starts the migration on its own thread and returns at once.
/// This VMM's extension: `x-overwrite` lets a `file:` URI replace a file.
pub fn start(st: &Arc<State>, args: &Args) -> Reply {
    args.only(&["uri", "channels", "detach", "resume", "x-overwrite"])?;
    let uri = uri_of(args)?;
    if args.opt_bool("resume")? == Some(true) {
        return Err(QmpError::generic(
            "postcopy resume is not supported by this vmm",
        ));
    }
    let overwrite = args.opt_bool("x-overwrite")?.unwrap_or(false);
    let cancel = st.begin_migration().map_err(QmpError::generic)?;
    let req = {
        let mut s = st.qmp();
        (s.summary, s.error) = (None, None);
        s.started = Some(std::time::Instant::now());
        MigrateRequest {
            uri,
            downtime_limit: s.downtime_limit,
            max_bandwidth: (s.max_bandwidth > 0).then_some(s.max_bandwidth),
            channels: if s.multifd { s.channels } else { 0 },
            // Without multifd it compresses the main stream (an extension).
            compress: (s.compression == "zstd").then(|| format!("zstd:{}", s.zstd_level)),
            overwrite,
            tls: s.tls(),
        }
    };
    set_status(st, "setup");
    let st = st.clone();
    let spawned = std::thread::Builder::new()
        .name("migrate".into())
        .spawn(move || run(&st, req, &cancel));
    if spawned.is_err() {
        return Err(QmpError::generic("cannot start the migration thread"));
    }
    Ok(json!({}))
}

/// The migration thread.
fn run(st: &State, req: MigrateRequest, cancel: &migration::precopy::CancelToken) {
    set_status(st, "active");
    let (mut pass, mut stopped) = (0u32, false);
    let mut progress = |p: &Progress| {
        if p.iteration != pass && p.phase == Phase::Precopy {
            pass = p.iteration;
            st.events.emit("MIGRATION_PASS", json!({ "pass": pass }));
        }
        if p.phase == Phase::Stopped && !stopped {
            stopped = true;
            st.events.emit("STOP", json!({}));
            set_status(st, "device");
        }
    };
    let r = st.handler.migrate(&req, &mut progress, cancel);
    st.end_migration();
    let status = match &r {
        Ok(_) => "completed",
        Err(_) if cancel.is_cancelled() => "cancelled",
        Err(_) => "failed",
    };
    {
        let mut s = st.qmp();
        match &r {
            Ok(sum) => s.summary = Some(sum.clone()),
            Err(e) => s.error = Some(e.to_string()),
        }
    }
    if stopped && r.is_err() {
        // The driver resumed the guest.
        st.events.emit("RESUME", json!({}));
    }
    set_status(st, status);
    if matches!(&r, Ok(s) if s.outcome == Outcome::Handover) {
        // The guest runs on the destination. The process ends once its QMP
        // clients had their chance to read the outcome (`query-migrate`)
        // and went away, at the latest after HANDOVER_GRACE.
        let t0 = std::time::Instant::now();
        while st.active.load(std::sync::atomic::Ordering::SeqCst) > 0
            && t0.elapsed() < HANDOVER_GRACE
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        st.handler.answered(Answered::Migrated);
    }
}

/// How long a source that handed its guest over waits for its QMP clients
/// to disconnect before it exits.
pub const HANDOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// `migrate-incoming`: a `--incoming defer` destination starts listening.
pub fn incoming(st: &State, args: &Args) -> Reply {
    args.only(&["uri", "channels", "exit-on-error"])?;
    let uri = uri_of(args)?;
    let tls = st.qmp().tls();
    st.handler
        .migrate_incoming(&uri, tls)
        .map(|_| json!({}))
        .map_err(fail)
}

/// The URI of `migrate` / `migrate-incoming`: `uri`, or the reference's
/// `channels` (8.2+): one `main` channel whose `addr` is a socket
/// (`inet` host/port, `unix` path) or a `file` (`filename`, no offset).
/// This VMM opens its data channels itself (the `multifd` capability).
fn uri_of(args: &Args) -> Result<String, QmpError> {
    let channels = args.opt_array("channels")?;
    let uri = args.opt_str("uri")?;
    let list = match (uri, channels) {
        (Some(u), None) => return Ok(u.to_string()),
        (None, Some(c)) => c,
        (Some(_), Some(_)) => {
            return Err(QmpError::generic(
                "need either 'uri' or 'channels' argument",
            ));
        }
        (None, None) => return Err(QmpError::generic("Parameter 'uri' is missing")),
    };
    let [main] = list.as_slice() else {
        return Err(QmpError::generic(
            "'channels' must hold exactly one channel, of type 'main'",
        ));
    };
    if main.get("channel-type").and_then(Value::as_str) != Some("main") {
        return Err(QmpError::generic(
            "the channel's 'channel-type' must be 'main'",
        ));
    }
    let addr = main
        .get("addr")
        .ok_or_else(|| QmpError::generic("Parameter 'addr' is missing"))?;
    let s = |k: &str| addr.get(k).and_then(Value::as_str);
    let port = addr.get("port").and_then(|p| {
        p.as_str()
            .map(String::from)
            .or_else(|| p.as_u64().map(|n| n.to_string()))
    });
    match (s("transport"), s("type")) {
        (Some("socket"), Some("inet")) => match (s("host"), port) {
            (Some(h), Some(p)) if h.contains(':') => Ok(format!("tcp:[{h}]:{p}")),
            (Some(h), Some(p)) => Ok(format!("tcp:{h}:{p}")),
            _ => Err(QmpError::generic("an inet address needs 'host' and 'port'")),
        },
        (Some("socket"), Some("unix")) => s("path")
            .map(|p| format!("unix:{p}"))
            .ok_or_else(|| QmpError::generic("a unix address needs 'path'")),
        (Some("file"), _) if addr.get("offset").and_then(Value::as_u64).unwrap_or(0) == 0 => {
            s("filename")
                .map(|f| format!("file:{f}"))
                .ok_or_else(|| QmpError::generic("a file address needs 'filename'"))
        }
        (t, ty) => Err(QmpError::generic(format!(
            "address transport {} type {} is not supported (socket inet/unix, file)",
            t.unwrap_or("?"),
            ty.unwrap_or("-")
        ))),
    }
}

/// `query-migrate`: the outgoing migration's status and figures, or a
/// destination's incoming status.
pub fn query(st: &State, args: &Args) -> Reply {
    args.only(&[])?;
    let progress = st.handler.migration_progress();
    let s = st.qmp();
    let Some(status) = s.status else {
        return Ok(match st.handler.incoming_status() {
            Some((status, uri)) => {
                let mut v = json!({ "status": status });
                if let Some(a) = uri.as_deref().and_then(socket_address) {
                    v["socket-address"] = json!([a]);
                }
                v
            }
            None => json!({}),
        });
    };
    let mut v = json!({ "status": status });
    if let Some(started) = s.started.filter(|_| !finished(status)) {
        v["total-time"] = json!(started.elapsed().as_millis() as u64);
    }
    if let Some(p) = progress.as_ref().filter(|_| !finished(status)) {
        v["expected-downtime"] = json!(p.expected_downtime_ms as u64);
        v["cpu-throttle-percentage"] = json!(p.throttle);
        v["ram"] = json!({
            "transferred": p.bytes,
            "remaining": p.dirty_pages * migration::PAGE_SIZE as u64,
            "dirty-sync-count": p.iteration,
            "normal": p.pages_normal,
            "duplicate": p.pages_zero,
            "normal-bytes": p.pages_normal * migration::PAGE_SIZE as u64,
            "mbps": p.bandwidth as f64 * 8.0 / 1e6,
        });
        v["x-vmm-progress"] = json!(p);
    }
    if let Some(sum) = &s.summary {
        v["total-time"] = json!(sum.total_ms as u64);
        v["downtime"] = json!(sum.downtime_ms as u64);
        v["ram"] = ram(sum);
        v["x-vmm-summary"] = json!(sum);
    }
    if let Some(e) = &s.error {
        v["error-desc"] = json!(e);
    }
    Ok(v)
}

/// A listening URI as the reference's `SocketAddress`.
fn socket_address(uri: &str) -> Option<Value> {
    if let Some(path) = uri.strip_prefix("unix:") {
        return Some(json!({ "type": "unix", "path": path }));
    }
    let (host, port) = uri.strip_prefix("tcp:")?.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(json!({ "type": "inet", "host": host, "port": port }))
}

fn ram(sum: &Summary) -> Value {
    let mbps = if sum.total_ms > 0.0 {
        sum.bytes as f64 * 8.0 / (sum.total_ms * 1e3)
    } else {
        0.0
    };
    json!({
        "transferred": sum.bytes,
        "remaining": 0,
        "dirty-sync-count": sum.iterations,
        "normal": sum.pages_normal,
        "duplicate": sum.pages_zero,
        "normal-bytes": sum.pages_normal * migration::PAGE_SIZE as u64,
        "mbps": mbps,
    })
}

/// `migrate_cancel` (nothing to cancel is not an error, as in the reference).
pub fn cancel(st: &State, args: &Args) -> Reply {
    args.only(&[])?;
    if st.cancel_migration() {
        set_status(st, "cancelling");
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(v: Value) -> Result<String, QmpError> {
        uri_of(&Args(v.as_object().cloned().unwrap_or_default()))
    }

    #[test]
    fn uri_or_the_references_channels() {
        assert_eq!(uri(json!({"uri": "tcp:h:1"})).unwrap(), "tcp:h:1");
        let main = |addr: Value| json!({"channels": [{"channel-type": "main", "addr": addr}]});
        let inet =
            json!({"transport": "socket", "type": "inet", "host": "10.0.0.2", "port": "4444"});
        assert_eq!(uri(main(inet)).unwrap(), "tcp:10.0.0.2:4444");
        let v6 = json!({"transport": "socket", "type": "inet", "host": "::1", "port": 9});
        assert_eq!(uri(main(v6)).unwrap(), "tcp:[::1]:9");
        let unix = json!({"transport": "socket", "type": "unix", "path": "/t/m"});
        assert_eq!(uri(main(unix)).unwrap(), "unix:/t/m");
        let file = json!({"transport": "file", "filename": "/t/s.img"});
        assert_eq!(uri(main(file)).unwrap(), "file:/t/s.img");
        for bad in [
            json!({}),
            json!({"uri": "tcp:h:1", "channels": []}),
            json!({"channels": []}),
            json!({"channels": [{"channel-type": "multifd", "addr": {}}]}),
            main(json!({"transport": "rdma"})),
            main(json!({"transport": "file", "filename": "/x", "offset": 4096})),
        ] {
            assert!(uri(bad.clone()).is_err(), "{bad}");
        }
    }
}

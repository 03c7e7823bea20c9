//! One migration between two running VMMs of either kind, driven through
//! QMP with the same client (`qmp::Client`) and the same commands: the
//! row's multifd settings on both sides, `migrate-incoming` on the
//! destination (started `-incoming defer` / `--incoming defer`),
//! auto-converge and unlimited bandwidth on the source, `migrate`, then
//! `query-migrate` until it ends. Total time and downtime come from the
//! VMM's own `query-migrate` (vmm: its `x-vmm-summary`, the same figures in
//! fractional ms), and from the source's STOP and the destination's RESUME
//! events.

use super::cpu::CpuWatch;
use super::setting::Setting;
use super::{Case, READY, Sample, free_port, wait_for};
use crate::bench_vmm::Proc;
use qmp::{Client, ClientError};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a row has no measurement.
#[derive(Debug)]
pub enum RunError {
    /// This binary refused the row's setting (the row is skipped).
    Unsupported(String),
    /// The migration or its set-up failed.
    Failed(String),
}

impl From<String> for RunError {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

/// How long one QMP command may take.
const ANSWER: Duration = Duration::from_secs(30);

/// A QMP session once the VMM listens (a socket file can exist a moment
/// before its `listen`: refused connections are retried within READY).
fn connect(path: &Path) -> Result<Client, String> {
    wait_for(READY, "the QMP socket", || path.exists())?;
    let deadline = Instant::now() + READY;
    loop {
        match Client::connect(path, ANSWER) {
            Ok(c) => return Ok(c),
            Err(ClientError::Connect { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("QMP {}: {e}", path.display())),
        }
    }
}

fn exec(q: &mut Client, (cmd, args): &(&str, Value)) -> Result<Value, String> {
    q.execute(cmd, args.clone())
        .map_err(|e| format!("QMP {cmd} {args}: {e}"))
}

/// The source's settings for every row: vmm throttles a guest that does
/// not converge, so does QEMU with auto-converge; "unlimited" bandwidth
/// (QEMU 7.2's default is 32 MiB/s).
pub fn base_commands(downtime_limit: u64) -> Vec<(&'static str, Value)> {
    vec![
        (
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "auto-converge", "state": true}]}),
        ),
        (
            "migrate-set-parameters",
            json!({"downtime-limit": downtime_limit, "max-bandwidth": 1_000_000_000_000_u64}),
        ),
    ]
}

/// The commands that set the row's channels and compression, the same on
/// both sides (none for one plain stream; multifd only with channels).
pub fn multifd_commands(set: &Setting) -> Vec<(&'static str, Value)> {
    if set.channels == 0 && set.zstd.is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut params = json!({
        "multifd-compression": if set.zstd.is_some() { "zstd" } else { "none" },
    });
    if set.channels > 0 {
        out.push((
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "multifd", "state": true}]}),
        ));
        params["multifd-channels"] = json!(set.channels);
    }
    if let Some(l) = set.zstd {
        params["multifd-zstd-level"] = json!(l);
    }
    out.push(("migrate-set-parameters", params));
    out
}

/// Which VMM a side is (their TLS credentials are named differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `tls-creds` is the credentials directory itself.
    Vmm,
    /// `tls-creds` names a `tls-creds-x509` object, added first.
    Qemu,
}

/// The commands that turn x509 TLS (the rehearsal credentials in `dir`) on
/// for the source and for the destination of a `kind` VMM.
pub fn tls_commands(kind: Kind, dir: &Path) -> [Vec<(&'static str, Value)>; 2] {
    let dir = dir.display().to_string();
    let side = |endpoint: &str, source: bool| {
        let mut out = Vec::new();
        let creds = match kind {
            Kind::Vmm => dir.clone(),
            Kind::Qemu => {
                out.push((
                    "object-add",
                    json!({"qom-type": "tls-creds-x509", "id": "tls0", "dir": dir,
                           "endpoint": endpoint, "verify-peer": true}),
                ));
                "tls0".to_string()
            }
        };
        let mut p = json!({ "tls-creds": creds });
        if source {
            p["tls-hostname"] = json!("localhost");
        }
        out.push(("migrate-set-parameters", p));
        out
    };
    [side("client", true), side("server", false)]
}

/// A QMP event's host timestamp, in seconds.
fn event_time(e: &Value) -> Option<f64> {
    let t = e.get("timestamp")?;
    Some(t.get("seconds")?.as_f64()? + t.get("microseconds")?.as_f64()? / 1e6)
}

/// Migrates `src` (QMP socket `sq`, guest ready) to `dst` (QMP socket `dq`,
/// waiting for `migrate-incoming`) with setting `set`.
pub fn migrate(
    (src, sq): (&Proc, &Path),
    (dst, dq): (&Proc, &Path),
    set: &Setting,
    case: &Case,
    kind: Kind,
) -> Result<Sample, RunError> {
    let args = case.args;
    let mut s = connect(sq)?;
    let mut d = connect(dq)?;
    if set.tls {
        let dir = case
            .tls
            .ok_or_else(|| "a +tls row without credentials".to_string())?;
        let [on_src, on_dst] = tls_commands(kind, dir);
        for c in on_dst {
            exec(&mut d, &c).map_err(|e| RunError::Unsupported(format!("destination: {e}")))?;
        }
        for c in on_src {
            exec(&mut s, &c).map_err(|e| RunError::Unsupported(format!("source: {e}")))?;
        }
    }
    for c in multifd_commands(set) {
        exec(&mut d, &c).map_err(|e| RunError::Unsupported(format!("destination: {e}")))?;
    }
    let uri = format!("tcp:127.0.0.1:{}", free_port()?);
    // `migrate-incoming` returns once the destination listens.
    exec(&mut d, &("migrate-incoming", json!({ "uri": uri })))?;
    for c in base_commands(args.downtime_limit) {
        exec(&mut s, &c)?;
    }
    for c in multifd_commands(set) {
        exec(&mut s, &c).map_err(|e| RunError::Unsupported(format!("source: {e}")))?;
    }
    let watch = CpuWatch::start(src.pid(), dst.pid());
    let t0 = Instant::now();
    exec(&mut s, &("migrate", json!({ "uri": uri })))?;
    let deadline = t0 + Duration::from_secs(args.timeout);
    let info = loop {
        // Waiting for an event is the pause between two queries.
        s.pause(Duration::from_millis(10))
            .map_err(|e| format!("QMP: {e}"))?;
        let v = exec(&mut s, &("query-migrate", json!({})))?;
        match v.get("status").and_then(Value::as_str) {
            Some("completed") => break v,
            Some("failed" | "cancelled") => {
                return Err(RunError::Failed(format!("migration failed: {v}")));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let _ = exec(&mut s, &("migrate_cancel", json!({})));
            return Err(RunError::Failed(format!(
                "migration not done after {} s: {v}",
                args.timeout
            )));
        }
    };
    let resume = d
        .wait_event(ANSWER, |e| e["event"] == "RESUME")
        .map_err(|e| format!("destination RESUME: {e}"))?;
    // CPU is sampled until the destination runs: over the same wall time.
    let wall_s = t0.elapsed().as_secs_f64();
    let (src_cpu, dst_cpu) = watch.finish();
    let stop = s
        .wait_event(ANSWER, |e| e["event"] == "STOP")
        .map_err(|e| format!("source STOP: {e}"))?;
    drop(s);
    case.check_counting(dst)?;
    let ram = info.get("ram").cloned().unwrap_or(Value::Null);
    let reported = match info.get("x-vmm-summary") {
        Some(sum) => Sample::reported(
            sum,
            ["total_ms", "downtime_ms"],
            &ram,
            ["transferred", "dirty-sync-count"],
        ),
        None => Sample::reported(
            &info,
            ["total-time", "downtime"],
            &ram,
            ["transferred", "dirty-sync-count"],
        ),
    };
    Ok(Sample {
        downtime_events_ms: event_time(&resume)
            .zip(event_time(&stop))
            .map(|(r, s)| (r - s) * 1e3),
        src_cpu,
        dst_cpu,
        wall_s,
        page_bytes: ram.get("normal-bytes").and_then(Value::as_u64).unwrap_or(0),
        ..reported
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multifd_on_both_sides() {
        let set = |t: &str| t.parse::<Setting>().unwrap_or_else(|e| panic!("{e}"));
        assert!(multifd_commands(&set("0")).is_empty());
        let c = multifd_commands(&set("4+zstd"));
        assert_eq!(c[0].0, "migrate-set-capabilities");
        assert_eq!(
            c[0].1.to_string(),
            r#"{"capabilities":[{"capability":"multifd","state":true}]}"#
        );
        assert_eq!(
            c[1].1.to_string(),
            r#"{"multifd-channels":4,"multifd-compression":"zstd","multifd-zstd-level":1}"#
        );
        let c = multifd_commands(&set("2"));
        assert_eq!(c[1].1["multifd-compression"], "none");
        assert!(c[1].1.get("multifd-zstd-level").is_none());
        // One compressed stream (vmm only): no multifd, compression set.
        let c = multifd_commands(&set("0+zstd"));
        assert_eq!((c.len(), c[0].0), (1, "migrate-set-parameters"));
        assert_eq!(base_commands(300)[1].1["downtime-limit"], 300);
    }

    #[test]
    fn tls_for_each_kind_of_vmm() {
        let [src, dst] = tls_commands(Kind::Vmm, Path::new("/t/c"));
        assert_eq!(
            src[0].1.to_string(),
            r#"{"tls-creds":"/t/c","tls-hostname":"localhost"}"#
        );
        assert_eq!(dst[0].1.to_string(), r#"{"tls-creds":"/t/c"}"#);
        let [src, dst] = tls_commands(Kind::Qemu, Path::new("/t/c"));
        assert_eq!(
            (src[0].0, src[0].1["endpoint"].as_str()),
            ("object-add", Some("client"))
        );
        assert_eq!(dst[0].1["endpoint"], "server");
        assert_eq!(src[1].1["tls-creds"], "tls0");
    }
}

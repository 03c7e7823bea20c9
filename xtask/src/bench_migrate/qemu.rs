//! The reference VMM's side of `bench-migrate`: two QEMU processes (the
//! destination `-incoming defer`), multifd set on both through QMP where the
//! row asks for channels, the migration driven through QMP, total time and
//! downtime from QEMU's own `query-migrate` and from its STOP and RESUME
//! events.

use super::cpu::CpuWatch;
use super::setting::{Setting, Version};
use super::{Case, READY, Sample, free_port, wait_for};
use crate::bench_vmm::{Proc, reference_qemu};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A QMP connection; events are kept with their timestamps.
struct Qmp {
    w: UnixStream,
    r: BufReader<UnixStream>,
    events: Vec<Value>,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, String> {
        wait_for(READY, "the QMP socket", || path.exists())?;
        let s = UnixStream::connect(path).map_err(|e| format!("QMP connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| format!("QMP: {e}"))?;
        let r = BufReader::new(s.try_clone().map_err(|e| format!("QMP: {e}"))?);
        let mut q = Self {
            w: s,
            r,
            events: Vec::new(),
        };
        q.read()?; // greeting
        q.cmd(json!({"execute": "qmp_capabilities"}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .r
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP json `{line}`: {e}"))
    }

    fn cmd(&mut self, c: Value) -> Result<Value, String> {
        let mut text = c.to_string();
        text.push('\n');
        self.w
            .write_all(text.as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else if let Some(e) = v.get("error") {
                return Err(format!("QMP {c}: {e}"));
            }
        }
    }

    /// Waits (bounded by the socket's read timeout) for event `name`.
    fn event(&mut self, name: &str) -> Result<Value, String> {
        if let Some(e) = self.events.iter().find(|e| e["event"] == name) {
            return Ok(e.clone());
        }
        loop {
            let v = self.read()?;
            if v["event"] == name {
                return Ok(v);
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}

/// A QMP event's host timestamp, in seconds.
fn event_time(e: &Value) -> Option<f64> {
    let t = e.get("timestamp")?;
    Some(t.get("seconds")?.as_f64()? + t.get("microseconds")?.as_f64()? / 1e6)
}

/// One side of `case`: the reference VMM with its QMP socket at `qmp`, its
/// threads named (`CPU N/KVM`) so that vCPU time can be told apart.
fn qemu_cmd(qemu: &Path, case: &Case, qmp: &Path, name: &str) -> Command {
    let extra = [
        "-name".to_string(),
        format!("{name},debug-threads=on"),
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ];
    reference_qemu(qemu, case.kernel, case.mib, case.workload, &extra)
}

/// A reference VMM and its version (`--version`).
pub struct Reference {
    pub path: PathBuf,
    pub version: Version,
}

impl Reference {
    /// Runs `PATH --version` and parses its first line.
    pub fn probe(path: &Path) -> Result<Self, String> {
        let out = Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{} --version: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = Version::parse(&text)
            .filter(|_| out.status.success())
            .ok_or_else(|| {
                format!(
                    "{} --version ({}): no `version X.Y.Z` in `{}` (stderr: `{}`)",
                    path.display(),
                    out.status,
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            version,
        })
    }

    /// `QEMU 10.0`.
    pub fn label(&self) -> String {
        self.version.label()
    }
}

/// Why a reference row has no measurement.
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

/// `migrate-set-capabilities` of the source for every setting: vmm
/// throttles a guest that does not converge; so does QEMU with auto-converge.
fn base_capabilities() -> Value {
    json!({"execute": "migrate-set-capabilities", "arguments": {"capabilities": [
        {"capability": "auto-converge", "state": true}]}})
}

/// `migrate-set-parameters` of the source for every setting.
fn base_parameters(downtime_limit: u64) -> Value {
    json!({"execute": "migrate-set-parameters", "arguments": {
        "downtime-limit": downtime_limit,
        // "Unlimited": QEMU 7.2's default is 32 MiB/s.
        "max-bandwidth": 1_000_000_000_000_u64}})
}

/// The QMP commands that turn multifd on for `set`, the same on both sides
/// (none for one stream).
fn multifd_commands(set: &Setting) -> Vec<Value> {
    if set.channels == 0 {
        return Vec::new();
    }
    let mut params = json!({
        "multifd-channels": set.channels,
        "multifd-compression": if set.zstd.is_some() { "zstd" } else { "none" },
    });
    if let Some(l) = set.zstd {
        params["multifd-zstd-level"] = json!(l);
    }
    vec![
        json!({"execute": "migrate-set-capabilities", "arguments": {"capabilities": [
            {"capability": "multifd", "state": true}]}}),
        json!({"execute": "migrate-set-parameters", "arguments": params}),
    ]
}

/// Sends the multifd commands of `set`; a refusal means this binary does
/// not support the setting.
fn set_multifd(q: &mut Qmp, set: &Setting, side: &str) -> Result<(), RunError> {
    for c in multifd_commands(set) {
        q.cmd(c)
            .map_err(|e| RunError::Unsupported(format!("{side}: {e}")))?;
    }
    Ok(())
}

/// One QEMU → QEMU migration driven through QMP.
pub fn run_qemu(qemu: &Reference, set: &Setting, case: &Case) -> Result<Sample, RunError> {
    if let Some(why) = qemu.version.unsupported(set) {
        return Err(RunError::Unsupported(why));
    }
    let (args, path) = (case.args, qemu.path.as_path());
    let sq = case.scratch("src.qmp");
    let dq = case.scratch("dst.qmp");
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let src = Proc::spawn(qemu_cmd(path, case, &sq, "src"))?;
    src.wait_line(READY, case.ready_line())?;
    let mut sqmp = Qmp::connect(&sq)?;
    let mut c = qemu_cmd(path, case, &dq, "dst");
    c.args(["-incoming", "defer"]);
    let dst = Proc::spawn(c)?;
    let mut dqmp = Qmp::connect(&dq)?;
    set_multifd(&mut dqmp, set, "destination")?;
    let port = free_port()?;
    let uri = format!("tcp:127.0.0.1:{port}");
    // `migrate-incoming` returns once the destination listens.
    dqmp.cmd(json!({"execute": "migrate-incoming", "arguments": {"uri": uri}}))?;

    sqmp.cmd(base_capabilities())?;
    sqmp.cmd(base_parameters(args.downtime_limit))?;
    set_multifd(&mut sqmp, set, "source")?;
    let watch = CpuWatch::start(src.pid(), dst.pid());
    let t0 = Instant::now();
    sqmp.cmd(json!({"execute": "migrate", "arguments": {"uri": uri}}))?;
    let deadline = t0 + Duration::from_secs(args.timeout);
    let info = loop {
        let v = sqmp.cmd(json!({"execute": "query-migrate"}))?;
        match v.get("status").and_then(Value::as_str) {
            Some("completed") => break v,
            Some("failed") | Some("cancelled") => {
                return Err(RunError::Failed(format!("QEMU migration failed: {v}")));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let _ = sqmp.cmd(json!({"execute": "migrate_cancel"}));
            return Err(RunError::Failed(format!(
                "QEMU migration not done after {} s: {v}",
                args.timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let resume = dqmp.event("RESUME")?;
    // CPU is sampled until the destination runs: over the same wall time.
    let wall_s = t0.elapsed().as_secs_f64();
    let (src_cpu, dst_cpu) = watch.finish();
    let stop = sqmp.event("STOP")?;
    case.check_counting(&dst)?;
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let ram = info.get("ram").cloned().unwrap_or(Value::Null);
    Ok(Sample {
        downtime_events_ms: event_time(&resume)
            .zip(event_time(&stop))
            .map(|(r, s)| (r - s) * 1e3),
        src_cpu,
        dst_cpu,
        wall_s,
        page_bytes: ram.get("normal-bytes").and_then(Value::as_u64).unwrap_or(0),
        ..Sample::reported(
            &info,
            ["total-time", "downtime"],
            &ram,
            ["transferred", "dirty-sync-count"],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_command_line() {
        let args = <crate::Cli as clap::Parser>::parse_from(["xtask", "bench-migrate"]);
        let crate::Command::BenchMigrate(args) = args.command else {
            unreachable!("bench-migrate parses as bench-migrate")
        };
        let case = Case {
            kernel: Path::new("g.elf"),
            mib: 256,
            workload: "ab",
            args: &args,
        };
        let c = qemu_cmd(Path::new("qemu"), &case, Path::new("/t/q"), "src");
        assert_eq!(
            crate::bench_vmm::tests::line(&c),
            "qemu -M microvm -enable-kvm -m 256 -no-reboot -display none -monitor none -nodefaults \
             -serial stdio -name src,debug-threads=on -qmp unix:/t/q,server=on,wait=off \
             -kernel g.elf -append workload=ab"
        );
    }

    #[test]
    fn multifd_on_both_sides() {
        let set = |t: &str| t.parse::<Setting>().unwrap_or_else(|e| panic!("{e}"));
        assert!(multifd_commands(&set("0")).is_empty());
        let c = multifd_commands(&set("4+zstd"));
        assert_eq!(
            c[0].to_string(),
            r#"{"arguments":{"capabilities":[{"capability":"multifd","state":true}]},"execute":"migrate-set-capabilities"}"#
        );
        assert_eq!(
            c[1].to_string(),
            r#"{"arguments":{"multifd-channels":4,"multifd-compression":"zstd","multifd-zstd-level":1},"execute":"migrate-set-parameters"}"#
        );
        let c = multifd_commands(&set("2"));
        assert_eq!(c[1]["arguments"]["multifd-compression"], "none");
        assert!(c[1]["arguments"].get("multifd-zstd-level").is_none());
        assert_eq!(base_parameters(300)["arguments"]["downtime-limit"], 300);
    }
}

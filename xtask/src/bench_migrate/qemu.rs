//! The reference VMM's side of `bench-migrate`: two QEMU processes, the
//! migration driven through QMP, total time and downtime from QEMU's own
//! `query-migrate` and from its STOP and RESUME events.

use super::cpu::CpuWatch;
use super::{Case, READY, Sample, free_port, wait_for};
use crate::bench_vmm::{Proc, reference_qemu};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
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

/// One QEMU → QEMU migration driven through QMP.
pub fn run_qemu(qemu: &Path, case: &Case) -> Result<Sample, String> {
    let args = case.args;
    let sq = case.scratch("src.qmp");
    let dq = case.scratch("dst.qmp");
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let src = Proc::spawn(qemu_cmd(qemu, case, &sq, "src"))?;
    src.wait_line(READY, case.ready_line())?;
    let mut sqmp = Qmp::connect(&sq)?;
    let port = free_port()?;
    let uri = format!("tcp:127.0.0.1:{port}");
    let mut c = qemu_cmd(qemu, case, &dq, "dst");
    c.args(["-incoming", &uri]);
    let dst = Proc::spawn(c)?;
    // QEMU binds `-incoming tcp:` during start-up, before its main loop
    // answers QMP: once QMP answers, the destination listens.
    let mut dqmp = Qmp::connect(&dq)?;

    // vmm throttles a guest that does not converge; so does QEMU with auto-converge.
    sqmp.cmd(
        json!({"execute": "migrate-set-capabilities", "arguments": {"capabilities": [
        {"capability": "auto-converge", "state": true}]}}),
    )?;
    sqmp.cmd(json!({"execute": "migrate-set-parameters", "arguments": {
        "downtime-limit": args.downtime_limit,
        // "Unlimited": QEMU 7.2's default is 32 MiB/s.
        "max-bandwidth": 1_000_000_000_000_u64}}))?;
    let watch = CpuWatch::start(src.pid(), dst.pid());
    let t0 = Instant::now();
    sqmp.cmd(json!({"execute": "migrate", "arguments": {"uri": uri}}))?;
    let deadline = t0 + Duration::from_secs(args.timeout);
    let info = loop {
        let v = sqmp.cmd(json!({"execute": "query-migrate"}))?;
        match v.get("status").and_then(Value::as_str) {
            Some("completed") => break v,
            Some("failed") | Some("cancelled") => {
                return Err(format!("QEMU migration failed: {v}"));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let _ = sqmp.cmd(json!({"execute": "migrate_cancel"}));
            return Err(format!(
                "QEMU migration not done after {} s: {v}",
                args.timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall_s = t0.elapsed().as_secs_f64();
    let resume = dqmp.event("RESUME")?;
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
}

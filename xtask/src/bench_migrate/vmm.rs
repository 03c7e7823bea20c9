//! `vmm`'s side of `bench-migrate`: a source `vmm run` with a control socket,
//! a destination `vmm run --incoming` (it learns channels and compression
//! from the stream), driven by `vmm migrate --json` with the row's
//! `--channels` and `--compress`.

use super::cpu::CpuWatch;
use super::setting::Setting;
use super::{Case, READY, Sample, wait_for};
use crate::bench_vmm::{Proc, vmm_run};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What a `vmm run --incoming` destination says once it listens.
const LISTENING: &str = "incoming: waiting on ";

/// The URI a destination started with `--incoming tcp:127.0.0.1:0` listens
/// on, from its own stderr line (bounded wait).
fn listening_uri(dst: &Proc) -> Result<String, String> {
    wait_for(READY, "the destination to listen", || {
        dst.stderr().contains(LISTENING)
    })?;
    let err = dst.stderr();
    err.lines()
        .find_map(|l| l.strip_prefix(LISTENING))
        .map(|u| u.trim().to_string())
        .ok_or_else(|| format!("no `{LISTENING}` line: {err}"))
}

/// The `vmm migrate` command of one row.
fn migrate_cmd(vmm: &Path, sock: &Path, uri: &str, set: &Setting, downtime_limit: u64) -> Command {
    let mut c = Command::new(vmm);
    c.args(["migrate", "--control"])
        .arg(sock)
        .args([
            uri,
            "--json",
            "--downtime-limit",
            &downtime_limit.to_string(),
        ])
        .args(set.vmm_args());
    c
}

/// The `summary` object of `vmm migrate --json` output.
fn summary(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
}

/// One `vmm` → `vmm` migration.
pub fn run_vmm(vmm: &Path, set: &Setting, case: &Case) -> Result<Sample, String> {
    let sock = case.scratch("sock");
    let _ = std::fs::remove_file(&sock);
    let mut c = vmm_run(vmm, case.kernel, case.mib, case.workload);
    c.arg("--control").arg(&sock);
    let src = Proc::spawn(c)?;
    src.wait_line(READY, case.ready_line())?;
    wait_for(READY, "the source's control socket", || sock.exists())?;
    let mut c = Command::new(vmm);
    c.args(["run", "--incoming", "tcp:127.0.0.1:0"]);
    let dst = Proc::spawn(c)?;
    let uri = listening_uri(&dst)?;

    let watch = CpuWatch::start(src.pid(), dst.pid());
    let t0 = Instant::now();
    let out = migrate_cmd(vmm, &sock, &uri, set, case.args.downtime_limit)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("vmm migrate: {e}"))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let (src_cpu, dst_cpu) = watch.finish();
    let _ = std::fs::remove_file(&sock);
    if !out.status.success() {
        return Err(format!(
            "vmm migrate failed: {}\nsource: {}\ndestination: {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            src.stderr(),
            dst.stderr()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = summary(&text)
        .ok_or_else(|| format!("no summary in `vmm migrate --json` output: {text}"))?;
    case.check_counting(&dst)?;
    let normal = summary
        .get("pages_normal")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(Sample {
        src_cpu,
        dst_cpu,
        wall_s,
        page_bytes: normal * 4096,
        ..Sample::reported(
            &summary,
            ["total_ms", "downtime_ms"],
            &summary,
            ["bytes", "iterations"],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_command_and_summary() {
        let set: Setting = "2+zstd".parse().unwrap_or_else(|e: String| panic!("{e}"));
        let c = migrate_cmd(
            Path::new("vmm"),
            Path::new("/t/s"),
            "tcp:127.0.0.1:9",
            &set,
            300,
        );
        assert_eq!(
            crate::bench_vmm::tests::line(&c),
            "vmm migrate --control /t/s tcp:127.0.0.1:9 --json --downtime-limit 300 \
             --channels 2 --compress zstd:1"
        );
        let out = "{\"event\":\"progress\"}\nnot json\n{\"summary\":{\"total_ms\":5.0,\"pages_normal\":3}}\n";
        assert_eq!(
            summary(out).and_then(|s| s.get("pages_normal").and_then(Value::as_u64)),
            Some(3)
        );
        assert_eq!(summary("{\"event\":1}"), None);
    }
}

//! `cargo xtask bench-migrate`: live migration over loopback TCP of idle and
//! `ab`-dirtying guests, for `vmm` and (optionally) the reference VMM
//! (QEMU driven through QMP, `qemu.rs`): total time, downtime, bytes sent, and
//! the CPU the VMM threads used meanwhile (`cpu.rs`). Method and results:
//! `docs/bench-migrate.md`.

mod cpu;
mod qemu;

use crate::bench_vmm::{Proc, VmmArgs, vmm_run};
use cpu::{Cpu, CpuWatch};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask bench-migrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Guest RAM sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    pub sizes: Vec<u64>,
    /// Guest workloads (`idle`, `ab`).
    #[arg(long, value_delimiter = ',', default_value = "idle,ab")]
    pub workloads: Vec<String>,
    /// Migrations per VMM and case (medians are reported).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Downtime limit in ms, for both VMMs.
    #[arg(long, default_value_t = 300)]
    pub downtime_limit: u64,
    /// Give up on one migration after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    #[command(flatten)]
    pub vmms: VmmArgs,
}

/// One migration's measurements.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Total time as the VMM reports it, ms.
    total_ms: f64,
    /// Downtime as the VMM reports it, ms.
    downtime_ms: f64,
    /// vCPUs stopped on the source to running on the destination from the
    /// two processes' own events (QEMU: the source's STOP and the
    /// destination's RESUME QMP timestamps), ms.
    downtime_events_ms: Option<f64>,
    /// Bytes sent.
    bytes: u64,
    /// Pre-copy iterations (QEMU: dirty-sync-count).
    iterations: u64,
    /// CPU used during the migration by the source.
    src_cpu: Cpu,
    /// CPU used by the destination.
    dst_cpu: Cpu,
    /// Wall time of the migration as seen by the benchmark, s.
    wall_s: f64,
}

impl Sample {
    /// The figures a VMM reports: total time and downtime (ms) named
    /// `times` in `report`, bytes and iterations named `counts` in `counted`.
    fn reported(report: &Value, times: [&str; 2], counted: &Value, counts: [&str; 2]) -> Self {
        let ms = |k: &str| report.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let n = |k: &str| counted.get(k).and_then(Value::as_u64).unwrap_or(0);
        Self {
            total_ms: ms(times[0]),
            downtime_ms: ms(times[1]),
            bytes: n(counts[0]),
            iterations: n(counts[1]),
            ..Self::default()
        }
    }
}

const READY: Duration = Duration::from_secs(60);

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

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

/// Polls `cond` every 5 ms for up to `timeout`.
fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// One migration to measure: guest RAM and workload, the ELF the guest boots.
struct Case<'a> {
    kernel: &'a Path,
    mib: u64,
    workload: &'a str,
    args: &'a Args,
}

impl Case<'_> {
    /// A scratch file of this case (a socket: `what` is `sock`, `src.qmp`, ...).
    fn scratch(&self, what: &str) -> PathBuf {
        let (mib, workload) = (self.mib, self.workload);
        let pid = std::process::id();
        std::env::temp_dir().join(format!("vmm-bench-mig-{mib}-{workload}-{what}-{pid}"))
    }

    /// The serial line that says the guest's workload is under way.
    fn ready_line(&self) -> &'static str {
        if self.workload == "ab" {
            "ab: pass="
        } else {
            "idle: halted"
        }
    }

    /// A run counts only if an `ab` guest goes on counting on the destination.
    fn check_counting(&self, dst: &Proc) -> Result<(), String> {
        if self.workload == "ab" {
            dst.wait_line(Duration::from_secs(20), "ab: pass=")
                .map_err(|e| format!("destination guest not counting: {e}"))?;
        }
        Ok(())
    }
}

/// One `vmm` → `vmm` migration.
fn run_vmm(vmm: &Path, case: &Case) -> Result<Sample, String> {
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
    let out = Command::new(vmm)
        .args(["migrate", "--control"])
        .arg(&sock)
        .args([
            &uri,
            "--json",
            "--downtime-limit",
            &case.args.downtime_limit.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("vmm migrate: {e}"))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let (src_cpu, dst_cpu) = watch.finish();
    let _ = std::fs::remove_file(&sock);
    if !out.status.success() {
        return Err(format!(
            "vmm migrate failed: {}\nsource: {}\ndestination: {}",
            String::from_utf8_lossy(&out.stderr),
            src.stderr(),
            dst.stderr()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .ok_or_else(|| format!("no summary in `vmm migrate --json` output: {text}"))?;
    case.check_counting(&dst)?;
    Ok(Sample {
        src_cpu,
        dst_cpu,
        wall_s,
        ..Sample::reported(
            &summary,
            ["total_ms", "downtime_ms"],
            &summary,
            ["bytes", "iterations"],
        )
    })
}

/// The median sample of a case (by downtime), other fields from the same run.
fn pick(mut s: Vec<Sample>) -> Option<Sample> {
    s.sort_by(|a, b| a.downtime_ms.total_cmp(&b.downtime_ms));
    let n = s.len();
    if n == 0 {
        None
    } else {
        Some(s.swap_remove(n / 2))
    }
}

/// Online CPUs of this host.
fn ncpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Share of the whole host's CPU (all cores) the two processes used,
/// vCPU threads included.
fn host_busy(s: &Sample, cpus: f64) -> f64 {
    (s.src_cpu.total + s.dst_cpu.total) / (s.wall_s.max(1e-9) * cpus.max(1.0))
}

/// Which resource limited the migration:
/// - `CPU (VMM thread)`: one side's VMM threads used at least 85% of a core
///   over the migration (a pegged migration/receive thread);
/// - `CPU (host)`: both processes together kept at least 90% of all the
///   host's cores busy (e.g. the guest's spinning vCPU plus both VMMs);
/// - `memory`: the pages went at least at half this host's one-thread
///   memcpy bandwidth;
/// - `neither (waits)`: none of these; time went to waiting (polls,
///   round trips, time-outs) rather than to work.
fn bound(s: &Sample, cpus: f64, memcpy_bytes_s: f64) -> &'static str {
    let w = s.wall_s.max(1e-9);
    let u = (s.src_cpu.vmm() / w).max(s.dst_cpu.vmm() / w);
    if u >= 0.85 {
        "CPU (VMM thread)"
    } else if host_busy(s, cpus) >= 0.9 {
        "CPU (host)"
    } else if s.bytes as f64 / w >= memcpy_bytes_s / 2.0 {
        "memory"
    } else {
        "neither (waits)"
    }
}

fn row(vmm: &str, mib: u64, workload: &str, s: &Sample, memcpy_bytes_s: f64) -> String {
    let w = s.wall_s.max(1e-9);
    let cpus = ncpus();
    format!(
        "| {vmm} | {mib} MiB {workload} | {:.0} | {:.1} | {} | {:.1} | {:.0} | {} | {:.0}% / {:.0}% | {:.0}% | {} |",
        s.total_ms,
        s.downtime_ms,
        s.downtime_events_ms
            .map_or_else(|| "—".to_string(), |d| format!("{d:.1}")),
        s.bytes as f64 / (1 << 20) as f64,
        s.bytes as f64 / (1 << 20) as f64 / (s.total_ms.max(1e-3) / 1e3),
        s.iterations,
        100.0 * s.src_cpu.vmm() / w,
        100.0 * s.dst_cpu.vmm() / w,
        100.0 * host_busy(s, cpus),
        bound(s, cpus, memcpy_bytes_s),
    )
}

/// Memory copy bandwidth of this machine (one thread, 256 MiB), for context.
fn memcpy_gib_s() -> f64 {
    let n = 256 << 20;
    let a = vec![1u8; n];
    let mut b = vec![0u8; n];
    b.copy_from_slice(&a);
    let t = Instant::now();
    for _ in 0..4 {
        b.copy_from_slice(&a);
        std::hint::black_box(&b);
    }
    4.0 * n as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

fn bench(args: &Args) -> Result<(), String> {
    let vmm = args.vmms.binary()?;
    let guest = args.vmms.guest(&vmm, "mig")?;
    let kernel = guest.path();
    let memcpy = memcpy_gib_s();
    let memcpy_bytes_s = memcpy * (1u64 << 30) as f64;
    println!(
        "memcpy (one thread): {memcpy:.1} GiB/s; {} CPUs; {} run(s) per case, median by downtime",
        ncpus(),
        args.runs
    );
    println!(
        "| VMM | guest | total ms | downtime ms (reported) | downtime ms (events) | MiB sent | MiB/s | iterations | VMM-thread CPU src / dst | host CPU busy | bound |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for &mib in &args.sizes {
        for workload in &args.workloads {
            let case = Case {
                kernel,
                mib,
                workload,
                args,
            };
            let mut ours = Vec::new();
            for _ in 0..args.runs {
                ours.push(run_vmm(&vmm, &case)?);
            }
            let Some(o) = pick(ours) else { continue };
            println!("{}", row("vmm", mib, workload, &o, memcpy_bytes_s));
            if let Some(q) = &args.vmms.qemu {
                let mut theirs = Vec::new();
                for _ in 0..args.runs {
                    match qemu::run_qemu(q, &case) {
                        Ok(s) => theirs.push(s),
                        Err(e) => println!("| QEMU 7.2 | {mib} MiB {workload} | failed: {e} |"),
                    }
                }
                if let Some(r) = pick(theirs) {
                    println!("{}", row("QEMU 7.2", mib, workload, &r, memcpy_bytes_s));
                    ratios.push((mib, workload.clone(), o, r));
                }
            }
        }
    }
    for (mib, workload, o, r) in &ratios {
        let ev = r.downtime_events_ms.unwrap_or(f64::NAN);
        println!(
            "ratio {mib} MiB {workload}: downtime QEMU/vmm {:.1}x reported, {:.1}x vs QEMU's events; total QEMU/vmm {:.2}x; bytes vmm/QEMU {:.2}",
            r.downtime_ms / o.downtime_ms.max(1e-3),
            ev / o.downtime_ms.max(1e-3),
            r.total_ms / o.total_ms.max(1e-3),
            o.bytes as f64 / (r.bytes.max(1)) as f64
        );
    }
    Ok(())
}

/// `cargo xtask bench-migrate`.
pub fn run(args: &Args) -> Result<(), String> {
    bench(args).map_err(|e| format!("bench-migrate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bound_classification() {
        let mut s = Sample {
            wall_s: 1.0,
            ..Sample::default()
        };
        s.src_cpu.total = 0.95;
        assert_eq!(bound(&s, 2.0, 1e9), "CPU (VMM thread)");
        s.src_cpu.vcpu = 0.5;
        assert_eq!(bound(&s, 2.0, 1e9), "neither (waits)");
        s.dst_cpu = Cpu {
            total: 0.9,
            vcpu: 0.9,
        };
        assert_eq!(bound(&s, 2.0, 1e9), "CPU (host)");
        s.dst_cpu = Cpu::default();
        s.bytes = 600_000_000;
        assert_eq!(bound(&s, 2.0, 1e9), "memory");
    }
}

//! The table of `bench-migrate`: what this host can do (cores, one-thread
//! memcpy, the loopback limit), one row per VMM, setting and case, and which
//! resource bounded each migration.

use super::Sample;
use super::loopback::Loopback;
use super::setting::Setting;
use std::time::Instant;

/// What bounds a migration on this host, measured once per run.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    /// Online CPUs.
    pub cpus: f64,
    /// One-thread memcpy, bytes per second.
    pub memcpy: f64,
    pub loopback: Loopback,
}

impl Host {
    pub fn measure() -> Result<Self, String> {
        Ok(Self {
            cpus: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            memcpy: memcpy_bytes_s(),
            loopback: Loopback::measure()?,
        })
    }

    /// The line printed above the table.
    pub fn describe(&self, runs: usize) -> String {
        format!(
            "memcpy (one thread): {:.1} GiB/s; loopback TCP: {:.2} GB/s one stream, {:.2} GB/s four streams; \
             {} CPUs; {runs} run(s) per row, median by downtime",
            self.memcpy / (1u64 << 30) as f64,
            self.loopback.one / 1e9,
            self.loopback.four / 1e9,
            self.cpus,
        )
    }
}

/// Memory copy bandwidth of this machine (one thread, 256 MiB), for context.
fn memcpy_bytes_s() -> f64 {
    let n = 256 << 20;
    let a = vec![1u8; n];
    let mut b = vec![0u8; n];
    b.copy_from_slice(&a);
    let t = Instant::now();
    for _ in 0..4 {
        b.copy_from_slice(&a);
        std::hint::black_box(&b);
    }
    4.0 * n as f64 / t.elapsed().as_secs_f64()
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

/// CPU seconds of both processes' non-vCPU threads per GiB of guest RAM.
fn cpu_s_per_gib(s: &Sample, mib: u64) -> f64 {
    (s.src_cpu.vmm() + s.dst_cpu.vmm()) / (mib.max(1) as f64 / 1024.0)
}

/// The table's header and separator lines.
pub const HEADER: &str = "| VMM | setting | guest | total ms | downtime ms (reported) | downtime ms (events) \
| MiB on the wire | MiB of pages | MiB/s | wire / loopback | iterations | VMM-thread CPU src / dst \
| CPU s / GiB | host CPU busy | bound |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

const MIB: f64 = (1u64 << 20) as f64;

/// One measured row.
pub fn row(vmm: &str, set: &Setting, mib: u64, workload: &str, s: &Sample, host: &Host) -> String {
    let w = s.wall_s.max(1e-9);
    let total_s = s.total_ms.max(1e-3) / 1e3;
    format!(
        "| {vmm} | {set} | {mib} MiB {workload} | {:.0} | {:.1} | {} | {:.1} | {:.1} | {:.0} | {:.0}% | {} | {:.0}% / {:.0}% | {:.2} | {:.0}% | {} |",
        s.total_ms,
        s.downtime_ms,
        s.downtime_events_ms
            .map_or_else(|| "—".to_string(), |d| format!("{d:.1}")),
        s.bytes as f64 / MIB,
        s.page_bytes as f64 / MIB,
        s.bytes as f64 / MIB / total_s,
        100.0 * s.bytes as f64 / total_s / host.loopback.limit(set.channels).max(1.0),
        s.iterations,
        100.0 * s.src_cpu.vmm() / w,
        100.0 * s.dst_cpu.vmm() / w,
        cpu_s_per_gib(s, mib),
        100.0 * host_busy(s, host.cpus),
        bound(s, host.cpus, host.memcpy),
    )
}

/// A row that did not measure: `what` is `failed: ...` or `skipped: ...`,
/// on one line (the whole error goes to stderr).
pub fn row_without(vmm: &str, set: &Setting, mib: u64, workload: &str, what: &str) -> String {
    let mut line = what.lines().next().unwrap_or("").replace('|', "/");
    if line.chars().count() > 200 {
        line = line.chars().take(200).collect::<String>() + "…";
    }
    format!("| {vmm} | {set} | {mib} MiB {workload} | {line} |")
}

#[cfg(test)]
mod tests {
    use super::super::cpu::Cpu;
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

    #[test]
    fn rows() {
        let host = Host {
            cpus: 2.0,
            memcpy: 8e9,
            loopback: Loopback {
                one: 2e9,
                four: 4e9,
            },
        };
        let s = Sample {
            total_ms: 500.0,
            downtime_ms: 1.5,
            bytes: 512 << 20,
            page_bytes: 1 << 30,
            iterations: 2,
            src_cpu: Cpu {
                total: 0.5,
                vcpu: 0.25,
            },
            dst_cpu: Cpu {
                total: 0.25,
                vcpu: 0.0,
            },
            wall_s: 0.5,
            ..Sample::default()
        };
        let set: Setting = "4+zstd".parse().unwrap_or_else(|e: String| panic!("{e}"));
        assert_eq!(
            row("vmm", &set, 512, "fill.text", &s, &host),
            "| vmm | 4 channels + zstd | 512 MiB fill.text | 500 | 1.5 | — | 512.0 | 1024.0 | 1024 | 27% \
             | 2 | 50% / 50% | 1.00 | 75% | neither (waits) |"
        );
        assert_eq!(
            row_without("QEMU 7.2", &set, 256, "ab", "skipped: no | multifd\nmore"),
            "| QEMU 7.2 | 4 channels + zstd | 256 MiB ab | skipped: no / multifd |"
        );
    }
}

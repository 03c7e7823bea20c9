//! `cargo xtask bench-migrate`: live migration over loopback TCP of idle,
//! `fill`ed (random or text pages) and `ab`-dirtying guests, for `vmm` over
//! one stream or N data channels with or without zstd (`vmm.rs`) and for
//! each reference VMM given (QEMU, single stream or multifd, `qemu.rs`),
//! both driven by the same QMP code (`drive.rs`): total time, downtime, bytes on the wire, the CPU the
//! VMM threads used meanwhile (`cpu.rs`) against what this host can do
//! (`report.rs`, `loopback.rs`), and per case the best setting of each side
//! (`setting.rs`). Method and results: `docs/bench-migrate.md`.

mod cpu;
mod drive;
mod loopback;
mod qemu;
#[cfg(test)]
mod reference_script;
mod report;
mod setting;
mod vmm;

use crate::bench_vmm::{Binaries, Proc};
use cpu::Cpu;
use drive::RunError;
pub(crate) use qemu::Reference;
use report::{HEADER, Host, row, row_without};
use serde_json::Value;
use setting::{Measured, Setting, median, ratio_line};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The guest workloads a case can run, and the serial line after which the
/// source is migrated.
const WORKLOADS: [(&str, &str); 4] = [
    ("idle", "idle: halted"),
    ("fill", "fill: done"),
    ("fill.text", "fill: done"),
    ("ab", "ab: pass="),
];

/// Arguments of `cargo xtask bench-migrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Guest RAM sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    pub sizes: Vec<u64>,
    /// Guest workloads (`idle`, `fill`, `fill.text`, `ab`).
    #[arg(long, value_delimiter = ',', default_value = "idle,fill,fill.text,ab")]
    pub workloads: Vec<String>,
    /// Migrations per VMM, setting and case (medians are reported).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Downtime limit in ms, for both VMMs.
    #[arg(long, default_value_t = 300)]
    pub downtime_limit: u64,
    /// Give up on one migration after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// vmm's settings: N (`multifd-channels` N, 0 = one stream), N+zstd or
    /// N+zstd:LEVEL, each optionally +tls (x509 on every connection).
    #[arg(long, value_delimiter = ',', default_value = setting::VMM_DEFAULT)]
    pub vmm_settings: Vec<Setting>,
    /// The references' settings, same syntax (N = `multifd-channels`, 0 =
    /// multifd off) [default: by version: QEMU 7.x `0`; newer
    /// `0,2,2+zstd,4,4+zstd`].
    #[arg(long, value_delimiter = ',')]
    pub qemu_settings: Vec<Setting>,
    /// A reference VMM (e.g. the wrapper printed by scripts/reference-qemu.sh
    /// or scripts/reference-qemu10.sh); repeatable. None: vmm alone.
    #[arg(long, value_name = "PATH")]
    pub qemu: Vec<PathBuf>,
    #[command(flatten)]
    pub bins: Binaries,
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
    /// Bytes on the wire (vmm: `bytes`, all connections; QEMU:
    /// `ram.transferred`, multifd included).
    bytes: u64,
    /// Bytes of the pages sent with contents, before compression (vmm:
    /// `pages_normal` × 4 KiB; QEMU: `ram.normal-bytes`).
    page_bytes: u64,
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
        // A total of 0 ms is a VMM's bookkeeping slip (QEMU 7.2 multifd
        // sometimes reports it), not a figure: it counts as unknown.
        let total = ms(times[0]);
        Self {
            total_ms: if total > 0.0 { total } else { f64::NAN },
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
    /// Rehearsal x509 credentials (`vmm tls gen`) for the `+tls` rows.
    tls: Option<&'a Path>,
}

/// The serial line after which a guest running `workload` is migrated:
/// `idle: halted`, the `fill: done` line (every page written once), the
/// first `ab: pass=` line. `None` for an unknown workload.
fn ready_line(workload: &str) -> Option<&'static str> {
    WORKLOADS
        .iter()
        .find(|(w, _)| *w == workload)
        .map(|(_, l)| *l)
}

impl Case<'_> {
    /// A scratch file of this case (a socket: `what` is `sock`, `src.qmp`, ...).
    fn scratch(&self, what: &str) -> PathBuf {
        let (mib, workload) = (self.mib, self.workload);
        let pid = std::process::id();
        std::env::temp_dir().join(format!("vmm-bench-mig-{mib}-{workload}-{what}-{pid}"))
    }

    /// The serial line that says the guest is ready to be migrated
    /// (workloads are checked before any case runs).
    fn ready_line(&self) -> &'static str {
        ready_line(self.workload).unwrap_or("idle: halted")
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

/// The runs of one VMM and setting in one case: the row (the run with the
/// median downtime) and the median total time.
fn summarise(runs: Vec<Sample>) -> Option<(Sample, f64)> {
    let total = median(&runs.iter().map(|s| s.total_ms).collect::<Vec<_>>());
    let mut s = runs;
    s.sort_by(|a, b| a.downtime_ms.total_cmp(&b.downtime_ms));
    let n = s.len();
    (n > 0).then(|| (s.swap_remove(n / 2), total))
}

/// Every row of one VMM in one case: `run` once per setting and run, a row
/// (or a note) printed per setting; the measured settings returned.
fn measure(
    label: &str,
    settings: &[Setting],
    case: &Case,
    host: &Host,
    mut run: impl FnMut(&Setting) -> Result<Sample, RunError>,
) -> Vec<Measured> {
    let (mib, workload) = (case.mib, case.workload);
    let mut measured = Vec::new();
    'setting: for set in settings {
        let mut runs = Vec::new();
        for _ in 0..case.args.runs {
            match run(set) {
                Ok(s) => runs.push(s),
                Err(RunError::Unsupported(why)) => {
                    eprintln!("note: {label} {set}: not supported by this binary: {why}");
                    let what = format!("skipped: not supported: {why}");
                    println!("{}", row_without(label, set, mib, workload, &what));
                    continue 'setting;
                }
                Err(RunError::Failed(e)) => {
                    eprintln!("{label} {set} {mib} MiB {workload} failed: {e}");
                    println!(
                        "{}",
                        row_without(label, set, mib, workload, &format!("failed: {e}"))
                    );
                }
            }
        }
        if let Some((s, total_ms)) = summarise(runs) {
            println!("{}", row(label, set, mib, workload, &s, host));
            measured.push(Measured {
                vmm: label.to_string(),
                setting: *set,
                total_ms,
            });
        }
    }
    measured
}

fn bench(args: &Args) -> Result<(), String> {
    if let Some(w) = args.workloads.iter().find(|w| ready_line(w).is_none()) {
        let known: Vec<&str> = WORKLOADS.iter().map(|(w, _)| *w).collect();
        return Err(format!(
            "unknown workload `{w}` (known: {})",
            known.join(", ")
        ));
    }
    let refs = args
        .qemu
        .iter()
        .map(|p| Reference::probe(p))
        .collect::<Result<Vec<_>, _>>()?;
    let vmm = args.bins.binary()?;
    let guest = args.bins.guest(&vmm, "mig")?;
    let kernel = guest.path();
    let host = Host::measure()?;
    // One set of rehearsal credentials for every `+tls` row of both VMMs.
    let wants_tls = args
        .vmm_settings
        .iter()
        .chain(&args.qemu_settings)
        .any(|s| s.tls);
    let tls_dir = std::env::temp_dir().join(format!("vmm-bench-tls-{}", std::process::id()));
    if wants_tls {
        let _ = std::fs::remove_dir_all(&tls_dir);
        let out = std::process::Command::new(&vmm)
            .args(["tls", "gen"])
            .arg(&tls_dir)
            .output()
            .map_err(|e| format!("vmm tls gen: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "vmm tls gen: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let tls = wants_tls.then_some(tls_dir.as_path());
    println!("{}", host.describe(args.runs));
    for r in &refs {
        println!(
            "reference: {} ({}), version {}.{}.{}",
            r.label(),
            r.path.display(),
            r.version.0,
            r.version.1,
            r.version.2
        );
    }
    println!("{HEADER}");
    let mut ratios = Vec::new();
    for &mib in &args.sizes {
        for workload in &args.workloads {
            let case = Case {
                kernel,
                mib,
                workload,
                args,
                tls,
            };
            let ours = measure("vmm", &args.vmm_settings, &case, &host, |set| {
                vmm::run_vmm(&vmm, set, &case)
            });
            let mut theirs = Vec::new();
            for r in &refs {
                let settings = if args.qemu_settings.is_empty() {
                    r.version.default_settings()
                } else {
                    args.qemu_settings.clone()
                };
                theirs.extend(measure(&r.label(), &settings, &case, &host, |set| {
                    qemu::run_qemu(r, set, &case)
                }));
            }
            if let Some(l) = ratio_line(workload, mib, &ours, &theirs) {
                println!("\n{l}\n");
                ratios.push(l);
            }
        }
    }
    if !ratios.is_empty() {
        println!("```\n{}\n```", ratios.join("\n"));
    }
    Ok(())
}

/// `cargo xtask bench-migrate`.
pub fn run(args: &Args) -> Result<(), String> {
    bench(args).map_err(|e| format!("bench-migrate: {e}"))
}

/// Runs `f` on the case a test's command lines are built for: the default
/// arguments, a 256 MiB `ab` guest booting `g.elf`.
#[cfg(test)]
fn with_test_case<R>(f: impl FnOnce(&Case) -> R) -> R {
    let cli = <crate::Cli as clap::Parser>::parse_from(["xtask", "bench-migrate"]);
    let crate::Command::BenchMigrate(args) = cli.command else {
        unreachable!("bench-migrate parses as bench-migrate")
    };
    f(&Case {
        kernel: Path::new("g.elf"),
        mib: 256,
        workload: "ab",
        args: &args,
        tls: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_and_their_ready_lines() {
        assert_eq!(ready_line("fill"), Some("fill: done"));
        assert_eq!(ready_line("fill.text"), Some("fill: done"));
        assert_eq!(ready_line("ab"), Some("ab: pass="));
        assert_eq!(ready_line("idle"), Some("idle: halted"));
        assert_eq!(ready_line("fill.random"), None);
        let args = <crate::Cli as clap::Parser>::parse_from(["xtask", "bench-migrate"]);
        let crate::Command::BenchMigrate(args) = args.command else {
            unreachable!("bench-migrate parses as bench-migrate")
        };
        assert_eq!(args.workloads, ["idle", "fill", "fill.text", "ab"]);
        assert_eq!(args.sizes, [256, 1024]);
        assert_eq!(args.vmm_settings.len(), 6);
        assert!(args.qemu.is_empty() && args.qemu_settings.is_empty());
    }

    #[test]
    fn two_references_and_settings_parse() {
        let cli = <crate::Cli as clap::Parser>::try_parse_from([
            "xtask",
            "bench-migrate",
            "--qemu",
            "/a",
            "--qemu",
            "/b",
            "--vmm-settings",
            "0,4+zstd:3",
        ]);
        let Ok(crate::Cli {
            command: crate::Command::BenchMigrate(args),
        }) = cli
        else {
            panic!("bench-migrate with two --qemu does not parse")
        };
        assert_eq!(args.qemu, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(args.vmm_settings[1].to_string(), "4 channels + zstd:3");
        let bad = <crate::Cli as clap::Parser>::try_parse_from([
            "xtask",
            "bench-migrate",
            "--vmm-settings",
            "2+lz4",
        ]);
        assert!(bad.is_err());
    }

    #[test]
    fn medians_of_a_setting() {
        let s = |total_ms, downtime_ms| Sample {
            total_ms,
            downtime_ms,
            ..Sample::default()
        };
        let (row, total) = summarise(vec![s(300.0, 5.0), s(100.0, 1.0), s(200.0, 9.0)])
            .unwrap_or_else(|| panic!("three runs summarise"));
        assert_eq!((row.total_ms, row.downtime_ms, total), (300.0, 5.0, 200.0));
        assert!(summarise(Vec::new()).is_none());
    }
}

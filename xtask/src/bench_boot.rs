//! `cargo xtask bench-boot`: wall time from `exec` to the guest's first serial
//! line, and resident memory beyond guest RAM, for `vmm run` and (optionally)
//! the reference VMM (`qemu-system-x86_64 -M microvm -enable-kvm -kernel <same ELF>`).
//! Method and results: `docs/bench-boot.md`.

#[cfg(test)]
use crate::bench_vmm::Binaries;
use crate::bench_vmm::{Proc, VmmArgs, reference_qemu, vmm_run};
use std::process::Command;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask bench-boot`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Boots per VMM.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    pub mem_mib: u64,
    #[command(flatten)]
    pub vmms: VmmArgs,
}

/// One boot's measurements.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// exec → first complete serial line.
    first_line: Duration,
    /// Resident set of the process minus the resident part of guest RAM, in KiB.
    overhead_kib: u64,
    /// Resident set of the process, in KiB.
    rss_kib: u64,
}

const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The serial line of an idle guest that has finished booting.
const IDLE: &str = "idle: halted";

/// Parses `/proc/PID/smaps`: (total Rss, Rss of the guest-RAM mapping) in KiB.
/// The guest-RAM mapping is the anonymous mapping whose size is at least
/// `ram_kib` and at most `ram_kib` + 4 MiB (QEMU over-allocates for alignment);
/// the one with the largest Rss if several match.
fn smaps_rss(smaps: &str, ram_kib: u64) -> (u64, u64) {
    let mut total = 0;
    let mut ram = 0;
    let mut cur_size = 0;
    let mut cur_anon = false;
    for line in smaps.lines() {
        let mut it = line.split_whitespace();
        let first = it.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // mapping header: "start-end perms offset dev inode [path]"
            let mut b = first.split('-');
            let (s, e) = (b.next().unwrap_or("0"), b.next().unwrap_or("0"));
            let (s, e) = (
                u64::from_str_radix(s, 16).unwrap_or(0),
                u64::from_str_radix(e, 16).unwrap_or(0),
            );
            cur_size = e.saturating_sub(s) / 1024;
            let inode = it.nth(3).unwrap_or("0");
            cur_anon = inode == "0" && it.next().is_none();
        } else if first == "Rss:" {
            let kib: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += kib;
            if cur_anon && cur_size >= ram_kib && cur_size <= ram_kib + 4096 && kib > ram {
                ram = kib;
            }
        }
    }
    (total, ram)
}

/// Boots `cmd` once: time to its first line, memory once it prints `IDLE`.
fn measure(cmd: Command, mem_mib: u64) -> Result<Sample, String> {
    let t0 = Instant::now();
    let vm = Proc::spawn(cmd)?;
    vm.wait_line(LINE_TIMEOUT, "")
        .map_err(|e| format!("no serial line: {e}"))?;
    let first_line = t0.elapsed();
    vm.wait_line(LINE_TIMEOUT, IDLE)?;
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", vm.pid()))
        .map_err(|e| format!("smaps: {e}"))?;
    let (rss_kib, ram_kib) = smaps_rss(&smaps, mem_mib * 1024);
    Ok(Sample {
        first_line,
        overhead_kib: rss_kib.saturating_sub(ram_kib),
        rss_kib,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

struct Summary {
    first_ms: f64,
    min_ms: f64,
    overhead_kib: f64,
    rss_kib: f64,
}

/// Boots `runs` times (`cmd` builds each command line), prints the summary
/// line headed `label` and returns it.
fn boots(label: &str, args: &Args, mut cmd: impl FnMut() -> Command) -> Result<Summary, String> {
    let mut s = Vec::new();
    for _ in 0..args.runs {
        s.push(measure(cmd(), args.mem_mib)?);
    }
    let first_ms = || s.iter().map(|x| x.first_line.as_secs_f64() * 1e3);
    let sum = Summary {
        first_ms: median(first_ms().collect()),
        min_ms: first_ms().fold(f64::INFINITY, f64::min),
        overhead_kib: median(s.iter().map(|x| x.overhead_kib as f64).collect()),
        rss_kib: median(s.iter().map(|x| x.rss_kib as f64).collect()),
    };
    println!(
        "{label:<11}first serial line median {:.1} ms (min {:.1}), RSS {:.0} KiB, beyond guest RAM {:.0} KiB ({} runs)",
        sum.first_ms,
        sum.min_ms,
        sum.rss_kib,
        sum.overhead_kib,
        s.len()
    );
    Ok(sum)
}

fn bench(args: &Args) -> Result<(), String> {
    let vmm = args.vmms.binary()?;
    let guest = args.vmms.guest(&vmm, "boot")?;
    let kernel = guest.path();
    let o = boots("vmm:", args, || vmm_run(&vmm, kernel, args.mem_mib, "idle"))?;
    if let Some(q) = &args.vmms.qemu {
        let r = boots("reference:", args, || {
            reference_qemu(q, kernel, args.mem_mib, "idle", &[])
        })?;
        println!(
            "ratios:    first line {:.1}x sooner; memory overhead {:.1}x smaller",
            r.first_ms / o.first_ms,
            r.overhead_kib / o.overhead_kib.max(1.0)
        );
    }
    Ok(())
}

/// `cargo xtask bench-boot`.
pub fn run(args: &Args) -> Result<(), String> {
    bench(args).map_err(|e| format!("bench-boot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_guest_ram_is_subtracted() {
        let s = "\
55d0-55e0 r-xp 00000000 08:01 1234 /usr/bin/vmm
Size: 64 kB
Rss: 60 kB
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
Size: 65536 kB
Rss: 2048 kB
7f1000000000-7f1000100000 rw-p 00000000 00:00 0
Size: 1024 kB
Rss: 300 kB
";
        assert_eq!(smaps_rss(s, 65536), (2408, 2048));
    }

    #[test]
    fn boots_a_stand_in_for_both_vmms() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let fake = dir.join("vmm");
        // `guest-elf PATH` writes the guest; anything else boots it.
        std::fs::write(
            &fake,
            "#!/bin/sh\nif [ \"$1\" = guest-elf ]; then echo elf > \"$2\"; exit; fi\n\
             echo booted; echo 'idle: halted'; exec sleep 20\n",
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let args = Args {
            runs: 2,
            mem_mib: 64,
            vmms: VmmArgs {
                qemu: Some(fake.clone()),
                bins: Binaries {
                    kernel: None,
                    vmm: Some(fake),
                    no_build: true,
                },
            },
        };
        let r = bench(&args);
        let _ = std::fs::remove_dir_all(&dir);
        r.expect("bench");
        let guest =
            std::env::temp_dir().join(format!("vmm-bench-boot-guest-{}.elf", std::process::id()));
        assert!(!guest.exists(), "temporary guest left behind");
    }
}

//! `vmm bench-boot`: wall time from `exec` to the guest's first serial line,
//! and resident memory beyond guest RAM, for `vmm run` and (optionally) the
//! reference VMM (`qemu-system-x86_64 -M microvm -enable-kvm -kernel <same ELF>`).
//! Method and results: `docs/bench-boot.md`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Arguments of `vmm bench-boot`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Boots per VMM.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    pub mem_mib: u64,
    /// The reference VMM (e.g. the wrapper printed by scripts/reference-qemu.sh).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Guest ELF for both VMMs (default: the embedded guest, written to a temp file).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

/// One boot's measurements.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// exec → first complete serial line.
    pub first_line: Duration,
    /// Resident set of the process minus the resident part of guest RAM, in KiB.
    pub overhead_kib: u64,
    /// Resident set of the process, in KiB.
    pub rss_kib: u64,
}

const LINE_TIMEOUT: Duration = Duration::from_secs(30);

fn spawn_lines(mut cmd: Command) -> std::io::Result<(Child, mpsc::Receiver<String>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// Parses `/proc/PID/smaps`: (total Rss, Rss of the guest-RAM mapping) in KiB.
/// The guest-RAM mapping is the anonymous mapping whose size is at least
/// `ram_kib` and at most `ram_kib` + 4 MiB (QEMU over-allocates for alignment);
/// the one with the largest Rss if several match.
pub fn smaps_rss(smaps: &str, ram_kib: u64) -> (u64, u64) {
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

fn measure(mut cmd: Command, mem_mib: u64, ready: &str) -> Result<Sample, String> {
    let t0 = Instant::now();
    let (mut child, rx) = spawn_lines(std::mem::replace(&mut cmd, Command::new("true")))
        .map_err(|e| format!("spawn: {e}"))?;
    let result = (|| {
        let first = rx
            .recv_timeout(LINE_TIMEOUT)
            .map_err(|_| "no serial line".to_string())?;
        let first_line = t0.elapsed();
        let _ = first;
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("guest never became idle")?;
            let l = rx
                .recv_timeout(left)
                .map_err(|_| format!("no `{ready}` line"))?;
            if l.starts_with(ready) {
                break;
            }
        }
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", child.id()))
            .map_err(|e| format!("smaps: {e}"))?;
        let (rss_kib, ram_kib) = smaps_rss(&smaps, mem_mib * 1024);
        Ok(Sample {
            first_line,
            overhead_kib: rss_kib.saturating_sub(ram_kib),
            rss_kib,
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
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

fn summarize(s: &[Sample]) -> Summary {
    Summary {
        first_ms: median(s.iter().map(|x| x.first_line.as_secs_f64() * 1e3).collect()),
        min_ms: s
            .iter()
            .map(|x| x.first_line.as_secs_f64() * 1e3)
            .fold(f64::INFINITY, f64::min),
        overhead_kib: median(s.iter().map(|x| x.overhead_kib as f64).collect()),
        rss_kib: median(s.iter().map(|x| x.rss_kib as f64).collect()),
    }
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    let tmp;
    let kernel: &Path = match &args.kernel {
        Some(k) => k,
        None => {
            tmp = std::env::temp_dir().join(format!("vmm-bench-guest-{}.elf", std::process::id()));
            std::fs::write(&tmp, vmm_guest::ELF).map_err(|e| format!("write guest: {e}"))?;
            &tmp
        }
    };
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mem = format!("{}M", args.mem_mib);
    let append = "workload=idle";
    let mut ours = Vec::new();
    for _ in 0..args.runs {
        let mut c = Command::new(&me);
        c.args(["run", "-m", &mem, "--kernel"])
            .arg(kernel)
            .args(["--append", append]);
        ours.push(measure(c, args.mem_mib, "idle: halted")?);
    }
    let o = summarize(&ours);
    println!(
        "vmm:       first serial line median {:.1} ms (min {:.1}), RSS {:.0} KiB, beyond guest RAM {:.0} KiB ({} runs)",
        o.first_ms,
        o.min_ms,
        o.rss_kib,
        o.overhead_kib,
        ours.len()
    );
    if let Some(q) = &args.qemu {
        let mut theirs = Vec::new();
        for _ in 0..args.runs {
            let mut c = Command::new(q);
            c.args([
                "-M",
                "microvm",
                "-enable-kvm",
                "-m",
                &args.mem_mib.to_string(),
                "-no-reboot",
            ])
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-nodefaults",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(kernel)
            .args(["-append", append]);
            theirs.push(measure(c, args.mem_mib, "idle: halted")?);
        }
        let r = summarize(&theirs);
        println!(
            "reference: first serial line median {:.1} ms (min {:.1}), RSS {:.0} KiB, beyond guest RAM {:.0} KiB ({} runs)",
            r.first_ms,
            r.min_ms,
            r.rss_kib,
            r.overhead_kib,
            theirs.len()
        );
        println!(
            "ratios:    first line {:.1}x sooner; memory overhead {:.1}x smaller",
            r.first_ms / o.first_ms,
            r.overhead_kib / o.overhead_kib.max(1.0)
        );
    }
    if args.kernel.is_none() {
        let _ = std::fs::remove_file(kernel);
    }
    Ok(())
}

/// Entry point of `vmm bench-boot`.
pub fn main(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm bench-boot: {e}");
            ExitCode::FAILURE
        }
    }
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
}

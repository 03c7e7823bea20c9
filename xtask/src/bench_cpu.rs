//! `cargo xtask bench-cpu-baseline`: `vmm cpu baseline` over many host files
//! (default 1,000, each this host's `vmm cpu host --json` with a few features
//! removed), timed as a whole process. The target: under 0.1 s for
//! 1,000 hosts. There is no peer: the reference leaves this fold to the
//! management layer.

use crate::bench_vmm::VmmArgs;
use std::process::Command;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask bench-cpu-baseline`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Host files to fold.
    #[arg(long, default_value_t = 1000)]
    pub hosts: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[command(flatten)]
    pub vmms: VmmArgs,
}

pub fn run(a: &Args) -> Result<(), String> {
    let vmm = a.vmms.binary()?;
    let out = Command::new(&vmm)
        .args(["cpu", "host", "--json"])
        .output()
        .map_err(|e| format!("vmm cpu host: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "vmm cpu host: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let host: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("vmm cpu host: {e}"))?;
    let features: Vec<String> = host["features"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let dir = std::env::temp_dir().join(format!("xtask-bench-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut files = Vec::with_capacity(a.hosts);
    for i in 0..a.hosts {
        let mut h = host.clone();
        let kept: Vec<&String> = features
            .iter()
            .filter(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                !x.is_multiple_of(16) // drop about one feature in sixteen
            })
            .collect();
        h["features"] = serde_json::json!(kept);
        let p = dir.join(format!("host-{i}.json"));
        std::fs::write(&p, h.to_string()).map_err(|e| e.to_string())?;
        files.push(p);
    }
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..a.runs.max(1) {
        let t = Instant::now();
        let o = Command::new(&vmm)
            .args(["cpu", "baseline"])
            .args(&files)
            .output()
            .map_err(|e| format!("vmm cpu baseline: {e}"))?;
        times.push(t.elapsed());
        if !o.status.success() {
            return Err(format!(
                "vmm cpu baseline: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "vmm cpu baseline of {} hosts: median {:.1} ms (min {:.1}, max {:.1}; {} runs; target < 100 ms)",
        a.hosts,
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
    Ok(())
}

//! CPU seconds of the two VMM processes over a migration, split into vCPU
//! threads and the VMM's own threads (`/proc/PID/task/*/stat`).

use crate::procfs::{parse_stat, ticks_per_s};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// CPU seconds of one process: its vCPU threads and everything else.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// All threads, including exited ones.
    pub total: f64,
    /// Threads named like vCPU threads (`vcpuN`, QEMU's `CPU N/KVM`).
    pub vcpu: f64,
}

impl Cpu {
    /// CPU of the VMM's own threads (migration, I/O, main loop).
    pub fn vmm(&self) -> f64 {
        (self.total - self.vcpu).max(0.0)
    }
}

/// True for a vCPU thread's name.
fn is_vcpu_thread(comm: &str) -> bool {
    comm.starts_with("vcpu") && !comm.contains("throttle") || comm.starts_with("CPU ")
}

/// CPU seconds of process `pid` now; `None` once it is gone.
fn cpu_of(pid: u32) -> Option<Cpu> {
    let hz = ticks_per_s();
    let (_, total) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut vcpu = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Some((comm, ticks)) = std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            && is_vcpu_thread(&comm)
        {
            vcpu += ticks;
        }
    }
    Some(Cpu {
        total: total as f64 / hz,
        vcpu: vcpu as f64 / hz,
    })
}

/// Samples two processes' CPU every 10 ms until stopped; keeps the last
/// reading of each (a process that exits keeps its last one).
pub struct CpuWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Cpu, Cpu)>,
    start: (Cpu, Cpu),
}

impl CpuWatch {
    pub fn start(src: u32, dst: u32) -> Self {
        let start = (
            cpu_of(src).unwrap_or_default(),
            cpu_of(dst).unwrap_or_default(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut last = start;
            while !flag.load(Ordering::Relaxed) {
                if let Some(c) = cpu_of(src) {
                    last.0 = c;
                }
                if let Some(c) = cpu_of(dst) {
                    last.1 = c;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            last
        });
        Self {
            stop,
            handle,
            start,
        }
    }

    /// CPU the source and the destination used since `start`.
    pub fn finish(self) -> (Cpu, Cpu) {
        self.stop.store(true, Ordering::Relaxed);
        let end = self.handle.join().unwrap_or(self.start);
        let d = |a: Cpu, b: Cpu| Cpu {
            total: b.total - a.total,
            vcpu: b.vcpu - a.vcpu,
        };
        (d(self.start.0, end.0), d(self.start.1, end.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_and_thread_names() {
        let s = "1234 (CPU 0/KVM) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat(s), Some(("CPU 0/KVM".into(), 300)));
        assert!(is_vcpu_thread("CPU 0/KVM") && is_vcpu_thread("vcpu1"));
        assert!(!is_vcpu_thread("vcpu-throttle") && !is_vcpu_thread("live_migration"));
    }
}

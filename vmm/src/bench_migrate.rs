//! `vmm bench-migrate`: live migration over loopback TCP of idle and
//! `ab`-dirtying guests, for `vmm` and (optionally) the reference VMM
//! (QEMU driven through QMP): total time, downtime, bytes sent, and the CPU
//! the VMM threads used meanwhile. Method and results: `docs/bench-migrate.md`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Arguments of `vmm bench-migrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchMigrateArgs {
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
    /// The reference VMM (e.g. the wrapper printed by scripts/reference-qemu.sh).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Guest ELF for both VMMs (default: the embedded guest, written to a temp file).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Give up on one migration after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

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

/// One migration's measurements.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Total time as the VMM reports it, ms.
    pub total_ms: f64,
    /// Downtime as the VMM reports it, ms.
    pub downtime_ms: f64,
    /// vCPUs stopped on the source to running on the destination from the
    /// two processes' own events (QEMU: the source's STOP and the
    /// destination's RESUME QMP timestamps), ms.
    pub downtime_events_ms: Option<f64>,
    /// Bytes sent.
    pub bytes: u64,
    /// Pre-copy iterations (QEMU: dirty-sync-count).
    pub iterations: u64,
    /// CPU used during the migration by the source and the destination.
    pub src_cpu: Cpu,
    /// CPU used by the destination.
    pub dst_cpu: Cpu,
    /// Wall time of the migration as seen by the benchmark, s.
    pub wall_s: f64,
}

const READY: Duration = Duration::from_secs(60);

/// A child killed on drop, its stdout as lines, its stderr collected.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut err = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Self {
            child,
            lines: rx,
            stderr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for a line starting with `prefix`.
    fn wait_line(&self, timeout: Duration, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("no `{prefix}` line; stderr: {}", self.stderr()))?;
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!("no `{prefix}` line; stderr: {}", self.stderr()));
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (comm, utime + stime in ticks) from a `/proc/.../stat` text.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let u: u64 = rest.get(11)?.parse().ok()?;
    let s: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, u + s))
}

/// True for a vCPU thread's name.
pub fn is_vcpu_thread(comm: &str) -> bool {
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
struct CpuWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Cpu, Cpu)>,
    start: (Cpu, Cpu),
}

impl CpuWatch {
    fn start(src: u32, dst: u32) -> Self {
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

    fn finish(self) -> (Cpu, Cpu) {
        self.stop.store(true, Ordering::Relaxed);
        let end = self.handle.join().unwrap_or(self.start);
        let d = |a: Cpu, b: Cpu| Cpu {
            total: b.total - a.total,
            vcpu: b.vcpu - a.vcpu,
        };
        (d(self.start.0, end.0), d(self.start.1, end.1))
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// True if some socket listens on TCP `port` (`/proc/net/tcp{,6}`, state 0A).
fn tcp_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut it = l.split_whitespace();
                let local = it.nth(1).unwrap_or("");
                let state = it.nth(1).unwrap_or("");
                local.ends_with(&want) && state == "0A"
            })
        })
    })
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

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vmm-bench-mig-{tag}-{}", std::process::id()))
}

/// The serial line that says the guest's workload is under way.
fn ready_line(workload: &str) -> &'static str {
    if workload == "ab" {
        "ab: pass="
    } else {
        "idle: halted"
    }
}

/// One `vmm` → `vmm` migration.
fn run_vmm(
    me: &Path,
    kernel: &Path,
    mib: u64,
    workload: &str,
    args: &BenchMigrateArgs,
) -> Result<Sample, String> {
    let sock = scratch(&format!("{mib}-{workload}.sock"));
    let _ = std::fs::remove_file(&sock);
    let append = format!("workload={workload}");
    let mut c = Command::new(me);
    c.args(["run", "-m", &format!("{mib}M"), "--kernel"])
        .arg(kernel)
        .args(["--append", &append, "--control"])
        .arg(&sock);
    let src = Proc::spawn(c)?;
    src.wait_line(READY, ready_line(workload))?;
    wait_for(READY, "the source's control socket", || sock.exists())?;
    let port = free_port()?;
    let uri = format!("tcp:127.0.0.1:{port}");
    let mut c = Command::new(me);
    c.args(["run", "--incoming", &uri]);
    let dst = Proc::spawn(c)?;
    wait_for(READY, "the destination to listen", || tcp_listening(port))?;

    let watch = CpuWatch::start(src.pid(), dst.pid());
    let t0 = Instant::now();
    let out = Command::new(me)
        .args(["migrate", "--control"])
        .arg(&sock)
        .args([
            &uri,
            "--json",
            "--downtime-limit",
            &args.downtime_limit.to_string(),
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
    if workload == "ab" {
        dst.wait_line(Duration::from_secs(20), "ab: pass=")
            .map_err(|e| format!("destination guest not counting: {e}"))?;
    }
    let f = |k: &str| summary.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    Ok(Sample {
        total_ms: f("total_ms"),
        downtime_ms: f("downtime_ms"),
        downtime_events_ms: None,
        bytes: summary.get("bytes").and_then(Value::as_u64).unwrap_or(0),
        iterations: summary
            .get("iterations")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        src_cpu,
        dst_cpu,
        wall_s,
    })
}

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

fn qemu_cmd(
    qemu: &Path,
    kernel: &Path,
    mib: u64,
    workload: &str,
    qmp: &Path,
    name: &str,
) -> Command {
    let mut c = Command::new(qemu);
    c.args([
        "-M",
        "microvm",
        "-enable-kvm",
        "-m",
        &mib.to_string(),
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
    .args(["-name", &format!("{name},debug-threads=on")])
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp.display()))
    .arg("-kernel")
    .arg(kernel)
    .args(["-append", &format!("workload={workload}")]);
    c
}

/// One QEMU → QEMU migration driven through QMP.
fn run_qemu(
    qemu: &Path,
    kernel: &Path,
    mib: u64,
    workload: &str,
    args: &BenchMigrateArgs,
) -> Result<Sample, String> {
    let sq = scratch(&format!("{mib}-{workload}-src.qmp"));
    let dq = scratch(&format!("{mib}-{workload}-dst.qmp"));
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let src = Proc::spawn(qemu_cmd(qemu, kernel, mib, workload, &sq, "src"))?;
    src.wait_line(READY, ready_line(workload))?;
    let mut sqmp = Qmp::connect(&sq)?;
    let port = free_port()?;
    let uri = format!("tcp:127.0.0.1:{port}");
    let mut c = qemu_cmd(qemu, kernel, mib, workload, &dq, "dst");
    c.args(["-incoming", &uri]);
    let dst = Proc::spawn(c)?;
    let mut dqmp = Qmp::connect(&dq)?;
    wait_for(READY, "the destination to listen", || tcp_listening(port))?;

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
    if workload == "ab" {
        dst.wait_line(Duration::from_secs(20), "ab: pass=")
            .map_err(|e| format!("destination guest not counting: {e}"))?;
    }
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let f = |k: &str| info.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let ram = info.get("ram").cloned().unwrap_or(Value::Null);
    Ok(Sample {
        total_ms: f("total-time"),
        downtime_ms: f("downtime"),
        downtime_events_ms: event_time(&resume)
            .zip(event_time(&stop))
            .map(|(r, s)| (r - s) * 1e3),
        bytes: ram.get("transferred").and_then(Value::as_u64).unwrap_or(0),
        iterations: ram
            .get("dirty-sync-count")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        src_cpu,
        dst_cpu,
        wall_s,
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
pub fn host_busy(s: &Sample, cpus: f64) -> f64 {
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
pub fn bound(s: &Sample, cpus: f64, memcpy_bytes_s: f64) -> &'static str {
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

fn bench(args: &BenchMigrateArgs) -> Result<(), String> {
    let tmp;
    let kernel: &Path = match &args.kernel {
        Some(k) => k,
        None => {
            tmp = scratch("guest.elf");
            std::fs::write(&tmp, vmm_guest::ELF).map_err(|e| format!("write guest: {e}"))?;
            &tmp
        }
    };
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
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
            let mut ours = Vec::new();
            for _ in 0..args.runs {
                ours.push(run_vmm(&me, kernel, mib, workload, args)?);
            }
            let Some(o) = pick(ours) else { continue };
            println!("{}", row("vmm", mib, workload, &o, memcpy_bytes_s));
            if let Some(q) = &args.qemu {
                let mut theirs = Vec::new();
                for _ in 0..args.runs {
                    match run_qemu(q, kernel, mib, workload, args) {
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
    if args.kernel.is_none() {
        let _ = std::fs::remove_file(kernel);
    }
    Ok(())
}

/// Entry point of `vmm bench-migrate`.
pub fn main(args: BenchMigrateArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm bench-migrate: {e}");
            ExitCode::FAILURE
        }
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

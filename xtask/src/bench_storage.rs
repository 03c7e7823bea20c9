//! `cargo xtask bench-storage`: storage + memory migration with the
//! reference's own sequence (docs/storage.md), vmm against QEMU, both
//! driven through the same QMP commands: the destination (`--incoming
//! defer`) exports its empty image (`nbd-server-start`, `block-export-add`),
//! the source mirrors its image filled with data while the guest runs the
//! `disk` workload (`blockdev-add` driver nbd, `blockdev-mirror` sync=full)
//! until `BLOCK_JOB_READY`, then `migrate`, then `block-job-cancel` until
//! `BLOCK_JOB_COMPLETED`. Reported: time to READY, total, the guest's
//! downtime, the disk and RAM bytes, and vmm's time as a ratio of QEMU's
//! measured in the same run (docs/storage.md).

use crate::bench_migrate::Reference;
use crate::bench_vmm::{Binaries, Proc, reference_qemu, vmm_run};
use qmp::Client;
use serde_json::{Value, json};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask bench-storage`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Disk image size in MiB (filled with data on the source).
    #[arg(long, default_value_t = 1024)]
    pub disk_mib: u64,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Runs per VMM (medians are reported).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// The reference VMM (QEMU 10.0: `scripts/reference-qemu10.sh` prints it).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    #[command(flatten)]
    pub bins: Binaries,
}

const READY: Duration = Duration::from_secs(60);
const ANSWER: Duration = Duration::from_secs(30);
/// The first virtio-mmio transport of QEMU's microvm (acpi=on).
const QEMU_VIRTIO: &str = "virtio_mmio.device=512@0xfeb02e00:39";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vmm,
    Qemu,
}

/// One measurement.
#[derive(Clone, Debug, Default)]
struct Sample {
    ready_ms: f64,
    /// `migrate` until `completed`.
    migrate_ms: f64,
    /// `block-job-cancel` until `BLOCK_JOB_COMPLETED` (the final flush).
    end_ms: f64,
    total_ms: f64,
    downtime_ms: f64,
    disk_bytes: u64,
    ram_bytes: u64,
}

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vmm-bench-storage-{}-{tag}", std::process::id()))
}

/// An image of `mib` MiB: data everywhere (`fill`) or sparse.
fn image(path: &Path, mib: u64, fill: bool) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(mib << 20).map_err(|e| e.to_string())?;
    if fill {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut chunk = vec![0u8; 1 << 20];
        for m in 0..mib {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            f.write_all_at(&chunk, m << 20).map_err(|e| e.to_string())?;
        }
        f.sync_all().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn side(
    kind: Kind,
    bin: &Path,
    kernel: &Path,
    args: &Args,
    img: &Path,
    qmp: &Path,
    dst: bool,
) -> Command {
    let sock = format!("unix:{},server=on,wait=off", qmp.display());
    match kind {
        Kind::Vmm => {
            let mut c = if dst {
                let mut c = Command::new(bin);
                c.args(["run", "--incoming", "defer"]);
                c
            } else {
                vmm_run(bin, kernel, args.mib, "disk disk.count=0")
            };
            c.arg("--drive")
                .arg(format!("file={},id=d0", img.display()))
                .args(["--device", "virtio-blk-device,drive=d0", "--qmp", &sock]);
            c
        }
        Kind::Qemu => {
            let extra = [
                "-global".to_string(),
                "virtio-mmio.force-legacy=false".into(),
                "-blockdev".into(),
                format!(
                    "driver=raw,node-name=d0,file.driver=file,file.filename={}",
                    img.display()
                ),
                "-device".into(),
                "virtio-blk-device,drive=d0".into(),
                "-qmp".into(),
                sock,
            ];
            let mut c = reference_qemu(
                bin,
                kernel,
                args.mib,
                &format!("disk disk.count=0 {QEMU_VIRTIO}"),
                &extra,
            );
            if dst {
                c.args(["-incoming", "defer"]);
            }
            c
        }
    }
}

fn connect(path: &Path) -> Result<Client, String> {
    let deadline = Instant::now() + READY;
    loop {
        match Client::connect(path, ANSWER) {
            Ok(c) => return Ok(c),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("QMP {}: {e}", path.display())),
        }
    }
}

fn exec(q: &mut Client, cmd: &str, args: Value) -> Result<Value, String> {
    q.execute(cmd, args.clone())
        .map_err(|e| format!("QMP {cmd} {args}: {e}"))
}

fn event(q: &mut Client, name: &str, timeout: Duration) -> Result<Value, String> {
    q.wait_event(timeout, |e| e["event"] == name)
        .map_err(|e| format!("waiting for {name}: {e}"))
}

fn one(kind: Kind, bin: &Path, kernel: &Path, args: &Args) -> Result<Sample, String> {
    let (si, di) = (scratch("src.img"), scratch("dst.img"));
    image(&si, args.disk_mib, true)?;
    image(&di, args.disk_mib, false)?;
    let (sq, dq, nbd, mig) = (
        scratch("src.qmp"),
        scratch("dst.qmp"),
        scratch("nbd.sock"),
        scratch("mig.sock"),
    );
    for p in [&sq, &dq, &nbd, &mig] {
        let _ = std::fs::remove_file(p);
    }
    let src = Proc::spawn(side(kind, bin, kernel, args, &si, &sq, false))?;
    src.wait_line(READY, "disk: seq=")?;
    let dst = Proc::spawn(side(kind, bin, kernel, args, &di, &dq, true))?;
    let mut s = connect(&sq)?;
    let mut d = connect(&dq)?;
    exec(
        &mut d,
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": nbd.display().to_string()}}}),
    )?;
    exec(
        &mut d,
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": "d0", "writable": true}),
    )?;
    exec(
        &mut s,
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "t0", "export": "d0",
               "server": {"type": "unix", "path": nbd.display().to_string()}}),
    )?;
    let t0 = Instant::now();
    exec(
        &mut s,
        "blockdev-mirror",
        json!({"job-id": "m0", "device": "d0", "target": "t0", "sync": "full"}),
    )?;
    let ready = event(&mut s, "BLOCK_JOB_READY", Duration::from_secs(600))?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    let disk_bytes = ready["data"]["len"].as_u64().unwrap_or(0);
    exec(
        &mut d,
        "migrate-incoming",
        json!({"uri": format!("unix:{}", mig.display())}),
    )?;
    let tm = Instant::now();
    exec(
        &mut s,
        "migrate",
        json!({"uri": format!("unix:{}", mig.display())}),
    )?;
    let info = loop {
        let i = exec(&mut s, "query-migrate", json!({}))?;
        match i["status"].as_str() {
            Some("completed") => break i,
            Some("failed") | Some("cancelled") => return Err(format!("migration {i}")),
            _ => s
                .pause(Duration::from_millis(20))
                .map_err(|e| e.to_string())?,
        }
    };
    let migrate_ms = tm.elapsed().as_secs_f64() * 1e3;
    let te = Instant::now();
    exec(&mut s, "block-job-cancel", json!({"device": "m0"}))?;
    let done = event(&mut s, "BLOCK_JOB_COMPLETED", Duration::from_secs(60))?;
    if let Some(e) = done["data"].get("error") {
        return Err(format!("mirror ended with {e}"));
    }
    let end_ms = te.elapsed().as_secs_f64() * 1e3;
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    let _ = exec(&mut d, "nbd-server-stop", json!({}));
    let _ = d.execute("quit", json!({}));
    drop((src, dst));
    for p in [&si, &di, &sq, &dq, &nbd, &mig] {
        let _ = std::fs::remove_file(p);
    }
    Ok(Sample {
        ready_ms,
        migrate_ms,
        end_ms,
        total_ms,
        // vmm's own summary holds fractional ms; QEMU's `downtime` is whole ms.
        downtime_ms: info["x-vmm-summary"]["downtime_ms"]
            .as_f64()
            .or_else(|| info["downtime"].as_f64())
            .unwrap_or(f64::NAN),
        disk_bytes,
        ram_bytes: info["ram"]["transferred"].as_u64().unwrap_or(0),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn measure(kind: Kind, bin: &Path, kernel: &Path, args: &Args) -> Result<Sample, String> {
    let mut all = Vec::new();
    for _ in 0..args.runs.max(1) {
        all.push(one(kind, bin, kernel, args)?);
    }
    let pick = |f: fn(&Sample) -> f64| median(all.iter().map(f).collect());
    Ok(Sample {
        ready_ms: pick(|s| s.ready_ms),
        migrate_ms: pick(|s| s.migrate_ms),
        end_ms: pick(|s| s.end_ms),
        total_ms: pick(|s| s.total_ms),
        downtime_ms: pick(|s| s.downtime_ms),
        disk_bytes: all[0].disk_bytes,
        ram_bytes: all[0].ram_bytes,
    })
}

/// `cargo xtask bench-storage`.
pub fn run(args: &Args) -> Result<(), String> {
    let vmm = args.bins.binary()?;
    let guest = args.bins.guest(&vmm, "storage")?;
    let mut rows = vec![(
        "vmm".to_string(),
        measure(Kind::Vmm, &vmm, guest.path(), args),
    )];
    if let Some(q) = &args.qemu {
        let r = Reference::probe(q)?;
        rows.push((r.label(), measure(Kind::Qemu, q, guest.path(), args)));
    }
    println!(
        "storage + memory migration: {} MiB image full of data, {} MiB guest writing its disk (workload=disk), {} run(s), medians",
        args.disk_mib, args.mib, args.runs
    );
    println!(
        "| VMM | to READY ms | migrate ms | end of job ms | total ms | downtime ms | disk MiB | RAM MiB | disk MiB/s to READY |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, r) in &rows {
        match r {
            Ok(s) => println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {:.1} | {:.0} |",
                s.ready_ms,
                s.migrate_ms,
                s.end_ms,
                s.total_ms,
                s.downtime_ms,
                s.disk_bytes >> 20,
                s.ram_bytes as f64 / 1048576.0,
                (s.disk_bytes >> 20) as f64 / (s.ready_ms / 1e3)
            ),
            Err(e) => println!("| {name} | failed: {e} | | | | | | | |"),
        }
    }
    if let [(_, Ok(a)), (label, Ok(b))] = rows.as_slice() {
        println!(
            "\nvmm / {label}: to READY {:.2}x, total {:.2}x, downtime {:.2}x (below 1: vmm is faster)",
            a.ready_ms / b.ready_ms,
            a.total_ms / b.total_ms,
            a.downtime_ms / b.downtime_ms
        );
    }
    match rows.iter().find_map(|(_, r)| r.as_ref().err()) {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

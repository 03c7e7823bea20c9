//! Boots the embedded guest under the reference VMM (Debian's QEMU 7.2,
//! `-M microvm -enable-kvm -kernel`) and checks its serial output.
//!
//! Needs the reference QEMU (`scripts/reference-qemu.sh` fetches it into
//! `target/reference-qemu`, or `REFERENCE_QEMU=/path/to/qemu-system-x86_64`
//! names one) and a usable `/dev/kvm`. Without them a test cannot run what
//! it tests: under `CI` it fails saying what is missing; elsewhere it prints
//! `SKIP: ...` and passes.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm_guest::*;

/// How long a guest may take to reach what a test waits for.
const BOOT: Duration = Duration::from_secs(30);

/// The reference QEMU, if it and `/dev/kvm` are usable. Otherwise: under
/// `CI` the test fails here; elsewhere it says SKIP and gets `None`.
fn qemu() -> Option<PathBuf> {
    let (path, named_by) = match std::env::var_os("REFERENCE_QEMU") {
        Some(p) => (PathBuf::from(p), "REFERENCE_QEMU"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/reference-qemu/qemu-system-x86_64"),
            "the default path; REFERENCE_QEMU is not set",
        ),
    };
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    let missing = if !path.exists() {
        format!(
            "the reference QEMU is not usable: no {} ({named_by}); run \
             scripts/reference-qemu.sh (it fetches Debian's QEMU 7.2 into \
             target/reference-qemu and prints its path) or set \
             REFERENCE_QEMU=/path/to/qemu-system-x86_64",
            path.display()
        )
    } else if let Err(e) = kvm {
        format!("/dev/kvm is not usable: {e} (these tests boot the guest under QEMU with KVM)")
    } else {
        return Some(path);
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {missing}");
    }
    eprintln!("SKIP: {missing}");
    None
}

/// The reference QEMU (see [`qemu`]) and a fresh scratch directory for
/// the test `name`.
fn setup(name: &str) -> Option<(PathBuf, PathBuf)> {
    Some((qemu()?, scratch(name)))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-guest-qemu-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Vm {
    child: Child,
    serial: PathBuf,
    stderr: PathBuf,
}

impl Vm {
    /// Starts QEMU microvm with the guest, serial to a file, `-no-reboot`
    /// (a triple fault or reboot ends QEMU), plus `extra` arguments.
    fn start(qemu: &Path, dir: &Path, append: &str, extra: &[impl AsRef<OsStr>]) -> Vm {
        Vm::start_elf(qemu, ELF_PATH, dir, append, extra)
    }

    fn start_elf(
        qemu: &Path,
        elf: &str,
        dir: &Path,
        append: &str,
        extra: &[impl AsRef<OsStr>],
    ) -> Vm {
        let serial = dir.join("serial.txt");
        let stderr = dir.join("stderr.txt");
        let child = Command::new(qemu)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("qemu stderr file"))
            .args([
                "-M",
                "microvm,pcie=on",
                "-enable-kvm",
                "-m",
                "64",
                "-no-reboot",
            ])
            .args(["-display", "none", "-monitor", "none", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .arg("-kernel")
            .arg(elf)
            .arg("-append")
            .arg(append)
            .args(extra)
            .spawn()
            .expect("start qemu");
        Vm {
            child,
            serial,
            stderr,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits until QEMU exits (the guest powered off); the serial output.
    fn wait_exit(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                assert!(status.success(), "qemu failed: {status}: {err}");
                return self.output();
            }
            if Instant::now() > deadline {
                let out = self.output();
                let _ = self.child.kill();
                panic!("guest did not power off within {timeout:?}; serial:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the serial output contains `needle` (QEMU keeps running).
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if Instant::now() > deadline || self.child.try_wait().unwrap().is_some() {
                let _ = self.child.kill();
                panic!("no {needle:?} within {timeout:?}; serial:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QEMU human monitor on a Unix socket; each command's completion is
/// marked by a new "(qemu)" prompt.
struct Monitor {
    sock: UnixStream,
    reply: String,
}

impl Monitor {
    fn connect(path: &Path) -> Monitor {
        let sock = UnixStream::connect(path).expect("monitor socket");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut m = Monitor {
            sock,
            reply: String::new(),
        };
        m.read_prompts(1);
        m
    }

    fn read_prompts(&mut self, want: usize) {
        let mut buf = [0u8; 4096];
        while self.reply.matches("(qemu)").count() < want {
            let n = self.sock.read(&mut buf).expect("monitor reply");
            assert!(n > 0, "monitor closed");
            self.reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    fn cmd(&mut self, c: &str) {
        let want = self.reply.matches("(qemu)").count() + 1;
        self.sock.write_all(format!("{c}\n").as_bytes()).unwrap();
        self.read_prompts(want);
    }
}

/// A zero-filled `size`-byte disk image `dir/disk.img` and the QEMU
/// arguments that attach it as a virtio-blk device with `props`, then `more`.
fn disk(dir: &Path, size: u64, props: &str, more: &[&str]) -> (PathBuf, Vec<String>) {
    let image = dir.join("disk.img");
    File::create(&image).unwrap().set_len(size).unwrap();
    let mut args = vec![
        "-drive".into(),
        format!("id=d0,file={},format=raw,if=none", image.display()),
        "-device".into(),
        format!("virtio-blk-device,drive=d0{props}"),
    ];
    args.extend(more.iter().map(|a| a.to_string()));
    (image, args)
}

fn virtio_arg() -> String {
    virtio_mmio_arg(0x200, QEMU_MICROVM_FIRST_VIRTIO, 39)
}

#[test]
fn report_under_qemu() {
    let Some((q, dir)) = setup("report") else {
        return;
    };
    let root_port = ["-device", "pcie-root-port,id=rp0,chassis=1"];
    let (_, extra) = disk(&dir, 8 << 20, ",num-queues=2", &root_port);
    let append = format!(
        "workload=report pci.ecam={QEMU_MICROVM_ECAM:#x} {}",
        virtio_arg()
    );
    let out = Vm::start(&q, &dir, &append, &extra).wait_exit(BOOT);
    assert!(out.starts_with("boot: ok\n"), "{out}");
    let r = parse_report(&out);
    assert!(r.boot_ok && r.pvh_ok && r.done, "{out}");
    assert!(
        r.memmap
            .iter()
            .any(|m| m.kind == 1 && m.addr <= LOAD_ADDR && m.addr + m.size > LOAD_ADDR)
    );
    assert_eq!(r.virtio.len(), 1);
    assert_eq!(
        (
            r.virtio[0].magic,
            r.virtio[0].version,
            r.virtio[0].device_id
        ),
        (0x7472_6976, 2, 2)
    );
    let b = r.blk(0).expect("virtio-blk lines");
    assert!(b.version_1 && b.mq && b.flush, "{b:?}");
    assert_eq!(b.num_queues(), Some(2));
    assert_eq!(b.queue_max.len(), 2);
    assert_eq!(b.config("capacity"), Some(16384));
    assert_eq!(b.config("blk_size"), Some(512));
    assert!(
        r.pci
            .iter()
            .any(|f| f.vendor == 0x1b36 && f.class == 0x060000),
        "host bridge"
    );
    let (f, aer) = r.first_aer().expect("the root port's AER capability");
    assert_eq!(f.class, 0x060400);
    assert_eq!(aer.cap, 0x100);
}

#[test]
fn disk_under_qemu() {
    let Some((q, dir)) = setup("disk") else {
        return;
    };
    let (image, extra) = disk(&dir, 1 << 20, "", &[]);
    let append = format!(
        "workload=disk disk.count=64 disk.start=100 {}",
        virtio_arg()
    );
    let out = Vm::start(&q, &dir, &append, &extra).wait_exit(BOOT);
    let res = out
        .lines()
        .find_map(parse_disk_result)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        res.verify_ok && res.mismatches == 0 && res.flush == "ok",
        "{res:?}"
    );
    assert_eq!(res.sectors, 64);
    assert_eq!(res.checksum, expected_disk_checksum(64, 100, 2048));
    let data = std::fs::read(&image).unwrap();
    for seq in 0..64u64 {
        let sector = 100 + seq;
        let s = &data[sector as usize * SECTOR..][..SECTOR];
        assert_eq!(check_sector(s), Some((seq, sector)));
    }
    assert!(data[..100 * SECTOR].iter().all(|&b| b == 0));
}

#[test]
fn bad_requests_under_qemu() {
    let Some(q) = qemu() else { return };
    for (bad, kind) in [(1, "short-header"), (2, "outside-ram"), (3, "no-status")] {
        let dir = scratch(&format!("bad{bad}"));
        let (_, extra) = disk(&dir, 1 << 20, "", &[]);
        let append = format!("workload=disk disk.bad={bad} {}", virtio_arg());
        let out = Vm::start(&q, &dir, &append, &extra).wait_exit(BOOT);
        let b = out
            .lines()
            .find_map(parse_bad_request)
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(b.kind, kind);
    }
}

#[test]
fn idle_under_qemu() {
    let Some((q, dir)) = setup("idle") else {
        return;
    };
    let mut vm = Vm::start(&q, &dir, "workload=idle", &[] as &[&str]);
    vm.wait_for("idle: halted\n", BOOT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        vm.child.try_wait().unwrap().is_none(),
        "idle guest must keep running"
    );
}

#[test]
fn crash_under_qemu() {
    let Some((q, dir)) = setup("crash") else {
        return;
    };
    // -no-reboot: the triple fault after the panic line ends QEMU.
    let out = Vm::start(&q, &dir, "crash=1", &[] as &[&str]).wait_exit(BOOT);
    let p = out
        .lines()
        .find_map(parse_panic)
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(p.vector, 6, "#UD");
    assert_eq!(p.cs & 3, 3, "raised at CPL 3");
}

#[test]
fn ab_under_qemu() {
    let Some((q, dir)) = setup("ab") else { return };
    let sock = dir.join("monitor.sock");
    let monitor = format!("unix:{},server=on,wait=off", sock.display());
    // -monitor none in Vm::start is overridden by this later -monitor.
    let mut vm = Vm::start(&q, &dir, "workload=ab ab.mib=16", &["-monitor", &monitor]);
    let out = vm.wait_for("ab: pass=1\n", BOOT);
    let range = out
        .lines()
        .find_map(parse_ab_start)
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(range.pages, 16 * 256);
    std::thread::sleep(Duration::from_millis(200));

    let mut mon = Monitor::connect(&sock);
    let size = range.start + range.pages * 4096;
    mon.cmd("stop");
    let mem = pmemsave(&mut mon, 0, size, &dir.join("mem.bin"));
    check_ab(&mem, 0, range).unwrap();
    let passes = vm.output().lines().filter_map(parse_ab_pass).max().unwrap();
    assert!(passes >= 1);
}

/// `pmemsave`s `size` bytes of guest memory from `addr` into `dump` over
/// the monitor `mon` and reads them back.
fn pmemsave(mon: &mut Monitor, addr: u64, size: u64, dump: &Path) -> Vec<u8> {
    mon.cmd(&format!(
        "pmemsave {addr:#x} {size:#x} \"{}\"",
        dump.display()
    ));
    // pmemsave is synchronous: the file is complete once the prompt is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(dump).map(|m| m.len()).unwrap_or(0) < size {
        assert!(Instant::now() < deadline, "pmemsave did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read(dump).unwrap()
}

#[test]
fn fill_under_qemu() {
    let Some(q) = qemu() else { return };
    // (kind, fill.mib, fill.seed): an explicit seed 0 is a seed too.
    let cases = [
        (FillKind::Random, 64, None),
        (FillKind::Text, 64, None),
        (FillKind::Text, 1, Some(0)),
    ];
    for (i, (kind, mib, seed)) in cases.into_iter().enumerate() {
        let dir = scratch(&format!("fill{i}"));
        let sock = dir.join("monitor.sock");
        let monitor = format!("unix:{},server=on,wait=off", sock.display());
        let mut append = format!("workload={} fill.mib={mib}", kind.workload());
        if let Some(seed) = seed {
            append += &format!(" fill.seed={seed}");
        }
        let mut vm = Vm::start(&q, &dir, &append, &["-monitor", &monitor]);
        // Only the done line ends with `kind=...\n` (the start line goes on
        // with `seed=`): once it is there, it is complete.
        let out = vm.wait_for(&format!(" kind={}\n", kind.as_str()), BOOT);
        let start = out
            .lines()
            .find_map(parse_fill_start)
            .unwrap_or_else(|| panic!("{out}"));
        let done = out
            .lines()
            .find_map(parse_fill_done)
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(start, done, "{out}");
        assert_eq!(done.kind, kind);
        assert_eq!(done.seed, seed.unwrap_or(FILL_DEFAULT_SEED));
        assert_eq!(out.lines().filter_map(parse_fill_done).count(), 1);
        assert!(!out.contains("idle:"), "{out}");
        // `-m 64`: with fill.mib=64 the RAM entry holding the image ends
        // first and bounds the range.
        let ram = parse_report(&out)
            .memmap
            .into_iter()
            .find(|m| m.kind == 1 && m.addr <= done.start && m.addr + m.size > done.start)
            .unwrap_or_else(|| panic!("no RAM entry holding the range\n{out}"));
        let end = (ram.addr + ram.size).min(done.start + (mib << 20)) & !0xfff;
        assert_eq!(done.pages, (end - done.start) / 4096, "{out}");
        assert!(done.pages >= (mib * 256).min(15 * 1024), "{out}");

        let mut mon = Monitor::connect(&sock);
        mon.cmd("stop");
        let size = done.pages * 4096;
        let mem = pmemsave(&mut mon, done.start, size, &dir.join("mem.bin"));
        check_fill(&mem, done.start, &done).unwrap();
        assert!(
            vm.child.try_wait().unwrap().is_none(),
            "the guest idles after the fill"
        );
    }
}

#[test]
fn trapped_port_io_under_qemu() {
    let Some((q, dir)) = setup("trap-io") else {
        return;
    };
    let (_, extra) = disk(&dir, 1 << 20, "", &[]);
    // Serial output and the power-off port writes all go through the #GP
    // emulator (microvm then powers off through the GED MMIO write).
    let append = format!("workload=disk disk.count=8 {}", virtio_arg());
    let out = Vm::start_elf(&q, ELF_TRAP_IO_PATH, &dir, &append, &extra).wait_exit(BOOT);
    assert!(parse_report(&out).done, "{out}");
    let res = out
        .lines()
        .find_map(parse_disk_result)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(res.verify_ok, "{res:?}");
}

#[test]
fn legacy_transport_under_qemu() {
    let Some((q, dir)) = setup("legacy") else {
        return;
    };
    // A later -global wins: back to QEMU's default legacy transport.
    let legacy = ["-global", "virtio-mmio.force-legacy=true"];
    let (_, extra) = disk(&dir, 1 << 20, "", &legacy);
    let append = format!("workload=disk disk.count=16 {}", virtio_arg());
    let out = Vm::start(&q, &dir, &append, &extra).wait_exit(BOOT);
    let r = parse_report(&out);
    assert_eq!(r.virtio[0].version, 1, "{out}");
    let res = out
        .lines()
        .find_map(parse_disk_result)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(res.verify_ok && res.flush == "ok", "{res:?}");
    assert_eq!(res.checksum, expected_disk_checksum(16, 0, 2048));
}

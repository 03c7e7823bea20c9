//! Storage migration end to end: `vmm`'s NBD export read by the standard
//! clients (`qemu-img`, `nbdinfo`, `nbdcopy`), a mirror of a disk the guest
//! writes forever plus a live migration onto the destination's own image,
//! a mirror target that dies mid-copy, and hostile NBD clients.

use crate::common::{BOOT, EXIT, Rng, Running, TempPath};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SECTOR: usize = vmm_guest::SECTOR;

/// A QMP command that must succeed.
fn ok(q: &mut qmp::Client, cmd: &str, args: Value, ctx: &str) -> Value {
    q.execute(cmd, args.clone())
        .unwrap_or_else(|e| panic!("{ctx}: {cmd} {args}: {e}"))
}

/// The first event named `name` within `timeout`.
fn event(q: &mut qmp::Client, name: &str, timeout: Duration, ctx: &str) -> Value {
    q.wait_event(timeout, |e| e["event"] == name)
        .unwrap_or_else(|e| panic!("{ctx}: no {name} event: {e}"))
}

/// Starts the NBD server on `sock` and exports `node` (writable or not).
fn export(q: &mut qmp::Client, sock: &TempPath, node: &str, writable: bool, ctx: &str) {
    ok(
        q,
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": sock.arg()}}}),
        ctx,
    );
    ok(
        q,
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": node, "name": node, "writable": writable}),
        ctx,
    );
}

fn nbd_uri(sock: &TempPath, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", sock.arg())
}

/// A host tool that must exist (CI installs them) and succeed.
fn tool(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e} (installed by .ci/run: qemu-utils, libnbd-bin)"));
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 64 MiB sparse image with data at 4 MiB (1 MiB) and 40 MiB (64 KiB).
fn sparse_image() -> (TempPath, Vec<u8>) {
    let img = TempPath::sized("nbd-src", 64 * MIB);
    let mut rng = Rng::new("storage-sparse");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(img.path())
        .expect("open");
    use std::os::unix::fs::FileExt;
    for (off, len) in [(4 * MIB, MIB), (40 * MIB, 64 << 10)] {
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        f.write_all_at(&data, off).expect("write");
    }
    drop(f);
    let all = std::fs::read(img.path()).expect("read");
    (img, all)
}

#[test]
fn standard_clients_read_an_export_byte_for_byte_and_see_its_holes() {
    crate::require_kvm!();
    let ctx = "export";
    let (img, want) = sparse_image();
    let drive = format!("file={},id=d0", img.arg());
    let vm = Running::start(
        &[
            "-m",
            "64M",
            "--drive",
            &drive,
            "--device",
            "virtio-blk-device,drive=d0",
            "--append",
            "workload=idle",
        ],
        ctx,
    );
    let sock = TempPath::new("nbd", "sock");
    let mut q = vm.qmp();
    export(&mut q, &sock, "d0", false, ctx);
    let uri = nbd_uri(&sock, "d0");
    let info = tool("qemu-img", &["info", "--output=json", &uri]);
    let info: Value = serde_json::from_str(&info).expect("qemu-img info json");
    assert_eq!(info["virtual-size"], 64 * MIB, "{info}");
    let out = TempPath::new("nbd-copy", "img");
    tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &uri, &out.arg()],
    );
    assert!(
        std::fs::read(out.path()).expect("copy") == want,
        "qemu-img convert: not byte-identical"
    );
    let out2 = TempPath::new("nbd-copy2", "img");
    std::fs::File::create(out2.path()).expect("create");
    tool("nbdcopy", &[&uri, &out2.arg()]);
    assert!(
        std::fs::read(out2.path()).expect("copy") == want,
        "nbdcopy: not byte-identical"
    );
    // The map: data where the host wrote, holes (reading as zero) elsewhere.
    let map = tool("nbdinfo", &["--map", &uri]);
    let runs: Vec<(u64, u64, String)> = map
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let off = w.next()?.parse().ok()?;
            let len = w.next()?.parse().ok()?;
            let _ = w.next()?;
            Some((off, len, w.collect::<Vec<_>>().join(" ")))
        })
        .collect();
    let kind = |at: u64| {
        runs.iter()
            .find(|(o, l, _)| *o <= at && at < o + l)
            .map(|r| r.2.clone())
            .unwrap_or_default()
    };
    assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), 64 * MIB, "{map}");
    assert_eq!(kind(4 * MIB + 4096), "data", "{map}");
    assert_eq!(kind(40 * MIB), "data", "{map}");
    assert_eq!(kind(0), "hole,zero", "{map}");
    assert_eq!(kind(20 * MIB), "hole,zero", "{map}");
    // A read-only export refuses writes (qemu-io is not needed: the export
    // says so in its flags, which qemu-img reports).
    let list = tool("nbdinfo", &["--json", &uri]);
    let list: Value = serde_json::from_str(&list).expect("nbdinfo json");
    assert_eq!(list["exports"][0]["is_read_only"], true, "{list}");
    drop(q);
    vm.quit(ctx);
}

fn seq_of(l: &str) -> Option<u64> {
    vmm_guest::parse_line(l)
        .filter(|p| p.key == "disk")
        .and_then(|p| p.num("seq"))
}

/// `vmm run` of a guest writing `img` forever (`workload=disk
/// disk.count=0`), once it reported its first sector.
pub(crate) fn disk_writer(img: &TempPath, ctx: &str) -> Running {
    let mut r = Running::start(
        &[
            "-m",
            "64M",
            "--drive",
            &img.drive(),
            "--append",
            "workload=disk disk.count=0",
        ],
        ctx,
    );
    r.vmm
        .wait_line(BOOT, |l| seq_of(l).is_some())
        .unwrap_or_else(|| panic!("{ctx}: no disk: seq= on the source\n{}", r.vmm.transcript()));
    r
}

/// The source's last `disk: seq=` once it exited after handing over.
pub(crate) fn last_seq_after_exit(src: Running) -> u64 {
    let before = src
        .vmm
        .seen()
        .iter()
        .filter_map(|l| seq_of(l))
        .max()
        .unwrap_or(0);
    let fin = src.vmm.finish(EXIT);
    fin.lines
        .iter()
        .filter_map(|l| seq_of(l))
        .max()
        .unwrap_or(before)
}

/// Waits until the destination's guest wrote 64 sectors past `before`
/// without an error: the sector it reached.
pub(crate) fn writes_on(dst: &mut Running, before: u64, ctx: &str) -> u64 {
    let l = dst
        .vmm
        .wait_line(BOOT, |l| seq_of(l).is_some_and(|n| n > before + 64))
        .unwrap_or_else(|| {
            panic!(
                "{ctx}: no disk: seq= above {before} on the destination\n{}",
                dst.vmm.transcript()
            )
        });
    assert!(
        !dst.vmm.seen().iter().any(|l| l.contains("error")),
        "{:?}",
        dst.vmm.seen()
    );
    seq_of(&l).unwrap_or(0)
}

/// Every sector `0..n` of `img` holds the `disk` workload's pattern for its
/// own position (seq = sector: no wrap-around in these tests).
pub(crate) fn assert_pattern(img: &TempPath, n: u64, ctx: &str) {
    let data = std::fs::read(img.path()).expect("read image");
    for s in 0..n {
        let off = s as usize * SECTOR;
        assert_eq!(
            vmm_guest::check_sector(&data[off..off + SECTOR]),
            Some((s, s)),
            "{ctx}: sector {s} of {n} is not intact"
        );
    }
}

#[test]
fn storage_and_memory_migrate_while_the_guest_writes_its_disk() {
    crate::require_kvm!();
    let ctx = "storage migration";
    let a = TempPath::sized("mirror-src", 64 * MIB);
    let b = TempPath::sized("mirror-dst", 64 * MIB);
    let capacity = 64 * MIB / SECTOR as u64;
    let src = disk_writer(&a, ctx);
    let mut dst = Running::deferred(&["--drive", &b.drive()], ctx);
    let nbd = TempPath::new("nbd-dst", "sock");
    let mut d = dst.qmp();
    export(&mut d, &nbd, "virtio-blk0", true, ctx);
    let mut s = src.qmp();
    ok(
        &mut s,
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "target0", "export": "virtio-blk0",
               "server": {"type": "unix", "path": nbd.arg()}}),
        ctx,
    );
    ok(
        &mut s,
        "blockdev-mirror",
        json!({"job-id": "mirror0", "device": "virtio-blk0", "target": "target0", "sync": "full"}),
        ctx,
    );
    let ready = event(&mut s, "BLOCK_JOB_READY", BOOT, ctx);
    assert_eq!(ready["data"]["device"], "mirror0", "{ready}");
    let jobs = ok(&mut s, "query-block-jobs", json!({}), ctx);
    assert_eq!(jobs[0]["ready"], true, "{jobs}");
    assert_eq!(jobs[0]["len"], 64 * MIB, "{jobs}");
    let mig = TempPath::new("mig", "sock");
    ok(
        &mut d,
        "migrate-incoming",
        json!({"uri": mig.uri("unix")}),
        ctx,
    );
    ok(&mut s, "migrate", json!({"uri": mig.uri("unix")}), ctx);
    s.wait_event(BOOT, |e| {
        e["event"] == "MIGRATION" && e["data"]["status"] == "completed"
    })
    .unwrap_or_else(|e| {
        panic!(
            "{ctx}: migration never completed: {e}\n{}",
            src.vmm.transcript()
        )
    });
    // The source is paused and the target in step: end the job gracefully.
    ok(
        &mut s,
        "block-job-cancel",
        json!({"device": "mirror0"}),
        ctx,
    );
    let done = event(&mut s, "BLOCK_JOB_COMPLETED", BOOT, ctx);
    assert!(done["data"].get("error").is_none(), "{done}");
    ok(&mut d, "nbd-server-stop", json!({}), ctx);
    drop(s);
    let before = last_seq_after_exit(src);
    // The destination's guest writes on, to its own image.
    let after = writes_on(&mut dst, before, ctx);
    drop(d);
    dst.ctl_ok(&["stop"], ctx);
    dst.quit(ctx);
    assert!(after < capacity, "the test assumes no wrap-around");
    // Every sector written before and during the migration is on the
    // destination's image, and those written after it too.
    assert_pattern(&b, after, "destination image");
}

/// Forwards one connection to `to` and cuts both sides after `limit` bytes
/// from the client: a target that dies mid-copy.
fn cutting_proxy(
    listen: &TempPath,
    to: std::path::PathBuf,
    limit: u64,
) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(listen.path()).expect("bind proxy");
    std::thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else { return };
        let Ok(mut s) = UnixStream::connect(&to) else {
            return;
        };
        let (Ok(mut c2), Ok(mut s2)) = (c.try_clone(), s.try_clone()) else {
            return;
        };
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
        });
        let mut buf = vec![0u8; 64 << 10];
        let mut moved = 0u64;
        while moved < limit {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    moved += n as u64;
                }
            }
        }
        let _ = c.shutdown(std::net::Shutdown::Both);
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
    })
}

#[test]
fn a_target_that_dies_mid_copy_fails_the_job_and_a_retry_succeeds() {
    crate::require_kvm!();
    let ctx = "dying target";
    // 48 MiB of data to copy, so the cut at 8 MiB lands mid-copy.
    let a = TempPath::sized("die-src", 64 * MIB);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.path())
            .expect("open");
        let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 | 1).collect();
        for m in 8..56 {
            f.write_all_at(&chunk, m * MIB).expect("fill");
        }
    }
    let b = TempPath::sized("die-dst", 64 * MIB);
    let mut src = disk_writer(&a, ctx);
    let dst = Running::deferred(&["--drive", &b.drive()], ctx);
    let nbd = TempPath::new("nbd-die", "sock");
    let mut d = dst.qmp();
    export(&mut d, &nbd, "virtio-blk0", true, ctx);
    let proxy = TempPath::new("nbd-proxy", "sock");
    let cut = cutting_proxy(&proxy, nbd.path().to_path_buf(), 8 * MIB);
    let mut s = src.qmp();
    ok(
        &mut s,
        "drive-mirror",
        json!({"device": "virtio-blk0", "job-id": "m0", "sync": "full", "mode": "existing",
               "target": nbd_uri(&proxy, "virtio-blk0")}),
        ctx,
    );
    let err = event(&mut s, "BLOCK_JOB_ERROR", BOOT, ctx);
    assert_eq!(err["data"]["device"], "m0", "{err}");
    let done = event(&mut s, "BLOCK_JOB_COMPLETED", BOOT, ctx);
    let why = done["data"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("virtio-blk0") && why.contains("NBD export"),
        "the reason names the target: {done}"
    );
    let _ = cut.join();
    // The source guest runs on, on its own disk.
    let last = src
        .vmm
        .seen()
        .iter()
        .filter_map(|l| seq_of(l))
        .max()
        .unwrap_or(0);
    src.vmm
        .wait_line(BOOT, |l| seq_of(l).is_some_and(|n| n > last))
        .unwrap_or_else(|| {
            panic!(
                "{ctx}: the source stopped writing\n{}",
                src.vmm.transcript()
            )
        });
    // A target of another size is refused at once, naming both sizes.
    let small = TempPath::sized("die-small", 32 * MIB);
    let other = Running::deferred(&["--drive", &small.drive()], ctx);
    let nbd_small = TempPath::new("nbd-small", "sock");
    let mut o = other.qmp();
    export(&mut o, &nbd_small, "virtio-blk0", true, ctx);
    let e = s
        .execute(
            "drive-mirror",
            json!({"device": "virtio-blk0", "job-id": "m9", "sync": "full", "mode": "existing",
                   "target": nbd_uri(&nbd_small, "virtio-blk0")}),
        )
        .expect_err("a smaller target");
    let e = e.to_string();
    assert!(
        e.contains("different sizes")
            && e.contains(&(64 * MIB).to_string())
            && e.contains(&(32 * MIB).to_string()),
        "{e}"
    );
    drop(o);
    other.quit(ctx);
    // A retry straight to the export succeeds and ends in step.
    ok(
        &mut s,
        "drive-mirror",
        json!({"device": "virtio-blk0", "job-id": "m1", "sync": "full", "mode": "existing",
               "target": nbd_uri(&nbd, "virtio-blk0")}),
        ctx,
    );
    event(&mut s, "BLOCK_JOB_READY", BOOT, ctx);
    ok(&mut s, "stop", json!({}), ctx);
    ok(&mut s, "block-job-complete", json!({"device": "m1"}), ctx);
    let done = event(&mut s, "BLOCK_JOB_COMPLETED", BOOT, ctx);
    assert!(done["data"].get("error").is_none(), "{done}");
    assert!(
        std::fs::read(a.path()).expect("a") == std::fs::read(b.path()).expect("b"),
        "after the retry the target is the source, byte for byte"
    );
    drop((s, d));
    src.quit(ctx);
    dst.quit(ctx);
}

/// Raw NBD bytes to the export; what the server answered.
fn raw(sock: &TempPath, bytes: &[u8], read_for: Duration) -> Vec<u8> {
    let mut c = UnixStream::connect(sock.path()).expect("connect");
    c.set_read_timeout(Some(read_for)).expect("timeout");
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

const IHAVEOPT: &[u8; 8] = b"IHAVEOPT";

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn request(typ: u16, offset: u64, len: u32) -> Vec<u8> {
    let mut v = 0x2560_9513u32.to_be_bytes().to_vec();
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&7u64.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Client flags, then `NBD_OPT_EXPORT_NAME` for `name` (the shortest way in).
fn enter(name: &str) -> Vec<u8> {
    let mut v = 3u32.to_be_bytes().to_vec();
    v.extend(option(1, name.as_bytes()));
    v
}

/// The simple replies' error fields in `answer` (after the handshake).
fn errors(answer: &[u8]) -> Vec<u32> {
    let magic = 0x6744_6698u32.to_be_bytes();
    answer
        .windows(8)
        .filter(|w| w[..4] == magic)
        .map(|w| u32::from_be_bytes([w[4], w[5], w[6], w[7]]))
        .collect()
}

#[test]
fn hostile_nbd_clients_get_protocol_errors_and_the_export_keeps_serving() {
    crate::require_kvm!();
    let ctx = "hostile NBD";
    let (img, want) = sparse_image();
    let mut vm = Running::start(
        &[
            "-m",
            "64M",
            "--drive",
            &img.drive(),
            "--append",
            "workload=idle",
        ],
        ctx,
    );
    let sock = TempPath::new("nbd-hostile", "sock");
    let mut q = vm.qmp();
    export(&mut q, &sock, "virtio-blk0", true, ctx);
    let t = Duration::from_millis(500);
    // Bad client flags: the server closes after its greeting.
    let a = raw(&sock, &0xffff_ffffu32.to_be_bytes(), t);
    assert_eq!(&a[..8], b"NBDMAGIC", "greeting");
    assert_eq!(a.len(), 18, "nothing after the greeting: {a:?}");
    // An unknown option: NBD_REP_ERR_UNSUP (2^31 + 1), then a normal entry still works.
    let mut b = 3u32.to_be_bytes().to_vec();
    b.extend(option(0x7777, b""));
    b.extend(option(1, b"virtio-blk0"));
    b.extend(request(0, 4 * MIB, 4096));
    let a = raw(&sock, &b, t);
    let unsup = (0x8000_0001u32).to_be_bytes();
    assert!(
        a.windows(4).any(|w| w == unsup),
        "ERR_UNSUP for an unknown option"
    );
    let data = &want[4 * MIB as usize..4 * MIB as usize + 4096];
    assert!(
        a.windows(4096).any(|w| w == data),
        "the READ after it returned the data"
    );
    // Out of range, a 4 GiB read, an unknown command: EINVAL (22) each, and
    // the connection still serves the READ after them.
    let mut b = enter("virtio-blk0");
    b.extend(request(0, 64 * MIB, 4096));
    b.extend(request(0, 0, u32::MAX));
    b.extend(request(42, 0, 0));
    b.extend(request(0, 40 * MIB, 4096));
    let a = raw(&sock, &b, t);
    assert_eq!(errors(&a), vec![22, 22, 22, 0], "{:?}", errors(&a));
    let data = &want[40 * MIB as usize..40 * MIB as usize + 4096];
    assert!(
        a.windows(4096).any(|w| w == data),
        "the READ after the errors returned the data"
    );
    // A 4 GiB write: EINVAL and the connection is closed (its payload cannot be skipped).
    let mut b = enter("virtio-blk0");
    b.extend(request(1, 0, u32::MAX));
    b.extend(vec![0xee; 1 << 20]);
    let a = raw(&sock, &b, t);
    assert_eq!(errors(&a), vec![22], "{:?}", errors(&a));
    // A bad request magic and a disconnect mid-request end only their own connection.
    let mut b = enter("virtio-blk0");
    b.extend(b"garbage!garbage!garbage!garbage!");
    let _ = raw(&sock, &b, t);
    let mut b = enter("virtio-blk0");
    b.extend(&request(1, 0, 65536)[..]);
    b.extend(vec![0xee; 1000]);
    let _ = raw(&sock, &b, t);
    // The export and the guest are fine: a standard client reads it whole,
    // and the half-sent write left the image untouched.
    let out = TempPath::new("nbd-after", "img");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &nbd_uri(&sock, "virtio-blk0"),
            &out.arg(),
        ],
    );
    assert!(
        std::fs::read(out.path()).expect("copy") == want,
        "the export after the hostile clients"
    );
    let st = ok(&mut q, "query-status", json!({}), ctx);
    assert_eq!(st["status"], "running", "{st}");
    assert!(vm.vmm.is_running(), "{}", vm.vmm.transcript());
    drop(q);
    vm.quit(ctx);
}

#[test]
fn vmm_migrate_with_storage_does_the_whole_sequence() {
    crate::require_kvm!();
    let ctx = "migrate --with-storage";
    let a = TempPath::sized("ws-src", 32 * MIB);
    let b = TempPath::sized("ws-dst", 32 * MIB);
    let src = disk_writer(&a, ctx);
    let mut dst = Running::deferred(&["--drive", &b.drive()], ctx);
    let mig = TempPath::new("ws-mig", "sock");
    let nbd_sock = std::path::PathBuf::from(format!("{}.nbd", mig.arg()));
    let f = crate::common::migrate(
        src.sock.path(),
        &mig.uri("unix"),
        &["--with-storage", "--dest-control", &dst.sock.arg()],
    );
    let _ = std::fs::remove_file(&nbd_sock);
    f.assert_success();
    let err = f.stderr.clone();
    assert!(
        err.contains("disk storage-virtio-blk0: 32 / 32 MiB (ready)"),
        "progress lines for the disk: {err}"
    );
    assert!(
        err.contains("disk storage-virtio-blk0: in step, ended"),
        "{err}"
    );
    let before = last_seq_after_exit(src);
    let after = writes_on(&mut dst, before, ctx);
    dst.ctl_ok(&["stop"], ctx);
    dst.quit(ctx);
    assert!(
        after < 64 * MIB / SECTOR as u64,
        "the test assumes no wrap-around"
    );
    assert_pattern(&b, after, "destination image");
}

#[test]
fn tls_exports_admit_qemu_img_with_the_certificates_and_a_tls_mirror_runs() {
    crate::require_kvm!();
    let ctx = "NBD over TLS";
    let creds = crate::tls::creds(&[]);
    let (img, want) = sparse_image();
    let vm = Running::start(
        &[
            "-m",
            "64M",
            "--drive",
            &img.drive(),
            "--append",
            "workload=idle",
        ],
        ctx,
    );
    let sock = TempPath::new("nbd-tls", "sock");
    let mut q = vm.qmp();
    ok(
        &mut q,
        "nbd-server-start",
        json!({"addr": {"type": "unix", "path": sock.arg()}, "tls-creds": creds.arg()}),
        ctx,
    );
    ok(
        &mut q,
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": "virtio-blk0", "writable": true}),
        ctx,
    );
    // qemu-img with the rehearsal CA and client certificate reads it whole.
    let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", creds.arg());
    let opts = format!(
        "driver=nbd,path={},export=virtio-blk0,tls-creds=tls0,tls-hostname=localhost",
        sock.arg()
    );
    let out = TempPath::new("nbd-tls-copy", "img");
    tool(
        "qemu-img",
        &[
            "convert",
            "--object",
            &object,
            "--image-opts",
            &opts,
            "-O",
            "raw",
            &out.arg(),
        ],
    );
    assert!(
        std::fs::read(out.path()).expect("copy") == want,
        "qemu-img over TLS: not byte-identical"
    );
    // Without TLS the server refuses before any export is named.
    let plain = Command::new("qemu-img")
        .args(["info", &nbd_uri(&sock, "virtio-blk0")])
        .output()
        .expect("qemu-img");
    assert!(!plain.status.success(), "a plain client was admitted");
    let err = String::from_utf8_lossy(&plain.stderr).to_lowercase();
    assert!(
        err.contains("tls"),
        "the refusal says TLS is required: {err}"
    );
    // A source mirrors into the export over TLS.
    let a = TempPath::sized("tls-src", 64 * MIB);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.path())
            .expect("open");
        f.write_all_at(&[0x5a; 1 << 20], 8 * MIB).expect("data");
    }
    let src = Running::start(
        &[
            "-m",
            "64M",
            "--drive",
            &a.drive(),
            "--append",
            "workload=idle",
        ],
        ctx,
    );
    let mut s = src.qmp();
    ok(
        &mut s,
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "t0", "export": "virtio-blk0",
               "server": {"type": "unix", "path": sock.arg()},
               "tls-creds": creds.arg(), "tls-hostname": "localhost"}),
        ctx,
    );
    ok(
        &mut s,
        "blockdev-mirror",
        json!({"job-id": "m0", "device": "virtio-blk0", "target": "t0", "sync": "full"}),
        ctx,
    );
    event(&mut s, "BLOCK_JOB_READY", BOOT, ctx);
    ok(&mut s, "block-job-complete", json!({"device": "m0"}), ctx);
    let done = event(&mut s, "BLOCK_JOB_COMPLETED", BOOT, ctx);
    assert!(done["data"].get("error").is_none(), "{done}");
    assert!(
        std::fs::read(a.path()).expect("a") == std::fs::read(img.path()).expect("img"),
        "the TLS mirror's target is the source"
    );
    drop((q, s));
    src.quit(ctx);
    vm.quit(ctx);
}

/// A port of 127.0.0.1 nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn vmm_migrate_with_storage_over_tcp_with_its_own_nbd_port() {
    crate::require_kvm!();
    let ctx = "migrate --with-storage over tcp";
    let a = TempPath::sized("wst-src", 64 * MIB);
    let b = TempPath::sized("wst-dst", 64 * MIB);
    let src = disk_writer(&a, ctx);
    let mut dst = Running::deferred(&["--drive", &b.drive()], ctx);
    let (port, nbd) = (free_port(), free_port());
    let f = crate::common::migrate(
        src.sock.path(),
        &format!("tcp:127.0.0.1:{port}"),
        &[
            "--with-storage",
            "--dest-control",
            &dst.sock.arg(),
            "--nbd-port",
            &nbd.to_string(),
        ],
    );
    f.assert_success();
    assert!(
        f.stderr
            .contains("disk storage-virtio-blk0: 64 / 64 MiB (ready)"),
        "{}",
        f.stderr
    );
    let before = last_seq_after_exit(src);
    let after = writes_on(&mut dst, before, ctx);
    dst.ctl_ok(&["stop"], ctx);
    dst.quit(ctx);
    assert!(
        after < 64 * MIB / SECTOR as u64,
        "the test assumes no wrap-around"
    );
    assert_pattern(&b, after, "destination image");
}

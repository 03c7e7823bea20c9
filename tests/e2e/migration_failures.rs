//! Refusals and failures of live migration and snapshots (issue 4, part 4),
//! with the real `vmm` binary on real KVM and the embedded guest.
//!
//! Every child process is a [`Vmm`] guard (killed on drop, also when a test
//! panics); every wait is bounded (serial lines, control replies, process
//! exit). Random choices come from a seed printed in the test output
//! (`VMM_E2E_SEED=N` replays one).
//!
//! The VMState-version refusals need a source whose sections have other
//! versions than this build's; every frozen release has the same ones, so the
//! test puts a byte-level proxy between two real processes that rewrites one
//! section's `version_id` in the manifest (and the manifest's CRC): the
//! destination sees exactly what a newer/older source build would send.
//! (`vmm run --as-release R` exists, but every frozen release has the same
//! section versions as this build, so it cannot produce the mismatch.)
//!
//! Damaged snapshots: a real snapshot (64 MiB guest, `ab` over 4 MiB, about
//! 9.8 MB) truncated at every 4 KiB boundary of its first 256 KiB, every
//! 16th boundary beyond, every boundary of its last 64 KiB and inside the
//! end marker (~230 cuts), and with ~370 single-byte corruptions; each
//! restore must exit non-zero by itself, without "panicked", without guest
//! output, and with a peak RSS (`wait4`) under the manifest's RAM + 32 MiB.

use crate::common::{BOOT, EXIT, Finished, MIGRATE, Rng, Running, TempPath, Vmm, flat};
use crate::require_kvm;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// A source `vmm run -M MACHINE -m MEM --append APPEND EXTRA... --control
/// SOCK` whose guest runs the `ab` workload, once it counts.
fn source(machine: &str, mem: &str, append: &str, extra: &[&str]) -> Running {
    let mut args = vec!["-M", machine, "-m", mem, "--append", append];
    args.extend_from_slice(extra);
    Running::ab_source(&args, "source")
}

/// A destination `vmm run ARGS --incoming tcp:127.0.0.1:PORT`, once it listens.
fn destination(args: &[&str]) -> (Running, String) {
    Running::destination(args, "destination")
}

/// `vmm migrate` of `src` to `uri` at 64 MiB/s, in the background.
fn slow_migration(src: &Running, uri: &str) -> Vmm {
    Vmm::spawn([
        "migrate",
        "--control",
        &src.sock.arg(),
        uri,
        "--max-bandwidth",
        "64M",
    ])
}

/// A failed process: exited by itself with a non-zero code (not a signal),
/// no panic, no guest output (the guest never started).
fn assert_clean_failure(f: &Finished, what: &str) {
    assert!(
        f.status.code().is_some_and(|c| c != 0),
        "{what}: expected a non-zero exit code, got {:?}\n{}",
        f.status,
        f.transcript()
    );
    assert!(
        !f.stderr.contains("panicked"),
        "{what}: panicked\n{}",
        f.transcript()
    );
    assert!(
        f.lines.iter().all(|l| l.trim().is_empty()),
        "{what}: the guest printed on the destination\n{}",
        f.transcript()
    );
    assert!(
        !f.stderr.contains("incoming: running"),
        "{what}: the destination reported running\n{}",
        f.transcript()
    );
}

fn has_all(text: &str, words: &[&str]) -> bool {
    let text = flat(text);
    words.iter().all(|w| text.contains(w))
}

#[test]
fn different_machine_type_is_refused_from_the_manifest() {
    require_kvm!();
    let mut src = source("pc-7.1", "64M", "workload=ab", &[]);
    let (dst, uri) = destination(&["-M", "pc-7.2", "-m", "64M"]);
    let t0 = Instant::now();
    let m = src.migrate(&uri);
    println!("refused after {:?}: {}", t0.elapsed(), m.stderr.trim());
    assert!(
        !m.status.success(),
        "migration succeeded\n{}",
        m.transcript()
    );
    assert!(
        has_all(&m.stderr, &["pc-7.1", "pc-7.2"]),
        "the source's report must name both machine types\n{}",
        m.transcript()
    );
    let d = dst.vmm.finish(EXIT);
    assert_clean_failure(&d, "destination");
    assert!(
        has_all(&d.stderr, &["pc-7.1", "pc-7.2"]),
        "the destination's error must name both machine types\n{}",
        d.transcript()
    );
    src.assert_counting("after the machine-type refusal");
}

#[test]
fn differing_property_is_refused_naming_device_property_and_values() {
    require_kvm!();
    let a = TempPath::sized("mf-prop-a", 1 << 20);
    let b = TempPath::sized("mf-prop-b", 1 << 20);
    // One disk each, on a backend `d0`, with its own num-queues.
    let (da, db) = (
        format!("id=d0,{}", a.drive()),
        format!("id=d0,{}", b.drive()),
    );
    let mut src = source(
        "pc-7.2",
        "64M",
        "workload=ab",
        &[
            "--drive",
            &da,
            "--device",
            "virtio-blk-device,drive=d0,num-queues=1",
        ],
    );
    let (dst, uri) = destination(&[
        "-M",
        "pc-7.2",
        "-m",
        "64M",
        "--drive",
        &db,
        "--device",
        "virtio-blk-device,drive=d0,num-queues=2",
    ]);
    let m = src.migrate(&uri);
    println!("refused: {}", m.stderr.trim());
    assert!(
        !m.status.success(),
        "migration succeeded\n{}",
        m.transcript()
    );
    let names = |text: &str| {
        let l = flat(text);
        l.find("num-queues").is_some_and(|i| {
            let tail = &l[i..];
            l.contains("virtio-blk-device") && tail.contains('1') && tail.contains('2')
        })
    };
    assert!(
        names(&m.stderr),
        "the source's report must name virtio-blk-device, num-queues, 1 and 2\n{}",
        m.transcript()
    );
    let d = dst.vmm.finish(EXIT);
    assert_clean_failure(&d, "destination");
    assert!(
        names(&d.stderr),
        "the destination's error must name virtio-blk-device, num-queues, 1 and 2\n{}",
        d.transcript()
    );
    src.assert_counting("after the property refusal");
}

fn e(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |x| format!("proxy {what}: {x}")
}

/// Forwards one connection from `listener` to `to`, rewriting the manifest's
/// section `section` to `version_id`; returns the manifest as it was.
fn manifest_rewriting_proxy(
    listener: TcpListener,
    to: String,
    section: &'static str,
    version_id: u64,
) -> std::thread::JoinHandle<Result<String, String>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(false).map_err(e("listener"))?;
        let (mut src, _) = listener.accept().map_err(e("accept"))?;
        src.set_read_timeout(Some(MIGRATE)).map_err(e("timeout"))?;
        let addr = to.trim_start_matches("tcp:");
        let mut dst = TcpStream::connect(addr).map_err(e("connect"))?;
        let mut head = [0u8; 8 + 4 + 1 + 4];
        src.read_exact(&mut head).map_err(e("header"))?;
        if head[12] != 0x01 {
            return Err(format!(
                "the stream does not start with a manifest: {head:?}"
            ));
        }
        let len = u32::from_le_bytes([head[13], head[14], head[15], head[16]]) as usize;
        let mut json = vec![0u8; len + 4];
        src.read_exact(&mut json).map_err(e("manifest"))?;
        json.truncate(len);
        let original = String::from_utf8_lossy(&json).into_owned();
        let mut m: serde_json::Value =
            serde_json::from_slice(&json).map_err(|x| format!("manifest json: {x}"))?;
        let sections = m
            .get_mut("sections")
            .and_then(|v| v.as_array_mut())
            .ok_or_else(|| format!("no sections in {original}"))?;
        let sec = sections
            .iter_mut()
            .find(|v| v.get("name").and_then(|n| n.as_str()) == Some(section))
            .ok_or_else(|| format!("no section {section} in {original}"))?;
        sec["version_id"] = serde_json::json!(version_id);
        let new = serde_json::to_vec(&m).map_err(|x| format!("json: {x}"))?;
        let mut out = head[..13].to_vec();
        out.extend((new.len() as u32).to_le_bytes());
        out.extend(&new);
        out.extend(crc32fast::hash(&new).to_le_bytes());
        dst.write_all(&out).map_err(e("write manifest"))?;
        // The rest, both ways, untouched.
        let (mut s2, mut d2) = (
            src.try_clone().map_err(e("clone"))?,
            dst.try_clone().map_err(e("clone"))?,
        );
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut d2, &mut s2);
            let _ = s2.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut src, &mut dst);
        let _ = dst.shutdown(Shutdown::Write);
        let _ = back.join();
        Ok(original)
    })
}

fn section_version_refused(version_id: u64, words: &[&str]) {
    let mut src = source("pc-7.2", "64M", "workload=ab", &[]);
    let (dst, dst_uri) = destination(&["-M", "pc-7.2", "-m", "64M"]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let proxy_uri = format!("tcp:{}", listener.local_addr().expect("addr"));
    let proxy = manifest_rewriting_proxy(listener, dst_uri, "serial", version_id);
    let m = src.migrate(&proxy_uri);
    println!("serial version {version_id}: {}", m.stderr.trim());
    let original = proxy.join().expect("proxy thread").expect("proxy");
    assert!(
        original.contains("\"serial\""),
        "manifest without serial: {original}"
    );
    assert!(
        !m.status.success(),
        "migration succeeded\n{}",
        m.transcript()
    );
    assert!(
        has_all(&m.stderr, words),
        "the source's report must contain {words:?}\n{}",
        m.transcript()
    );
    let d = dst.vmm.finish(EXIT);
    assert_clean_failure(&d, "destination");
    assert!(
        has_all(&d.stderr, words),
        "the destination's error must contain {words:?}\n{}",
        d.transcript()
    );
    src.assert_counting("after the section-version refusal");
}

#[test]
fn section_version_above_the_destinations_is_refused_naming_it() {
    require_kvm!();
    // This build's serial section: version 3, minimum 2 (compat/devices/serial.toml).
    section_version_refused(99, &["serial", "99", "above"]);
}

#[test]
fn section_version_below_the_destinations_minimum_is_refused_naming_it() {
    require_kvm!();
    section_version_refused(1, &["serial", "minimum"]);
}

#[test]
fn destination_killed_mid_stream_ten_times_then_a_healthy_migration() {
    require_kvm!();
    let mut rng = Rng::new("destination_killed_mid_stream");
    // 128 MiB all dirtied by `ab`, sent at 64 MiB/s: the first pass alone
    // takes about 2 s, so every kill point below lands mid-stream.
    let mut src = source("pc-7.2", "128M", "workload=ab", &[]);
    for round in 1..=10 {
        let (mut dst, uri) = destination(&[]);
        let delay = Duration::from_millis(150 + rng.below(1350));
        let mig = slow_migration(&src, &uri);
        // The randomized kill point (the thing under test, not a wait for a condition).
        std::thread::sleep(delay);
        dst.vmm.kill_now();
        let d = dst.vmm.finish(EXIT);
        assert!(
            d.status.code().is_none(),
            "round {round}: the destination finished before the kill at {delay:?}\n{}",
            d.transcript()
        );
        let m = mig.finish(MIGRATE);
        println!(
            "round {round}: destination killed after {delay:?}; source reported: {}",
            m.stderr.trim().lines().next().unwrap_or("")
        );
        assert!(
            !m.status.success() && !m.stderr.trim().is_empty(),
            "round {round}: the source did not report the failure\n{}",
            m.transcript()
        );
        src.assert_counting(&format!("round {round}"));
    }
    // A healthy destination now: the source can still migrate.
    let ctx = "the final migration";
    let (mut dst, uri) = destination(&[]);
    let m = src.migrate(&uri);
    println!("final migration: {}", m.lines.join(" "));
    m.assert_success();
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, ctx);
    dst.assert_counting(ctx);
    let v = dst.verify_ab(range, ctx);
    println!("verify-ab: {v}");
    dst.quit(ctx);
}

#[test]
fn source_killed_mid_stream_leaves_no_half_started_guest() {
    require_kvm!();
    let mut rng = Rng::new("source_killed_mid_stream");
    let mut src = source("pc-7.2", "128M", "workload=ab", &[]);
    let (dst, uri) = destination(&[]);
    let mig = slow_migration(&src, &uri);
    let delay = Duration::from_millis(200 + rng.below(1200));
    // The randomized kill point.
    std::thread::sleep(delay);
    src.vmm.kill_now();
    let d = dst.vmm.finish(Duration::from_secs(90));
    println!(
        "source killed after {delay:?}; destination: {:?} {}",
        d.status,
        d.stderr.trim()
    );
    assert_clean_failure(&d, "destination");
    assert!(
        !d.stderr.trim().is_empty(),
        "the destination exited without saying why\n{}",
        d.transcript()
    );
    let m = mig.finish(MIGRATE);
    assert!(!m.status.success(), "{}", m.transcript());
}

/// `vmm run --incoming file:PATH` on a damaged snapshot: a clean failure,
/// and never more resident memory than the manifest's RAM plus `slack_kib`.
fn restore_fails_cleanly(path: &Path, what: &str, ram_kib: u64, slack_kib: u64) -> u64 {
    let uri = format!("file:{}", path.display());
    let (f, max_rss_kib) = Vmm::spawn_measured(["run", "--incoming", &uri]).finish_measured(EXIT);
    assert_clean_failure(&f, what);
    assert!(
        max_rss_kib <= ram_kib + slack_kib,
        "{what}: peak RSS {max_rss_kib} KiB above the manifest's {ram_kib} KiB of RAM + {slack_kib} KiB\n{}",
        f.transcript()
    );
    max_rss_kib
}

#[test]
fn damaged_snapshots_always_fail_cleanly() {
    require_kvm!();
    let mut rng = Rng::new("damaged_snapshots");
    // A 64 MiB guest whose `ab` range is 4 MiB: a snapshot of about 4 MiB
    // of page data plus zero runs, state sections, vCPUs and the end marker.
    let src = source("pc-7.2", "64M", "workload=ab ab.mib=4", &[]);
    let snap = TempPath::new("mf-snap", "snap");
    let uri = snap.uri("file");
    src.migrate(&uri).assert_success();
    let _ = src.ctl(&["quit"]);
    drop(src);
    let original = std::fs::read(snap.path()).expect("read snapshot");
    let len = original.len() as u64;
    assert!(len > 4 << 20, "snapshot of {len} bytes");

    // The intact snapshot restores (so the failures below are the damage's).
    {
        let mut ok = Vmm::spawn(["run", "--incoming", &uri]);
        ok.wait_pass_above(0, BOOT, "the intact snapshot does not restore");
    }

    // Truncations: every 4 KiB boundary of the first 256 KiB, every 16th
    // boundary beyond, every boundary of the last 64 KiB, and cuts inside
    // the end marker.
    let mut cuts: Vec<u64> = Vec::new();
    let mut b = 0;
    while b < len {
        let page = b / 4096;
        if b < 256 << 10 || page % 16 == 0 || b + (64 << 10) >= len {
            cuts.push(b);
        }
        b += 4096;
    }
    cuts.extend([len - 1, len - 4, len - 5]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.reverse();

    // Single-byte corruptions: every byte of the header and the start of the
    // manifest, spread over the manifest, random ones in the page data, and
    // spread over the last 16 KiB (sections, vCPUs, end marker).
    let manifest_end = 17
        + u32::from_le_bytes([original[13], original[14], original[15], original[16]]) as u64
        + 4;
    let mut flips: Vec<u64> = (0..64).collect();
    flips.extend((64..manifest_end).step_by(53));
    flips.extend((manifest_end..manifest_end + 64).filter(|o| *o < len));
    flips.extend((0..48).map(|_| manifest_end + rng.below(len - manifest_end)));
    flips.extend((len.saturating_sub(16 << 10)..len).step_by(127));
    flips.extend(len.saturating_sub(5)..len);
    flips.sort_unstable();
    flips.dedup();
    let mask = (1 + rng.below(255)) as u8;
    println!(
        "snapshot of {len} bytes (manifest ends at {manifest_end}): {} truncations, {} single-byte corruptions (xor {mask:#x})",
        cuts.len(),
        flips.len()
    );

    // Guest RAM from the manifest (64 MiB); the slack covers the debug
    // binary, its libraries and heap.
    const RAM_KIB: u64 = 64 << 10;
    const SLACK_KIB: u64 = 32 << 10;
    let t0 = Instant::now();
    let halves = [(0usize, cuts.len() / 2), (cuts.len() / 2, cuts.len())];
    std::thread::scope(|sc| {
        let mut workers = Vec::new();
        for (w, (from, to)) in halves.into_iter().enumerate() {
            let cuts = &cuts[from..to];
            let flips: Vec<u64> = flips.iter().copied().skip(w).step_by(2).collect();
            let original = &original;
            workers.push(sc.spawn(move || {
                let copy = TempPath::sized(&format!("mf-damaged{w}"), 0);
                std::fs::write(copy.path(), original).expect("copy");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(copy.path())
                    .expect("open copy");
                let mut peak = 0u64;
                let mut restore = |what: String| {
                    let rss = restore_fails_cleanly(copy.path(), &what, RAM_KIB, SLACK_KIB);
                    peak = peak.max(rss);
                };
                for &c in cuts {
                    f.set_len(c).expect("truncate");
                    restore(format!("truncated at {c} of {len}"));
                }
                std::fs::write(copy.path(), original).expect("copy");
                use std::os::unix::fs::FileExt;
                for &o in &flips {
                    let byte = original[o as usize];
                    f.write_all_at(&[byte ^ mask], o).expect("corrupt");
                    restore(format!("byte {o} of {len} xor {mask:#x}"));
                    f.write_all_at(&[byte], o).expect("repair");
                }
                peak
            }));
        }
        let mut peak = 0;
        for w in workers {
            match w.join() {
                Ok(p) => peak = peak.max(p),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        println!("peak RSS of a damaged restore: {peak} KiB (guest RAM {RAM_KIB} KiB)");
    });
    println!("damaged restores: {:?}", t0.elapsed());
}

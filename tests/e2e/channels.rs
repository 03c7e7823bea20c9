//! Multi-channel migration and compression (issue 11), with the real `vmm`
//! binary on real KVM: a consistent guest over four zstd channels, and a
//! channel cut or corrupted mid-stream (through a byte-level proxy) that
//! fails the migration cleanly while the source keeps running.

use crate::common::{EXIT, MIGRATE, Rng, Running, json_of, run};
use crate::require_kvm;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to its victim connection.
#[derive(Clone, Copy, Debug)]
enum Harm {
    /// Closes it (both ways) after that many bytes from the source.
    Cut,
    /// Flips the byte at that offset (the bits of 0x5a).
    Flip,
}

/// A proxy in front of `to` (`tcp:HOST:PORT`): forwards every connection
/// both ways; connection number `victim` (0 the main one, 1.. the data
/// channels in the order they connect) is harmed at byte `at`. Runs until
/// the returned flag is set.
fn proxy(
    to: &str,
    victim: usize,
    at: u64,
    harm: Harm,
) -> (String, Arc<AtomicBool>, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let uri = format!("tcp:{}", l.local_addr().expect("proxy addr"));
    l.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, to) = (stop.clone(), to.trim_start_matches("tcp:").to_string());
    let t = std::thread::spawn(move || {
        let mut n = 0;
        let mut pipes = Vec::new();
        let deadline = Instant::now() + MIGRATE;
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            match l.accept() {
                Ok((src, _)) => {
                    let h = (n == victim).then_some((at, harm));
                    pipes.push(std::thread::spawn({
                        let to = to.clone();
                        move || pipe(src, &to, h)
                    }));
                    n += 1;
                }
                // Polls its listener; the test's own waits are on the processes.
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        for p in pipes {
            let _ = p.join();
        }
    });
    (uri, stop, t)
}

fn pipe(src: TcpStream, to: &str, harm: Option<(u64, Harm)>) {
    let _ = src.set_nonblocking(false);
    let Ok(dst) = TcpStream::connect(to) else {
        return;
    };
    let (Ok(mut s2), Ok(mut d2)) = (src.try_clone(), dst.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut d2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut src, mut dst) = (src, dst);
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((at, h)) = harm
            && (seen..seen + n as u64).contains(&at)
        {
            let i = (at - seen) as usize;
            match h {
                Harm::Cut => {
                    let _ = dst.write_all(&buf[..i]);
                    let _ = src.shutdown(Shutdown::Both);
                    let _ = dst.shutdown(Shutdown::Both);
                    break;
                }
                Harm::Flip => buf[i] ^= 0x5a,
            }
        }
        seen += n as u64;
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
    let _ = back.join();
}

#[test]
fn ab_over_four_zstd_channels_is_consistent_and_the_demo_passes() {
    require_kvm!();
    let ctx = "4 channels, zstd";
    let src = Running::ab_source(&["-m", "256M", "--append", "workload=ab"], ctx);
    let (mut dst, uri) = Running::destination(&[], ctx);
    let m = crate::common::run(
        [
            "migrate",
            "--control",
            &src.sock.arg(),
            &uri,
            "--channels",
            "4",
            "--compress",
            "zstd",
            "--json",
        ],
        MIGRATE,
    );
    m.assert_success();
    let sum = json_of(&m, ctx)["summary"].clone();
    let pages = sum["pages_normal"].as_u64().unwrap_or(0);
    let bytes = sum["bytes"].as_u64().unwrap_or(u64::MAX);
    println!("{ctx}: {sum}");
    assert!(
        bytes < pages * 4096 / 4,
        "zstd should shrink the ab pages: {bytes} bytes for {pages} pages"
    );
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, ctx);
    dst.assert_counting(ctx);
    dst.verify_ab(range, ctx);
    dst.quit(ctx);

    let d = run(["demo", "--channels", "4", "--compress", "zstd"], MIGRATE);
    d.assert_success();
    assert!(
        d.stdout().contains("verdict=consistent"),
        "{}",
        d.transcript()
    );
}

/// One harmed migration over `--channels 4` through the proxy: it fails,
/// the destination exits by itself without starting the guest (naming
/// `expect` in its error), the source counts on.
fn harmed(src: &mut Running, rng: &mut Rng, harm: Harm, at: u64, extra: &[&str], expect: &str) {
    let (dst, uri) = Running::destination(&[], "destination");
    let victim = 1 + rng.below(4) as usize;
    let (via, stop, p) = proxy(&uri, victim, at, harm);
    let sock = src.sock.arg();
    let mut args = vec!["migrate", "--control", &sock, &via, "--channels", "4"];
    args.extend_from_slice(extra);
    let m = run(&args, MIGRATE);
    let d = dst.vmm.finish(EXIT);
    stop.store(true, Ordering::SeqCst);
    let _ = p.join();
    println!(
        "{harm:?} channel {} at byte {at}: source: {} | destination: {}",
        victim - 1,
        m.stderr.trim().lines().last().unwrap_or(""),
        d.stderr.trim().lines().last().unwrap_or("")
    );
    assert!(
        !m.status.success(),
        "the migration succeeded\n{}",
        m.transcript()
    );
    assert!(
        d.status.code().is_some_and(|c| c != 0) && !d.stderr.contains("panicked"),
        "the destination must fail by itself\n{}",
        d.transcript()
    );
    assert!(
        !d.stderr.contains("incoming: running") && d.lines.iter().all(|l| l.trim().is_empty()),
        "the destination started the guest\n{}",
        d.transcript()
    );
    assert!(
        d.stderr.contains(expect),
        "want `{expect}`\n{}",
        d.transcript()
    );
    src.assert_counting(&format!("after {harm:?} at {at}"));
}

#[test]
fn a_channel_cut_mid_stream_ten_times_fails_cleanly_and_the_source_resumes() {
    require_kvm!();
    let mut rng = Rng::new("a_channel_cut_mid_stream");
    // 128 MiB dirtied by ab at 64 MiB/s: each of 4 channels carries about
    // 8 MiB in the first pass alone.
    let mut src = Running::ab_source(&["-m", "128M", "--append", "workload=ab"], "source");
    for _ in 0..10 {
        let at = 24 + rng.below(6 << 20);
        harmed(
            &mut src,
            &mut rng,
            Harm::Cut,
            at,
            &["--max-bandwidth", "64M"],
            "channel",
        );
    }
    // The source still migrates.
    let (mut dst, uri) = Running::destination(&[], "final");
    let m = src.migrate(&uri);
    m.assert_success();
    let range = src.ab.expect("ab range");
    src.handed_over(&mut dst, "final");
    dst.verify_ab(range, "final");
    dst.quit("final");
}

#[test]
fn corrupt_compressed_channels_are_refused_and_the_source_resumes() {
    require_kvm!();
    let mut rng = Rng::new("corrupt_compressed_channels");
    let mut src = Running::ab_source(&["-m", "128M", "--append", "workload=ab"], "source");
    for _ in 0..5 {
        // Past the 24-byte channel header, within the first pass's frames.
        let at = 24 + rng.below(4000);
        harmed(
            &mut src,
            &mut rng,
            Harm::Flip,
            at,
            &["--compress", "zstd"],
            "channel",
        );
    }
    src.quit("source");
}

#[test]
fn a_frozen_release_refuses_a_stream_with_channels_naming_why() {
    require_kvm!();
    let mut src = Running::ab_source(
        &["-M", "pc-7.2", "-m", "64M", "--append", "workload=ab"],
        "source",
    );
    let (dst, uri) = Running::destination(&["--as-release", "8.2"], "8.2 destination");
    let m = crate::common::run(
        [
            "migrate",
            "--control",
            &src.sock.arg(),
            &uri,
            "--channels",
            "2",
        ],
        MIGRATE,
    );
    let d = dst.vmm.finish(EXIT);
    let want = "release 8.2 reads up to format 1: migrate without --channels and --compress";
    assert!(
        !m.status.success() && crate::common::flat(&m.stderr).contains(want),
        "{}",
        m.transcript()
    );
    assert!(
        crate::common::flat(&d.stderr).contains(want),
        "{}",
        d.transcript()
    );
    src.assert_counting("after the refusal");
    src.quit("source");
}

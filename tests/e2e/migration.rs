//! Live migration, snapshots and chains with the real binary, real KVM and
//! the embedded guest (issue 4, item 5). Every wait is bounded and keyed on
//! a serial line, a stderr line or a control reply; every process is a
//! [`Vmm`] guard that is killed on drop.

use crate::common::{TempFile, Vmm, vmm_bin};
use crate::require_kvm;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
const MIGRATE: Duration = Duration::from_secs(120);

/// A unique scratch path (socket, snapshot) removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("vmm-e2e-mig-{tag}-{}-{n}", std::process::id())))
    }
    fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `vmm ARGS` to completion: (exit code, stdout, stderr).
fn vmm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(vmm_bin())
        .args(args)
        .output()
        .expect("run vmm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl(sock: &Scratch, args: &[&str]) -> String {
    let mut a = vec!["ctl", "--control", &sock.0.to_str().expect("utf-8 path")];
    a.extend_from_slice(args);
    let (code, out, err) = vmm(&a);
    assert_eq!(code, 0, "vmm ctl {args:?}: {err}");
    out
}

/// Waits (bounded) for a stderr line of `v` starting with `prefix`; the
/// serial output is read meanwhile, so this also ticks the wait.
fn wait_stderr(v: &mut Vmm, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = v.stderr().lines().find(|l| l.starts_with(prefix)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no `{prefix}` on stderr within {timeout:?}\n--- serial ---\n{}\n--- stderr ---\n{}",
            v.seen().join("\n"),
            v.stderr()
        );
        let _ = v.wait_line(Duration::from_millis(20), |_| false);
    }
}

/// A destination `vmm run --incoming LISTEN EXTRA... --control SOCK`; returns
/// it with the URI it listens on (tcp port 0 resolved).
fn destination(listen: &str, sock: &Scratch, extra: &[&str]) -> (Vmm, String) {
    let mut args = vec![
        "run",
        "--incoming",
        listen,
        "--control",
        &sock.0.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut d = Vmm::spawn(&args);
    let l = wait_stderr(&mut d, "incoming: waiting on ", BOOT);
    let uri = l
        .trim_start_matches("incoming: waiting on ")
        .trim()
        .to_string();
    (d, uri)
}

/// `vmm migrate --control SOCK URI --json`: the summary object.
fn migrate(sock: &Scratch, uri: &str) -> serde_json::Value {
    let (code, out, err) = vmm(&["migrate", "--control", &sock.s(), uri, "--json"]);
    assert_eq!(code, 0, "vmm migrate {uri}: {err}\n{out}");
    let last = out.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).expect("summary JSON");
    v["summary"].clone()
}

fn ab_range(v: &mut Vmm) -> vmm_guest::AbRange {
    let l = v
        .wait_line(BOOT, |l| vmm_guest::parse_ab_start(l).is_some())
        .unwrap_or_else(|| panic!("no ab: start=\n{}", v.stderr()));
    vmm_guest::parse_ab_start(&l).expect("ab: start line")
}

/// Waits for `ab: pass=N` with N > `after`; returns N.
fn pass_after(v: &mut Vmm, after: u64, what: &str) -> u64 {
    let l = v
        .wait_line(BOOT, |l| {
            vmm_guest::parse_ab_pass(l).is_some_and(|p| p > after)
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: no ab: pass= above {after}\n--- serial ---\n{}\n--- stderr ---\n{}",
                v.seen().join("\n"),
                v.stderr()
            )
        });
    vmm_guest::parse_ab_pass(&l).expect("pass")
}

/// The highest pass a (now exited) source printed.
fn last_pass(v: Vmm) -> u64 {
    let f = v.finish(Duration::from_secs(20));
    assert!(
        f.status.success(),
        "source after hand-over: {}",
        f.transcript()
    );
    f.lines
        .iter()
        .filter_map(|l| vmm_guest::parse_ab_pass(l))
        .max()
        .unwrap_or(0)
}

/// Stops the guest behind `sock` and checks the a-b rule over its range.
fn verify_ab(sock: &Scratch, r: vmm_guest::AbRange) -> serde_json::Value {
    ctl(sock, &["stop"]);
    let out = ctl(
        sock,
        &[
            "verify-ab",
            "--start",
            &format!("{:#x}", r.start),
            "--pages",
            &r.pages.to_string(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("verify-ab JSON");
    assert_eq!(v["consistent"], true, "{v}");
    assert_eq!(v["pages"], r.pages, "{v}");
    v
}

fn ab_source(sock: &Scratch, mem: &str) -> Vmm {
    Vmm::spawn([
        "run",
        "-m",
        mem,
        "--append",
        "workload=ab",
        "--control",
        &sock.s(),
    ])
}

fn ab_live(listen: &str, mib: u64) {
    let (ssock, dsock) = (Scratch::new("src"), Scratch::new("dst"));
    let mut src = ab_source(&ssock, &format!("{mib}M"));
    let (mut dst, uri) = destination(listen, &dsock, &[]);
    let range = ab_range(&mut src);
    assert_eq!(
        range.pages,
        ((mib << 20) - range.start) / 4096,
        "the whole {mib} MiB guest above the image"
    );
    pass_after(&mut src, 0, "source");
    let sum = migrate(&ssock, &uri);
    assert_eq!(sum["outcome"], "handover", "{sum}");
    assert!(
        sum["pages_normal"].as_u64().unwrap_or(0) >= range.pages,
        "{sum}"
    );
    wait_stderr(&mut dst, "incoming: running", MIGRATE);
    let last = last_pass(src);
    let n = pass_after(&mut dst, last, "destination");
    assert!(n > last);
    let status = ctl(&dsock, &["status", "--json"]);
    assert!(status.contains("\"state\":\"running\""), "{status}");
    verify_ab(&dsock, range);
    ctl(&dsock, &["quit"]);
    dst.finish(Duration::from_secs(20)).assert_success();
}

#[test]
fn ab_256m_live_over_tcp_keeps_counting_and_stays_consistent() {
    require_kvm!();
    ab_live("tcp:127.0.0.1:0", 256);
}

#[test]
fn ab_1g_live_over_tcp_keeps_counting_and_stays_consistent() {
    require_kvm!();
    ab_live("tcp:127.0.0.1:0", 1024);
}

#[test]
fn ab_256m_live_over_unix_keeps_counting_and_stays_consistent() {
    require_kvm!();
    let path = Scratch::new("mig");
    ab_live(&format!("unix:{}", path.s()), 256);
}

#[test]
fn disk_forever_data_before_and_after_migration_is_in_the_image() {
    require_kvm!();
    let img = TempFile::sized("mig-disk", 64 << 20);
    let capacity = (64u64 << 20) / vmm_guest::SECTOR as u64;
    let (ssock, dsock) = (Scratch::new("src"), Scratch::new("dst"));
    let drive = img.drive();
    let mut src = Vmm::spawn([
        "run",
        "-m",
        "64M",
        "--drive",
        &drive,
        "--append",
        "workload=disk disk.count=0",
        "--control",
        &ssock.s(),
    ]);
    let (mut dst, uri) = destination("tcp:127.0.0.1:0", &dsock, &["--drive", &drive]);
    let seq = |l: &str| {
        vmm_guest::parse_line(l)
            .filter(|p| p.key == "disk")
            .and_then(|p| p.num("seq"))
    };
    src.wait_line(BOOT, |l| seq(l).is_some())
        .unwrap_or_else(|| panic!("no disk: seq= on the source\n{}", src.stderr()));
    let sum = migrate(&ssock, &uri);
    assert_eq!(sum["outcome"], "handover", "{sum}");
    wait_stderr(&mut dst, "incoming: running", MIGRATE);
    let f = src.finish(Duration::from_secs(20));
    assert!(f.status.success(), "{}", f.transcript());
    let before = f.lines.iter().filter_map(|l| seq(l)).max().unwrap_or(0);
    let l = dst
        .wait_line(BOOT, |l| seq(l).is_some_and(|n| n > before))
        .unwrap_or_else(|| {
            panic!(
                "destination: no disk: seq= above {before}\n{}",
                dst.stderr()
            )
        });
    let after = seq(&l).unwrap_or(0);
    assert!(
        !dst.seen().iter().any(|l| l.contains("error")),
        "{:?}",
        dst.seen()
    );
    ctl(&dsock, &["stop"]);
    ctl(&dsock, &["quit"]);
    dst.finish(Duration::from_secs(20)).assert_success();
    assert!(after < capacity, "the test assumes no wrap-around");
    let data = std::fs::read(img.path()).expect("read image");
    for s in 0..after {
        let off = (s as usize) * vmm_guest::SECTOR;
        let got = vmm_guest::check_sector(&data[off..off + vmm_guest::SECTOR]);
        assert_eq!(
            got,
            Some((s, s)),
            "sector {s} (written {} the migration at seq {before}) is not intact",
            if s < before { "before" } else { "after" }
        );
    }
}

#[test]
fn snapshot_to_file_then_restore_in_a_new_process_continues() {
    require_kvm!();
    let snap = Scratch::new("snap");
    let (ssock, dsock) = (Scratch::new("src"), Scratch::new("dst"));
    let mut src = ab_source(&ssock, "128M");
    let range = ab_range(&mut src);
    pass_after(&mut src, 0, "source");
    let sum = migrate(&ssock, &format!("file:{}", snap.s()));
    assert_eq!(sum["outcome"], "snapshot", "{sum}");
    let status = ctl(&ssock, &["status", "--json"]);
    assert!(status.contains("\"state\":\"paused\""), "{status}");
    // The paused source's memory is the snapshot's: consistent too.
    verify_ab(&ssock, range);
    ctl(&ssock, &["quit"]);
    let last = last_pass(src);
    let (mut dst, _) = destination(&format!("file:{}", snap.s()), &dsock, &[]);
    wait_stderr(&mut dst, "incoming: running", MIGRATE);
    pass_after(&mut dst, last, "restored guest");
    verify_ab(&dsock, range);
    ctl(&dsock, &["quit"]);
    dst.finish(Duration::from_secs(20)).assert_success();
}

#[test]
fn chain_a_to_b_to_c_on_the_same_machine_type() {
    require_kvm!();
    let (sa, sb, sc) = (Scratch::new("a"), Scratch::new("b"), Scratch::new("c"));
    let mut a = Vmm::spawn([
        "run",
        "-M",
        "pc-7.2",
        "-m",
        "128M",
        "--append",
        "workload=ab",
        "--control",
        &sa.s(),
    ]);
    let range = ab_range(&mut a);
    pass_after(&mut a, 0, "A");
    let (mut b, ub) = destination("tcp:127.0.0.1:0", &sb, &["-M", "pc-7.2"]);
    assert_eq!(migrate(&sa, &ub)["outcome"], "handover");
    wait_stderr(&mut b, "incoming: running", MIGRATE);
    let last_a = last_pass(a);
    let nb = pass_after(&mut b, last_a, "B");
    let (mut c, uc) = destination("tcp:127.0.0.1:0", &sc, &[]);
    assert_eq!(migrate(&sb, &uc)["outcome"], "handover");
    wait_stderr(&mut c, "incoming: running", MIGRATE);
    let last_b = last_pass(b).max(nb);
    pass_after(&mut c, last_b, "C");
    let status = ctl(&sc, &["status", "--json"]);
    assert!(status.contains("\"machine_type\":\"pc-7.2\""), "{status}");
    verify_ab(&sc, range);
    ctl(&sc, &["quit"]);
    c.finish(Duration::from_secs(20)).assert_success();
}

/// The guest's hardware report: the lines from `boot: ok` to `report: done`,
/// minus the command line (the workload differs).
fn report(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .skip_while(|l| !l.starts_with("boot: ok"))
        .take_while(|l| !l.starts_with("report: done"))
        .filter(|l| !l.starts_with("cmdline:"))
        .cloned()
        .collect()
}

/// For every machine type: migrate a guest (with a virtio-blk disk), check
/// it keeps running on the destination, and that the destination's
/// configuration presents the same hardware. The migrated guest cannot
/// re-run its report, so a fresh `vmm run -M <destination's machine type>`
/// with the destination's pinned properties (`vmm ctl status`) boots
/// `workload=report`, and its report must equal the source guest's.
#[test]
fn every_machine_type_migrates_and_presents_the_same_hardware() {
    require_kvm!();
    let machines: Vec<String> = vmm::builder::config::catalog()
        .machines()
        .map(|m| m.name.to_string())
        .filter(|n| n.starts_with("pc-"))
        .collect();
    assert!(machines.len() >= 10, "{machines:?}");
    let img = TempFile::sized("mig-hw", 1 << 20);
    let drive = img.drive();
    for m in &machines {
        let (ssock, dsock) = (Scratch::new("src"), Scratch::new("dst"));
        let mut src = Vmm::spawn([
            "run",
            "-M",
            m,
            "-m",
            "64M",
            "--drive",
            &drive,
            "--append",
            "workload=ab ab.mib=4",
            "--control",
            &ssock.s(),
        ]);
        let range = ab_range(&mut src);
        pass_after(&mut src, 0, m);
        let src_report = report(src.seen());
        assert!(
            src_report
                .iter()
                .any(|l| l.starts_with("virtio-blk-config:")),
            "{m}: {src_report:?}"
        );
        let (mut dst, uri) = destination("tcp:127.0.0.1:0", &dsock, &["--drive", &drive]);
        assert_eq!(migrate(&ssock, &uri)["outcome"], "handover", "{m}");
        wait_stderr(&mut dst, "incoming: running", MIGRATE);
        let last = last_pass(src);
        pass_after(&mut dst, last, m);
        let status: serde_json::Value =
            serde_json::from_str(ctl(&dsock, &["status", "--json"]).trim()).expect("status");
        assert_eq!(status["machine_type"], m.as_str(), "{status}");
        verify_ab(&dsock, range);
        ctl(&dsock, &["quit"]);
        dst.finish(Duration::from_secs(20)).assert_success();
        let mut args: Vec<String> = ["run", "-M", m, "-m", "64M", "--drive", &drive]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for p in status["pinned"].as_array().into_iter().flatten() {
            args.push("--device".into());
            args.push(format!(
                "{},{}={}",
                p["device"].as_str().unwrap_or_default(),
                p["property"].as_str().unwrap_or_default(),
                p["value"].as_str().unwrap_or_default()
            ));
        }
        args.extend(["--append".into(), "workload=report".into()]);
        let fresh = crate::common::run(&args, BOOT);
        fresh.assert_success();
        assert_eq!(
            report(&fresh.lines),
            src_report,
            "{m}: hardware report differs"
        );
    }
}

#[test]
fn demo_migrates_and_reports_a_consistent_image() {
    require_kvm!();
    let f = crate::common::run(["demo", "--mem", "256M", "--transport", "tcp"], MIGRATE);
    f.assert_success();
    let out = f.lines.join("\n");
    for want in [
        "migration completed",
        "downtime:",
        "bytes sent:",
        "pages:",
        "iterations:",
        "verdict=consistent",
    ] {
        assert!(out.contains(want), "missing `{want}`:\n{out}");
    }
}

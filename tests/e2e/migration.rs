//! Live migration, snapshots and chains with the real binary, real KVM and
//! the embedded guest (issue 4, item 5). Every wait is bounded and keyed on
//! a serial line, a stderr line or a control reply; every process is a
//! [`crate::common::Vmm`] guard that is killed on drop.

use crate::common::{self, BOOT, Finished, MIGRATE, Running, TempPath, hardware_report};
use crate::require_kvm;

/// `vmm migrate --json` of `src` to `dst` (listening on `uri`), which must
/// hand over (see [`Running::handed_over`]): the summary and the source's
/// output.
fn hand_over(
    src: Running,
    dst: &mut Running,
    uri: &str,
    ctx: &str,
) -> (serde_json::Value, Finished) {
    let sum = src.migrate_summary(uri, ctx);
    assert_eq!(sum["outcome"], "handover", "{ctx}: {sum}");
    let f = src.handed_over(dst, ctx);
    (sum, f)
}

fn ab_live(listen: &str, mib: u64) {
    let ctx = format!("ab over {mib} MiB, {listen}");
    let mem = format!("{mib}M");
    let src = Running::ab_source(&["-m", &mem, "--append", "workload=ab"], &ctx);
    let (mut dst, uri) = Running::incoming(listen, &[], &ctx);
    let range = src.ab.expect("ab range");
    assert_eq!(
        range.pages,
        ((mib << 20) - range.start) / 4096,
        "the whole {mib} MiB guest above the image"
    );
    let (sum, _) = hand_over(src, &mut dst, &uri, &ctx);
    assert!(
        sum["pages_normal"].as_u64().unwrap_or(0) >= range.pages,
        "{sum}"
    );
    let status = dst.status(&ctx);
    assert_eq!(status["state"], "running", "{status}");
    dst.verify_ab(range, &ctx);
    dst.quit(&ctx);
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
    let path = TempPath::new("mig", "sock");
    ab_live(&path.uri("unix"), 256);
}

#[test]
fn disk_forever_data_before_and_after_migration_is_in_the_image() {
    require_kvm!();
    let ctx = "disk";
    let img = TempPath::sized("mig-disk", 64 << 20);
    let capacity = (64u64 << 20) / vmm_guest::SECTOR as u64;
    let drive = img.drive();
    let mut src = Running::start(
        &[
            "-m",
            "64M",
            "--drive",
            &drive,
            "--append",
            "workload=disk disk.count=0",
        ],
        ctx,
    );
    let (mut dst, uri) = Running::destination(&["--drive", &drive], ctx);
    let seq = |l: &str| {
        vmm_guest::parse_line(l)
            .filter(|p| p.key == "disk")
            .and_then(|p| p.num("seq"))
    };
    src.vmm
        .wait_line(BOOT, |l| seq(l).is_some())
        .unwrap_or_else(|| panic!("no disk: seq= on the source\n{}", src.vmm.transcript()));
    let (_, f) = hand_over(src, &mut dst, &uri, ctx);
    let before = f.lines.iter().filter_map(|l| seq(l)).max().unwrap_or(0);
    let l = dst
        .vmm
        .wait_line(BOOT, |l| seq(l).is_some_and(|n| n > before))
        .unwrap_or_else(|| {
            panic!(
                "destination: no disk: seq= above {before}\n{}",
                dst.vmm.transcript()
            )
        });
    let after = seq(&l).unwrap_or(0);
    assert!(
        !dst.vmm.seen().iter().any(|l| l.contains("error")),
        "{:?}",
        dst.vmm.seen()
    );
    dst.ctl_ok(&["stop"], ctx);
    dst.quit(ctx);
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
    let snap = TempPath::new("snap", "snap");
    let src = Running::ab_source(&["-m", "128M", "--append", "workload=ab"], "source");
    let range = src.ab.expect("ab range");
    let sum = src.migrate_summary(&snap.uri("file"), "snapshot");
    assert_eq!(sum["outcome"], "snapshot", "{sum}");
    let status = src.status("snapshot");
    assert_eq!(status["state"], "paused", "{status}");
    // The paused source's memory is the snapshot's: consistent too.
    src.verify_ab(range, "the paused source");
    let last = common::max_pass(&src.quit("the source").lines);
    let (mut dst, _) = Running::incoming(&snap.uri("file"), &[], "restore");
    dst.wait_running("restore");
    dst.vmm.wait_pass_above(last, BOOT, "restored guest");
    dst.verify_ab(range, "restored guest");
    dst.quit("restored guest");
}

#[test]
fn chain_a_to_b_to_c_on_the_same_machine_type() {
    require_kvm!();
    let a = Running::ab_source(
        &["-M", "pc-7.2", "-m", "128M", "--append", "workload=ab"],
        "A",
    );
    let range = a.ab.expect("ab range");
    let (mut b, ub) = Running::destination(&["-M", "pc-7.2"], "B");
    hand_over(a, &mut b, &ub, "A -> B");
    let (mut c, uc) = Running::destination(&[], "C");
    hand_over(b, &mut c, &uc, "B -> C");
    let status = c.status("C");
    assert_eq!(status["machine_type"], "pc-7.2", "{status}");
    c.verify_ab(range, "C");
    c.quit("C");
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
    let img = TempPath::sized("mig-hw", 1 << 20);
    let drive = img.drive();
    for m in &machines {
        let src = Running::ab_source(
            &[
                "-M",
                m,
                "-m",
                "64M",
                "--drive",
                &drive,
                "--append",
                "workload=ab ab.mib=4",
            ],
            m,
        );
        let range = src.ab.expect("ab range");
        let src_report = hardware_report(src.vmm.seen());
        assert!(
            src_report
                .iter()
                .any(|l| l.starts_with("virtio-blk-config:")),
            "{m}: {src_report:?}"
        );
        let (mut dst, uri) = Running::destination(&["--drive", &drive], m);
        hand_over(src, &mut dst, &uri, m);
        let status = dst.status(m);
        assert_eq!(status["machine_type"], m.as_str(), "{status}");
        dst.verify_ab(range, m);
        dst.quit(m);
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
        let fresh = common::run(&args, BOOT);
        fresh.assert_success();
        assert_eq!(
            hardware_report(&fresh.lines),
            src_report,
            "{m}: hardware report differs"
        );
    }
}

#[test]
fn demo_migrates_and_reports_a_consistent_image() {
    require_kvm!();
    let f = common::run(["demo", "--mem", "256M", "--transport", "tcp"], MIGRATE);
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

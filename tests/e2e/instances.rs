//! Device instances across a live migration (issue 9): every instance the
//! guest sees travels in the manifest with its backend's facts (capacity,
//! read-only state, block size, serial); a destination whose disks differ
//! refuses before any RAM moves, naming each instance and both values, and
//! the source keeps running; one whose disks match runs the guest on with
//! the same devices, adopting the serial numbers it was not given.

use crate::common::{EXIT, Running, TempPath, json_of};
use crate::require_kvm;

const MIB: u64 = 1 << 20;

/// `ctl qtree --json`: the running instances.
fn qtree(r: &Running, ctx: &str) -> Vec<serde_json::Value> {
    let f = r.ctl_ok(&["qtree", "--json"], ctx);
    match json_of(&f, ctx) {
        serde_json::Value::Array(a) => a,
        other => panic!("{ctx}: qtree is not a list: {other}"),
    }
}

/// `(id, fact)` of every disk instance in a qtree.
fn disk_facts(tree: &[serde_json::Value], fact: &str) -> Vec<(String, String)> {
    tree.iter()
        .filter(|d| d["type"] == "virtio-blk-device")
        .map(|d| {
            let id = d["id"].as_str().unwrap_or("?").to_string();
            (id, d["facts"][fact].as_str().unwrap_or("?").to_string())
        })
        .collect()
}

/// The source of the issue: two disks, 64 MiB `serial=AAA` and 32 MiB
/// `serial=BBB,readonly=on`, the guest counting.
fn two_disk_source(a: &TempPath, b: &TempPath) -> Running {
    let d0 = format!("{},serial=AAA", a.drive());
    let d1 = format!("{},serial=BBB,readonly=on", b.drive());
    Running::ab_source(
        &[
            "-M",
            "pc-7.2",
            "-m",
            "64M",
            "--append",
            "workload=ab",
            "--drive",
            &d0,
            "--drive",
            &d1,
        ],
        "two-disk source",
    )
}

#[test]
fn different_disks_are_refused_before_ram_naming_each_instance_and_value() {
    require_kvm!();
    let (a, b) = (
        TempPath::sized("inst-a", 64 * MIB),
        TempPath::sized("inst-b", 32 * MIB),
    );
    let mut src = two_disk_source(&a, &b);
    let before = qtree(&src, "source");
    assert_eq!(
        disk_facts(&before, "serial"),
        [
            ("virtio-blk0".into(), "AAA".into()),
            ("virtio-blk1".into(), "BBB".into())
        ]
    );
    // Other disks: 16 MiB with another serial, 128 MiB read-write.
    let (c, d) = (
        TempPath::sized("inst-c", 16 * MIB),
        TempPath::sized("inst-d", 128 * MIB),
    );
    let d0 = format!("{},serial=CCC", c.drive());
    let (dst, uri) = Running::destination(&["--drive", &d0, "--drive", &d.drive()], "destination");
    let m = src.migrate(&uri);
    assert!(
        !m.status.success(),
        "migration succeeded\n{}",
        m.transcript()
    );
    let dst_out = dst.vmm.finish(EXIT);
    assert!(!dst_out.status.success(), "{}", dst_out.transcript());
    assert!(
        dst_out.lines.iter().all(|l| l.trim().is_empty()),
        "the guest ran on the destination\n{}",
        dst_out.transcript()
    );
    for want in [
        "device virtio-blk0: capacity_sectors is 131072 on the source, 32768 here",
        "device virtio-blk0: serial is AAA on the source, CCC here",
        "device virtio-blk1: capacity_sectors is 65536 on the source, 262144 here",
        "device virtio-blk1: read_only is on on the source, off here",
    ] {
        assert!(
            m.stderr.contains(want),
            "the source's report lacks `{want}`\n{}",
            m.transcript()
        );
        assert!(
            dst_out.stderr.contains(want),
            "the destination's error lacks `{want}`\n{}",
            dst_out.transcript()
        );
    }
    // The serial of the read-only disk was not given here: adopted, not refused.
    assert!(!m.stderr.contains("virtio-blk1: serial"), "{}", m.stderr);
    src.assert_counting("after the refusal");
    assert_eq!(
        qtree(&src, "source after"),
        before,
        "the source's devices changed"
    );
}

#[test]
fn matching_disks_migrate_and_the_destination_adopts_their_serials() {
    require_kvm!();
    let (a, b) = (
        TempPath::sized("inst-ma", 64 * MIB),
        TempPath::sized("inst-mb", 32 * MIB),
    );
    let src = two_disk_source(&a, &b);
    let before = qtree(&src, "source");
    // The same images, no serials given: the destination adopts them.
    let d1 = format!("{},readonly=on", b.drive());
    let (mut dst, uri) =
        Running::destination(&["--drive", &a.drive(), "--drive", &d1], "destination");
    src.migrate_summary(&uri, "matching disks");
    src.handed_over(&mut dst, "matching disks");
    let after = qtree(&dst, "destination");
    for fact in [
        "capacity_sectors",
        "read_only",
        "serial",
        "logical_block_size",
    ] {
        assert_eq!(
            disk_facts(&after, fact),
            disk_facts(&before, fact),
            "{fact} changed across the migration"
        );
    }
    let ids = |t: &[serde_json::Value]| -> Vec<String> {
        t.iter()
            .map(|d| format!("{} {} {}", d["id"], d["type"], d["addr"]))
            .collect()
    };
    assert_eq!(ids(&after), ids(&before), "the instances changed");
    dst.assert_counting("after the migration");
    dst.quit("destination");
}

#[test]
fn a_property_without_effect_never_refuses_a_migration_and_a_visible_one_does() {
    require_kvm!();
    let src_args = ["-M", "pc-7.2", "-m", "64M", "--append", "workload=ab"];
    let mut src = Running::ab_source(&src_args, "source");
    // `slot` is in the root port's slot capabilities: refused, naming it.
    let dst_args = [
        "-M",
        "pc-7.2",
        "-m",
        "64M",
        "--device",
        "pcie-root-port,slot=3",
    ];
    let (dst, uri) = Running::destination(&dst_args, "slot=3");
    let m = src.migrate(&uri);
    let d = dst.vmm.finish(EXIT);
    let want = "property `pcie-root-port.slot` differs: the stream has 0, this destination has 3";
    assert!(
        !m.status.success() && m.stderr.contains(want) && d.stderr.contains(want),
        "expected `{want}`\n{}\n{}",
        m.transcript(),
        d.transcript()
    );
    src.assert_counting("after the slot refusal");
    // Link speed and width, chassis, ACPI index: no effect in this VMM
    // (`effect = "none"` in compat/devices/pci.toml), so not compared.
    let inert = "pcie-root-port,x-speed=8,x-width=4,chassis=5,acpi-index=2";
    let dst_args = ["-M", "pc-7.2", "-m", "64M", "--device", inert];
    let (mut dst, uri) = Running::destination(&dst_args, "inert properties");
    src.migrate_summary(&uri, "inert properties");
    src.handed_over(&mut dst, "inert properties");
    dst.assert_counting("after the migration");
    dst.quit("destination");
}

/// A qtree without provenance: what the guest sees of each device.
fn values(tree: &[serde_json::Value]) -> Vec<serde_json::Value> {
    tree.iter()
        .map(|d| {
            let mut d = d.clone();
            if let Some(props) = d["props"].as_object_mut() {
                for p in props.values_mut() {
                    *p = p["value"].clone();
                }
            }
            d
        })
        .collect()
}

/// `(num_queues, queue max sizes, serial)` of every disk of the guest's last report.
fn disks_reported(lines: &[String]) -> Vec<(u64, Vec<u64>, String)> {
    let last: Vec<String> = lines
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("boot: ok"))
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let r = vmm_guest::parse_report(&last.join("\n"));
    (0..2)
        .filter_map(|i| r.blk(i))
        .map(|b| {
            let serial = b.serial.clone().unwrap_or_default();
            (b.num_queues().unwrap_or(0), b.queue_max.clone(), serial)
        })
        .collect()
}

#[test]
fn two_disks_with_their_own_properties_are_each_reported_and_migrate() {
    require_kvm!();
    let (a, b) = (
        TempPath::sized("inst-qa", 4 * MIB),
        TempPath::sized("inst-qb", 8 * MIB),
    );
    let (ba, bb) = (format!("id=a,{}", a.drive()), format!("id=b,{}", b.drive()));
    let report = "workload=report after=halt";
    let args = [
        "-M",
        "pc-7.2",
        "-m",
        "64M",
        "--append",
        report,
        "--drive",
        &ba,
        "--drive",
        &bb,
        "--device",
        "virtio-blk-device,drive=a,id=system,num-queues=1,queue-size=128,serial=AAA",
        "--device",
        "virtio-blk-device,drive=b,id=data,num-queues=3,serial=BBB",
    ];
    let mut src = Running::start(&args, "two-disk source");
    let done = src
        .vmm
        .wait_line(crate::common::BOOT, |l| l == "report: done");
    assert!(done.is_some(), "no report\n{}", src.vmm.transcript());
    let want = vec![
        (1, vec![128], "AAA".to_string()),
        (3, vec![256, 256, 256], "BBB".to_string()),
    ];
    assert_eq!(
        disks_reported(src.vmm.seen()),
        want,
        "the source guest's disks"
    );
    let before = qtree(&src, "source");
    assert_eq!(
        disk_facts(&before, "serial"),
        [
            ("system".into(), "AAA".into()),
            ("data".into(), "BBB".into())
        ]
    );
    // The destination names the backends only: it adopts both disks.
    let dst_args = ["--drive", &ba, "--drive", &bb, "--append", report];
    let (mut dst, uri) = Running::destination(&dst_args, "destination");
    src.migrate_summary(&uri, "two disks");
    src.handed_over(&mut dst, "two disks");
    let after = qtree(&dst, "destination");
    assert_eq!(
        values(&after),
        values(&before),
        "the destination's devices differ from the source's"
    );
    // What the source set per disk is now the stream's, on the destination.
    let system = after
        .iter()
        .find(|d| d["id"] == "system")
        .expect("disk system");
    assert_eq!(
        system["props"]["num-queues"]["provenance"], "stream",
        "{system}"
    );
    // Rebooted on the destination, the guest reports the same disks.
    dst.reset_and_report("destination reset");
    assert_eq!(disks_reported(dst.vmm.seen()), want, "after the migration");
    dst.quit("destination");
}

#[test]
fn every_bad_instance_on_the_command_line_exits_2_naming_it() {
    let img = TempPath::sized("inst-bad", MIB);
    let sys = format!("id=system,{}", img.drive());
    let (b0, b1) = (
        format!("id=d0,{}", img.drive()),
        format!("id=d1,{}", img.drive()),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--device", "virtio-blk-devic,drive=d0"],
            "unknown device type `virtio-blk-devic` (did you mean `virtio-blk-device`?)",
        ),
        (
            vec!["--device", "pci-device,acpi-index=1"],
            "pci-device is an abstract type",
        ),
        (
            vec!["--device", "virtio-rng-pci,vectors=4"],
            "this VMM cannot create a virtio-rng-pci",
        ),
        (
            vec![
                "--drive",
                &b0,
                "--device",
                "virtio-blk-device,drive=d0,num-queuez=3",
            ],
            "has no property `num-queuez` (did you mean `num-queues`?)",
        ),
        (
            vec![
                "--drive",
                &b0,
                "--device",
                "virtio-blk-device,drive=d0,queue-size=100",
            ],
            "bad value for virtio-blk-device.queue-size",
        ),
        (
            vec![
                "--drive",
                &b0,
                "--drive",
                &b1,
                "--device",
                "virtio-blk-device,drive=d0,id=x",
                "--device",
                "virtio-blk-device,drive=d1,id=x",
            ],
            "two devices have id `x`",
        ),
        (
            vec![
                "--drive",
                &sys,
                "--device",
                "virtio-blk-device,drive=systen",
            ],
            "no --drive has id `systen` (did you mean `system`?)",
        ),
        (
            vec![
                "--drive",
                &b0,
                "--device",
                "virtio-blk-device,drive=d0",
                "--device",
                "virtio-blk-device,drive=d0",
            ],
            "drive `d0` is already used by another device",
        ),
        (vec!["--drive", &b0], "drive `d0` is never used"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["run", "-m", "64M"];
        args.extend(&extra);
        let f = crate::common::run(&args, EXIT);
        assert_eq!(f.status.code(), Some(2), "{extra:?}\n{}", f.transcript());
        let line = f.stderr.lines().find(|l| l.contains(want));
        assert!(
            line.is_some(),
            "{extra:?}: want one line with `{want}`\n{}",
            f.stderr
        );
        assert!(
            f.lines.iter().all(|l| l.trim().is_empty()),
            "a guest ran: {extra:?}"
        );
    }
}

#[test]
fn an_adopting_destination_without_a_disk_names_the_missing_one() {
    require_kvm!();
    let (a, b) = (
        TempPath::sized("inst-na", 4 * MIB),
        TempPath::sized("inst-nb", 2 * MIB),
    );
    let mut src = two_disk_source(&a, &b);
    // Only the first backend: the second disk has nowhere to go.
    let (dst, uri) = Running::destination(&["--drive", &a.drive()], "one backend");
    let m = src.migrate(&uri);
    let d = dst.vmm.finish(EXIT);
    let want = "device virtio-blk1 (virtio-blk-device) of the stream has no counterpart on this destination";
    assert!(
        !m.status.success() && m.stderr.contains(want) && d.stderr.contains(want),
        "expected `{want}`\n{}\n{}",
        m.transcript(),
        d.transcript()
    );
    src.assert_counting("after the refusal");
}

#[test]
fn an_adopting_destination_puts_each_disk_on_the_backend_of_its_name() {
    require_kvm!();
    let (a, b) = (
        TempPath::sized("inst-oa", 4 * MIB),
        TempPath::sized("inst-ob", 8 * MIB),
    );
    let (ba, bb) = (format!("id=a,{}", a.drive()), format!("id=b,{}", b.drive()));
    let args = [
        "-m",
        "64M",
        "--append",
        "workload=ab",
        "--drive",
        &ba,
        "--drive",
        &bb,
        "--device",
        "virtio-blk-device,drive=a,id=system,serial=AAA",
        "--device",
        "virtio-blk-device,drive=b,id=data,num-queues=2",
    ];
    let src = Running::ab_source(&args, "source");
    let before = qtree(&src, "source");
    // The backends in the other order: each disk still lands on its own.
    let (mut dst, uri) = Running::destination(&["--drive", &bb, "--drive", &ba], "destination");
    src.migrate_summary(&uri, "named backends");
    src.handed_over(&mut dst, "named backends");
    let after = qtree(&dst, "destination");
    assert_eq!(values(&after), values(&before), "the disks moved");
    dst.assert_counting("after the migration");
    dst.quit("destination");
}

//! `vmm run` on real KVM: the embedded guest reports what hardware the
//! resolved machine type gave it, and the tests check its own report.

use std::time::Duration;

use crate::common::{EXIT, Finished, TempPath, Vmm, run};
use crate::require_kvm;

const T: Duration = Duration::from_secs(60);
const MEM: &str = "64M";

/// Boots the embedded guest with `append` and the disk `img` (plus
/// `extra`); it must exit 0.
fn boot_with(img: &TempPath, append: &str, extra: &[&str]) -> Finished {
    let drive = img.drive();
    let mut args = vec!["run", "-m", MEM, "--drive", &drive, "--append", append];
    args.extend_from_slice(extra);
    let f = run(&args, T);
    f.assert_success();
    f
}

/// Boots the embedded guest with the report workload and one 1 MiB disk.
fn report(extra: &[&str]) -> Finished {
    boot_with(
        &TempPath::sized("report", 1 << 20),
        "workload=report",
        extra,
    )
}

/// `num_queues` of the guest's one disk, which has a `virtio-blk-queue:`
/// line per queue.
fn num_queues(f: &Finished) -> u64 {
    let r = vmm_guest::parse_report(&f.stdout());
    let b = r
        .blk(0)
        .unwrap_or_else(|| panic!("no virtio-blk report\n{}", f.transcript()));
    let n = b
        .num_queues()
        .unwrap_or_else(|| panic!("no num_queues\n{}", f.transcript()));
    assert_eq!(b.queue_max.len() as u64, n, "{}", f.transcript());
    n
}

/// Boots the report workload with `extra` and checks that the guest
/// reports `want` as `field` of its `key:` line.
fn assert_fact(extra: &[&str], key: &str, field: &str, want: &str) {
    let f = report(extra);
    assert_eq!(
        f.fact(key, field).as_deref(),
        Some(want),
        "{extra:?}: {key}: {field}\n{}",
        f.transcript()
    );
}

/// [`assert_fact`] on each `(machine type, value)`.
fn follows_machine_type(key: &str, field: &str, cases: &[(&str, &str)]) {
    for (machine, want) in cases {
        assert_fact(&["-M", machine], key, field, want);
    }
}

#[test]
fn pc_5_1_has_one_queue() {
    require_kvm!();
    assert_eq!(num_queues(&report(&["-M", "pc-5.1", "--smp", "2"])), 1);
}

#[test]
fn pc_5_2_smp_2_has_two_queues() {
    require_kvm!();
    let f = report(&["-M", "pc-5.2", "--smp", "2"]);
    assert_eq!(num_queues(&f), 2);
    assert_eq!(f.fact("virtio-blk", "mq").as_deref(), Some("1"));
}

#[test]
fn device_override_gives_three_queues() {
    require_kvm!();
    let img = TempPath::sized("three-queues", 1 << 20);
    let backend = format!("id=d0,{}", img.drive());
    let f = run(
        [
            "run",
            "-m",
            MEM,
            "--drive",
            &backend,
            "--device",
            "virtio-blk-device,drive=d0,num-queues=3",
            "--append",
            "workload=report",
        ],
        T,
    );
    f.assert_success();
    assert_eq!(num_queues(&f), 3);
}

#[test]
fn ring_reset_follows_machine_type() {
    require_kvm!();
    follows_machine_type(
        "virtio-blk",
        "ring_reset",
        &[("pc-7.1", "0"), ("pc-7.2", "1")],
    );
}

#[test]
fn global_override_turns_ring_reset_off() {
    require_kvm!();
    let off = ["-M", "pc-8.0", "--global", "virtio-device.queue_reset=off"];
    assert_fact(&off, "virtio-blk", "ring_reset", "0");
}

#[test]
fn aer_uncor_mask_follows_machine_type() {
    require_kvm!();
    // pc-8.0: QEMU's PCI_ERR_UNC_MASK_DEFAULT (PCI_ERR_UNC_INTN |
    // PCI_ERR_UNC_TLP_PRF_BLOCKED).
    let cases = [("pc-7.2", "0x0"), ("pc-8.0", "0x2400000")];
    follows_machine_type("aer", "uncor_mask", &cases);
}

/// The root port's PCIe Device Capabilities register, as the guest reads
/// it: bit 5 (Extended Tag Field Supported) is `x-pcie-ext-tag`. Releases
/// 5.1 … 8.2 set it on every machine type (erratum pcie-ext-tag); since
/// 8.2.1 it is off, the reference's value; `--global` and `--device` reach it.
#[test]
fn pcie_ext_tag_is_the_bit_the_guest_reads() {
    require_kvm!();
    for (extra, want) in [
        (&["-M", "pc-7.2"][..], "0x0"),
        (&["-M", "pc-7.2", "--as-release", "8.2"], "0x20"),
        (&["-M", "pc-7.2", "--as-release", "8.2.1"], "0x0"),
        (&["--global", "pci-device.x-pcie-ext-tag=on"], "0x20"),
        (&["--device", "pcie-root-port,x-pcie-ext-tag=on"], "0x20"),
    ] {
        assert_fact(extra, "pcie", "devcap", want);
    }
}

#[test]
fn command_line_names_devices() {
    require_kvm!();
    let f = report(&[]);
    let cmdline = vmm_guest::parse_report(&f.stdout())
        .cmdline
        .unwrap_or_else(|| panic!("no cmdline line\n{}", f.transcript()));
    assert!(
        cmdline.contains("virtio_mmio.device=4K@0xd0000000:5"),
        "{cmdline}"
    );
    assert!(cmdline.contains("pci.ecam=0xe0000000"), "{cmdline}");
    assert!(cmdline.ends_with("workload=report"), "{cmdline}");
}

#[test]
fn disk_workload_data_reaches_the_image() {
    require_kvm!();
    let img = TempPath::sized("disk", 1 << 20);
    let f = boot_with(&img, "workload=disk disk.count=64", &[]);
    let d = f
        .lines
        .iter()
        .find_map(|l| vmm_guest::parse_disk_result(l))
        .unwrap_or_else(|| panic!("no disk result\n{}", f.transcript()));
    assert!(
        d.verify_ok && d.mismatches == 0 && d.flush == "ok" && d.sectors == 64,
        "{d:?}\n{}",
        f.transcript()
    );
    // 1 MiB: 2048 sectors.
    assert_eq!(d.checksum, vmm_guest::expected_disk_checksum(64, 0, 2048));
    let data = std::fs::read(img.path()).expect("read image");
    const SECTOR: usize = vmm_guest::SECTOR;
    for s in 0..64u64 {
        let got = &data[s as usize * SECTOR..][..SECTOR];
        assert_eq!(got, vmm_guest::sector_pattern(s, s), "sector {s} differs");
    }
    assert!(
        data[64 * SECTOR..].iter().all(|&b| b == 0),
        "data beyond sector 63"
    );
}

#[test]
fn power_off_exits_zero_and_serial_goes_to_a_file() {
    require_kvm!();
    let out = TempPath::sized("serial", 0);
    let serial = format!("file:{}", out.path().display());
    let f = run(
        [
            "run",
            "-m",
            MEM,
            "--serial",
            &serial,
            "--append",
            "workload=report",
        ],
        T,
    );
    f.assert_success();
    let text = std::fs::read_to_string(out.path()).expect("serial file");
    assert!(text.lines().any(|l| l == "report: done"), "{text}");
}

#[test]
fn triple_fault_is_reported_with_registers() {
    require_kvm!();
    let f = run(["run", "-m", MEM, "--append", "crash=1"], T);
    assert!(!f.status.success(), "{}", f.transcript());
    assert!(f.stderr.contains("triple fault"), "{}", f.transcript());
    assert!(f.stderr.contains("KVM_EXIT_SHUTDOWN"), "{}", f.transcript());
    assert!(f.stderr.contains("rip=0x"), "{}", f.transcript());
    assert!(!f.stderr.contains("panicked"), "{}", f.transcript());
}

#[test]
fn reset_reboots_in_the_same_process() {
    require_kvm!();
    let mut vmm = Vmm::spawn(["run", "-m", MEM, "--append", "workload=report after=reboot"]);
    let pid = vmm.pid();
    for n in 1..=3 {
        assert!(
            vmm.wait_line(T, |l| l == "boot: ok").is_some(),
            "boot {n} not seen\n{}",
            vmm.transcript()
        );
    }
    assert_eq!(vmm.pid(), pid);
    // Dropping `vmm` kills the endlessly rebooting guest.
}

/// `vmm run` of `workload=fill` (`kind`) over 32 MiB: the guest announces
/// the range, writes it once and says so, then idles until killed.
fn fill_writes_its_range_then_idles(kind: vmm_guest::FillKind) {
    let append = format!("workload={} fill.mib=32", kind.workload());
    let mut vmm = Vmm::spawn(["run", "-m", MEM, "--append", &append]);
    let line = vmm
        .wait_line(T, |l| vmm_guest::parse_fill_done(l).is_some())
        .unwrap_or_else(|| panic!("{append}: no `fill: done` line\n{}", vmm.transcript()));
    let done = vmm_guest::parse_fill_done(&line).expect("fill: done line");
    assert_eq!(
        (done.pages, done.kind, done.seed),
        (8192, kind, vmm_guest::FILL_DEFAULT_SEED),
        "{append}: 32 MiB of 4 KiB pages\n{}",
        vmm.transcript()
    );
    let start = vmm
        .seen()
        .iter()
        .find_map(|l| vmm_guest::parse_fill_start(l))
        .unwrap_or_else(|| panic!("{append}: no `fill: start=` line\n{}", vmm.transcript()));
    assert_eq!(start, done, "{}", vmm.transcript());
    assert!(
        vmm.is_running(),
        "{append}: the guest idles\n{}",
        vmm.transcript()
    );
    vmm.kill_now();
    let f = vmm.finish(EXIT);
    assert!(!f.stderr.contains("panicked"), "{}", f.transcript());
}

#[test]
fn fill_writes_its_range_once() {
    require_kvm!();
    fill_writes_its_range_then_idles(vmm_guest::FillKind::Random);
}

#[test]
fn fill_text_writes_its_range_once() {
    require_kvm!();
    fill_writes_its_range_then_idles(vmm_guest::FillKind::Text);
}

fn fails_cleanly(args: &[&str], needle: &str) {
    let f = run(args, T);
    assert!(!f.status.success(), "{}", f.transcript());
    assert!(
        f.stderr.contains(needle),
        "expected `{needle}`\n{}",
        f.transcript()
    );
    assert!(!f.stderr.contains("panicked"), "{}", f.transcript());
}

#[test]
fn missing_image_is_a_clear_error() {
    fails_cleanly(
        &["run", "--drive", "file=/nonexistent/vmm-e2e.img"],
        "does not exist",
    );
}

#[test]
fn unparsable_memory_is_a_clear_error() {
    fails_cleanly(&["run", "-m", "lots"], "invalid memory size `lots`");
}

#[test]
fn unknown_machine_type_is_a_clear_error() {
    fails_cleanly(&["run", "-M", "pc-1.0"], "unknown machine type `pc-1.0`");
}

#[test]
fn unknown_device_property_is_a_clear_error() {
    fails_cleanly(
        &["run", "--device", "virtio-blk-device,num-queuez=3"],
        "has no property `num-queuez` (did you mean `num-queues`?)",
    );
}

#[test]
fn bad_drive_option_is_a_clear_error() {
    fails_cleanly(
        &["run", "--drive", "file=x.img,format=qcow2"],
        "only format=raw",
    );
}

/// The guest submits deliberately malformed chains; the VMM answers with an
/// error status where the chain has a usable status byte, logs, and survives.
#[test]
fn malformed_descriptors_get_error_status() {
    require_kvm!();
    // The status byte written, or `None` for a chain without one (which is
    // only completed).
    for (k, kind, status) in [
        (1, "short-header", Some(1)),
        (2, "outside-ram", Some(1)),
        (3, "no-status", None),
    ] {
        let img = TempPath::sized("bad", 1 << 20);
        let f = boot_with(&img, &format!("workload=disk disk.bad={k}"), &[]);
        let r = f
            .lines
            .iter()
            .filter_map(|l| vmm_guest::parse_bad_request(l))
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("no bad-request line for {kind}\n{}", f.transcript()));
        assert_eq!(
            (r.status, r.completed),
            (status, status.is_none()),
            "{r:?}\n{}",
            f.transcript()
        );
        assert!(
            f.stderr.contains("virtio-blk: request"),
            "no log line\n{}",
            f.transcript()
        );
        assert!(!f.stderr.contains("panicked"), "{}", f.transcript());
    }
}

#[test]
fn guest_elf_subcommand_writes_a_pvh_elf() {
    let out = TempPath::sized("elf", 0);
    let f = run(["guest-elf", out.path().to_str().expect("utf-8 path")], T);
    f.assert_success();
    let elf = std::fs::read(out.path()).expect("elf");
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf, vmm_guest::ELF);
}

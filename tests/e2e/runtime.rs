//! `vmm run` on real KVM: the embedded guest reports what hardware the
//! resolved machine type gave it, and the tests check its own report.

use std::time::Duration;

use crate::common::{Finished, TempFile, run};
use crate::require_kvm;

const T: Duration = Duration::from_secs(60);
const MEM: &str = "64M";

/// Boots the embedded guest with the report workload and one 1 MiB disk.
fn report(extra: &[&str]) -> Finished {
    let img = TempFile::sized("report", 1 << 20);
    let drive = img.drive();
    let mut args = vec![
        "run",
        "-m",
        MEM,
        "--drive",
        &drive,
        "--append",
        "workload=report",
    ];
    args.extend_from_slice(extra);
    let f = run(&args, T);
    f.assert_success();
    f
}

fn num_queues(f: &Finished) -> u32 {
    let n: u32 = f
        .fact("virtio-blk-config", "num_queues")
        .unwrap_or_else(|| panic!("no num_queues\n{}", f.transcript()))
        .parse()
        .expect("num_queues");
    assert_eq!(
        f.facts("virtio-blk-queue").len() as u32,
        n,
        "{}",
        f.transcript()
    );
    n
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
    assert_eq!(
        num_queues(&report(&["--device", "virtio-blk-device,num-queues=3"])),
        3
    );
}

#[test]
fn ring_reset_follows_machine_type() {
    require_kvm!();
    let old = report(&["-M", "pc-7.1"]);
    assert_eq!(
        old.fact("virtio-blk", "ring_reset").as_deref(),
        Some("0"),
        "{}",
        old.transcript()
    );
    let new = report(&["-M", "pc-7.2"]);
    assert_eq!(
        new.fact("virtio-blk", "ring_reset").as_deref(),
        Some("1"),
        "{}",
        new.transcript()
    );
}

#[test]
fn global_override_turns_ring_reset_off() {
    require_kvm!();
    let f = report(&["-M", "pc-8.0", "--global", "virtio-device.queue_reset=off"]);
    assert_eq!(
        f.fact("virtio-blk", "ring_reset").as_deref(),
        Some("0"),
        "{}",
        f.transcript()
    );
}

#[test]
fn aer_uncor_mask_follows_machine_type() {
    require_kvm!();
    let old = report(&["-M", "pc-7.2"]);
    assert_eq!(
        old.fact("aer", "uncor_mask").as_deref(),
        Some("0x0"),
        "{}",
        old.transcript()
    );
    let new = report(&["-M", "pc-8.0"]);
    // QEMU's PCI_ERR_UNC_MASK_DEFAULT: PCI_ERR_UNC_INTN | PCI_ERR_UNC_TLP_PRF_BLOCKED.
    assert_eq!(
        new.fact("aer", "uncor_mask").as_deref(),
        Some("0x2400000"),
        "{}",
        new.transcript()
    );
}

#[test]
fn command_line_names_devices() {
    require_kvm!();
    let f = report(&[]);
    let cmdline = f
        .lines
        .iter()
        .find(|l| l.starts_with("cmdline: "))
        .expect("cmdline line");
    assert!(
        cmdline.contains("virtio_mmio.device=4K@0xd0000000:5"),
        "{cmdline}"
    );
    assert!(cmdline.contains("pci.ecam=0xe0000000"), "{cmdline}");
    assert!(cmdline.ends_with("workload=report"), "{cmdline}");
}

/// Byte pattern the guest's `disk` workload writes into sector `s` (seq `s`).
fn expected_sector(s: u64) -> Vec<u8> {
    let mut v = format!("vmmguest seq={s} sector={s}\n").into_bytes();
    for i in v.len()..512 {
        v.push(((2 * s + i as u64) % 256) as u8);
    }
    v
}

#[test]
fn disk_workload_data_reaches_the_image() {
    require_kvm!();
    let img = TempFile::sized("disk", 1 << 20);
    let drive = img.drive();
    let f = run(
        [
            "run",
            "-m",
            MEM,
            "--drive",
            &drive,
            "--append",
            "workload=disk disk.count=64",
        ],
        T,
    );
    f.assert_success();
    let d = f
        .facts("disk")
        .into_iter()
        .find(|d| d.contains_key("checksum"))
        .expect("disk result");
    assert_eq!(
        d.get("verify").map(String::as_str),
        Some("ok"),
        "{}",
        f.transcript()
    );
    assert_eq!(
        d.get("flush").map(String::as_str),
        Some("ok"),
        "{}",
        f.transcript()
    );
    let data = std::fs::read(img.path()).expect("read image");
    for s in 0..64u64 {
        let got = &data[(s * 512) as usize..((s + 1) * 512) as usize];
        assert_eq!(got, expected_sector(s).as_slice(), "sector {s} differs");
    }
    assert!(
        data[64 * 512..].iter().all(|&b| b == 0),
        "data beyond sector 63"
    );
}

#[test]
fn power_off_exits_zero_and_serial_goes_to_a_file() {
    require_kvm!();
    let out = TempFile::sized("serial", 0);
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
    let mut vmm =
        crate::common::Vmm::spawn(["run", "-m", MEM, "--append", "workload=report after=reboot"]);
    let pid = vmm.pid();
    for n in 1..=3 {
        assert!(
            vmm.wait_line(T, |l| l == "boot: ok").is_some(),
            "boot {n} not seen\n{}\n{}",
            vmm.seen().join("\n"),
            vmm.stderr()
        );
    }
    assert_eq!(vmm.pid(), pid);
    // Dropping `vmm` kills the endlessly rebooting guest.
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
    for (k, kind, status) in [
        (1, "short-header", "1"),
        (2, "outside-ram", "1"),
        (3, "no-status", "completed"),
    ] {
        let img = TempFile::sized("bad", 1 << 20);
        let drive = img.drive();
        let append = format!("workload=disk disk.bad={k}");
        let f = run(
            ["run", "-m", MEM, "--drive", &drive, "--append", &append],
            T,
        );
        f.assert_success();
        let r = f
            .facts("disk")
            .into_iter()
            .find(|d| d.get("kind").map(String::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("no bad-request line for {kind}\n{}", f.transcript()));
        assert_eq!(
            r.get("status").map(String::as_str),
            Some(status),
            "{}",
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
    let out = TempFile::sized("elf", 0);
    let f = run(["guest-elf", out.path().to_str().expect("utf-8 path")], T);
    f.assert_success();
    let elf = std::fs::read(out.path()).expect("elf");
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf, vmm_guest::ELF);
}

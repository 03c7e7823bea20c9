//! The guest's CPU identity comes from the CPU model and its compat deltas
//! (issue 10, first part): the embedded guest reads `cpuid` in its CPL 0
//! part and reports vendor, family/model/stepping and its feature leaves.

use crate::common::{EXIT, Finished, Running, run};
use crate::require_kvm;

/// `vmm run ARGS --append workload=report`, which must power off cleanly.
fn report(args: &[&str]) -> Finished {
    let mut all = vec!["run", "-m", "64M", "--append", "workload=report"];
    all.extend_from_slice(args);
    let f = run(&all, EXIT);
    f.assert_success();
    f
}

/// `(family, model, stepping)` the guest read.
fn identity(f: &Finished) -> (u64, u64, u64) {
    let cpu = vmm_guest::parse_report(&f.stdout())
        .cpu
        .unwrap_or_else(|| panic!("no cpu: line\n{}", f.transcript()));
    (cpu.family, cpu.model, cpu.stepping)
}

#[test]
fn the_compat_deltas_reach_the_guests_cpu() {
    require_kvm!();
    // The reference's qemu64: family 6, model 6, stepping 3 up to pc-6.0
    // (pc_compat_6_0), then family 15, model 107, stepping 1.
    assert_eq!(identity(&report(&["-M", "pc-6.0"])), (6, 6, 3));
    assert_eq!(identity(&report(&["-M", "pc-6.1"])), (15, 107, 1));
    assert_eq!(identity(&report(&["-M", "pc"])), (15, 107, 1));
}

#[test]
fn a_global_on_the_cpu_model_reaches_the_guest() {
    require_kvm!();
    let f = report(&[
        "--global",
        "qemu64-x86_64-cpu.family=6",
        "--global",
        "qemu64-x86_64-cpu.model=85",
        "--global",
        "qemu64-x86_64-cpu.stepping=7",
    ]);
    assert_eq!(identity(&f), (6, 85, 7));
    let cpu = vmm_guest::parse_report(&f.stdout()).cpu.expect("cpu");
    assert_eq!(
        cpu.leaves[&1][0], 0x0005_0657,
        "leaf 1 EAX with the extended model"
    );
}

#[test]
fn the_guest_keeps_its_cpu_across_a_live_migration() {
    require_kvm!();
    let args = [
        "-M",
        "pc-6.0",
        "-m",
        "64M",
        "--append",
        "workload=report after=halt",
    ];
    let mut src = Running::start(&args, "pc-6.0 source");
    let done = src
        .vmm
        .wait_line(crate::common::BOOT, |l| l == "report: done");
    assert!(done.is_some(), "no report\n{}", src.vmm.transcript());
    let before = vmm_guest::parse_report(&src.vmm.seen().join("\n")).cpu;
    let (mut dst, uri) =
        Running::destination(&["--append", "workload=report after=halt"], "destination");
    src.migrate_summary(&uri, "pc-6.0");
    src.handed_over(&mut dst, "pc-6.0");
    dst.reset_and_report("destination reset");
    let seen = dst.vmm.seen().join("\n");
    let after = vmm_guest::parse_report(&seen).cpu;
    assert_eq!(
        after, before,
        "the guest's CPU changed across the migration"
    );
    assert_eq!(
        after.map(|c| (c.family, c.model, c.stepping)),
        Some((6, 6, 3))
    );
    dst.quit("destination");
}

#[test]
fn cpu_host_names_what_this_hosts_kvm_offers() {
    require_kvm!();
    let f = run(["cpu", "host", "--json"], EXIT);
    f.assert_success();
    let h: serde_json::Value = serde_json::from_str(&f.stdout())
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", f.transcript()));
    let features: Vec<&str> = h["features"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    // The guest's CPL 0 view agrees with the host tool on what KVM controls.
    let g = report(&[]);
    let cpu = vmm_guest::parse_report(&g.stdout()).cpu.expect("cpu");
    assert_eq!(h["vendor"].as_str(), Some(cpu.vendor.as_str()));
    let x2apic = cpu.leaves[&1][2] & (1 << 21) != 0;
    assert_eq!(features.contains(&"x2apic"), x2apic, "{features:?}");
    for f in &features {
        assert!(!f.is_empty() && !f.contains(' '), "{f}");
    }
    assert!(h["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{h}");
}

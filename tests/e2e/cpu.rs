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
    // A `--cpu host` guest's CPL 0 view agrees with the host tool on what
    // KVM controls.
    let g = report(&["--cpu", "host"]);
    let cpu = vmm_guest::parse_report(&g.stdout()).cpu.expect("cpu");
    assert_eq!(h["vendor"].as_str(), Some(cpu.vendor.as_str()));
    let x2apic = cpu.leaves[&1][2] & (1 << 21) != 0;
    assert_eq!(features.contains(&"x2apic"), x2apic, "{features:?}");
    for f in &features {
        assert!(!f.is_empty() && !f.contains(' '), "{f}");
    }
    assert!(h["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{h}");
}

/// This host's `vmm cpu host --json`, and a simulated host B: the same
/// without `x2apic` and `cx16` (two features this KVM really offers and the
/// guest reads at CPL 0, leaf 1 ECX bits 21 and 13).
fn hosts() -> (crate::common::TempPath, crate::common::TempPath) {
    let f = run(["cpu", "host", "--json"], EXIT);
    f.assert_success();
    let mut h: serde_json::Value = serde_json::from_str(&f.stdout()).expect("host json");
    let a = crate::common::TempPath::new("host-a", "json");
    std::fs::write(a.path(), h.to_string()).expect("write host A");
    let features = h["features"].as_array_mut().expect("features");
    for gone in ["x2apic", "cx16"] {
        assert!(features.iter().any(|v| v == gone), "this host lacks {gone}");
    }
    features.retain(|v| v != "x2apic" && v != "cx16");
    let b = crate::common::TempPath::new("host-b", "json");
    std::fs::write(b.path(), h.to_string()).expect("write host B");
    (a, b)
}

/// Leaf 1 ECX as the guest last reported it.
fn leaf1_ecx(lines: &[String]) -> u64 {
    let cpu = vmm_guest::parse_report(&lines.join("\n")).cpu.expect("cpu");
    cpu.leaves[&1][2]
}

#[test]
fn a_feature_turned_off_is_gone_and_one_the_host_lacks_is_refused() {
    require_kvm!();
    let with = leaf1_ecx(&report(&["--cpu", "host"]).lines);
    assert_ne!(with & (1 << 21), 0, "x2apic with --cpu host");
    let without = leaf1_ecx(&report(&["--cpu", "host,x2apic=off"]).lines);
    assert_eq!(without & (1 << 21), 0, "x2apic=off");
    assert_eq!(with & !(1 << 21), without, "only x2apic changed");
    for (spec, want) in [
        (
            "host,+pcid",
            "host doesn't support requested feature: CPUID[eax=01h,ecx=00h].ECX.pcid [bit 17]",
        ),
        ("host,+no-such-feature", "unknown feature `no-such-feature`"),
        ("epyc", "unknown CPU model `epyc`"),
        (
            "qemu64,+pcid",
            "host doesn't support requested feature: CPUID[eax=01h,ecx=00h].ECX.pcid [bit 17]",
        ),
    ] {
        let f = run(["run", "-m", "64M", "--cpu", spec], EXIT);
        assert_eq!(f.status.code(), Some(2), "{spec}\n{}", f.transcript());
        assert!(
            f.stderr.contains(want),
            "{spec}: want `{want}`\n{}",
            f.stderr
        );
    }
}

#[test]
fn two_hosts_the_seeds_way_refused_then_the_baseline_migrates_a_to_b_to_a() {
    require_kvm!();
    let (a, b) = hosts();
    let b_arg = b.arg();
    // `--cpu host` on A, to B (which lacks x2apic and cx16): refused before
    // any RAM moves, naming both; A keeps running.
    let mut src = Running::ab_source(
        &["-m", "64M", "--cpu", "host", "--append", "workload=ab"],
        "host A, --cpu host",
    );
    let (dst, uri) = Running::destination(&["--host-cpu", &b_arg], "host B");
    let m = src.migrate(&uri);
    let d = dst.vmm.finish(EXIT);
    for want in [
        "CPUID[eax=01h,ecx=00h].ECX.x2apic [bit 21]",
        "CPUID[eax=01h,ecx=00h].ECX.cx16 [bit 13]",
        "start the source with --cpu host,cx16=off,x2apic=off",
    ] {
        assert!(
            !m.status.success() && m.stderr.contains(want) && d.stderr.contains(want),
            "want `{want}`\n{}\n{}",
            m.transcript(),
            d.transcript()
        );
    }
    src.assert_counting("host A after the refusal");
    src.quit("host A");

    // Both started with the baseline `vmm cpu baseline` prints for them.
    let bl = run(["cpu", "baseline", &a.arg(), &b_arg], EXIT);
    bl.assert_success();
    let option = |host: &str| -> String {
        let line = bl
            .lines
            .iter()
            .find(|l| l.starts_with(&format!("{host}: vmm run --cpu ")))
            .unwrap_or_else(|| panic!("no line for {host}\n{}", bl.transcript()));
        line[format!("{host}: vmm run --cpu ").len()..].to_string()
    };
    let (for_a, for_b) = (option(&a.arg()), option(&b_arg));
    assert_eq!(for_a, "host,cx16=off,x2apic=off", "{}", bl.transcript());
    assert_eq!(for_b, "host", "{}", bl.transcript());
    let baseline = for_a.as_str();
    let a1 = Running::ab_source(
        &["-m", "64M", "--cpu", baseline, "--append", "workload=ab"],
        "host A, baseline",
    );
    let ecx = leaf1_ecx(a1.vmm.seen());
    assert_eq!(ecx & ((1 << 21) | (1 << 13)), 0, "the baseline guest");
    let (mut b1, uri) = Running::destination(&["--host-cpu", &b_arg, "--cpu", "host"], "host B");
    a1.migrate_summary(&uri, "A -> B");
    a1.handed_over(&mut b1, "A -> B");
    let (mut a2, uri) = Running::destination(&[], "host A again");
    b1.migrate_summary(&uri, "B -> A");
    b1.handed_over(&mut a2, "B -> A");
    let range = a2.ab.expect("ab range");
    a2.verify_ab(range, "A -> B -> A");
    a2.ctl_ok(&["cont"], "A again");
    // The guest reboots here as the same CPU it started with.
    a2.reset_and_report("A again");
    assert_eq!(leaf1_ecx(a2.vmm.seen()), ecx, "the guest's CPU changed");
    a2.quit("host A again");
}

#[test]
fn cpu_baseline_prints_the_seeds_answer_for_its_two_hosts() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/cpu");
    let (a, b) = (
        format!("{dir}/seed-host-a.json"),
        format!("{dir}/seed-host-b.json"),
    );
    let f = run(["cpu", "baseline", &a, &b], EXIT);
    f.assert_success();
    assert!(
        f.lines
            .contains(&format!("{a}: vmm run --cpu host,pcid=off,stibp=off"))
            && f.lines
                .contains(&format!("{b}: vmm run --cpu host,taa-no=off")),
        "{}",
        f.transcript()
    );
}

#[test]
fn cpu_compare_names_what_a_host_lacks_for_a_guest() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/cpu");
    let (a, b) = (
        format!("{dir}/seed-host-a.json"),
        format!("{dir}/seed-host-b.json"),
    );
    let f = run(["cpu", "compare", &a, &b], EXIT);
    assert_eq!(f.status.code(), Some(1), "{}", f.transcript());
    for want in [".pcid [bit 17]", ".stibp [bit 27]"] {
        assert!(
            f.stdout().contains(want),
            "want `{want}`\n{}",
            f.transcript()
        );
    }
    let same = run(["cpu", "compare", &a, &a], EXIT);
    same.assert_success();
    assert!(same.stdout().starts_with("works:"), "{}", same.transcript());
}

#[test]
fn the_default_cpu_is_the_qemu64_model_enforced_on_this_host() {
    require_kvm!();
    // qemu64 (as this project defines it: without pni and svm) has cx16, not x2apic.
    let ecx = leaf1_ecx(&report(&[]).lines);
    assert_ne!(ecx & (1 << 13), 0, "cx16");
    assert_eq!(ecx & (1 << 21), 0, "x2apic is not a qemu64 feature");
    let on = leaf1_ecx(&report(&["--global", "qemu64-x86_64-cpu.x2apic=on"]).lines);
    assert_ne!(on & (1 << 21), 0, "--global turns a model feature on");
    let named = leaf1_ecx(&report(&["--cpu", "qemu64,+x2apic,-cx16"]).lines);
    assert_eq!(named, (on & !(1 << 13)), "--cpu qemu64,+x2apic,-cx16");
    // A model feature this host lacks: refused at once, exit 2.
    let f = run(
        ["run", "-m", "64M", "--global", "qemu64-x86_64-cpu.pni=on"],
        EXIT,
    );
    assert_eq!(f.status.code(), Some(2), "{}", f.transcript());
    assert!(
        f.stderr.contains(
            "host doesn't support requested feature: CPUID[eax=01h,ecx=00h].ECX.pni [bit 0]"
        ),
        "{}",
        f.stderr
    );
}

#[test]
fn cpu_models_says_which_model_runs_here() {
    require_kvm!();
    let f = run(["cpu", "models", "--json"], EXIT);
    f.assert_success();
    let v: serde_json::Value = serde_json::from_str(&f.stdout()).expect("json");
    let model = |n: &str| {
        v.as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == n).cloned())
            .unwrap_or_else(|| panic!("no model {n}: {v}"))
    };
    // The default model runs here (enforce holds for it); so does `host`.
    assert_eq!(model("qemu64")["unavailable"], serde_json::json!([]), "{v}");
    assert_eq!(model("host")["unavailable"], serde_json::json!([]), "{v}");
}

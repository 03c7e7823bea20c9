//! Every cell of the seed document's two migration tables, run for real:
//! source `vmm run --as-release A -M M --control ...` (guest `ab` workload)
//! and destination `vmm run --as-release B -M M --incoming ...`, on KVM.
//!
//! The expected outcome of each cell is not written here: it is the
//! prediction of the matrix library (`vmm::release::matrix`, the same code as
//! `vmm compat matrix`) over the embedded release locks. A predicted success
//! must migrate (the destination reports `running`, keeps counting, its
//! memory passes `verify-ab`, `ctl status` names release B, and the guest
//! rebooted there by `ctl system-reset` reports the same hardware as it did
//! at boot on the source); a predicted
//! failure must be refused from the manifest, before any RAM moves
//! ("the destination refused the stream"), naming every differing property
//! with both values, and the source guest must keep running.
//!
//! Guests are small (64 MiB, `ab.mib=1`) so one cell takes a few seconds;
//! cells run two at a time. Every child is a [`crate::common::Vmm`] guard
//! (killed on drop); every wait is bounded.

use crate::common::{self, EXIT, Running, flat, hardware_report};
use crate::require_kvm;
use compat_runtime::release::{Difference, Verdict};
use std::time::Instant;

/// The guest's workload: a 1 MiB a-b range keeps pre-copy short.
const AB: &str = "workload=ab ab.mib=1";
const MEM: &str = "64M";
/// Cells run concurrently (the development machine has 2 cores).
const PARALLEL: usize = 2;

/// The matrix library's verdicts for `machine` over `releases`, every
/// ordered pair (source, destination).
fn predictions(machine: &str, releases: &[&str]) -> Vec<vmm::release::matrix::Cell> {
    let catalog = vmm::builder::config::catalog();
    let all = vmm::release::matrix::with_next(catalog).expect("embedded locks");
    let names: Vec<String> = releases.iter().map(|r| r.to_string()).collect();
    let locks = vmm::release::matrix::select(&all, &names).expect("releases");
    vmm::release::matrix::matrix(&locks, &[machine.to_string()], catalog)
}

/// What a refusal must say for one predicted difference.
fn expected_reason(d: &Difference) -> Vec<String> {
    match d {
        Difference::Property {
            device,
            property,
            source,
            destination,
            ..
        } => vec![format!(
            "property `{device}.{property}` differs: the stream has {}, this destination has {}",
            source.as_deref().unwrap_or("(absent)"),
            destination.as_deref().unwrap_or("(absent)")
        )],
        Difference::SectionVersion { section, .. } | Difference::Layout { section, .. } => {
            vec![format!("section `{section}`")]
        }
        Difference::UnknownSection { section } => {
            vec![format!("section `{section}` is unknown")]
        }
        other => panic!("no run-time check for a predicted {other:?}"),
    }
}

/// One cell: runs it and checks it against the matrix's verdict.
fn run_cell(cell: &vmm::release::matrix::Cell) -> String {
    let (m, a, b) = (&cell.machine, &cell.source, &cell.destination);
    let ctx = format!("vmm-{a} -M {m} -> vmm-{b} -M {m}");
    let t0 = Instant::now();
    let src_args = ["--as-release", a, "-M", m, "-m", MEM, "--append", AB];
    let mut src = Running::ab_source(&src_args, &ctx);
    // After a reset, the destination's guest reports its hardware and halts.
    let dst_args = [
        "--as-release",
        b,
        "-M",
        m,
        "-m",
        MEM,
        "--append",
        "workload=report after=halt",
    ];
    let (mut dst, uri) = Running::destination(&dst_args, &ctx);
    let mig = src.migrate(&uri);
    match &cell.verdict {
        Verdict::Works => {
            assert!(
                mig.status.success(),
                "{ctx}: predicted to work\n{}",
                mig.transcript()
            );
            let s = src.handed_over(&mut dst, &ctx);
            dst.assert_counting(&ctx);
            dst.assert_counting(&ctx);
            let ab = dst.ab.expect("ab range");
            dst.verify_ab(ab, &ctx);
            dst.ctl_ok(&["cont"], &ctx);
            dst.assert_counting(&format!("{ctx} (after verify-ab)"));
            let st = dst.status(&ctx);
            assert_eq!(st["release"], b.as_str(), "{ctx}: {st}");
            assert_eq!(st["machine_type"], m.as_str(), "{ctx}: {st}");
            // Same hardware: the guest rebooted on the destination reports
            // what it reported at boot on the source.
            dst.reset_and_report(&format!("{ctx}: reset"));
            assert!(
                hardware_report(&s.lines)
                    .iter()
                    .any(|l| l.starts_with("aer:")),
                "{ctx}: the source's report\n{}",
                s.transcript()
            );
            assert_eq!(
                hardware_report(dst.vmm.seen()),
                hardware_report(&s.lines),
                "{ctx}: the hardware report changed"
            );
            dst.quit(&ctx);
            format!("{ctx}: works ({:.1} s)", t0.elapsed().as_secs_f64())
        }
        Verdict::Fails { differences, .. } => {
            assert!(
                !mig.status.success(),
                "{ctx}: predicted to fail, but migrated\n{}",
                mig.transcript()
            );
            let d = dst.vmm.finish(EXIT);
            let (mig_err, dst_err) = (flat(&mig.stderr), flat(&d.stderr));
            assert!(
                mig_err.contains("the destination refused the stream"),
                "{ctx}: not refused from the manifest (before RAM)\n{}",
                mig.transcript()
            );
            assert!(
                !d.status.success(),
                "{ctx}: destination exit\n{}",
                d.transcript()
            );
            assert!(
                !d.stderr.contains("incoming: running")
                    && d.lines.iter().all(|l| l.trim().is_empty()),
                "{ctx}: the destination started a guest\n{}",
                d.transcript()
            );
            for diff in differences {
                for want in expected_reason(diff) {
                    assert!(
                        mig_err.contains(&want) && dst_err.contains(&want),
                        "{ctx}: the refusal must say `{want}`\n--- migrate ---\n{}\n--- destination ---\n{}",
                        mig.transcript(),
                        d.transcript()
                    );
                }
            }
            src.assert_counting(&format!("{ctx} (after the refusal)"));
            let st = src.status(&ctx);
            assert_eq!(st["state"], "running", "{ctx}: {st}");
            assert_eq!(st["release"], a.as_str(), "{ctx}: {st}");
            src.quit(&ctx);
            format!(
                "{ctx}: refused as predicted ({} difference(s), {:.1} s)",
                differences.len(),
                t0.elapsed().as_secs_f64()
            )
        }
        Verdict::NotPossible { .. } => unreachable!("filtered out by the caller"),
    }
}

/// Runs every cell, [`PARALLEL`] at a time; prints one line per cell.
fn run_cells(cells: &[vmm::release::matrix::Cell]) {
    for chunk in cells.chunks(PARALLEL) {
        let done: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|c| sc.spawn(move || run_cell(c)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for line in done {
            println!("{line}");
        }
    }
}

/// Seed cases 1–6: `pc-5.1` (and case 1's `pc-5.2`) over 5.1/5.2.
#[test]
fn seed_cases_1_to_6_over_5_1_and_5_2() {
    require_kvm!();
    let p51 = predictions("pc-5.1", &["5.1", "5.2"]);
    let p52 = predictions("pc-5.2", &["5.1", "5.2"]);
    let pick = |p: &[vmm::release::matrix::Cell], a: &str, b: &str| {
        p.iter()
            .find(|c| c.source == a && c.destination == b)
            .cloned()
            .expect("cell")
    };
    // Case 4: 5.1 does not know pc-5.2: refused when started, both ways.
    let c4 = pick(&p52, "5.1", "5.1");
    assert!(
        matches!(&c4.verdict, Verdict::NotPossible { release, machine } if release == "5.1" && machine == "pc-5.2"),
        "{c4:?}"
    );
    for extra in [&[][..], &["--incoming", "tcp:127.0.0.1:1"][..]] {
        let mut args = vec!["run", "--as-release", "5.1", "-M", "pc-5.2", "-m", MEM];
        args.extend(extra);
        let f = common::run(&args, EXIT);
        assert!(
            !f.status.success()
                && f.stderr
                    .contains("release 5.1 does not know machine type `pc-5.2`")
                && f.lines.iter().all(|l| l.trim().is_empty()),
            "case 4 {args:?}\n{}",
            f.transcript()
        );
    }
    let cells = vec![
        pick(&p52, "5.2", "5.2"), // case 1
        pick(&p51, "5.1", "5.1"), // case 2
        pick(&p51, "5.2", "5.2"), // case 3
        pick(&p51, "5.2", "5.1"), // case 5
        pick(&p51, "5.1", "5.2"), // case 6
    ];
    assert!(
        cells.iter().all(|c| c.verdict.works()),
        "the seed says all work: {cells:?}"
    );
    run_cells(&cells);
}

/// The `pc-7.2` lines over 7.2/8.0/8.0.1: all nine ordered pairs.
#[test]
fn pc_7_2_over_7_2_8_0_8_0_1_all_nine_pairs() {
    require_kvm!();
    let cells = predictions("pc-7.2", &["7.2", "8.0", "8.0.1"]);
    assert_eq!(cells.len(), 9);
    let fails: Vec<_> = cells
        .iter()
        .filter(|c| !c.verdict.works())
        .map(|c| format!("{}->{}", c.source, c.destination))
        .collect();
    // The seed: 7.2<->8.0 and 8.0<->8.0.1 fail, everything else works.
    assert_eq!(fails, ["7.2->8.0", "8.0->7.2", "8.0->8.0.1", "8.0.1->8.0"]);
    run_cells(&cells);
}

/// `--as-release R` presents R's lock: the guest reads 8.0's AER mask on
/// `pc-7.2` under 8.0, and 7.2's (none) under 8.0.1 and this build.
#[test]
fn as_release_presents_the_locks_register_values() {
    require_kvm!();
    let aer = |args: &[&str]| {
        let mut all = vec!["run", "-m", MEM, "--append", "workload=report"];
        all.extend(args);
        let f = common::run(&all, EXIT);
        f.assert_success();
        f.fact("aer", "uncor_mask")
            .unwrap_or_else(|| panic!("no aer: line\n{}", f.transcript()))
    };
    let r80 = aer(&["--as-release", "8.0", "-M", "pc-7.2"]);
    let on = aer(&[
        "-M",
        "pc-7.2",
        "--global",
        "pci-device.x-pcie-err-unc-mask=on",
    ]);
    assert_ne!(r80, "0x0");
    assert_eq!(
        r80, on,
        "8.0's pc-7.2 is this build's pc-7.2 with the mask on"
    );
    assert_eq!(aer(&["--as-release", "8.0.1", "-M", "pc-7.2"]), "0x0");
    assert_eq!(aer(&["--as-release", "7.2", "-M", "pc-7.2"]), "0x0");
    assert_eq!(aer(&["-M", "pc-7.2"]), "0x0");
    assert_eq!(aer(&["--as-release", "8.0", "-M", "pc-8.0"]), r80);
    let f = common::run(["run", "--as-release", "9.9", "-M", "pc-7.2"], EXIT);
    assert!(
        !f.status.success() && f.stderr.contains("release `9.9` has no lock"),
        "{}",
        f.transcript()
    );
}

/// Deprecation at run time: at 10.2 a machine type more than 3 years old
/// (`pc-5.1`) warns in the reference's words and still runs; a supported one
/// (`pc-8.0`) prints nothing; the deprecated `migrate` options of the
/// reference print their replacement and refuse.
#[test]
fn deprecation_lifecycle_at_run_time() {
    require_kvm!();
    let f = common::run(
        [
            "run",
            "-M",
            "pc-5.1",
            "-m",
            MEM,
            "--append",
            "workload=report",
        ],
        EXIT,
    );
    f.assert_success();
    assert!(
        f.stderr.contains("vmm: warning: Machine type 'pc-5.1' is deprecated: machines more than 3 years old are subject to deletion after 6 years"),
        "{}",
        f.transcript()
    );
    assert!(
        f.stdout().contains("report:"),
        "the guest ran: {}",
        f.transcript()
    );
    let f = common::run(
        [
            "run",
            "-M",
            "pc-8.0",
            "-m",
            MEM,
            "--append",
            "workload=report",
        ],
        EXIT,
    );
    f.assert_success();
    assert!(!f.stderr.contains("deprecated"), "{}", f.transcript());
    for (opt, text) in [
        (
            "--inc",
            "the `inc` option of the migrate command is deprecated since 8.2; use instead: blockdev-mirror over NBD",
        ),
        (
            "--blk",
            "the `blk` option of the migrate command is deprecated since 8.2",
        ),
        ("--compress", "multifd compression"),
    ] {
        let f = common::run(
            [
                "migrate",
                "--control",
                "/nonexistent/vmm.sock",
                "tcp:127.0.0.1:1",
                opt,
            ],
            EXIT,
        );
        let one_line = flat(&f.stderr);
        assert!(
            !f.status.success() && one_line.contains(&format!("{opt} is not supported")),
            "{opt}\n{}",
            f.transcript()
        );
        assert!(
            one_line.contains(text),
            "{opt}: the replacement text\n{one_line}"
        );
    }
}

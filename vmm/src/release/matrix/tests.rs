//! The seed document's tables, cell for cell, from the embedded locks.

use super::*;
use devices::generated::CATALOG;

fn run_text(machine: Option<&str>, releases: &[&str]) -> String {
    let args = MatrixArgs {
        machine: machine.map(str::to_string),
        releases: releases.iter().map(|s| s.to_string()).collect(),
        json: false,
    };
    let mut out = String::new();
    run(&args, &CATALOG, &mut out).expect("matrix");
    out
}

fn verdict(src: &str, dst: &str, machine: &str) -> Verdict {
    let all = with_next(&CATALOG).expect("locks");
    let l = |r: &str| all.iter().find(|l| l.release == r).expect("lock");
    device_fix(migrate_with(l(src), l(dst), machine, &|t, p| {
        settable(&CATALOG, dst, t, p)
    }))
}

fn works(src: &str, dst: &str, machine: &str) -> bool {
    verdict(src, dst, machine).works()
}

#[test]
fn seed_cases_1_to_6() {
    // 1: qemu-5.2 -M pc-5.2 -> qemu-5.2 -M pc-5.2 works.
    assert!(works("5.2", "5.2", "pc-5.2"));
    // 2: qemu-5.1 -M pc-5.1 -> qemu-5.1 -M pc-5.1 works.
    assert!(works("5.1", "5.1", "pc-5.1"));
    // 3: qemu-5.2 -M pc-5.1 -> qemu-5.2 -M pc-5.1 works.
    assert!(works("5.2", "5.2", "pc-5.1"));
    // 4: qemu-5.1 -M pc-5.2: not possible, 5.1 does not know pc-5.2.
    assert_eq!(
        verdict("5.1", "5.1", "pc-5.2"),
        Verdict::NotPossible {
            release: "5.1".into(),
            machine: "pc-5.2".into()
        }
    );
    // 5: newer to older, 6: older to newer: both work thanks to hw_compat_5_1.
    assert!(works("5.2", "5.1", "pc-5.1"));
    assert!(works("5.1", "5.2", "pc-5.1"));
    insta::assert_snapshot!(run_text(None, &["5.1", "5.2"]));
}

#[test]
fn without_hw_compat_5_1_cases_5_and_6_would_fail_on_num_queues() {
    let all = with_next(&CATALOG).expect("locks");
    let l51 = all.iter().find(|l| l.release == "5.1").expect("5.1");
    let mut l52 = all
        .iter()
        .find(|l| l.release == "5.2")
        .expect("5.2")
        .clone();
    let m = l52
        .machine
        .iter_mut()
        .find(|m| m.name == "pc-5.1")
        .expect("pc-5.1");
    m.props
        .get_mut("virtio-blk-device")
        .and_then(|p| p.get_mut("num-queues"))
        .map(|v| *v = "auto".into())
        .expect("num-queues");
    let Verdict::Fails { differences, .. } = compat_runtime::release::migrate(&l52, l51, "pc-5.1")
    else {
        panic!("expected a failure")
    };
    assert_eq!(
        differences[0].to_string(),
        "virtio-blk-device.num-queues: auto vs 1"
    );
}

#[test]
fn seed_pc_7_2_lines() {
    for (src, dst, ok) in [
        ("7.2", "7.2", true),
        ("8.0", "8.0", true),
        ("8.0", "7.2", false),
        ("7.2", "8.0", false),
        ("8.0.1", "8.0.1", true),
        ("8.0.1", "7.2", true),
        ("7.2", "8.0.1", true),
        ("8.0", "8.0.1", false),
        ("8.0.1", "8.0", false),
    ] {
        assert_eq!(works(src, dst, "pc-7.2"), ok, "{src} -> {dst}");
    }
    insta::assert_snapshot!(run_text(Some("pc-7.2"), &["7.2", "8.0", "8.0.1"]));
}

#[test]
fn sticky_aer_mask_from_8_0_to_8_0_1_and_on() {
    let Verdict::Fails { differences, fix } = verdict("8.0", "8.0.1", "pc-7.2") else {
        panic!("8.0 -> 8.0.1 must fail")
    };
    assert_eq!(
        differences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["pcie-root-port.x-pcie-err-unc-mask: on vs off"]
    );
    // The seed's own fix: the root port started with the mask on.
    assert_eq!(fix, vec!["--device pcie-root-port,x-pcie-err-unc-mask=on"]);
    // With the mask pinned on, the guest goes on to 8.0.1 and then 8.2.
    let all = with_next(&CATALOG).expect("locks");
    let pinned = |r: &str| {
        let mut l = all.iter().find(|l| l.release == r).expect("lock").clone();
        for m in &mut l.machine {
            for props in m.props.values_mut() {
                if let Some(v) = props.get_mut("x-pcie-err-unc-mask") {
                    *v = "on".into();
                }
            }
        }
        l
    };
    let l80 = all.iter().find(|l| l.release == "8.0").expect("8.0");
    let (l801, l82) = (pinned("8.0.1"), pinned("8.2"));
    use compat_runtime::release::migrate;
    assert!(migrate(l80, &l801, "pc-7.2").works());
    assert!(migrate(&l801, &l82, "pc-7.2").works());
    assert!(migrate(&l82, &l82, "pc-7.2").works());
    // 7.2 and 8.0 predate the property: no fix is offered towards them.
    for (src, dst) in [("8.0", "7.2"), ("7.2", "8.0"), ("8.0.1", "8.0")] {
        let Verdict::Fails { fix, .. } = verdict(src, dst, "pc-7.2") else {
            panic!("{src} -> {dst} must fail")
        };
        assert!(fix.is_empty(), "{src} -> {dst}: {fix:?}");
    }
}

#[test]
fn bad_input_is_named_with_a_suggestion() {
    let mut out = String::new();
    let args = MatrixArgs {
        releases: vec!["8.01".into()],
        ..Default::default()
    };
    let e = run(&args, &CATALOG, &mut out).unwrap_err().to_string();
    assert!(e.contains("unknown release `8.01`"), "{e}");
    let args = MatrixArgs {
        machine: Some("pc-7.3".into()),
        ..Default::default()
    };
    let e = run(&args, &CATALOG, &mut out).unwrap_err().to_string();
    assert!(e.contains("did you mean"), "{e}");
}

#[test]
fn alias_and_json() {
    let args = MatrixArgs {
        machine: Some("pc".into()),
        releases: vec!["10.2".into()],
        json: true,
    };
    let mut out = String::new();
    run(&args, &CATALOG, &mut out).expect("matrix");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["cells"][0]["machine"], "pc-10.2");
    assert_eq!(v["cells"][0]["verdict"], "works");
}

#[test]
fn every_embedded_lock_parses_and_the_full_matrix_is_complete() {
    let all = with_next(&CATALOG).expect("locks");
    assert!(all.len() >= 12);
    let refs: Vec<&Lock> = all.iter().collect();
    let ms = machines(&refs, None, &CATALOG).expect("machines");
    let cells = matrix(&refs, &ms, &CATALOG);
    assert_eq!(cells.len(), ms.len() * all.len() * all.len());
}

#[test]
fn this_build_migrates_with_every_release_except_where_an_erratum_says_otherwise() {
    let all = with_next(&CATALOG).expect("locks");
    let next = all.last().expect("next");
    for l in &all {
        for m in &l.machine {
            let there = compat_runtime::release::migrate(l, next, &m.name).works();
            let back = compat_runtime::release::migrate(next, l, &m.name).works();
            // 7.2.1's retroactive `virtio-rng-pci` edit does not count: no
            // machine type builds a virtio-rng-pci, so no guest sees it.
            // 5.1 … 8.2 shipped x-pcie-ext-tag on (erratum pcie-ext-tag, fixed
            // in 8.2.1, declared after those locks were frozen).
            let ext_tag = l.release != NEXT
                && compat_runtime::version::cmp_release(&l.release, "8.2.1").is_lt();
            let erratum = ext_tag
                || l.errata
                    .iter()
                    .any(|e| e == "aer-uncor-mask" && m.name.as_str() <= "pc-7.2");
            assert_eq!(there && back, !erratum, "{} {}", l.release, m.name);
        }
    }
}

#[test]
fn next_can_be_named_and_clap_parses_the_flags() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MatrixArgs,
    }
    let cli = Cli::parse_from(["matrix", "-M", "pc-7.2", "--releases", "8.0,next", "--json"]);
    assert_eq!(cli.args.releases, vec!["8.0", "next"]);
    let mut out = String::new();
    run(&cli.args, &CATALOG, &mut out).expect("matrix");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let cells = v["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4);
    assert_eq!(cells[1]["destination"], "next");
    assert_eq!(cells[1]["verdict"], "fails");
    assert_eq!(
        cells[1]["fix"][0],
        "--device pcie-root-port,x-pcie-err-unc-mask=on"
    );
}

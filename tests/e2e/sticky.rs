//! The seed's story of a sticky property, end to end (DESIGN.md §1,
//! post-release breakage): a `pc-7.2` guest started on 8.0 has the AER
//! uncorrectable-error mask on (8.0's erratum) and must keep it on every
//! later migration until it is powered off:
//!
//! 8.0 -> 8.0.1 (refused by default, naming the root port; works with the
//! seed's own fix, `--device pcie-root-port,x-pcie-err-unc-mask=on`: only
//! the device types the machine instantiates are compared) -> 8.0.1 adopting
//! the stream (only `--incoming`) -> this build (only `--incoming`), where
//! `ctl status` shows the property pinned with provenance `stream`, a guest
//! reset (`ctl system-reset`, the same path as the guest's own reset through
//! port 0xcf9) boots a guest that reads the same AER mask as the 8.0 guest
//! did, and only a fresh `vmm run` (after power-off) reads it as 0.
//!
//! The guest reads its AER mask at boot (the `aer:` line of its report), so
//! the check after a migration is the report after a reset; before it, the
//! destination's pinned configuration is read through `ctl status`.

use crate::common::{self, EXIT, Running, flat};
use crate::require_kvm;

const MEM: &str = "64M";
const AB: &str = "workload=ab ab.mib=1";
const PROP: &str = "x-pcie-err-unc-mask";

/// The AER mask the guest read at its last boot.
fn aer_mask(lines: &[String]) -> Option<String> {
    common::facts(lines, "aer", "uncor_mask").pop()
}

/// A `pc-7.2` guest on release 8.0 running the `ab` workload.
fn source_on_8_0() -> Running {
    let args = [
        "--as-release",
        "8.0",
        "-M",
        "pc-7.2",
        "-m",
        MEM,
        "--append",
        AB,
    ];
    Running::ab_source(&args, "8.0 source")
}

/// The pinned `(device, value, provenance)` of [`PROP`] in a status answer.
fn pinned(st: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = st["pinned"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["property"] == PROP)
        .map(|p| {
            let f = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (f("device"), f("value"), f("provenance"))
        })
        .collect();
    out.sort();
    out
}

/// [`PROP`] pinned on the one PCI device the machine builds.
fn all_pinned(value: &str, provenance: &str) -> Vec<(String, String, String)> {
    vec![(
        "pcie-root-port".to_string(),
        value.to_string(),
        provenance.to_string(),
    )]
}

/// Every pinned [`PROP`] names where it was first set (`origin`).
fn assert_origin(st: &serde_json::Value, want: &str) {
    let pins = st["pinned"].as_array().cloned().unwrap_or_default();
    let origins: Vec<_> = pins
        .iter()
        .filter(|p| p["property"] == PROP)
        .map(|p| p["origin"].as_str().unwrap_or("(none)").to_string())
        .collect();
    assert!(
        !origins.is_empty() && origins.iter().all(|o| o == want),
        "origin: want `{want}`, status {st}"
    );
}

/// A fresh `pc-7.2` guest's report on this build (after a power-off).
fn fresh_pc_7_2() -> common::Finished {
    let f = common::run(
        [
            "run",
            "-M",
            "pc-7.2",
            "-m",
            MEM,
            "--append",
            "workload=report",
        ],
        EXIT,
    );
    f.assert_success();
    f
}

/// A migration that must be refused from the manifest naming `want`; the
/// source keeps running.
fn refused(src: &mut Running, dst_args: &[&str], want: &str, ctx: &str) {
    let (dst, uri) = Running::destination(dst_args, ctx);
    let m = src.migrate(&uri);
    let d = dst.vmm.finish(EXIT);
    let (me, de) = (flat(&m.stderr), flat(&d.stderr));
    assert!(
        !m.status.success()
            && me.contains("the destination refused the stream")
            && me.contains(want)
            && de.contains(want)
            && !d.status.success(),
        "{ctx}: expected a refusal naming `{want}`\n{}\n{}",
        m.transcript(),
        d.transcript()
    );
    src.assert_counting(&format!("{ctx}: the source after the refusal"));
}

/// A migration that must work; returns the destination, running.
fn works(src: Running, dst_args: &[&str], ctx: &str) -> Running {
    let (mut dst, uri) = Running::destination(dst_args, ctx);
    let m = src.migrate(&uri);
    assert!(m.status.success(), "{ctx}\n{}", m.transcript());
    src.handed_over(&mut dst, ctx);
    dst.assert_counting(ctx);
    dst
}

#[test]
fn aer_mask_of_8_0_sticks_until_power_off() {
    require_kvm!();
    let mut a = source_on_8_0();
    let mask_8_0 = aer_mask(a.vmm.seen()).expect("the 8.0 guest's aer: line");
    assert_ne!(mask_8_0, "0x0", "8.0 presents the mask on pc-7.2");

    // 8.0.1 started like the source, by default: refused.
    let dflt = ["--as-release", "8.0.1", "-M", "pc-7.2", "-m", MEM];
    refused(
        &mut a,
        &dflt,
        &format!(
            "property `pcie-root-port.{PROP}` differs: the stream has on, this destination has off"
        ),
        "8.0 -> 8.0.1 by default",
    );
    // The seed's fix (and the matrix's): the root port started with the
    // mask on. The abstract `pci-device` and the never-built
    // `virtio-rng-pci` differ too, and are not compared.
    let mut dev = dflt.to_vec();
    let dev_on = format!("pcie-root-port,{PROP}=on");
    dev.extend(["--device", &dev_on]);
    let b = works(a, &dev, "8.0 -> 8.0.1 --device pcie-root-port,...=on");
    let st = b.status("8.0.1 --device");
    assert_eq!(st["release"], "8.0.1");
    assert_eq!(pinned(&st), all_pinned("on", "-device"), "{st}");

    // 8.0.1 adopting the stream's configuration (only --incoming).
    let c = works(b, &["--as-release", "8.0.1"], "8.0.1 -> 8.0.1 adopting");
    let st = c.status("8.0.1 adopting");
    assert_origin(&st, "-device on release 8.0.1");
    assert_eq!(
        (st["release"].as_str(), st["machine_type"].as_str()),
        (Some("8.0.1"), Some("pc-7.2"))
    );
    assert_eq!(pinned(&st), all_pinned("on", "stream"), "{st}");

    // This build, only --incoming; its own boots run `workload=report`.
    let d = works(
        c,
        &["--append", "workload=report after=halt"],
        "8.0.1 -> this build adopting",
    );
    let st = d.status("this build");
    assert_origin(&st, "-device on release 8.0.1");
    assert_eq!(st["release"], "next");
    assert_eq!(st["machine_type"], "pc-7.2");
    assert_eq!(pinned(&st), all_pinned("on", "stream"), "{st}");
    let ab = d.ab.expect("ab range");
    d.verify_ab(ab, "this build");
    d.ctl_ok(&["cont"], "this build");

    // A guest reset reboots with the pinned configuration.
    let mut d = d;
    d.reset_and_report("system-reset");
    assert_eq!(
        aer_mask(d.vmm.seen()).as_deref(),
        Some(mask_8_0.as_str()),
        "after the reset the guest reads 8.0's AER mask\n{}",
        d.vmm.seen().join("\n")
    );
    let st = d.status("after the reset");
    assert_eq!(pinned(&st), all_pinned("on", "stream"), "{st}");

    // Power-off, then a fresh `vmm run`: the property is gone.
    d.quit("power-off");
    let fresh = fresh_pc_7_2();
    assert_eq!(fresh.fact("aer", "uncor_mask").as_deref(), Some("0x0"));
}

/// Adopting straight from 8.0: the origin names 8.0's erratum; a 7.2
/// destination cannot present the mask (the property came with 8.0.1's fix)
/// and refuses to adopt it.
#[test]
fn adopting_from_8_0_names_the_erratum_and_7_2_cannot_adopt_it() {
    require_kvm!();
    let a = source_on_8_0();
    let mut b = works(a, &["--as-release", "8.0.1"], "8.0 -> 8.0.1 adopting");
    let st = b.status("8.0.1 adopting");
    assert_eq!(pinned(&st), all_pinned("on", "stream"), "{st}");
    assert_origin(&st, "release 8.0 (erratum aer-uncor-mask)");
    refused(
        &mut b,
        &["--as-release", "7.2"],
        &format!("release 7.2 cannot present `pcie-root-port.{PROP} = on`"),
        "8.0.1 (adopted) -> 7.2 adopting",
    );
    let text = b.ctl_ok(&["status"], "8.0.1 (adopted)");
    assert!(
        text.lines
            .iter()
            .any(|l| l.contains("first set by release 8.0 (erratum aer-uncor-mask)")),
        "{}",
        text.transcript()
    );
    b.quit("power-off");
}

/// The same story for our own erratum (issue 14): releases 5.1 … 8.2 gave
/// every PCI Express function Extended Tag (DevCap bit 5), which the
/// reference's machine types never had; 8.2.1 fixed it. A `pc-7.2` guest
/// started on 8.2 keeps the bit across 8.2.1 (adopting) and this build
/// until it is powered off; new guests read it clear.
#[test]
fn ext_tag_of_8_2_sticks_until_power_off() {
    require_kvm!();
    const EXT: &str = "x-pcie-ext-tag";
    let devcap = |lines: &[String]| common::facts(lines, "pcie", "devcap").pop();
    let args = [
        "--as-release",
        "8.2",
        "-M",
        "pc-7.2",
        "-m",
        MEM,
        "--append",
        AB,
    ];
    let mut a = Running::ab_source(&args, "8.2 source");
    assert_eq!(
        devcap(a.vmm.seen()).as_deref(),
        Some("0x20"),
        "8.2 sets the bit"
    );

    // 8.2.1 started like the source: refused, naming the root port.
    refused(
        &mut a,
        &["--as-release", "8.2.1", "-M", "pc-7.2", "-m", MEM],
        &format!(
            "property `pcie-root-port.{EXT}` differs: the stream has on, this destination has off"
        ),
        "8.2 -> 8.2.1 by default",
    );
    // 8.2.1 adopting, then this build adopting (its boots run the report).
    let b = works(a, &["--as-release", "8.2.1"], "8.2 -> 8.2.1 adopting");
    let st = b.status("8.2.1 adopting");
    let pin = |st: &serde_json::Value| {
        st["pinned"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["device"] == "pcie-root-port" && p["property"] == EXT)
            .map(|p| (p["value"].to_string(), p["provenance"].to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pin(&st),
        [("\"on\"".to_string(), "\"stream\"".to_string())],
        "{st}"
    );
    let c = works(
        b,
        &["--append", "workload=report after=halt"],
        "8.2.1 -> this build",
    );
    let st = c.status("this build");
    assert_eq!(st["release"], "next");
    assert_eq!(
        pin(&st),
        [("\"on\"".to_string(), "\"stream\"".to_string())],
        "{st}"
    );
    let ab = c.ab.expect("ab range");
    c.verify_ab(ab, "this build");
    c.ctl_ok(&["cont"], "this build");
    let mut c = c;
    c.reset_and_report("system-reset");
    assert_eq!(
        devcap(c.vmm.seen()).as_deref(),
        Some("0x20"),
        "after the reset the guest still has 8.2's Extended Tag\n{}",
        c.vmm.seen().join("\n")
    );
    c.quit("power-off");
    let fresh = fresh_pc_7_2();
    assert_eq!(fresh.fact("pcie", "devcap").as_deref(), Some("0x0"));
}

//! `vmm machines`, `vmm props`, `vmm compat diff`: the real binary, text and
//! JSON, good and bad input.

use crate::common::{EXIT, Finished, run};

fn vmm(args: &[&str]) -> Finished {
    run(args, EXIT)
}

fn ok(args: &[&str]) -> String {
    let f = vmm(args);
    assert!(f.status.success(), "vmm {args:?}\n{}", f.transcript());
    f.stdout()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("valid JSON")
}

/// Runs a bad command: exit status 2, exactly one line on stderr, no panic.
fn bad(args: &[&str]) -> String {
    let f = vmm(args);
    assert_eq!(f.status.code(), Some(2), "vmm {args:?}\n{}", f.transcript());
    let err = f.stderr;
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err
}

/// `value` and `source` of `ty.p` in the JSON answer of `vmm ARGS`.
fn value_source(args: &[&str], ty: &str, p: &str) -> (String, String) {
    let j = json(args);
    let x = j["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["type"] == ty))
        .and_then(|d| d["props"].as_array())
        .and_then(|ps| ps.iter().find(|x| x["name"] == p))
        .unwrap_or_else(|| panic!("{ty}.{p} missing: {j}"));
    let s = |k: &str| x[k].as_str().unwrap_or_default().to_string();
    (s("value"), s("source"))
}

#[test]
fn machines_lists_every_version_and_alias() {
    let out = ok(&["machines"]);
    assert!(out.contains("pc           alias of pc-10.2"), "{out}");
    for v in [
        "5.1", "5.2", "6.0", "6.1", "6.2", "7.0", "7.1", "7.2", "8.0", "8.1", "8.2", "9.0", "9.1",
        "9.2", "10.0", "10.1", "10.2",
    ] {
        assert!(out.contains(&format!("pc-{v} ")), "pc-{v} missing");
    }
    // The lifecycle at 10.2: older than 3 years deprecated, with the reason.
    assert!(
        out.lines().any(|l| l.starts_with("pc-7.2 ")
            && l.contains("deprecated since 10.2: machines more than 3 years old are subject to deletion after 6 years")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("pc-8.0 ") && l.ends_with("(introduced in 8.0, supported)")),
        "{out}"
    );
    let j = json(&["machines", "--json"]);
    let rows = j.as_array().expect("array");
    assert_eq!(rows.len(), 17);
    let newest = rows
        .iter()
        .find(|r| r["name"] == "pc-10.2")
        .expect("pc-10.2");
    assert_eq!(newest["alias"], "pc");
    assert_eq!(newest["lifecycle"], "supported");
    assert_eq!(newest["introduced_in"], "10.2");
    assert_eq!(newest["max_cpus"], 4096);
    let pc51 = rows.iter().find(|r| r["name"] == "pc-5.1").expect("pc-5.1");
    assert_eq!(
        (
            &pc51["lifecycle"],
            &pc51["lifecycle_since"],
            &pc51["max_cpus"]
        ),
        (&"deprecated".into(), &"8.1".into(), &288.into())
    );
    let old = rows.iter().find(|r| r["name"] == "pc-7.1").expect("pc-7.1");
    assert_eq!(
        old["deltas"][old["deltas"].as_array().expect("deltas").len() - 1],
        "hw_compat_7_1"
    );
}

#[test]
fn props_seed_facts() {
    let q = |m: &str, t: &str, p: &str| {
        let args = ["props", "-M", m, t, "--json"];
        assert_eq!(json(&args)["machine"], m);
        value_source(&args, t, p)
    };
    assert_eq!(
        q("pc-5.1", "virtio-blk-device", "num-queues"),
        ("1".into(), "hw_compat_5_1".into())
    );
    assert_eq!(
        q("pc-5.2", "virtio-blk-device", "num-queues"),
        ("auto".into(), "default".into())
    );
    assert_eq!(
        q("pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask").0,
        "off"
    );
    assert_eq!(q("pc-8.0", "pcie-root-port", "x-pcie-err-unc-mask").0, "on");
    assert_eq!(q("pc-7.1", "virtio-blk-device", "queue_reset").0, "off");
    assert_eq!(q("pc-7.2", "virtio-blk-device", "queue_reset").0, "on");
    // A delta on pci-device reaches its subtypes.
    assert_eq!(
        q("pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask").1,
        "hw_compat_7_2 (via pci-device)"
    );
    assert_eq!(
        q("pc-7.2", "virtio-rng-pci", "x-pcie-err-unc-mask").0,
        "off"
    );
}

#[test]
fn props_precedence_global_then_device() {
    let args = ["props", "-M", "pc-7.2", "pcie-root-port", "--json"];
    let g = [
        &args[..],
        &["--global", "pci-device.x-pcie-err-unc-mask=on"],
    ]
    .concat();
    let mask = |args: &[&str]| value_source(args, "pcie-root-port", "x-pcie-err-unc-mask");
    assert_eq!(mask(&g), ("on".into(), "-global".into()));
    let gd = [
        &g[..],
        &["--device", "pcie-root-port,x-pcie-err-unc-mask=off"],
    ]
    .concat();
    assert_eq!(mask(&gd), ("off".into(), "-device".into()));
    let text = ok(&["props", "-M", "pc-5.1", "virtio-blk-device"]);
    assert!(
        text.lines()
            .any(|l| l.contains("num-queues") && l.contains("hw_compat_5_1")),
        "{text}"
    );
}

#[test]
fn props_alias_resolves_to_versioned_name() {
    assert_eq!(
        json(&["props", "-M", "pc", "isa-serial", "--json"])["machine"],
        "pc-10.2"
    );
}

#[test]
fn compat_diff_explains() {
    let out = ok(&["compat", "diff", "pc-7.1", "pc-7.2"]);
    assert!(
        out.contains("deltas applied by pc-7.1 only: hw_compat_7_1"),
        "{out}"
    );
    assert!(
        out.contains(
            "virtio-blk-device.queue_reset: off [hw_compat_7_1 (via virtio-device)] -> on [default]"
        ),
        "{out}"
    );
    let j = json(&["compat", "diff", "pc-7.2", "pc-8.0", "--json"]);
    let d = j["differences"].as_array().expect("differences");
    assert!(
        d.iter()
            .any(|x| x["type"] == "pcie-root-port" && x["property"] == "x-pcie-err-unc-mask")
    );
    let none = json(&["compat", "diff", "pc", "pc-10.2", "--json"]);
    assert_eq!(none["differences"].as_array().map(Vec::len), Some(0));
}

#[test]
fn bad_input_one_line_exit_2() {
    assert!(bad(&["props", "-M", "pc-5.11"]).contains("did you mean `pc-5.1`"));
    assert!(
        bad(&["props", "-M", "pc", "virtio-blk-devic"])
            .contains("did you mean `virtio-blk-device`")
    );
    assert!(
        bad(&["props", "--global", "virtio-blk-device.num-queue=2"])
            .contains("did you mean `num-queues`")
    );
    assert!(
        bad(&["props", "--global", "virtio-blk-device.num-queues=lots"])
            .contains("not an unsigned integer")
    );
    assert!(bad(&["props", "--device", "pcie-root-port,x-speed=17"]).contains("is not one of"));
    assert!(bad(&["props", "--global", "nodot"]).contains("malformed"));
    assert!(bad(&["compat", "diff", "pc-7.1", "pc-7.9"]).contains("unknown machine type"));
}

//! The real compat tree: the seed's facts, the effective-properties table,
//! the second-family fixture, and the staleness check of the generated code.

mod common;

use codegen::Resolved;
use codegen::report::effective;

fn real() -> Resolved {
    let s = common::read(&common::repo().join("compat"));
    let (r, diags) = codegen::check(&s);
    assert!(diags.is_empty(), "{}", codegen::render_plain(&diags, &s));
    r.expect("real tree resolves")
}

fn val(r: &Resolved, m: &str, t: &str, p: &str) -> String {
    effective(r, m, t, p)
        .map(|(v, _)| v.to_string())
        .unwrap_or_else(|| panic!("{m} {t}.{p} missing"))
}

fn prov(r: &Resolved, m: &str, t: &str, p: &str) -> String {
    effective(r, m, t, p).map(|(_, p)| p).unwrap_or_default()
}

#[test]
fn seed_num_queues() {
    let r = real();
    assert_eq!(val(&r, "pc-5.1", "virtio-blk-device", "num-queues"), "1");
    assert_eq!(
        prov(&r, "pc-5.1", "virtio-blk-device", "num-queues"),
        "hw_compat_5_1"
    );
    assert_eq!(val(&r, "pc-5.2", "virtio-blk-device", "num-queues"), "auto");
    assert_eq!(
        prov(&r, "pc-5.2", "virtio-blk-device", "num-queues"),
        "default"
    );
}

#[test]
fn seed_aer_mask_reaches_subtypes() {
    let r = real();
    assert_eq!(
        val(&r, "pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask"),
        "off"
    );
    assert_eq!(
        prov(&r, "pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask"),
        "hw_compat_7_2 (via pci-device)"
    );
    assert_eq!(
        val(&r, "pc-7.2", "virtio-rng-pci", "x-pcie-err-unc-mask"),
        "off"
    );
    assert_eq!(
        val(&r, "pc-8.0", "pcie-root-port", "x-pcie-err-unc-mask"),
        "on"
    );
    assert_eq!(
        val(&r, "pc-5.1", "pcie-root-port", "x-pcie-err-unc-mask"),
        "off"
    );
}

#[test]
fn seed_queue_reset() {
    let r = real();
    assert_eq!(val(&r, "pc-7.1", "virtio-blk-device", "queue_reset"), "off");
    assert_eq!(
        prov(&r, "pc-7.1", "virtio-blk-device", "queue_reset"),
        "hw_compat_7_1 (via virtio-device)"
    );
    assert_eq!(val(&r, "pc-7.2", "virtio-blk-device", "queue_reset"), "on");
}

#[test]
fn oldest_delta_has_the_last_word() {
    // hw_compat_8_0 sets ari-nextfn-1 on for <= 8.0; nothing older overrides it.
    let r = real();
    assert_eq!(val(&r, "pc-8.0", "pci-device", "x-pcie-ari-nextfn-1"), "on");
    assert_eq!(
        val(&r, "pc-8.1", "pci-device", "x-pcie-ari-nextfn-1"),
        "off"
    );
    // pc_compat_6_0 (qemu64 family 6) is older than nothing else; pc-5.1 keeps it.
    assert_eq!(val(&r, "pc-5.1", "qemu64-x86_64-cpu", "family"), "6");
    assert_eq!(val(&r, "pc-6.1", "qemu64-x86_64-cpu", "family"), "15");
    // Family-specific series: pc_compat entries resolve like hw_compat ones.
    assert_eq!(
        val(&r, "pc-6.1", "qemu64-x86_64-cpu", "hv-version-id-build"),
        "7100"
    );
    assert_eq!(
        prov(&r, "pc-6.1", "qemu64-x86_64-cpu", "hv-version-id-build"),
        "pc_compat_6_1 (via x86_64-cpu)"
    );
    // x-pcie-ext-tag: off up to pc-9.1 (hw_compat_9_1), on from 9.2.
    for (m, v) in [
        ("pc-5.1", "off"),
        ("pc-8.2", "off"),
        ("pc-9.1", "off"),
        ("pc-9.2", "on"),
    ] {
        assert_eq!(val(&r, m, "pcie-root-port", "x-pcie-ext-tag"), v, "{m}");
    }
    assert_eq!(
        prov(&r, "pc-9.0", "pcie-root-port", "x-pcie-ext-tag"),
        "hw_compat_9_1 (via pci-device)"
    );
    // 9.0 detects zero pages in multifd; hw_compat_8_2 keeps pc-8.2 legacy.
    assert_eq!(
        val(&r, "pc-8.2", "migration", "zero-page-detection"),
        "legacy"
    );
    assert_eq!(
        val(&r, "pc-9.0", "migration", "zero-page-detection"),
        "multifd"
    );
    // Properties of 10.1 reach pc-10.0 through pc_compat_10_0.
    assert_eq!(
        val(&r, "pc-10.0", "qemu64-x86_64-cpu", "x-arch-cap-always-on"),
        "on"
    );
    assert_eq!(
        val(&r, "pc-10.1", "qemu64-x86_64-cpu", "x-arch-cap-always-on"),
        "off"
    );
}

#[test]
fn newest_machine_has_no_delta_and_alias() {
    let r = real();
    let pc = &r.model.families[0];
    let newest = pc.machines.last().expect("machines");
    assert_eq!(newest.name, "pc-10.2");
    assert_eq!(newest.alias.as_deref(), Some("pc"));
    for t in &r.model.types {
        for p in &t.props {
            assert_eq!(prov(&r, "pc-10.2", &t.name, &p.name), "default");
        }
    }
}

#[test]
fn effective_table_snapshot() {
    insta::assert_snapshot!(
        "effective_properties",
        codegen::report::effective_table(&real())
    );
}

#[test]
fn second_family_shares_hw_compat() {
    let s = common::read(&common::fixtures().join("two-families"));
    let (r, diags) = codegen::check(&s);
    assert!(diags.is_empty(), "{}", codegen::render_plain(&diags, &s));
    let r = r.expect("resolves");
    assert_eq!(val(&r, "pc-1.0", "device", "shared"), "off");
    assert_eq!(val(&r, "q35-1.0", "device", "shared"), "off");
    assert_eq!(val(&r, "pc-1.0", "device", "chipset"), "1");
    assert_eq!(prov(&r, "q35-1.0", "device", "chipset"), "q35_compat_1_5");
    assert_eq!(val(&r, "q35-1.0", "device", "chipset"), "2");
    assert_eq!(val(&r, "q35-1.5", "device", "chipset"), "2");
    assert_eq!(val(&r, "q35-1.5", "device", "shared"), "on");
    assert_eq!(val(&r, "q35-2.0", "device", "chipset"), "3");
    assert_eq!(val(&r, "q35-0.9", "device", "shared"), "off");
    let q35 = &r.model.families[1];
    use codegen::model::LifecycleM;
    assert_eq!(q35.machines[0].lifecycle.rank(), 2);
    assert_eq!(
        q35.machines[0].lifecycle,
        LifecycleM::Removed {
            since: "2.0".into(),
            reason: "declared removed in compat/machines.toml".into()
        }
    );
    assert_eq!(
        q35.machines[2].lifecycle,
        LifecycleM::Deprecated {
            since: "2.0".into(),
            reason: "declared deprecated in compat/machines.toml".into()
        }
    );
    assert_eq!(
        q35.machines.last().and_then(|m| m.alias.as_deref()),
        Some("q35")
    );
    insta::assert_snapshot!("two_families", codegen::report::effective_table(&r));
}

/// The rust-analyzer pattern: the committed generated code must match what
/// the generator produces now. Run `cargo xtask gen` when this fails.
#[test]
fn generated_code_is_fresh() {
    let s = common::read(&common::repo().join("compat"));
    let c = codegen::compile(s).expect("real tree compiles");
    let stale = codegen::output::stale(&common::repo().join("devices/src/generated"), &c.files)
        .expect("read");
    assert!(
        stale.is_empty(),
        "stale generated files (run `cargo xtask gen`): {}",
        stale
            .iter()
            .map(|s| format!("devices/src/generated/{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

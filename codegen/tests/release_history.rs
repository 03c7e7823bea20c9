//! The compat checker replays history on a copy of compat/: the mistakes of
//! the reference's past become build errors, each naming the fix.

mod common;

use common::{TempTree, edit};
use std::path::Path;

fn temp_copy(tag: &str) -> TempTree {
    common::compat_copy(&format!("compat-history-{tag}"))
}

/// Compiles the tree and runs the checker against its locks.
fn check(dir: &Path) -> codegen::release::Checked {
    let c = codegen::compile_dir(dir)
        .expect("io")
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let locks = codegen::release::read_locks(dir).expect("locks");
    codegen::release::check_locks(&c.resolved.model, &c.sources, locks)
}

/// The rendered diagnostics (for snapshots) and their unwrapped text (for
/// exact assertions): messages and help lines.
struct Refusal {
    rendered: String,
    text: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl Refusal {
    fn contains(&self, s: &str) -> bool {
        self.text.contains(s)
    }
}

fn refused(t: &TempTree) -> Refusal {
    let c = check(&t.0);
    assert!(c.failed(), "the checker accepted the edit");
    let text = c
        .diags
        .iter()
        .map(|d| format!("{}\n{}\n", d.message, d.help.as_deref().unwrap_or("")))
        .collect();
    Refusal {
        rendered: c.render(),
        text,
    }
}

#[test]
fn the_real_tree_matches_every_frozen_release() {
    let c = check(&common::repo().join("compat"));
    assert!(c.diags.is_empty(), "{}", c.render());
    assert!(
        c.sources
            .iter()
            .filter(|s| s.name.starts_with("releases/"))
            .count()
            >= 12
    );
}

#[test]
fn removing_hw_compat_5_1_num_queues_is_refused() {
    let t = temp_copy("numq");
    edit(
        &t,
        "deltas/hw_compat.toml",
        r#"{ type = "virtio-blk-device", property = "num-queues", value = "1" },"#,
        "",
    );
    let r = refused(&t);
    assert!(r.contains("default of `virtio-blk-device.num-queues` changed from 1 to auto in `compat/devices/virtio.toml:16`; machine type pc-5.1 would change; add `{ virtio-blk-device, num-queues, 1 }` to `hw_compat_5_1`"), "{}", r.text);
    insta::assert_snapshot!(r.rendered);
}

#[test]
fn removing_the_hw_compat_7_2_aer_entry_is_refused() {
    let t = temp_copy("aer");
    edit(
        &t,
        "deltas/hw_compat.toml",
        r#"{ type = "pci-device", property = "x-pcie-err-unc-mask", value = "off", added_in = "8.0.1" },"#,
        "",
    );
    let r = refused(&t);
    assert!(r.contains("default of `pci-device.x-pcie-err-unc-mask` changed from off to on in `compat/devices/pci.toml:6`; machine types pc-5.1 … pc-7.2 would change; add `{ pci-device, x-pcie-err-unc-mask, off }` to `hw_compat_7_2`"), "{}", r.text);
    insta::assert_snapshot!(r.rendered);
}

#[test]
fn changing_a_default_of_the_newest_released_machine_needs_a_new_machine_type() {
    let t = temp_copy("newest");
    edit(
        &t,
        "devices/virtio.toml",
        r#"name = "discard", type = "bool", default = "on""#,
        r#"name = "discard", type = "bool", default = "off""#,
    );
    let r = refused(&t);
    assert!(
        r.contains("machine types pc-5.1 … pc-10.2 would change"),
        "{}",
        r.text
    );
    assert!(r.contains("add the next machine type"), "{}", r.text);
}

#[test]
fn a_new_vmstate_field_without_since_or_gate_is_refused() {
    let t = temp_copy("field");
    let last = r#"{ name = "writeback", wire = "bool", since = 2 },"#;
    edit(
        &t,
        "devices/virtio.toml",
        last,
        &format!("{last}\n  {{ name = \"discard_sector\", wire = \"u64\" }},"),
    );
    let r = refused(&t);
    assert!(
        r.contains("new VMState field `virtio-blk.discard_sector`"),
        "{}",
        r.text
    );
    insta::assert_snapshot!(r.rendered);
}

#[test]
fn a_new_vmstate_field_with_a_new_version_is_accepted() {
    let t = temp_copy("field-ok");
    let last = r#"{ name = "writeback", wire = "bool", since = 2 },"#;
    edit(
        &t,
        "devices/virtio.toml",
        last,
        &format!("{last}\n  {{ name = \"discard_sector\", wire = \"u64\", since = 3 }},"),
    );
    edit(
        &t,
        "devices/virtio.toml",
        "name = \"virtio-blk\"\nversion_id = 2",
        "name = \"virtio-blk\"\nversion_id = 3",
    );
    let c = check(&t.0);
    assert!(!c.failed(), "{}", c.render());
}

const SUBSECTION: &str = r#"
[[device.vmstate.subsection]]
name = "virtio-mmio/legacy"
gate = "GATE"
fields = [{ name = "guest_page_size", wire = "u32" }]
"#;

#[test]
fn a_new_subsection_needs_a_gate_that_is_off_for_released_machines() {
    let t = temp_copy("sub");
    let anchor = r#"  { name = "status", wire = "u32" },
]
"#;
    edit(
        &t,
        "devices/virtio.toml",
        anchor,
        &format!(
            "{anchor}{}",
            SUBSECTION.replace("GATE", "format_transport_address")
        ),
    );
    let r = refused(&t);
    assert!(
        r.contains("new VMState subsection `virtio-mmio/legacy`"),
        "{}",
        r.text
    );
    insta::assert_snapshot!(r.rendered);

    let t = temp_copy("sub-ok");
    edit(
        &t,
        "devices/virtio.toml",
        anchor,
        &format!("{anchor}{}", SUBSECTION.replace("GATE", "force-legacy")),
    );
    let c = check(&t.0);
    assert!(!c.failed(), "{}", c.render());
}

#[test]
fn a_retroactive_edit_is_refused_unless_declared_as_an_erratum() {
    // hw_compat_7_1 has the 7.2.1 entry; the 7.2 lock says 7.2.0 shipped
    // vectors 2. Without the erratum this is an undeclared retroactive edit.
    let t = temp_copy("retro");
    let rel = t.0.join("releases.toml");
    let s = std::fs::read_to_string(&rel).expect("read");
    let start = s
        .find("[[release.erratum]]\nid = \"virtio-rng-vectors\"")
        .expect("7.2 erratum");
    let end = start
        + s[start..].find("fixed_in = \"7.2.1\"\n").expect("end")
        + "fixed_in = \"7.2.1\"\n".len();
    std::fs::write(&rel, format!("{}{}", &s[..start], &s[end..])).expect("write");
    let r = refused(&t);
    assert!(
        r.contains("`hw_compat_7_1` entry `{ virtio-rng-pci, vectors, 0 }`"),
        "{}",
        r.text
    );
    assert!(r.contains("release 7.2 presented"), "{}", r.text);
    insta::assert_snapshot!(r.rendered);
}

#[test]
fn a_released_cpu_model_version_is_never_edited() {
    // The real locks 8.2.1 ... 10.2 froze the EPYC models; edit EPYC-v2.
    let t = temp_copy("cpu-model");
    let lock = std::fs::read_to_string(t.0.join("releases/10.2.lock.toml")).expect("read");
    assert!(lock.contains("[cpu_model.EPYC-v2-x86_64-cpu]"), "{lock}");
    assert!(!check(&t.0).failed(), "the frozen tree is clean");
    edit(
        &t,
        "cpu/models.toml",
        "\"nrip-save\", \"ibpb\",\n]",
        "\"nrip-save\", \"clzero\",\n]",
    );
    let r = refused(&t);
    assert!(
        r.contains("CPU model `EPYC-v2-x86_64-cpu` changed after releases 8.2.1 … 10.2 presented it: `clzero` was off, is now on, `ibpb` was on, is now off"),
        "{}",
        r.text
    );
    assert!(
        r.contains("declare `EPYC-v5-x86_64-cpu` with the change"),
        "{}",
        r.text
    );
    insta::assert_snapshot!(r.rendered);
}

#[test]
fn a_changed_machine_knob_is_refused() {
    let t = temp_copy("knob");
    edit(
        &t,
        "machines.toml",
        "version = \"7.2\"\nmax_cpus = 288",
        "version = \"7.2\"\nmax_cpus = 1024",
    );
    let r = refused(&t);
    assert!(
        r.contains("machine type pc-7.2: `max_cpus` changed from 288 to 1024"),
        "{}",
        r.text
    );
}

#[test]
fn a_frozen_release_is_reconstructed_with_its_errata() {
    let c = codegen::compile_dir(&common::repo().join("compat"))
        .expect("io")
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let m = &c.resolved.model;
    let lock = |r: &str| {
        compat_runtime::Lock::parse(&codegen::release::freeze(m, r).expect("freeze"))
            .expect("parse")
    };
    let val = |r: &str, machine: &str, t: &str, p: &str| {
        lock(r)
            .machine(machine)
            .and_then(|x| x.prop(t, p))
            .map(str::to_string)
    };
    let mask = |r| val(r, "pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask");
    assert_eq!(mask("7.2").as_deref(), Some("off"));
    assert_eq!(mask("8.0").as_deref(), Some("on"));
    assert_eq!(mask("8.0.1").as_deref(), Some("off"));
    let vectors = |r| val(r, "pc-7.1", "virtio-rng-pci", "vectors");
    assert_eq!(vectors("7.1").as_deref(), Some("0"));
    assert_eq!(vectors("7.2").as_deref(), Some("2"));
    assert_eq!(vectors("7.2.1").as_deref(), Some("0"));
    assert_eq!(
        val("5.1", "pc-5.1", "virtio-blk-device", "num-queues").as_deref(),
        Some("1")
    );
    assert!(lock("5.1").machine("pc-5.2").is_none());
    assert_eq!(
        lock("8.0.1").machine.last().map(|x| x.name.as_str()),
        Some("pc-8.0")
    );
    assert!(matches!(
        codegen::release::freeze(m, "9.9"),
        Err(codegen::release::FreezeError::UnknownRelease(_))
    ));
}

#[test]
fn a_deleted_lock_is_refused() {
    let t = temp_copy("missing");
    std::fs::remove_file(t.0.join("releases/7.2.lock.toml")).expect("rm");
    let r = refused(&t);
    assert!(
        r.contains("release 7.2 has no lock file (releases/7.2.lock.toml)"),
        "{}",
        r.text
    );
}

#[test]
fn damaged_locks_never_panic_the_checker() {
    let dir = common::repo().join("compat");
    let c = codegen::compile_dir(&dir)
        .expect("io")
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let locks = codegen::release::read_locks(&dir).expect("locks");
    let lock = locks
        .iter()
        .find(|l| l.name == "releases/8.0.lock.toml")
        .expect("8.0");
    let text = &lock.text;
    let edits = [
        ("= \"on\"", "= \"maybe\""),
        ("version_id = ", "version_id = 9"),
        ("name = \"pc-7.2\"", "name = \"pc-99.1\""),
        ("[machine.props.pci-device]", "[machine.props.warp-drive]"),
        ("wire = \"u8\"", "wire = \"f32\""),
        ("release = \"8.0\"", "release = \"8.0.2\""),
    ];
    let mut variants: Vec<String> = edits.iter().map(|(a, b)| text.replacen(a, b, 1)).collect();
    for cut in (0..text.len()).step_by(text.len() / 20 + 1) {
        if let Some(prefix) = text.get(..cut) {
            variants.push(prefix.to_string());
        }
    }
    for v in variants {
        let mut ls = locks.clone();
        if let Some(l) = ls.iter_mut().find(|l| l.name == lock.name) {
            l.text = v;
        }
        let _ = codegen::release::check_locks(&c.resolved.model, &c.sources, ls).render();
    }
}

//! The maintainer's workflow (README), performed on a copy of compat/:
//! add a synthetic machine version 11.0 on top of the real tree (10.2),
//! regenerate, freeze it, and see what changed.

mod common;

use codegen::report::effective_table;
use common::{TempTree, copy_dir};
use std::path::Path;

fn temp_copy(tag: &str) -> TempTree {
    let t = TempTree::new(&format!("compat-workflow-{tag}"));
    copy_dir(&common::repo().join("compat"), &t.0.join("compat"));
    t
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).expect("read");
    s.push_str(text);
    std::fs::write(path, s).expect("write");
}

/// Compiles `dir/compat` into `dir/generated` (the generator's real output
/// path, relocated) and returns the per-machine table.
fn generate(dir: &Path) -> (codegen::Compiled, String) {
    let c = codegen::compile_dir(&dir.join("compat"))
        .expect("io")
        .unwrap_or_else(|f| panic!("{}", f.render()));
    codegen::output::write(&dir.join("generated"), &c.files).expect("write generated");
    let table = effective_table(&c.resolved);
    (c, table)
}

/// The block of one machine type in the effective table.
fn block(table: &str, machine: &str) -> String {
    let head = format!("== {machine}");
    let mut out = String::new();
    let mut on = false;
    for l in table.lines() {
        if l.starts_with("== ") {
            on = l.starts_with(&format!("{head} ")) || l.starts_with(&format!("{head}:"));
        }
        if on && !l.starts_with("== ") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn diff(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for (x, y) in al.iter().zip(&bl) {
        if x != y {
            out.push_str(&format!("- {x}\n+ {y}\n"));
        }
    }
    out
}

const ADD_11_0: &str = "\n[[machine]]\nfamily = \"pc\"\nversion = \"11.0\"\n";
const RELEASE_11_0: &str = "\n[[release]]\nversion = \"11.0\"\ndate = 2026-04-22\n";

#[test]
fn add_machine_11_0() {
    let t = temp_copy("add");
    let (_, before) = generate(&t.0);
    append(&t.0.join("compat/machines.toml"), ADD_11_0);
    append(&t.0.join("compat/releases.toml"), RELEASE_11_0);
    let (c, after) = generate(&t.0);
    let pc = &c.resolved.model.families[0];
    let newest = pc.machines.last().expect("machines");
    assert_eq!(
        (newest.name.as_str(), newest.alias.as_deref()),
        ("pc-11.0", Some("pc"))
    );
    assert!(
        pc.machines
            .iter()
            .filter(|m| m.name != "pc-11.0")
            .all(|m| m.alias.is_none())
    );
    // Every old machine type keeps its hardware (the blocks hold property
    // values); only the lifecycle moves with the calendar (pc-8.0 of
    // 2023-04-19 is more than 3 years older than 11.0).
    for m in pc.machines.iter().filter(|m| m.name != "pc-11.0") {
        assert_eq!(
            block(&before, &m.name),
            block(&after, &m.name),
            "{} must not change",
            m.name
        );
    }
    let pc80 = pc
        .machines
        .iter()
        .find(|m| m.name == "pc-8.0")
        .expect("pc-8.0");
    assert!(
        matches!(&pc80.lifecycle, codegen::model::LifecycleM::Deprecated { since, .. } if since == "11.0"),
        "{:?}",
        pc80.lifecycle
    );
    let catalog = std::fs::read_to_string(t.0.join("generated/catalog.rs")).expect("generated");
    assert!(catalog.contains("\"pc-11.0\""));
    // Freeze it as `cargo xtask release 11.0` does; every lock, old and new,
    // still passes the checker.
    let lock = codegen::release::freeze(&c.resolved.model, "11.0").expect("freeze");
    std::fs::write(t.0.join("compat/releases/11.0.lock.toml"), lock).expect("write lock");
    let locks = codegen::release::read_locks(&t.0.join("compat")).expect("locks");
    let n = locks.len();
    let checked = codegen::release::check_locks(&c.resolved.model, &c.sources, locks);
    assert!(!checked.failed(), "{}", checked.render());
    assert!(n >= 21, "{n} locks");
}

#[test]
fn changing_a_default_without_a_delta_changes_the_old_machine() {
    let t = temp_copy("default");
    let (_, before) = generate(&t.0);
    append(&t.0.join("compat/machines.toml"), ADD_11_0);
    append(&t.0.join("compat/releases.toml"), RELEASE_11_0);
    let blk = t.0.join("compat/devices/virtio.toml");
    let text = std::fs::read_to_string(&blk).expect("read");
    let changed = text.replace(
        r#"name = "discard", type = "bool", default = "on""#,
        r#"name = "discard", type = "bool", default = "off""#,
    );
    assert_ne!(text, changed, "fixture text moved");
    std::fs::write(&blk, changed).expect("write");
    let (_, after) = generate(&t.0);
    let d = diff(&block(&before, "pc-10.2"), &block(&after, "pc-10.2"));
    // Without hw_compat_10_2 the old machine type silently changes hardware.
    insta::assert_snapshot!("pc_10_2_changed_without_delta", d);
    // The fix: the delta that puts the old default back.
    append(
        &t.0.join("compat/deltas/hw_compat.toml"),
        "\n[[delta]]\nseries = \"hw_compat\"\nversion = \"10.2\"\nentries = [\n  { type = \"virtio-blk-device\", property = \"discard\", value = \"on\" },\n]\n",
    );
    let (_, fixed) = generate(&t.0);
    let d = diff(&block(&before, "pc-10.2"), &block(&fixed, "pc-10.2"));
    assert!(d.lines().all(|l| l.contains("discard")), "{d}");
    assert!(d.contains("hw_compat_10_2"), "{d}");
    assert!(
        block(&fixed, "pc-10.2")
            .contains("discard                            on       hw_compat_10_2"),
        "{}",
        block(&fixed, "pc-10.2")
    );
    assert!(
        block(&fixed, "pc-11.0").contains("discard                            off      default")
    );
}

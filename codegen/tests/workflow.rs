//! The maintainer's workflow (README), performed on a copy of compat/:
//! add machine version 9.0, regenerate, and see what changed.

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

const ADD_9_0: &str = "\n[[machine]]\nfamily = \"pc\"\nversion = \"9.0\"\n";
const RELEASE_9_0: &str = "\n[[release]]\nversion = \"9.0\"\n";

#[test]
fn add_machine_9_0() {
    let t = temp_copy("add");
    let (_, before) = generate(&t.0);
    append(&t.0.join("compat/machines.toml"), ADD_9_0);
    append(&t.0.join("compat/releases.toml"), RELEASE_9_0);
    let (c, after) = generate(&t.0);
    let pc = &c.resolved.model.families[0];
    let newest = pc.machines.last().expect("machines");
    assert_eq!(
        (newest.name.as_str(), newest.alias.as_deref()),
        ("pc-9.0", Some("pc"))
    );
    assert!(
        pc.machines
            .iter()
            .filter(|m| m.name != "pc-9.0")
            .all(|m| m.alias.is_none())
    );
    assert_eq!(
        block(&before, "pc-8.2"),
        block(&after, "pc-8.2"),
        "pc-8.2 must not change"
    );
    let catalog = std::fs::read_to_string(t.0.join("generated/catalog.rs")).expect("generated");
    assert!(catalog.contains("\"pc-9.0\""));
}

#[test]
fn changing_a_default_without_a_delta_changes_the_old_machine() {
    let t = temp_copy("default");
    let (_, before) = generate(&t.0);
    append(&t.0.join("compat/machines.toml"), ADD_9_0);
    append(&t.0.join("compat/releases.toml"), RELEASE_9_0);
    let mig = t.0.join("compat/devices/migration.toml");
    let text = std::fs::read_to_string(&mig).expect("read");
    let changed = text.replace(
        "variants = [\"none\", \"legacy\", \"multifd\"], default = \"legacy\"",
        "variants = [\"none\", \"legacy\", \"multifd\"], default = \"multifd\"",
    );
    assert_ne!(text, changed, "fixture text moved");
    std::fs::write(&mig, changed).expect("write");
    let (_, after) = generate(&t.0);
    let d = diff(&block(&before, "pc-8.2"), &block(&after, "pc-8.2"));
    // Without hw_compat_8_2 the old machine type silently changes hardware.
    insta::assert_snapshot!("pc_8_2_changed_without_delta", d);
    // The fix: the delta that puts the old default back.
    append(
        &t.0.join("compat/deltas/hw_compat.toml"),
        "\n[[delta]]\nseries = \"hw_compat\"\nversion = \"8.2\"\nentries = [\n  { type = \"migration\", property = \"zero-page-detection\", value = \"legacy\" },\n]\n",
    );
    let (_, fixed) = generate(&t.0);
    let d = diff(&block(&before, "pc-8.2"), &block(&fixed, "pc-8.2"));
    assert!(d.lines().all(|l| l.contains("zero-page-detection")), "{d}");
    assert!(d.contains("hw_compat_8_2"), "{d}");
    assert!(
        block(&fixed, "pc-8.2").contains("legacy   hw_compat_8_2"),
        "{}",
        block(&fixed, "pc-8.2")
    );
    assert!(block(&fixed, "pc-9.0").contains("multifd  default"));
}

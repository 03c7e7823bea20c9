//! Machine-type lifecycle from release dates and the `[lifecycle]` rule,
//! on the real tree and on copies of it with the calendar moved.

mod common;

use common::{TempTree, edit};

fn temp_copy(tag: &str) -> TempTree {
    common::compat_copy(&format!("compat-lifecycle-{tag}"))
}

fn deprecated_md(t: &TempTree) -> String {
    let c = codegen::compile_dir(&t.0)
        .expect("io")
        .unwrap_or_else(|f| panic!("{}", f.render()));
    codegen::release::deprecated::markdown(&c.resolved.model)
}

fn refusal(t: &TempTree) -> String {
    match codegen::compile_dir(&t.0).expect("io") {
        Ok(_) => panic!("the compiler accepted the tree"),
        Err(f) => f.render(),
    }
}

const DEPRECATED: &str = "machines more than 3 years old are subject to deletion after 6 years";

#[test]
fn at_10_2_every_machine_type_older_than_3_years_is_deprecated() {
    let md = deprecated_md(&temp_copy("real"));
    // 7.2 (2022-12-14) is 3 years and 9 days older than 10.2 (2025-12-23).
    assert!(
        md.contains(&format!(
            "| `pc-7.2` | deprecated | 10.2 | {DEPRECATED} | `pc-10.2` |"
        )),
        "{md}"
    );
    // 7.0 (2022-04-19) passed 3 years before 10.0 (2025-04-22), as in QEMU 10.0.
    assert!(
        md.contains(&format!("| `pc-7.0` | deprecated | 10.0 | {DEPRECATED} |")),
        "{md}"
    );
    assert!(
        md.contains(&format!("| `pc-5.1` | deprecated | 8.1 | {DEPRECATED} |")),
        "{md}"
    );
    assert!(md.contains("Supported: `pc-8.0`, `pc-8.1`"), "{md}");
    assert!(!md.contains("removed |"), "{md}");
}

#[test]
fn six_years_later_the_oldest_are_removed_naming_the_oldest_supported() {
    let t = temp_copy("later");
    edit(
        &t,
        "releases.toml",
        "date = 2025-12-23",
        "date = 2026-08-12",
    );
    let md = deprecated_md(&t);
    // 5.1 (2020-08-11) is more than 6 years old, 5.2 (2020-12-08) not yet;
    // 8.1 (2023-08-22) is the oldest less than 3 years old.
    assert!(
        md.contains(
            "| `pc-5.1` | removed | 10.2 | machines more than 6 years old are removed | `pc-8.1` |"
        ),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| `pc-5.2` | deprecated | 8.2 | {DEPRECATED} | `pc-10.2` |"
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!("| `pc-8.0` | deprecated | 10.2 | {DEPRECATED} |")),
        "{md}"
    );
}

#[test]
fn a_declared_lifecycle_stays_where_stricter_than_the_rule() {
    let t = temp_copy("declared");
    edit(
        &t,
        "machines.toml",
        "version = \"9.0\"\n",
        "version = \"9.0\"\nlifecycle = \"deprecated\"\nsince = \"9.2\"\n",
    );
    edit(
        &t,
        "machines.toml",
        "version = \"6.0\"\n",
        "version = \"6.0\"\nlifecycle = \"removed\"\nsince = \"10.1\"\n",
    );
    let md = deprecated_md(&t);
    assert!(
        md.contains("| `pc-9.0` | deprecated | 9.2 | declared deprecated in compat/machines.toml | `pc-10.2` |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| `pc-6.0` | removed | 10.1 | declared removed in compat/machines.toml | `pc-8.0` |"
        ),
        "{md}"
    );
}

#[test]
fn the_rule_needs_every_release_dated() {
    let t = temp_copy("undated");
    edit(&t, "releases.toml", "date = 2024-09-03\n", "");
    let r = refusal(&t);
    assert!(
        r.contains("the lifecycle rule needs the date of every release; undated: 9.1"),
        "{r}"
    );
    let t = temp_copy("datetime");
    edit(
        &t,
        "releases.toml",
        "date = 2024-09-03",
        "date = 2024-09-03T10:00:00Z",
    );
    let r = refusal(&t);
    assert!(r.contains("is not a plain date"), "{r}");
    let t = temp_copy("rule");
    edit(
        &t,
        "releases.toml",
        "removed_after_years = 6",
        "removed_after_years = 2",
    );
    let r = refusal(&t);
    assert!(
        r.contains(
            "deprecated_after_years (3) must be at least 1 and below removed_after_years (2)"
        ),
        "{r}"
    );
}

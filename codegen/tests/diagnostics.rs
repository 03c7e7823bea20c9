//! The diagnostic catalogue: each bad-TOML fixture, rendered, snapshotted.

mod common;

fn snap(fixture: &str) -> String {
    let out = common::render(&common::base_plus(fixture));
    assert!(!out.is_empty(), "{fixture}: expected a diagnostic");
    out
}

macro_rules! diag_test {
    ($name:ident, $file:literal, $code:literal) => {
        #[test]
        fn $name() {
            let out = snap($file);
            assert!(out.contains($code), "{out}");
            insta::assert_snapshot!(stringify!($name), out);
        }
    };
}

diag_test!(syntax_error, "syntax.toml", "compat::syntax");
diag_test!(no_effect, "no_effect.toml", "compat::no-effect");
diag_test!(bad_feature, "bad_feature.toml", "compat::duplicate-feature");
diag_test!(
    bad_cpu_model,
    "bad_cpu_model.toml",
    "compat::unknown-feature"
);
diag_test!(
    delta_on_cpu_model,
    "delta_on_cpu_model.toml",
    "compat::delta-on-cpu-model"
);
diag_test!(unknown_type, "unknown_type.toml", "compat::unknown-type");
diag_test!(
    unknown_property,
    "unknown_property.toml",
    "compat::unknown-property"
);
diag_test!(bad_value, "bad_value.toml", "compat::bad-value");
diag_test!(
    delta_without_machine,
    "delta_without_machine.toml",
    "compat::delta-without-machine"
);
diag_test!(
    duplicate_machine,
    "duplicate_machine.toml",
    "compat::duplicate-machine"
);
diag_test!(
    unknown_alias,
    "unknown_alias.toml",
    "compat::unknown-alias-target"
);
diag_test!(type_cycle, "type_cycle.toml", "compat::type-cycle");
diag_test!(
    duplicate_entry,
    "duplicate_entry.toml",
    "compat::duplicate-entry"
);
diag_test!(
    shadowed_entry,
    "shadowed_entry.toml",
    "compat::shadowed-entry"
);
diag_test!(
    unknown_wire_type,
    "unknown_wire_type.toml",
    "compat::unknown-wire-type"
);
diag_test!(bad_gate, "bad_gate.toml", "compat::bad-gate");
diag_test!(
    since_above_version,
    "since_above_version.toml",
    "compat::since-above-version"
);
diag_test!(
    min_version_above_version,
    "min_version_above_version.toml",
    "compat::min-version-above-version"
);
diag_test!(
    erratum_unknown_release,
    "erratum_unknown_release.toml",
    "compat::unknown-release"
);

#[test]
fn base_fixture_is_clean() {
    let s = common::read(&common::fixtures().join("base"));
    let (r, diags) = codegen::check(&s);
    assert!(
        r.is_some() && diags.is_empty(),
        "{}",
        codegen::render_plain(&diags, &s)
    );
}

#[test]
fn all_errors_at_once() {
    let mut s = common::base_plus("bad_value.toml");
    s.extend(common::base_plus("unknown_wire_type.toml").pop());
    s.extend(common::base_plus("bad_gate.toml").pop());
    s.extend(common::base_plus("syntax.toml").pop());
    let (r, diags) = codegen::check(&s);
    assert!(r.is_none());
    let codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
    assert!(diags.len() >= 6, "{codes:?}");
    for c in [
        "compat::bad-value",
        "compat::unknown-wire-type",
        "compat::bad-gate",
        "compat::syntax",
    ] {
        assert!(codes.contains(&c), "{codes:?}");
    }
}

#[test]
fn warnings_do_not_fail_compilation() {
    let c = codegen::compile(common::base_plus("shadowed_entry.toml")).expect("compiles");
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].code, "compat::shadowed-entry");
}

use super::*;
use crate::release::matrix;

/// What `release` presents for `machine` with `overrides`: the effective
/// configuration, the section versions it sends, its stream format.
fn effective_for(
    release: &str,
    machine: &str,
    overrides: &[Override],
) -> Result<(EffectiveConfig, SectionVersions, StreamFormat), PersonaError> {
    let p = Persona::frozen(release)?;
    let cfg = p.effective(machine, overrides)?;
    Ok((cfg, p.section_versions(), p.stream_format()))
}

fn value(cfg: &EffectiveConfig, t: &str, p: &str) -> String {
    cfg.value(t, p).map(ToString::to_string).unwrap_or_default()
}

#[test]
fn release_8_0_presents_its_erratum_on_pc_7_2() {
    let (cfg, secs, fmt) = effective_for("8.0", "pc-7.2", &[]).unwrap();
    assert_eq!(value(&cfg, "pcie-root-port", "x-pcie-err-unc-mask"), "on");
    let p = cfg.get("pci-device", "x-pcie-err-unc-mask").unwrap();
    assert_eq!(
        p.provenance.to_string(),
        "release 8.0 (erratum aer-uncor-mask)"
    );
    assert_eq!(
        fmt,
        StreamFormat {
            version: 1,
            minimum: 1
        }
    );
    assert_eq!(secs["pcie-root-port"].version_id, 1);
    let (cfg, ..) = effective_for("8.0.1", "pc-7.2", &[]).unwrap();
    assert_eq!(value(&cfg, "pcie-root-port", "x-pcie-err-unc-mask"), "off");
    // The current tree agrees with 8.0.1 but for 8.2.1's erratum
    // pcie-ext-tag (8.0.1 presented x-pcie-ext-tag on).
    let diff = cfg.diff(&bconfig::catalog().effective("pc-7.2", &[]).unwrap());
    assert!(
        !diff.is_empty() && diff.iter().all(|d| d.property == "x-pcie-ext-tag"),
        "{diff:?}"
    );
}

#[test]
fn overrides_apply_on_top_of_the_lock() {
    let o = Override::parse_device("pcie-root-port,x-pcie-err-unc-mask=on").unwrap();
    let (cfg, ..) = effective_for("8.0.1", "pc-7.2", &[o]).unwrap();
    assert_eq!(value(&cfg, "pcie-root-port", "x-pcie-err-unc-mask"), "on");
    assert_eq!(value(&cfg, "pci-device", "x-pcie-err-unc-mask"), "off");
}

#[test]
fn release_5_1_and_5_2_differ_on_num_queues_only_for_pc_5_2() {
    let (a, ..) = effective_for("5.1", "pc-5.1", &[]).unwrap();
    let (b, ..) = effective_for("5.2", "pc-5.1", &[]).unwrap();
    assert!(a.diff(&b).is_empty());
    let (c, ..) = effective_for("5.2", "pc", &[]).unwrap();
    assert_eq!(c.machine, "pc-5.2", "the alias names the release's newest");
}

#[test]
fn refusals_name_release_and_machine() {
    let e = effective_for("5.1", "pc-5.2", &[]).unwrap_err().to_string();
    assert!(
        e.contains("release 5.1") && e.contains("pc-5.2") && e.contains("pc-5.1"),
        "{e}"
    );
    let e = effective_for("9.9", "pc-7.2", &[]).unwrap_err().to_string();
    assert!(
        e.contains("`9.9` has no lock") && e.contains("8.0.1"),
        "{e}"
    );
    let e = effective_for("8.0", "pc-99.0", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("pc-99.0"), "{e}");
}

#[test]
fn origins_are_carried_along_a_chain() {
    let first = origin_of("release 8.0 (erratum aer-uncor-mask)", "8.0");
    assert_eq!(first, "release 8.0 (erratum aer-uncor-mask)");
    assert_eq!(origin_of("-global", "8.0.1"), "-global on release 8.0.1");
    let relayed = format!("stream; origin: {first}");
    assert_eq!(origin_of(&relayed, "8.0.1"), first);
    assert_eq!(origin_of("stream", "8.1"), "a stream, before release 8.1");
}

#[test]
fn every_lock_can_be_presented_for_every_machine_it_knows() {
    for (r, _) in matrix::locks::LOCKS {
        let p = Persona::frozen(r).unwrap();
        for m in &p.lock().unwrap().machine {
            let (cfg, ..) = effective_for(r, &m.name, &[]).unwrap();
            assert_eq!(cfg.machine, m.name);
        }
    }
}

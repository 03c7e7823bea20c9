use super::*;
use crate::release::lock::{LockField, LockSubsection};

fn machine(mask: &str) -> LockMachine {
    let pci = |v: &str| BTreeMap::from([("x-pcie-err-unc-mask".to_string(), v.to_string())]);
    LockMachine {
        name: "pc-7.2".into(),
        max_cpus: 288,
        default_cpus: 1,
        memory_mib: 512,
        devices: vec!["pcie-root-port".into()],
        props: BTreeMap::from([
            ("pci-device".to_string(), pci(mask)),
            ("pcie-root-port".to_string(), pci(mask)),
        ]),
    }
}

fn field(name: &str, since: u32) -> LockField {
    LockField {
        name: name.into(),
        wire: "u32".into(),
        len: None,
        len_field: None,
        since,
    }
}

fn lock(release: &str, mask: &str) -> Lock {
    Lock {
        cpu_model: BTreeMap::new(),
        release: release.into(),
        stream_format: 1,
        min_stream_format: 1,
        errata: vec![],
        parents: BTreeMap::from([("pcie-root-port".into(), "pci-device".into())]),
        machine: vec![machine(mask)],
        section: vec![LockSection {
            name: "pcie-root-port".into(),
            device: "pcie-root-port".into(),
            version_id: 1,
            minimum_version_id: 1,
            fields: vec![field("config", 0)],
            subsection: vec![LockSubsection {
                name: "pcie-root-port/aer-mask".into(),
                gate: "x-pcie-err-unc-mask".into(),
                fields: vec![field("uncor_mask", 0)],
            }],
        }],
    }
}

#[test]
fn same_hardware_works() {
    assert!(migrate(&lock("7.2", "off"), &lock("8.0.1", "off"), "pc-7.2").works());
}

#[test]
fn unknown_machine_is_not_possible() {
    let v = migrate(&lock("5.1", "off"), &lock("5.2", "off"), "pc-5.2");
    assert_eq!(
        v,
        Verdict::NotPossible {
            release: "5.1".into(),
            machine: "pc-5.2".into()
        }
    );
}

#[test]
fn property_difference_is_reported_once_with_a_fix() {
    let v = migrate(&lock("8.0", "on"), &lock("8.0.1", "off"), "pc-7.2");
    let Verdict::Fails { differences, fix } = v else {
        panic!("expected failure")
    };
    assert_eq!(differences.len(), 1);
    assert_eq!(
        differences[0].to_string(),
        "pcie-root-port.x-pcie-err-unc-mask: on vs off"
    );
    assert_eq!(fix, vec!["-global pcie-root-port.x-pcie-err-unc-mask=on"]);
}

#[test]
fn only_instantiated_types_are_compared() {
    // The abstract `pci-device` differs, the root port the machine builds does not.
    let src = lock("8.0", "on");
    let mut dst = lock("8.0.1", "on");
    let abstract_pci = dst.machine[0].props.get_mut("pci-device").unwrap();
    abstract_pci.insert("x-pcie-err-unc-mask".into(), "off".into());
    assert!(migrate(&src, &dst, "pc-7.2").works());
    // A type the machine never builds differs: still the same hardware.
    let never = BTreeMap::from([("vectors".to_string(), "4".to_string())]);
    dst.machine[0].props.insert("virtio-rng-pci".into(), never);
    assert!(migrate(&src, &dst, "pc-7.2").works());
}

#[test]
fn section_problems_are_named() {
    let src = lock("9.0", "off");
    let mut dst = lock("8.2", "off");
    dst.section[0].version_id = 0;
    dst.section[0].minimum_version_id = 0;
    let Verdict::Fails { differences, fix } = migrate(&src, &dst, "pc-7.2") else {
        panic!("expected failure")
    };
    assert!(fix.is_empty());
    assert_eq!(
        differences[0].to_string(),
        "section `pcie-root-port` version 1 outside the destination's 0..=0"
    );
    let mut dst = lock("8.2", "on");
    dst.section[0].fields.push(field("extra", 0));
    dst.section[0].subsection.clear();
    let Verdict::Fails { differences, .. } = migrate(&lock("9.0", "on"), &dst, "pc-7.2") else {
        panic!("expected failure")
    };
    let text: Vec<String> = differences.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "section `pcie-root-port` fields [config u32] vs [config u32, extra u32]",
            "subsection `pcie-root-port/aer-mask` of `pcie-root-port` unknown to the destination",
        ]
    );
}

#[test]
fn newer_fields_are_not_sent_to_older_versions() {
    let mut src = lock("9.0", "off");
    src.section[0].version_id = 2;
    src.section[0].fields.push(field("new", 2));
    let dst = lock("8.2", "off");
    // 9.0 sends version 2, which 8.2 cannot load; the reverse works.
    assert!(!migrate(&src, &dst, "pc-7.2").works());
    assert!(migrate(&dst, &src, "pc-7.2").works());
}

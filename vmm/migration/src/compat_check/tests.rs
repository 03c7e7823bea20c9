use super::*;
use crate::manifest::{PropValue, SectionInfo};

fn config(num_queues: &str, mask: &str) -> GuestConfig {
    let mut c = GuestConfig::new();
    c.entry("virtio-blk-pci".into()).or_default().insert(
        "num-queues".into(),
        PropValue::new(num_queues, "hw_compat_5_1"),
    );
    c.entry("pci-device".into()).or_default().insert(
        "x-pcie-err-unc-mask".into(),
        PropValue::new(mask, "default"),
    );
    c
}

fn manifest() -> Manifest {
    Manifest {
        format_version: 1,
        devices: Vec::new(),
        cpu: None,
        tsc_khz: None,
        cpuid: Vec::new(),
        channels: 0,
        compression: None,
        session: 0,
        source_release: "8.0".into(),
        machine_type: "pc-7.2".into(),
        ram_size: 1 << 20,
        vcpus: 1,
        config: config("1", "on"),
        sections: vec![
            SectionInfo {
                name: "virtio-blk/0".into(),
                version_id: 2,
            },
            SectionInfo {
                name: "serial".into(),
                version_id: 3,
            },
        ],
    }
}

fn local() -> LocalRelease {
    LocalRelease {
        release: "8.0.1".into(),
        machine_types: ["pc-7.2".to_string(), "pc-8.0".to_string()].into(),
        sections: [
            (
                "virtio-blk".to_string(),
                SectionSupport {
                    version_id: 2,
                    minimum_version_id: 1,
                },
            ),
            (
                "serial".to_string(),
                SectionSupport {
                    version_id: 3,
                    minimum_version_id: 2,
                },
            ),
        ]
        .into(),
    }
}

fn refused(m: &Manifest, l: &LocalRelease, how: &IncomingConfig) -> Vec<Mismatch> {
    check(m, l, how).unwrap_err().0
}

#[test]
fn adopt_takes_the_stream_configuration() {
    let a = check(&manifest(), &local(), &IncomingConfig::Adopt).unwrap();
    assert!(a.adopted);
    assert_eq!(a.machine_type, "pc-7.2");
    assert_eq!(a.config, config("1", "on"));
}

#[test]
fn adopt_refuses_an_unknown_machine_type() {
    let mut m = manifest();
    m.machine_type = "pc-9.9".into();
    let e = check(&m, &local(), &IncomingConfig::Adopt).unwrap_err();
    assert_eq!(
        e.0,
        vec![Mismatch::UnknownMachineType {
            stream: "pc-9.9".into(),
            release: "8.0.1".into()
        }]
    );
    assert!(e.to_string().contains("pc-9.9") && e.to_string().contains("8.0.1"));
}

#[test]
fn explicit_matching_settings_are_accepted() {
    let resolve = |_: &str| Ok(config("1", "on"));
    let how = IncomingConfig::Explicit {
        machine_type: Some("pc-7.2".into()),
        resolve: &resolve,
    };
    let a = check(&manifest(), &local(), &how).unwrap();
    assert!(!a.adopted);
    // Provenance differs from the stream's, values do not: accepted.
    assert_eq!(
        a.config["pci-device"]["x-pcie-err-unc-mask"].provenance,
        "default"
    );
}

#[test]
fn different_machine_type_names_both() {
    let resolve = |_: &str| Ok(config("1", "on"));
    let how = IncomingConfig::Explicit {
        machine_type: Some("pc-8.0".into()),
        resolve: &resolve,
    };
    let e = check(&manifest(), &local(), &how).unwrap_err();
    assert_eq!(
        e.0,
        vec![Mismatch::MachineType {
            stream: "pc-7.2".into(),
            local: "pc-8.0".into()
        }]
    );
    let msg = e.to_string();
    assert!(
        msg.contains("`pc-7.2`") && msg.contains("`pc-8.0`"),
        "{msg}"
    );
}

#[test]
fn differing_property_names_device_property_and_both_values() {
    let resolve = |_: &str| Ok(config("2", "on"));
    let how = IncomingConfig::Explicit {
        machine_type: Some("pc-7.2".into()),
        resolve: &resolve,
    };
    let e = check(&manifest(), &local(), &how).unwrap_err();
    assert_eq!(
        e.0,
        vec![Mismatch::Property {
            device: "virtio-blk-pci".into(),
            property: "num-queues".into(),
            stream: Some("1".into()),
            local: Some("2".into()),
        }]
    );
    assert_eq!(
        e.to_string(),
        "incompatible migration stream: property `virtio-blk-pci.num-queues` differs: \
         the stream has 1, this destination has 2"
    );
}

#[test]
fn explicit_without_machine_type_resolves_the_streams_and_reports_all() {
    let resolve = |t: &str| {
        assert_eq!(t, "pc-7.2");
        let mut c = config("2", "off");
        c.get_mut("pci-device")
            .unwrap()
            .remove("x-pcie-err-unc-mask");
        c.entry("serial".into())
            .or_default()
            .insert("x".into(), PropValue::new("1", "default"));
        Ok(c)
    };
    let how = IncomingConfig::Explicit {
        machine_type: None,
        resolve: &resolve,
    };
    let e = refused(&manifest(), &local(), &how);
    assert_eq!(e.len(), 3);
    assert!(e.contains(&Mismatch::Property {
        device: "pci-device".into(),
        property: "x-pcie-err-unc-mask".into(),
        stream: Some("on".into()),
        local: None,
    }));
    assert!(e.contains(&Mismatch::Property {
        device: "serial".into(),
        property: "x".into(),
        stream: None,
        local: Some("1".into()),
    }));
    assert!(e[2].to_string().contains("(absent)") || e[0].to_string().contains("(absent)"));
}

#[test]
fn resolve_failure_is_refused() {
    let resolve = |_: &str| Err("bad --device".to_string());
    let how = IncomingConfig::Explicit {
        machine_type: None,
        resolve: &resolve,
    };
    let e = check(&manifest(), &local(), &how).unwrap_err();
    assert!(e.to_string().contains("bad --device"));
}

#[test]
fn section_above_the_destinations_version() {
    let mut m = manifest();
    m.sections[0].version_id = 3;
    let e = check(&m, &local(), &IncomingConfig::Adopt).unwrap_err();
    assert_eq!(
        e.0,
        vec![Mismatch::SectionTooNew {
            name: "virtio-blk/0".into(),
            stream: 3,
            local: 2
        }]
    );
    assert!(
        e.to_string()
            .contains("`virtio-blk/0` has version 3, above this destination's version 2")
    );
}

#[test]
fn section_below_the_destinations_minimum() {
    let mut m = manifest();
    m.sections[1].version_id = 1;
    let e = check(&m, &local(), &IncomingConfig::Adopt).unwrap_err();
    assert_eq!(
        e.0,
        vec![Mismatch::SectionTooOld {
            name: "serial".into(),
            stream: 1,
            minimum: 2
        }]
    );
    assert!(
        e.to_string()
            .contains("`serial` has version 1, below this destination's minimum version 2")
    );
}

#[test]
fn unknown_section() {
    let mut m = manifest();
    m.sections.push(SectionInfo {
        name: "pcie-aer".into(),
        version_id: 1,
    });
    let e = check(&m, &local(), &IncomingConfig::Adopt).unwrap_err();
    assert_eq!(
        e.0,
        vec![Mismatch::UnknownSection {
            name: "pcie-aer".into()
        }]
    );
    assert!(e.to_string().contains("`pcie-aer` is unknown"));
}

//! Between the manifest's plain configuration map and `compat-runtime`'s
//! typed [`EffectiveConfig`]: the source fills its manifest from its
//! effective configuration; a destination adopting the stream builds its
//! effective configuration from the manifest.

use super::compat_check::{LocalRelease, SectionSupport};
use super::manifest::{DeviceInstance, GuestConfig, Manifest, PropValue, SectionInfo};
use super::stream::format::DEFAULT_FORMAT_VERSION;
use compat_runtime::table::{Catalog, Provenance};
use compat_runtime::value::Value;
use compat_runtime::vmstate::VmStateDesc;
use compat_runtime::{EffectiveConfig, EffectiveProp};

/// How an unset optional property is spelled in a manifest.
pub const UNSET: &str = "(unset)";

/// A manifest configuration this build cannot present.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("device type `{0}` from the stream is unknown to this build")]
    UnknownDevice(String),
    #[error("property `{device}.{property}` from the stream is unknown to this build")]
    UnknownProperty { device: String, property: String },
    #[error("property `{device}.{property}`: the stream's value `{value}` does not parse: {error}")]
    BadValue {
        device: String,
        property: String,
        value: String,
        error: String,
    },
}

/// The manifest form of an effective configuration (values and provenance as text).
pub fn from_effective(e: &EffectiveConfig) -> GuestConfig {
    e.devices
        .iter()
        .map(|d| {
            let props = d
                .props
                .iter()
                .map(|p| {
                    let pv = PropValue::new(p.value.to_string(), p.provenance.to_string());
                    (p.name.clone(), pv)
                })
                .collect();
            (d.type_name.clone(), props)
        })
        .collect()
}

/// The part of a configuration a migration compares: the device types the
/// machine instantiates (its `devices` knob), and of those the properties
/// that change what the guest or the stream sees (`effect` is not `none`,
/// [`Catalog::compared`]). Abstract types (`pci-device`) and types the
/// machine never builds are not guest-visible as such: their values reach
/// the guest only through an instantiated subtype, which carries every
/// inherited property itself.
pub fn instantiated(mut config: GuestConfig, types: &[&str], catalog: &Catalog) -> GuestConfig {
    config.retain(|t, _| types.contains(&t.as_str()));
    for (t, props) in &mut config {
        props.retain(|p, _| catalog.compared(t, p));
    }
    config
}

/// Adopts a stream's configuration on top of `base`, this build's resolution
/// of the same machine type: every value the stream has replaces the base's
/// (marked [`Provenance::Stream`] where it differs); properties the stream
/// lacks (newer than the source) keep the base's value.
pub fn adopt(
    base: &EffectiveConfig,
    stream: &GuestConfig,
    catalog: &Catalog,
) -> Result<EffectiveConfig, ConfigError> {
    let mut out = base.clone();
    for (device, props) in stream {
        let dt = catalog
            .device_type(device)
            .ok_or_else(|| ConfigError::UnknownDevice(device.clone()))?;
        for (property, pv) in props {
            let unknown = || ConfigError::UnknownProperty {
                device: device.clone(),
                property: property.clone(),
            };
            let def = dt
                .props
                .iter()
                .find(|p| p.name == property)
                .ok_or_else(unknown)?;
            let value = if pv.value == UNSET {
                Value::Unset
            } else {
                Value::parse(&def.ty, &pv.value).map_err(|e| ConfigError::BadValue {
                    device: device.clone(),
                    property: property.clone(),
                    value: pv.value.clone(),
                    error: e.to_string(),
                })?
            };
            let dev = out.devices.iter_mut().find(|d| &d.type_name == device);
            let dev = dev.ok_or_else(|| ConfigError::UnknownDevice(device.clone()))?;
            match dev.props.iter_mut().find(|p| &p.name == property) {
                Some(p) if p.value == value => {}
                Some(p) => {
                    p.value = value;
                    p.provenance = Provenance::Stream;
                }
                None => dev.props.push(EffectiveProp {
                    name: property.clone(),
                    value,
                    provenance: Provenance::Stream,
                }),
            }
        }
    }
    Ok(out)
}

/// The manifest of a running guest: its effective configuration (which
/// names the resolved machine type), RAM, vCPUs, device sections and the
/// device instances the guest sees.
pub fn manifest(
    source_release: &str,
    cfg: &EffectiveConfig,
    ram_size: u64,
    vcpus: u32,
    sections: Vec<SectionInfo>,
    devices: Vec<DeviceInstance>,
) -> Manifest {
    Manifest {
        format_version: DEFAULT_FORMAT_VERSION,
        source_release: source_release.to_string(),
        machine_type: cfg.machine.clone(),
        ram_size,
        vcpus,
        config: from_effective(cfg),
        sections,
        devices,
        cpu: None,
        tsc_khz: None,
        cpuid: Vec::new(),
        channels: 0,
        compression: None,
        session: 0,
    }
}

/// The properties pinned for the guest's lifetime: those whose value did not
/// come from the machine type itself (`-global`, `-device`, or adopted from a
/// stream), as `(device, property, value, provenance)`, for `vmm ctl status`.
pub fn pinned(e: &EffectiveConfig) -> Vec<(String, String, String, String)> {
    e.devices
        .iter()
        .flat_map(|d| d.props.iter().map(move |p| (d, p)))
        .filter(|(_, p)| {
            matches!(
                p.provenance,
                Provenance::Global | Provenance::Device | Provenance::Stream
            )
        })
        .map(|(d, p)| {
            (
                d.type_name.clone(),
                p.name.clone(),
                p.value.to_string(),
                p.provenance.to_string(),
            )
        })
        .collect()
}

impl LocalRelease {
    /// What a build of `catalog` accepts as `release`: its machine types and
    /// the VMState descriptions of its device types plus `extra` ones (CPU,
    /// machine-level sections).
    pub fn of_catalog(release: &str, catalog: &Catalog, extra: &[&VmStateDesc]) -> LocalRelease {
        let descs = catalog
            .device_types
            .iter()
            .filter_map(|d| d.vmstate)
            .chain(extra.iter().copied());
        LocalRelease {
            release: release.to_string(),
            machine_types: catalog.machines().map(|m| m.name.to_string()).collect(),
            sections: descs
                .map(|d| {
                    let s = SectionSupport {
                        version_id: d.version_id,
                        minimum_version_id: d.minimum_version_id,
                    };
                    (d.name.to_string(), s)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    fn base(machine: &str) -> EffectiveConfig {
        let m = CATALOG
            .machine(machine)
            .expect("machine type in the catalog");
        CATALOG.resolve(m)
    }

    #[test]
    fn only_instantiated_types_and_compared_properties_travel() {
        let e = CATALOG.effective("pc-7.2", &[]).unwrap();
        let all = from_effective(&e);
        let sent = instantiated(all.clone(), &["pcie-root-port", "isa-serial"], &CATALOG);
        assert!(all.contains_key("pci-device") && all.contains_key("virtio-rng-pci"));
        assert_eq!(
            sent.keys().collect::<Vec<_>>(),
            ["isa-serial", "pcie-root-port"]
        );
        let rp = &sent["pcie-root-port"];
        assert!(rp.contains_key("x-pcie-err-unc-mask") && rp.contains_key("slot"));
        for inert in [
            "x-pcie-ari-nextfn-1",
            "acpi-index",
            "chassis",
            "x-speed",
            "x-width",
        ] {
            assert!(
                !rp.contains_key(inert),
                "{inert} has no effect and must not travel"
            );
        }
    }

    #[test]
    fn round_trip_through_the_manifest_form() {
        for m in CATALOG.machines() {
            let b = CATALOG.resolve(m);
            assert_eq!(
                adopt(&b, &from_effective(&b), &CATALOG).unwrap(),
                b,
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn adopting_a_differing_value_pins_it_with_stream_provenance() {
        let b = base("pc-7.2");
        let mut g = from_effective(&b);
        let prop = g["pci-device"]["x-pcie-err-unc-mask"].value.clone();
        let flipped = if prop == "on" { "off" } else { "on" };
        g.get_mut("pci-device")
            .unwrap()
            .get_mut("x-pcie-err-unc-mask")
            .unwrap()
            .value = flipped.into();
        let a = adopt(&b, &g, &CATALOG).unwrap();
        let p = a.get("pci-device", "x-pcie-err-unc-mask").unwrap();
        assert_eq!(p.value.to_string(), flipped);
        assert_eq!(p.provenance, Provenance::Stream);
        assert_eq!(a.diff(&b).len(), 1);
        assert_eq!(
            pinned(&a),
            vec![(
                "pci-device".to_string(),
                "x-pcie-err-unc-mask".to_string(),
                flipped.to_string(),
                "stream".to_string()
            )]
        );
        assert!(pinned(&b).is_empty());
    }

    #[test]
    fn adopting_what_this_build_cannot_present_is_refused() {
        let b = base("pc-7.2");
        let mut g = from_effective(&b);
        g.entry("pci-device".into())
            .or_default()
            .insert("x-future".into(), PropValue::new("on", "default"));
        assert!(matches!(
            adopt(&b, &g, &CATALOG),
            Err(ConfigError::UnknownProperty { .. })
        ));
        let mut g = from_effective(&b);
        g.entry("warp-drive".into()).or_default();
        assert_eq!(
            adopt(&b, &g, &CATALOG),
            Err(ConfigError::UnknownDevice("warp-drive".into()))
        );
        let mut g = from_effective(&b);
        g.get_mut("pci-device")
            .unwrap()
            .get_mut("x-pcie-err-unc-mask")
            .unwrap()
            .value = "maybe".into();
        let e = adopt(&b, &g, &CATALOG).unwrap_err().to_string();
        assert!(
            e.contains("x-pcie-err-unc-mask") && e.contains("maybe"),
            "{e}"
        );
    }

    #[test]
    fn manifest_of_a_resolved_machine() {
        let b = base("pc");
        let m = manifest("next", &b, 1 << 30, 2, vec![], vec![]);
        assert!(m.machine_type.starts_with("pc-") && m.machine_type == b.machine);
        assert_eq!(m.config, from_effective(&b));
        assert_eq!(
            (m.ram_size, m.vcpus, m.format_version),
            (1 << 30, 2, DEFAULT_FORMAT_VERSION)
        );
    }

    #[test]
    fn local_release_lists_machines_and_sections() {
        let l = LocalRelease::of_catalog("next", &CATALOG, &[]);
        assert!(l.machine_types.contains("pc-7.2"));
        assert!(!l.sections.is_empty());
        for s in l.sections.values() {
            assert!(s.minimum_version_id <= s.version_id);
        }
    }
}

//! Looking machine and device types up, and resolving a machine type's
//! properties from the compiled timelines.

use crate::overrides::{EffectiveConfig, EffectiveDevice, EffectiveProp};
use crate::table::{Catalog, DeviceType, Family, MachineType, PropDef, Provenance};

impl Catalog {
    /// Every machine type of every family, families in order, oldest first.
    pub fn machines(&self) -> impl Iterator<Item = &MachineType> {
        self.families.iter().flat_map(|f| f.machines.iter())
    }

    /// Looks a machine type up by versioned name or alias (`pc` → newest).
    pub fn machine(&self, name_or_alias: &str) -> Option<&MachineType> {
        self.machines()
            .find(|m| m.name == name_or_alias || m.alias == Some(name_or_alias))
    }

    /// Every machine name and alias (for suggestions).
    pub fn machine_names(&self) -> impl Iterator<Item = &str> {
        self.machines()
            .flat_map(|m| std::iter::once(m.name).chain(m.alias))
    }

    /// A family by name.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The deltas machine type `m` applies, in application order (newest
    /// version first, series in family order; later entries win).
    pub fn applied_deltas(&self, m: &MachineType) -> Vec<&crate::table::Delta> {
        let Some(f) = self.family(m.family) else {
            return Vec::new();
        };
        let newest = f.machines.last().map(|x| x.version);
        let mut out: Vec<&crate::table::Delta> = self
            .deltas
            .iter()
            .filter(|d| {
                f.series.contains(&d.series) && d.version >= m.version && Some(d.version) < newest
            })
            .collect();
        let pos =
            |d: &crate::table::Delta| f.series.iter().position(|s| *s == d.series).unwrap_or(0);
        out.sort_by(|a, b| b.version.cmp(&a.version).then_with(|| pos(a).cmp(&pos(b))));
        out
    }

    /// A device type by name.
    pub fn device_type(&self, name: &str) -> Option<&DeviceType> {
        self.device_types.iter().find(|d| d.name == name)
    }

    /// Whether a migration compares `ty.prop`: false for a property whose
    /// effect is none here (unknown ones are compared: nothing passes
    /// silently).
    pub fn compared(&self, ty: &str, prop: &str) -> bool {
        self.device_type(ty)
            .and_then(|d| d.props.iter().find(|p| p.name == prop))
            .is_none_or(|p| p.effect.compared())
    }

    /// Whether `ty` is `ancestor` or one of its subtypes.
    pub fn is_subtype(&self, ty: &str, ancestor: &str) -> bool {
        self.device_type(ty)
            .is_some_and(|d| d.ancestors.contains(&ancestor))
    }

    /// The resolved value and provenance of one property for a machine type,
    /// before any override.
    pub fn resolved_prop(&self, m: &MachineType, dev: &DeviceType, p: &PropDef) -> EffectiveProp {
        let step = self
            .family(m.family)
            .and_then(|f| {
                let i = f
                    .timelines
                    .binary_search_by(|t| t.type_name.cmp(dev.name))
                    .ok()?;
                let props = f.timelines[i].props;
                let j = props.binary_search_by(|t| t.prop.cmp(p.name)).ok()?;
                Some(props[j].steps)
            })
            .and_then(|steps| {
                let k = steps.partition_point(|s| s.version < m.version);
                steps.get(k)
            });
        match step {
            Some(s) => EffectiveProp {
                name: p.name.to_string(),
                value: s.value.clone(),
                provenance: s.provenance.clone(),
            },
            None => EffectiveProp {
                name: p.name.to_string(),
                value: p.default.clone(),
                provenance: Provenance::Default,
            },
        }
    }

    /// Every property of every device type for machine type `m`, with
    /// provenance, before overrides.
    pub fn resolve(&self, m: &MachineType) -> EffectiveConfig {
        let devices = self
            .device_types
            .iter()
            .map(|d| EffectiveDevice {
                type_name: d.name.to_string(),
                props: d
                    .props
                    .iter()
                    .map(|p| self.resolved_prop(m, d, p))
                    .collect(),
            })
            .collect();
        EffectiveConfig {
            machine: m.name.to_string(),
            devices,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::table::*;
    use crate::{MachineVersion, Override, OverrideError, PropType, Provenance, Value};
    use std::borrow::Cow;

    const KNOBS: Knobs = Knobs {
        max_cpus: 1,
        default_cpus: 1,
        memory_mib: 1,
        devices: &[],
    };

    const fn machine(name: &'static str, minor: u16, alias: Option<&'static str>) -> MachineType {
        MachineType {
            name,
            family: "f",
            version: MachineVersion::new(1, minor),
            alias,
            lifecycle: Lifecycle::Supported,
            introduced_in: "1.0",
            knobs: KNOBS,
        }
    }

    static CATALOG: Catalog = Catalog {
        families: &[Family {
            name: "f",
            doc: "",
            alias: Some("f"),
            series: &["hw"],
            machines: &[
                machine("f-1.0", 0, None),
                machine("f-1.1", 1, None),
                machine("f-1.2", 2, Some("f")),
            ],
            timelines: &[TypeTimeline {
                type_name: "child",
                props: &[PropTimeline {
                    prop: "x",
                    steps: &[
                        Step::compat(1, 0, Value::Uint(1), "hw_1_0", "child"),
                        Step::compat(1, 1, Value::Uint(2), "hw_1_1", "base"),
                    ],
                }],
            }],
        }],
        device_types: &[
            DeviceType {
                name: "base",
                parent: None,
                ancestors: &["base"],
                doc: "",
                props: &[PropDef::new(
                    "x",
                    "base",
                    PropType::uint(8, 0, 9, false, false),
                    Value::Uint(3),
                    "",
                )],
                vmstate: None,
                cpu_model: false,
            },
            DeviceType {
                name: "child",
                parent: Some("base"),
                ancestors: &["child", "base"],
                doc: "",
                props: &[PropDef::new(
                    "x",
                    "base",
                    PropType::uint(8, 0, 9, false, false),
                    Value::Uint(3),
                    "",
                )],
                vmstate: None,
                cpu_model: false,
            },
        ],
        deltas: &[],
        releases: &[],
        deprecations: &[],
        cpu_features: &[],
    };

    fn x(m: &str, o: &[Override]) -> (Value, Provenance) {
        let c = CATALOG.effective(m, o).unwrap();
        let p = c.get("child", "x").unwrap();
        (p.value.clone(), p.provenance.clone())
    }

    #[test]
    fn timeline_picks_the_oldest_delta_reaching_the_machine() {
        assert_eq!(x("f-1.0", &[]).0, Value::Uint(1));
        assert_eq!(x("f-1.1", &[]).0, Value::Uint(2));
        assert_eq!(x("f", &[]), (Value::Uint(3), Provenance::Default));
        assert_eq!(
            x("f-1.1", &[]).1,
            Provenance::Compat {
                delta: Cow::Borrowed("hw_1_1"),
                via: Cow::Borrowed("base")
            }
        );
    }

    #[test]
    fn global_reaches_subtypes_and_device_wins() {
        let g = Override::parse_global("base.x=7").unwrap();
        assert_eq!(
            x("f-1.0", std::slice::from_ref(&g)),
            (Value::Uint(7), Provenance::Global)
        );
        let d = Override::parse_device("child,x=8").unwrap();
        assert_eq!(x("f-1.0", &[d, g]), (Value::Uint(8), Provenance::Device));
    }

    #[test]
    fn errors_suggest() {
        let e = CATALOG.effective("f-1.3", &[]).unwrap_err();
        assert!(
            matches!(
                e,
                OverrideError::UnknownMachine {
                    suggestion: Some(_),
                    ..
                }
            ),
            "{e}"
        );
        let e = CATALOG
            .effective("f", &[Override::parse_device("chlid,x=1").unwrap()])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown device type `chlid` (did you mean `child`?)"
        );
        let e = CATALOG
            .effective("f", &[Override::parse_global("base.x=10").unwrap()])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value for base.x: 10 is out of range 0..=9"
        );
    }

    #[test]
    fn diff_and_serde_roundtrip() {
        let a = CATALOG.effective("f-1.0", &[]).unwrap();
        let b = CATALOG.effective("f-1.2", &[]).unwrap();
        let d = a.diff(&b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].type_name, "child");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            serde_json::from_str::<crate::EffectiveConfig>(&json).unwrap(),
            a
        );
    }
}

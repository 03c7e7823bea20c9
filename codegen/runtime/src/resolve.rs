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

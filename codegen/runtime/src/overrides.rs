//! `-global`/`-device` overrides and the effective configuration of a VM.

use crate::suggest::{did_you_mean, hint};
use crate::table::{Catalog, Provenance};
use crate::value::{Value, ValueError};
use serde::{Deserialize, Serialize};

/// A user override of property values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// `-global type.prop=value`: the type and all its subtypes.
    Global {
        /// Type named (reaches subtypes).
        type_name: String,
        /// Property.
        property: String,
        /// Unparsed value.
        value: String,
    },
    /// `-device type,prop=value,...`: that type only; beats `-global`.
    Device {
        /// Device type.
        type_name: String,
        /// `(property, unparsed value)` pairs in order.
        props: Vec<(String, String)>,
    },
}

/// Why overrides could not be applied. One-line messages with a "did you
/// mean" where a close candidate exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// Malformed `-global`/`-device` text.
    #[error("malformed {what} `{input}`: expected {expected}")]
    Syntax {
        /// `-global` or `-device`.
        what: &'static str,
        /// The text.
        input: String,
        /// The expected shape.
        expected: &'static str,
    },
    /// No such machine type or alias.
    #[error("unknown machine type `{name}`{}", hint(.suggestion))]
    UnknownMachine {
        /// Name given.
        name: String,
        /// Closest known name.
        suggestion: Option<String>,
    },
    /// No such device type.
    #[error("unknown device type `{name}`{}", hint(.suggestion))]
    UnknownType {
        /// Name given.
        name: String,
        /// Closest known name.
        suggestion: Option<String>,
    },
    /// The type has no such property.
    #[error("device type `{type_name}` has no property `{name}`{}", hint(.suggestion))]
    UnknownProperty {
        /// Device type.
        type_name: String,
        /// Property given.
        name: String,
        /// Closest property name.
        suggestion: Option<String>,
    },
    /// The value does not parse as the property's type.
    #[error("bad value for {type_name}.{property}: {source}")]
    BadValue {
        /// Device type.
        type_name: String,
        /// Property.
        property: String,
        /// Why.
        source: ValueError,
    },
}

impl Override {
    /// Parses the argument of `-global`: `type.prop=value`.
    pub fn parse_global(s: &str) -> Result<Self, OverrideError> {
        let syntax = || OverrideError::Syntax {
            what: "-global",
            input: s.to_string(),
            expected: "TYPE.PROPERTY=VALUE",
        };
        let (lhs, value) = s.split_once('=').ok_or_else(syntax)?;
        let (ty, prop) = lhs.split_once('.').ok_or_else(syntax)?;
        if ty.is_empty() || prop.is_empty() {
            return Err(syntax());
        }
        Ok(Override::Global {
            type_name: ty.to_string(),
            property: prop.to_string(),
            value: value.to_string(),
        })
    }

    /// Parses the argument of `-device`: `type[,prop=value]...`; a literal
    /// comma inside a value is written `,,` (as in the reference).
    pub fn parse_device(s: &str) -> Result<Self, OverrideError> {
        let syntax = || OverrideError::Syntax {
            what: "-device",
            input: s.to_string(),
            expected: "TYPE[,PROPERTY=VALUE]...",
        };
        let mut parts = split_commas(s).into_iter();
        let ty = parts
            .next()
            .filter(|t| !t.is_empty() && !t.contains('='))
            .ok_or_else(syntax)?;
        let props = parts
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(syntax()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Override::Device {
            type_name: ty,
            props,
        })
    }
}

/// Splits on `,`, treating `,,` as a literal comma.
fn split_commas(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            cur.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            cur.push(',');
        } else {
            out.push(std::mem::take(&mut cur));
        }
    }
    out.push(cur);
    out
}

/// One property's effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveProp {
    /// Property name.
    pub name: String,
    /// Value.
    pub value: Value,
    /// Origin.
    pub provenance: Provenance,
}

/// Every property of one device type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveDevice {
    /// Device type.
    pub type_name: String,
    /// Properties in declaration order (inherited first).
    pub props: Vec<EffectiveProp>,
}

/// The effective guest-visible configuration of a VM: the resolved versioned
/// machine name and every property of every device type, with provenance.
/// Travels in the migration manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveConfig {
    /// Versioned machine type name (never an alias).
    pub machine: String,
    /// Every device type, in catalog order.
    pub devices: Vec<EffectiveDevice>,
}

/// One property that differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropDiff {
    /// Device type.
    pub type_name: String,
    /// Property.
    pub property: String,
    /// Left side (`None`: absent there).
    pub left: Option<EffectiveProp>,
    /// Right side (`None`: absent there).
    pub right: Option<EffectiveProp>,
}

impl EffectiveConfig {
    /// One device type's properties.
    pub fn device(&self, type_name: &str) -> Option<&EffectiveDevice> {
        self.devices.iter().find(|d| d.type_name == type_name)
    }

    /// One property.
    pub fn get(&self, type_name: &str, prop: &str) -> Option<&EffectiveProp> {
        self.device(type_name)?
            .props
            .iter()
            .find(|p| p.name == prop)
    }

    /// One property's value.
    pub fn value(&self, type_name: &str, prop: &str) -> Option<&Value> {
        self.get(type_name, prop).map(|p| &p.value)
    }

    fn get_mut(&mut self, type_name: &str, prop: &str) -> Option<&mut EffectiveProp> {
        let d = self.devices.iter_mut().find(|d| d.type_name == type_name)?;
        d.props.iter_mut().find(|p| p.name == prop)
    }

    /// Every property whose value differs between `self` (left) and `other`
    /// (right), or that exists on one side only. Provenance alone is not a
    /// difference.
    pub fn diff(&self, other: &EffectiveConfig) -> Vec<PropDiff> {
        let mut out = Vec::new();
        for d in &self.devices {
            for p in &d.props {
                let r = other.get(&d.type_name, &p.name);
                if r.map(|r| &r.value) != Some(&p.value) {
                    out.push(PropDiff {
                        type_name: d.type_name.clone(),
                        property: p.name.clone(),
                        left: Some(p.clone()),
                        right: r.cloned(),
                    });
                }
            }
        }
        for d in &other.devices {
            for p in &d.props {
                if self.get(&d.type_name, &p.name).is_none() {
                    out.push(PropDiff {
                        type_name: d.type_name.clone(),
                        property: p.name.clone(),
                        left: None,
                        right: Some(p.clone()),
                    });
                }
            }
        }
        out
    }
}

impl Catalog {
    /// The device type `name`, or an error with a "did you mean".
    pub fn check_type(&self, name: &str) -> Result<&crate::DeviceType, OverrideError> {
        self.device_type(name)
            .ok_or_else(|| OverrideError::UnknownType {
                name: name.to_string(),
                suggestion: did_you_mean(name, self.device_types.iter().map(|d| d.name)),
            })
    }

    /// `raw` parsed as `type_name.prop`, or an error naming the type, the
    /// property (with a "did you mean") or the value.
    pub fn check_value(
        &self,
        type_name: &str,
        prop: &str,
        raw: &str,
    ) -> Result<Value, OverrideError> {
        let ty = self.check_type(type_name)?;
        let def = ty.props.iter().find(|p| p.name == prop).ok_or_else(|| {
            OverrideError::UnknownProperty {
                type_name: type_name.to_string(),
                name: prop.to_string(),
                suggestion: did_you_mean(prop, ty.props.iter().map(|p| p.name)),
            }
        })?;
        Value::parse(&def.ty, raw).map_err(|source| OverrideError::BadValue {
            type_name: type_name.to_string(),
            property: prop.to_string(),
            source,
        })
    }

    /// Looks a machine type up by name or alias, with a "did you mean" error.
    pub fn machine_or_err(&self, name: &str) -> Result<&crate::MachineType, OverrideError> {
        self.machine(name)
            .ok_or_else(|| OverrideError::UnknownMachine {
                name: name.to_string(),
                suggestion: did_you_mean(name, self.machine_names()),
            })
    }

    /// The effective configuration of machine `name` (versioned name or
    /// alias) after `overrides`: every `-global` (in order, reaching
    /// subtypes), then every `-device` (in order, that type only).
    pub fn effective(
        &self,
        name: &str,
        overrides: &[Override],
    ) -> Result<EffectiveConfig, OverrideError> {
        let m = self.machine_or_err(name)?;
        let mut cfg = self.resolve(m);
        self.apply(&mut cfg, overrides)?;
        Ok(cfg)
    }

    /// Applies overrides to a configuration (see [`Catalog::effective`]).
    pub fn apply(
        &self,
        cfg: &mut EffectiveConfig,
        overrides: &[Override],
    ) -> Result<(), OverrideError> {
        let globals = overrides
            .iter()
            .filter(|o| matches!(o, Override::Global { .. }));
        let devices = overrides
            .iter()
            .filter(|o| matches!(o, Override::Device { .. }));
        for o in globals.chain(devices) {
            match o {
                Override::Global {
                    type_name,
                    property,
                    value,
                } => {
                    let v = self.check_value(type_name, property, value)?;
                    for d in self
                        .device_types
                        .iter()
                        .filter(|d| d.ancestors.contains(&type_name.as_str()))
                    {
                        if let Some(p) = cfg.get_mut(d.name, property) {
                            p.value = v.clone();
                            p.provenance = Provenance::Global;
                        }
                    }
                }
                Override::Device { type_name, props } => {
                    self.check_type(type_name)?;
                    for (prop, raw) in props {
                        let v = self.check_value(type_name, prop, raw)?;
                        if let Some(p) = cfg.get_mut(type_name, prop) {
                            p.value = v;
                            p.provenance = Provenance::Device;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_global_and_device() {
        assert_eq!(
            Override::parse_global("pci-device.x-pcie-err-unc-mask=on").unwrap(),
            Override::Global {
                type_name: "pci-device".into(),
                property: "x-pcie-err-unc-mask".into(),
                value: "on".into()
            }
        );
        assert!(Override::parse_global("nodot=1").is_err());
        assert!(Override::parse_global("a.b").is_err());
        let d = Override::parse_device("virtio-blk-device,num-queues=2,serial=").unwrap();
        assert_eq!(
            d,
            Override::Device {
                type_name: "virtio-blk-device".into(),
                props: vec![
                    ("num-queues".into(), "2".into()),
                    ("serial".into(), "".into())
                ]
            }
        );
        assert!(Override::parse_device(",a=1").is_err());
        assert_eq!(
            Override::parse_device("t,serial=a,,b,x=1").unwrap(),
            Override::Device {
                type_name: "t".into(),
                props: vec![("serial".into(), "a,b".into()), ("x".into(), "1".into())]
            }
        );
        assert!(Override::parse_device("t,novalue").is_err());
    }
}

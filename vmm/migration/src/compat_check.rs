//! The destination's decision on a manifest, before any RAM moves.
//!
//! Every refusal names its culprit: both machine types; the device, the
//! property and both values; the section and its versions. All mismatches
//! are reported at once. A destination started with only `--incoming`
//! adopts the stream's configuration; one started with explicit settings
//! (`-M`, `--device`, `--global`) must present exactly the stream's
//! configuration once its settings are applied.

use super::manifest::{GuestConfig, Manifest};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A VMState description this build can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionSupport {
    /// The version this build writes; incoming versions above it are refused.
    pub version_id: u32,
    /// The oldest version this build loads.
    pub minimum_version_id: u32,
}

/// What this build (or the release it acts as) can accept.
#[derive(Clone, Debug, Default)]
pub struct LocalRelease {
    /// Release name, for messages.
    pub release: String,
    /// Machine types this build can present.
    pub machine_types: BTreeSet<String>,
    /// Loadable sections by VMState name. A manifest section named
    /// `NAME/INSTANCE` is looked up as `NAME`.
    pub sections: BTreeMap<String, SectionSupport>,
}

/// How the destination was started.
pub enum IncomingConfig<'a> {
    /// Only `--incoming`: take the stream's machine type and configuration.
    Adopt,
    /// Explicit settings. `machine_type` is `-M` if given; `resolve` returns
    /// this build's configuration of a machine type with the explicit
    /// `--global`/`--device` settings applied.
    Explicit {
        machine_type: Option<String>,
        resolve: &'a dyn Fn(&str) -> Result<GuestConfig, String>,
    },
}

/// One reason to refuse a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    MachineType {
        stream: String,
        local: String,
    },
    UnknownMachineType {
        stream: String,
        release: String,
    },
    Resolve {
        machine_type: String,
        error: String,
    },
    Property {
        device: String,
        property: String,
        stream: Option<String>,
        local: Option<String>,
    },
    SectionTooNew {
        name: String,
        stream: u32,
        local: u32,
    },
    SectionTooOld {
        name: String,
        stream: u32,
        minimum: u32,
    },
    UnknownSection {
        name: String,
    },
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(absent)")
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MachineType { stream, local } => write!(
                f,
                "machine type differs: the stream has `{stream}`, this destination was started with `{local}`"
            ),
            Mismatch::UnknownMachineType { stream, release } => {
                write!(f, "machine type `{stream}` is unknown to release {release}")
            }
            Mismatch::Resolve {
                machine_type,
                error,
            } => {
                write!(f, "cannot configure machine type `{machine_type}`: {error}")
            }
            Mismatch::Property {
                device,
                property,
                stream,
                local,
            } => write!(
                f,
                "property `{device}.{property}` differs: the stream has {}, this destination has {}",
                show(stream),
                show(local)
            ),
            Mismatch::SectionTooNew {
                name,
                stream,
                local,
            } => write!(
                f,
                "section `{name}` has version {stream}, above this destination's version {local}"
            ),
            Mismatch::SectionTooOld {
                name,
                stream,
                minimum,
            } => write!(
                f,
                "section `{name}` has version {stream}, below this destination's minimum version {minimum}"
            ),
            Mismatch::UnknownSection { name } => {
                write!(f, "section `{name}` is unknown to this destination")
            }
        }
    }
}

/// The stream was refused; every mismatch found is listed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("incompatible migration stream: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Refused(pub Vec<Mismatch>);

/// The stream was accepted: the configuration the destination must present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The resolved machine type (the stream's).
    pub machine_type: String,
    /// The configuration to build the guest with.
    pub config: GuestConfig,
    /// Whether it was adopted from the stream (no explicit settings).
    pub adopted: bool,
}

/// Checks a manifest against this build and the destination's settings.
pub fn check(
    m: &Manifest,
    local: &LocalRelease,
    how: &IncomingConfig,
) -> Result<Accepted, Refused> {
    let mut out = Vec::new();
    check_sections(m, local, &mut out);
    let accepted = match how {
        IncomingConfig::Adopt => {
            if !local.machine_types.contains(&m.machine_type) {
                out.push(Mismatch::UnknownMachineType {
                    stream: m.machine_type.clone(),
                    release: local.release.clone(),
                });
            }
            Some(m.config.clone())
        }
        IncomingConfig::Explicit {
            machine_type,
            resolve,
        } => match machine_type.as_deref().filter(|t| *t != m.machine_type) {
            Some(t) => {
                out.push(Mismatch::MachineType {
                    stream: m.machine_type.clone(),
                    local: t.to_string(),
                });
                None
            }
            None => match resolve(&m.machine_type) {
                Ok(cfg) => {
                    diff_config(&m.config, &cfg, &mut out);
                    Some(cfg)
                }
                Err(error) => {
                    out.push(Mismatch::Resolve {
                        machine_type: m.machine_type.clone(),
                        error,
                    });
                    None
                }
            },
        },
    };
    match accepted {
        Some(config) if out.is_empty() => Ok(Accepted {
            machine_type: m.machine_type.clone(),
            config,
            adopted: matches!(how, IncomingConfig::Adopt),
        }),
        _ => Err(Refused(out)),
    }
}

fn check_sections(m: &Manifest, local: &LocalRelease, out: &mut Vec<Mismatch>) {
    for s in &m.sections {
        let base = s.name.split_once('/').map_or(s.name.as_str(), |(b, _)| b);
        let name = s.name.clone();
        match local.sections.get(base) {
            None => out.push(Mismatch::UnknownSection { name }),
            Some(l) if s.version_id > l.version_id => out.push(Mismatch::SectionTooNew {
                name,
                stream: s.version_id,
                local: l.version_id,
            }),
            Some(l) if s.version_id < l.minimum_version_id => out.push(Mismatch::SectionTooOld {
                name,
                stream: s.version_id,
                minimum: l.minimum_version_id,
            }),
            Some(_) => {}
        }
    }
}

/// Compares values only: provenance is not guest-visible.
fn diff_config(stream: &GuestConfig, local: &GuestConfig, out: &mut Vec<Mismatch>) {
    let devices: BTreeSet<&String> = stream.keys().chain(local.keys()).collect();
    for dev in devices {
        let s = stream.get(dev);
        let l = local.get(dev);
        let props: BTreeSet<&String> = s.into_iter().chain(l).flat_map(|p| p.keys()).collect();
        for prop in props {
            let sv = s.and_then(|p| p.get(prop)).map(|v| v.value.clone());
            let lv = l.and_then(|p| p.get(prop)).map(|v| v.value.clone());
            if sv != lv {
                out.push(Mismatch::Property {
                    device: dev.clone(),
                    property: prop.clone(),
                    stream: sv,
                    local: lv,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;

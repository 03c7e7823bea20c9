//! What a process presents: this build's own release ([`Persona::current`])
//! or, with `vmm run --as-release R`, exactly what frozen release `R`
//! presented ([`Persona::frozen`]), from `R`'s lock
//! (`compat/releases/R.lock.toml`, embedded by [`crate::release::matrix::locks`]):
//! the resolved property values and machine knobs of the chosen machine
//! type, the VMState section versions, the stream format, and `R` as the
//! source release of the manifest.
//!
//! A persona is a value: `vmm run` makes one from its command line and
//! passes it to whatever resolves a machine type or builds or checks a
//! manifest (the migration adapters, the control handler). Nothing here is
//! process-global.
//!
//! Honest limits: this build has one implementation of each device's state,
//! so a persona can only present a section version equal to the one this
//! build writes (every frozen lock does; [`Persona::frozen`] refuses
//! otherwise), and one stream format (1). Sections a lock lists that this
//! VMM never sends (`cpu`, `configuration`) are accepted in checks but never
//! written; the runtime's own `kvm-vm` section is not in any lock and keeps
//! this build's version.

mod adopt;
mod error;
#[cfg(test)]
mod tests;

pub use adopt::origin_of;
pub use error::PersonaError;

use std::collections::BTreeMap;

use compat_runtime::deprecation::MachineUse;
use compat_runtime::release::{MIN_STREAM_FORMAT, STREAM_FORMAT};
use compat_runtime::suggest::did_you_mean;
use compat_runtime::table::Provenance;
use compat_runtime::vmstate::VmStateDesc;
use compat_runtime::{
    Catalog, EffectiveConfig, Knobs, Lock, LockMachine, MachineType, Override, Value,
};

use crate::builder::config::{self as bconfig, ConfigError, MachineConfig, RunRequest};
use crate::release::matrix::{self, NEXT};
use migration::compat_check::{LocalRelease, SectionSupport};
use migration::config as mconfig;

/// VMState section versions a release sends: name → `(minimum, version)`.
pub type SectionVersions = BTreeMap<String, SectionSupport>;

/// The stream format a release writes, and the oldest it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFormat {
    /// Written.
    pub version: u32,
    /// Oldest read.
    pub minimum: u32,
}

/// The release a process presents: this build's (no lock), or a frozen one.
#[derive(Debug, Clone, Default)]
pub struct Persona {
    lock: Option<Lock>,
}

impl Persona {
    /// This build as itself: release [`NEXT`], its own tables.
    pub fn current() -> Self {
        Self { lock: None }
    }

    /// `--as-release R` if given, else [`current`](Self::current).
    pub fn from_arg(release: Option<&str>) -> Result<Self, PersonaError> {
        release.map_or_else(|| Ok(Self::current()), Self::frozen)
    }

    /// The embedded lock of `release`; refuses a release without a lock and
    /// one this build cannot act as (stream format, section versions).
    pub fn frozen(release: &str) -> Result<Self, PersonaError> {
        let Some((_, text)) = matrix::locks::LOCKS.iter().find(|(r, _)| *r == release) else {
            let names = matrix::locks::LOCKS.iter().map(|(r, _)| *r);
            return Err(PersonaError::UnknownRelease {
                name: release.to_string(),
                known: names.clone().collect::<Vec<_>>().join(", "),
                suggestion: did_you_mean(release, names),
            });
        };
        let lock = Lock::parse(text).map_err(|e| PersonaError::BadLock {
            release: release.to_string(),
            error: e.to_string(),
        })?;
        if lock.stream_format != STREAM_FORMAT || lock.min_stream_format < MIN_STREAM_FORMAT {
            return Err(PersonaError::StreamFormat {
                release: lock.release.clone(),
                format: lock.stream_format,
                min: lock.min_stream_format,
            });
        }
        for d in bconfig::catalog()
            .device_types
            .iter()
            .filter_map(|d| d.vmstate)
        {
            if let Some(s) = lock.section(d.name)
                && s.version_id != d.version_id
            {
                return Err(PersonaError::SectionVersion {
                    release: lock.release.clone(),
                    section: d.name.to_string(),
                    locked: s.version_id,
                    ours: d.version_id,
                });
            }
        }
        Ok(Self { lock: Some(lock) })
    }

    /// The release presented: the lock's, else [`NEXT`].
    pub fn release(&self) -> &str {
        self.lock.as_ref().map_or(NEXT, |l| l.release.as_str())
    }

    /// The frozen release's lock, if this is not [`current`](Self::current).
    pub fn lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// The versioned name `-M name` means for this release (the family
    /// alias names the release's newest machine type).
    pub fn machine_name(&self, name: &str) -> Result<&'static str, PersonaError> {
        Ok(self.machine_type(name)?.name)
    }

    /// Refuses at once a `-M` this release does not know (also before a
    /// destination waits for a stream).
    pub fn check_machine(&self, machine: Option<&str>) -> Result<(), PersonaError> {
        machine.map_or(Ok(()), |m| self.machine_name(m).map(|_| ()))
    }

    fn machine_type(&self, name: &str) -> Result<&'static MachineType, PersonaError> {
        let catalog = bconfig::catalog();
        Ok(match &self.lock {
            Some(l) => locked_machine(l, catalog, name)?.1,
            None => catalog.machine_or_err(name)?,
        })
    }

    /// The effective configuration of `machine` with `overrides` (`-global`
    /// then `-device`, as for this build), as this release presents it.
    ///
    /// Values come from the lock; where the lock's value differs from this
    /// build's resolution the provenance says so (`release 8.0 (erratum
    /// aer-uncor-mask)`). A property this build has and the lock lacks keeps
    /// this build's value (none today: every lock lists every property).
    pub fn effective(
        &self,
        machine: &str,
        overrides: &[Override],
    ) -> Result<EffectiveConfig, PersonaError> {
        let catalog = bconfig::catalog();
        let Some(lock) = &self.lock else {
            return Ok(catalog.effective(machine, overrides)?);
        };
        let (lm, cm) = locked_machine(lock, catalog, machine)?;
        let mut cfg = catalog.resolve(cm);
        for dev in &mut cfg.devices {
            let (Some(locked), Some(dt)) = (
                lm.props.get(&dev.type_name),
                catalog.device_type(&dev.type_name),
            ) else {
                continue;
            };
            for prop in &mut dev.props {
                let Some(text) = locked.get(&prop.name) else {
                    continue;
                };
                let def = dt.props.iter().find(|d| d.name == prop.name);
                let value = match def {
                    _ if text == mconfig::UNSET => Value::Unset,
                    Some(def) => {
                        Value::parse(&def.ty, text).map_err(|e| PersonaError::BadValue {
                            release: lock.release.clone(),
                            device: dev.type_name.clone(),
                            property: prop.name.clone(),
                            value: text.clone(),
                            error: e.to_string(),
                        })?
                    }
                    None => continue,
                };
                if value != prop.value {
                    prop.value = value;
                    prop.provenance =
                        release_provenance(catalog, &lock.release, &dev.type_name, &prop.name);
                }
            }
        }
        catalog.apply(&mut cfg, overrides)?;
        Ok(cfg)
    }

    /// The machine type as this release presents it, before overrides (the
    /// base a destination adopts a stream's configuration onto).
    pub fn base(&self, m: &MachineType) -> Result<EffectiveConfig, PersonaError> {
        self.effective(m.name, &[])
    }

    /// The machine knobs of `m` as this release presents them.
    pub fn knobs(&self, m: &MachineType) -> Result<Knobs, PersonaError> {
        let ours = Knobs {
            max_cpus: m.knobs.max_cpus,
            default_cpus: m.knobs.default_cpus,
            memory_mib: m.knobs.memory_mib,
            devices: m.knobs.devices,
        };
        let Some(lock) = &self.lock else {
            return Ok(ours);
        };
        let (lm, _) = locked_machine(lock, bconfig::catalog(), m.name)?;
        let mut locked: Vec<&str> = lm.devices.iter().map(String::as_str).collect();
        let mut have: Vec<&str> = m.knobs.devices.to_vec();
        locked.sort_unstable();
        have.sort_unstable();
        if locked != have {
            return Err(PersonaError::Devices {
                release: lock.release.clone(),
                machine: m.name.to_string(),
                locked: lm.devices.join(", "),
                ours: m.knobs.devices.join(", "),
            });
        }
        Ok(Knobs {
            max_cpus: lm.max_cpus,
            default_cpus: lm.default_cpus,
            memory_mib: lm.memory_mib,
            ..ours
        })
    }

    /// A new VM (`vmm run` without `--incoming`): admits the machine type's
    /// lifecycle (warns if deprecated, refuses if removed), then
    /// [`machine_config`](Self::machine_config).
    pub fn start(&self, req: &RunRequest) -> Result<MachineConfig, PersonaError> {
        let name = self.machine_name(&req.machine)?;
        crate::release::lifecycle::admit(bconfig::catalog(), name, MachineUse::Run)?;
        self.machine_config(req)
    }

    /// `vmm run`'s machine configuration as this release presents it.
    pub fn machine_config(&self, req: &RunRequest) -> Result<MachineConfig, PersonaError> {
        let m = self.machine_type(&req.machine)?;
        let eff = self.effective(m.name, &req.overrides)?;
        bconfig::from_effective(&eff, &self.knobs(m)?, req)
            .map_err(|e: ConfigError| PersonaError::Config(e.to_string()))
    }

    /// What this release accepts on an incoming stream: its machine types
    /// and section versions, plus `extra` runtime sections not in any lock
    /// (`kvm-vm`) at this build's versions.
    pub fn local_release(&self, extra: &[&VmStateDesc]) -> LocalRelease {
        let catalog = bconfig::catalog();
        let Some(lock) = &self.lock else {
            return LocalRelease::of_catalog(NEXT, catalog, extra);
        };
        let mut sections = self.section_versions();
        for d in extra {
            sections
                .entry(d.name.to_string())
                .or_insert(SectionSupport {
                    version_id: d.version_id,
                    minimum_version_id: d.minimum_version_id,
                });
        }
        LocalRelease {
            release: lock.release.clone(),
            machine_types: lock.machine.iter().map(|m| m.name.clone()).collect(),
            sections,
        }
    }

    /// The VMState section versions this release sends.
    pub fn section_versions(&self) -> SectionVersions {
        let Some(lock) = &self.lock else {
            return LocalRelease::of_catalog(NEXT, bconfig::catalog(), &[]).sections;
        };
        lock.section
            .iter()
            .map(|s| {
                let v = SectionSupport {
                    version_id: s.version_id,
                    minimum_version_id: s.minimum_version_id,
                };
                (s.name.clone(), v)
            })
            .collect()
    }

    /// The newest stream format this release writes (with channels or
    /// compression) and reads: a frozen release's own, this build's
    /// [`migration::stream::format::FORMAT_VERSION`].
    pub fn max_stream_format(&self) -> u32 {
        match &self.lock {
            Some(l) => l.stream_format,
            None => migration::stream::format::FORMAT_VERSION,
        }
    }

    /// The stream format this release writes and reads.
    pub fn stream_format(&self) -> StreamFormat {
        match &self.lock {
            Some(l) => StreamFormat {
                version: l.stream_format,
                minimum: l.min_stream_format,
            },
            None => StreamFormat {
                version: STREAM_FORMAT,
                minimum: MIN_STREAM_FORMAT,
            },
        }
    }
}

/// The lock's machine type `name` (versioned, or the family alias, which
/// names the release's newest machine type of that family).
fn locked_machine<'a>(
    lock: &'a Lock,
    catalog: &'static Catalog,
    name: &str,
) -> Result<(&'a LockMachine, &'static MachineType), PersonaError> {
    let unknown = || PersonaError::UnknownMachine {
        release: lock.release.clone(),
        machine: name.to_string(),
        known: lock
            .machine
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let cm = catalog.machine(name).ok_or_else(unknown)?;
    let lm = if cm.name != name {
        lock.machine.iter().rev().find(|m| {
            catalog
                .machine(&m.name)
                .is_some_and(|c| c.family == cm.family)
        })
    } else {
        lock.machine(name)
    }
    .ok_or_else(unknown)?;
    let cm = catalog.machine(&lm.name).ok_or_else(unknown)?;
    Ok((lm, cm))
}

/// `release 8.0 (erratum aer-uncor-mask)`: a value the lock has and this
/// build's tables do not give the machine type.
fn release_provenance(catalog: &Catalog, release: &str, ty: &str, prop: &str) -> Provenance {
    let erratum = catalog
        .releases
        .iter()
        .filter(|r| r.version == release)
        .flat_map(|r| r.errata)
        .find(|e| e.property == prop && catalog.is_subtype(ty, e.type_name));
    let (text, via) = match erratum {
        Some(e) => (format!("release {release} (erratum {})", e.id), e.type_name),
        None => (format!("release {release}"), ty),
    };
    Provenance::Compat {
        delta: text.into(),
        via: via.to_string().into(),
    }
}

//! `vmm run --as-release R`: this build presenting exactly what frozen
//! release `R` presented, from `R`'s lock (`compat/releases/R.lock.toml`,
//! embedded by [`crate::matrix::locks`]): the resolved property values and
//! machine knobs of the chosen machine type, the VMState section versions,
//! the stream format, and `R` as the source release of the manifest.
//!
//! The persona is chosen once per process ([`activate`]) and then consulted
//! wherever the runtime resolves a machine type or builds or checks a
//! manifest ([`effective`], [`base`], [`knobs`], [`local_release`],
//! [`release`], [`announce`]). Without a persona they give this build's own
//! answers (release [`crate::matrix::NEXT`]).
//!
//! Honest limits: this build has one implementation of each device's state,
//! so a persona can only present a section version equal to the one this
//! build writes (every frozen lock does; [`effective_for`] refuses otherwise),
//! and one stream format (1). Sections a lock lists that this VMM never sends
//! (`cpu`, `configuration`) are accepted in checks but never written; the
//! runtime's own `kvm-vm` section is not in any lock and keeps this build's
//! version.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use compat_runtime::deprecation::MachineUse;
use compat_runtime::release::{MIN_STREAM_FORMAT, STREAM_FORMAT};
use compat_runtime::suggest::{did_you_mean, hint};
use compat_runtime::table::Provenance;
use compat_runtime::vmstate::VmStateDesc;
use compat_runtime::{
    Catalog, EffectiveConfig, Knobs, Lock, LockMachine, MachineType, Override, OverrideError, Value,
};

use crate::builder::config::{self as bconfig, ConfigError, MachineConfig, RunRequest};
use crate::matrix::{self, NEXT};
use crate::migration::compat_check::{LocalRelease, SectionSupport};
use crate::migration::config as mconfig;
use crate::migration::manifest::Manifest;

/// Why this build cannot act as the requested release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum PersonaError {
    /// No lock for that release.
    #[error("release `{name}` has no lock in this build (frozen releases: {known}){}", hint(.suggestion))]
    #[diagnostic(
        code(vmm::persona::release),
        help("freeze it with `cargo xtask release {name}`, or pick a frozen release")
    )]
    UnknownRelease {
        name: String,
        known: String,
        suggestion: Option<String>,
    },
    /// The release does not know the machine type.
    #[error("release {release} does not know machine type `{machine}` (it knows {known})")]
    #[diagnostic(code(vmm::persona::machine))]
    UnknownMachine {
        release: String,
        machine: String,
        known: String,
    },
    /// An embedded lock does not parse (a build problem).
    #[error("embedded lock of release {release}: {error}")]
    #[diagnostic(code(vmm::persona::lock))]
    BadLock { release: String, error: String },
    /// The lock has a value this build's property type does not parse.
    #[error("release {release}: `{device}.{property} = {value}` does not parse here: {error}")]
    #[diagnostic(code(vmm::persona::value))]
    BadValue {
        release: String,
        device: String,
        property: String,
        value: String,
        error: String,
    },
    /// The release speaks a stream format this build cannot write or read.
    #[error(
        "release {release} writes stream format {format} (reads {min}..={format}); this build writes {STREAM_FORMAT} and reads {MIN_STREAM_FORMAT}..={STREAM_FORMAT}"
    )]
    #[diagnostic(code(vmm::persona::stream_format))]
    StreamFormat {
        release: String,
        format: u32,
        min: u32,
    },
    /// The release sends a section version this build cannot write.
    #[error(
        "release {release} sends section `{section}` at version {locked}; this build writes only version {ours}"
    )]
    #[diagnostic(code(vmm::persona::section))]
    SectionVersion {
        release: String,
        section: String,
        locked: u32,
        ours: u32,
    },
    /// The release's machine type instantiates other devices than this build can.
    #[error(
        "release {release}: machine type {machine} has devices [{locked}], this build can only build [{ours}]"
    )]
    #[diagnostic(code(vmm::persona::devices))]
    Devices {
        release: String,
        machine: String,
        locked: String,
        ours: String,
    },
    /// A `--global`/`--device` override does not apply.
    #[error(transparent)]
    #[diagnostic(code(vmm::persona::override_))]
    Override(#[from] OverrideError),
    /// The configuration cannot be built.
    #[error("{0}")]
    #[diagnostic(code(vmm::persona::config))]
    Config(String),
    /// A stream's configuration asks for something the release cannot present.
    #[error(
        "release {release} cannot present `{device}.{property} = {value}` from the stream (the property's fix came later)"
    )]
    #[diagnostic(code(vmm::persona::adopt))]
    NotSettable {
        release: String,
        device: String,
        property: String,
        value: String,
    },
    /// The machine type was removed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    /// A second, different persona in the same process.
    #[error("this process already acts as release {active}, not {requested}")]
    #[diagnostic(code(vmm::persona::twice))]
    AlreadyActive { active: String, requested: String },
}

impl From<PersonaError> for crate::run::RunError {
    fn from(e: PersonaError) -> Self {
        crate::run::RunError::Persona(Box::new(e))
    }
}

/// VMState section versions the release sends: name → `(minimum, version)`.
pub type SectionVersions = BTreeMap<String, SectionSupport>;

/// The stream format a release writes, and the oldest it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFormat {
    /// Written.
    pub version: u32,
    /// Oldest read.
    pub minimum: u32,
}

/// This process acting as a frozen release.
#[derive(Debug, Clone)]
pub struct Persona {
    lock: Lock,
}

impl Persona {
    /// The release's name.
    pub fn release(&self) -> &str {
        &self.lock.release
    }

    /// Its lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The release's machine type `name` (versioned, or the family alias,
    /// which names the release's newest machine type of that family).
    pub fn machine<'a>(
        &'a self,
        catalog: &'static Catalog,
        name: &str,
    ) -> Result<(&'a LockMachine, &'static MachineType), PersonaError> {
        let unknown = || PersonaError::UnknownMachine {
            release: self.lock.release.clone(),
            machine: name.to_string(),
            known: self
                .lock
                .machine
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let cm = catalog.machine(name).ok_or_else(unknown)?;
        let is_alias = cm.name != name;
        let lm = if is_alias {
            self.lock.machine.iter().rev().find(|m| {
                catalog
                    .machine(&m.name)
                    .is_some_and(|c| c.family == cm.family)
            })
        } else {
            self.lock.machine(name)
        }
        .ok_or_else(unknown)?;
        let cm = catalog.machine(&lm.name).ok_or_else(unknown)?;
        Ok((lm, cm))
    }
}

/// The embedded lock of `release`, as a persona; refuses a release without a
/// lock and one this build cannot act as (stream format, section versions).
pub fn persona(release: &str) -> Result<Persona, PersonaError> {
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
    Ok(Persona { lock })
}

/// What release `release` presents for `machine`, with `overrides` applied
/// on top (`-global` then `-device`, as for this build): the effective
/// configuration, the section versions the release sends, its stream format.
///
/// Values come from the lock; where the lock's value differs from this
/// build's resolution the provenance says so (`release 8.0 (erratum
/// aer-uncor-mask)`). A property this build has and the lock lacks keeps
/// this build's value (none today: every lock lists every property).
pub fn effective_for(
    release: &str,
    machine: &str,
    overrides: &[Override],
) -> Result<(EffectiveConfig, SectionVersions, StreamFormat), PersonaError> {
    let p = persona(release)?;
    let cfg = persona_effective(&p, machine, overrides)?;
    Ok((cfg, section_versions(&p), stream_format(&p)))
}

fn persona_effective(
    p: &Persona,
    machine: &str,
    overrides: &[Override],
) -> Result<EffectiveConfig, PersonaError> {
    let catalog = bconfig::catalog();
    let (lm, cm) = p.machine(catalog, machine)?;
    let mut cfg = catalog.resolve(cm);
    for dev in &mut cfg.devices {
        let Some(locked) = lm.props.get(&dev.type_name) else {
            continue;
        };
        let Some(dt) = catalog.device_type(&dev.type_name) else {
            continue;
        };
        for prop in &mut dev.props {
            let Some(text) = locked.get(&prop.name) else {
                continue;
            };
            let def = dt.props.iter().find(|d| d.name == prop.name);
            let value = match def {
                _ if text == mconfig::UNSET => Value::Unset,
                Some(def) => Value::parse(&def.ty, text).map_err(|e| PersonaError::BadValue {
                    release: p.release().to_string(),
                    device: dev.type_name.clone(),
                    property: prop.name.clone(),
                    value: text.clone(),
                    error: e.to_string(),
                })?,
                None => continue,
            };
            if value != prop.value {
                prop.value = value;
                prop.provenance =
                    release_provenance(catalog, p.release(), &dev.type_name, &prop.name);
            }
        }
    }
    catalog.apply(&mut cfg, overrides)?;
    Ok(cfg)
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

fn section_versions(p: &Persona) -> SectionVersions {
    p.lock
        .section
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

fn stream_format(p: &Persona) -> StreamFormat {
    StreamFormat {
        version: p.lock.stream_format,
        minimum: p.lock.min_stream_format,
    }
}

static ACTIVE: OnceLock<Persona> = OnceLock::new();

/// Makes this process act as `release` for its lifetime (`--as-release`).
/// Idempotent for the same release.
pub fn activate(release: &str) -> Result<&'static Persona, PersonaError> {
    if let Some(a) = ACTIVE.get() {
        return check_same(a, release);
    }
    let p = persona(release)?;
    let a = ACTIVE.get_or_init(|| p);
    check_same(a, release)
}

fn check_same(a: &'static Persona, release: &str) -> Result<&'static Persona, PersonaError> {
    if a.release() == release {
        Ok(a)
    } else {
        Err(PersonaError::AlreadyActive {
            active: a.release().to_string(),
            requested: release.to_string(),
        })
    }
}

/// The active persona, if `--as-release` was given.
pub fn active() -> Option<&'static Persona> {
    ACTIVE.get()
}

/// The release this process presents: the persona's, else [`NEXT`].
pub fn release() -> &'static str {
    active().map_or(NEXT, |p| p.lock.release.as_str())
}

/// The effective configuration of `machine` with `overrides`, as the active
/// release presents it.
pub fn effective(machine: &str, overrides: &[Override]) -> Result<EffectiveConfig, PersonaError> {
    match active() {
        Some(p) => persona_effective(p, machine, overrides),
        None => Ok(bconfig::catalog().effective(machine, overrides)?),
    }
}

/// The versioned name `-M name` means for the active release (the family
/// alias names the release's newest machine type).
pub fn machine_name(name: &str) -> Result<&'static str, PersonaError> {
    let catalog = bconfig::catalog();
    Ok(match active() {
        Some(p) => p.machine(catalog, name)?.1.name,
        None => catalog.machine_or_err(name)?.name,
    })
}

/// The machine type as the active release presents it, before overrides
/// (the base a destination adopts a stream's configuration onto).
pub fn base(m: &MachineType) -> Result<EffectiveConfig, PersonaError> {
    effective(m.name, &[])
}

/// The machine knobs of `m` as the active release presents them.
pub fn knobs(m: &MachineType) -> Result<Knobs, PersonaError> {
    let ours = Knobs {
        max_cpus: m.knobs.max_cpus,
        default_cpus: m.knobs.default_cpus,
        memory_mib: m.knobs.memory_mib,
        devices: m.knobs.devices,
    };
    let Some(p) = active() else {
        return Ok(ours);
    };
    let (lm, _) = p.machine(bconfig::catalog(), m.name)?;
    let mut locked: Vec<&str> = lm.devices.iter().map(String::as_str).collect();
    let mut have: Vec<&str> = m.knobs.devices.to_vec();
    locked.sort_unstable();
    have.sort_unstable();
    if locked != have {
        return Err(PersonaError::Devices {
            release: p.release().to_string(),
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

/// `--as-release R` if given: [`activate`].
pub fn activate_opt(release: Option<&str>) -> Result<(), PersonaError> {
    match release {
        Some(r) => activate(r).map(|_| ()),
        None => Ok(()),
    }
}

/// `--as-release R` with `-M` if given: [`activate`], then refuses at once
/// a machine type R does not know (also before waiting for a stream).
pub fn activate_for(release: Option<&str>, machine: Option<&str>) -> Result<(), PersonaError> {
    activate_opt(release)?;
    if let (Some(_), Some(m)) = (release, machine) {
        machine_name(m)?;
    }
    Ok(())
}

/// A new VM (`vmm run` without `--incoming`): admits the machine type's
/// lifecycle (warns if deprecated, refuses if removed), then
/// [`machine_config`].
pub fn start(req: &RunRequest) -> Result<MachineConfig, PersonaError> {
    let name = machine_name(&req.machine)?;
    crate::lifecycle::admit(bconfig::catalog(), name, MachineUse::Run)?;
    machine_config(req)
}

/// `vmm run`'s machine configuration as the active release presents it.
pub fn machine_config(req: &RunRequest) -> Result<MachineConfig, PersonaError> {
    let catalog = bconfig::catalog();
    let m = match active() {
        Some(p) => p.machine(catalog, &req.machine)?.1,
        None => catalog.machine_or_err(&req.machine)?,
    };
    let eff = effective(m.name, &req.overrides)?;
    bconfig::from_effective(&eff, &knobs(m)?, req)
        .map_err(|e: ConfigError| PersonaError::Config(e.to_string()))
}

/// What the active release accepts on an incoming stream: its machine types
/// and the section versions of its lock, plus `extra` runtime sections not
/// in any lock (`kvm-vm`) at this build's versions.
pub fn local_release(extra: &[&VmStateDesc]) -> LocalRelease {
    let catalog = bconfig::catalog();
    let Some(p) = active() else {
        return mconfig::local_release(NEXT, catalog, extra);
    };
    let mut sections = section_versions(p);
    for d in extra {
        sections
            .entry(d.name.to_string())
            .or_insert(SectionSupport {
                version_id: d.version_id,
                minimum_version_id: d.minimum_version_id,
            });
    }
    LocalRelease {
        release: p.release().to_string(),
        machine_types: p.lock.machine.iter().map(|m| m.name.clone()).collect(),
        sections,
    }
}

/// Stamps an outgoing manifest with the active release (its name as the
/// source release and the lock's version of every section it lists) and
/// the origin of every value this guest adopted from a stream
/// (provenance `stream; origin: ...`, see [`origin`]).
pub fn announce(m: &mut Manifest) {
    for ((dev, prop), o) in plock(&ORIGINS).iter() {
        if let Some(pv) = m.config.get_mut(dev).and_then(|d| d.get_mut(prop))
            && pv.provenance == STREAM
        {
            pv.provenance = format!("{STREAM}{ORIGIN_SEP}{o}");
        }
    }
    let Some(p) = active() else {
        return;
    };
    m.source_release = p.release().to_string();
    m.format_version = p.lock.stream_format;
    for s in &mut m.sections {
        let base = s.name.split_once('/').map_or(s.name.as_str(), |(b, _)| b);
        if let Some(l) = p.lock.section(base) {
            s.version_id = l.version_id;
        }
    }
}

/// How adopted values are spelled in a manifest and in `ctl status`.
const STREAM: &str = "stream";
const ORIGIN_SEP: &str = "; origin: ";

/// Where each value this process adopted from a stream was first set
/// (device, property) → origin. One guest per process, so this lives as
/// long as the guest does (a reset keeps it; power-off ends the process).
static ORIGINS: Mutex<BTreeMap<(String, String), String>> = Mutex::new(BTreeMap::new());

fn plock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The origin of an adopted value, from its provenance in the stream and the
/// stream's source release: carried on if the source had adopted it too,
/// else the source's own provenance (`-global on release 8.0.1`,
/// `release 8.0 (erratum aer-uncor-mask)`).
pub fn origin_of(provenance: &str, source_release: &str) -> String {
    if let Some(o) = provenance
        .strip_prefix(STREAM)
        .and_then(|r| r.strip_prefix(ORIGIN_SEP))
    {
        o.to_string()
    } else if provenance == STREAM {
        format!("a stream, before release {source_release}")
    } else if provenance.starts_with("release ") {
        provenance.to_string()
    } else {
        format!("{provenance} on release {source_release}")
    }
}

/// Where the adopted value of `device.property` was first set, if this
/// process adopted it from a stream.
pub fn origin(device: &str, property: &str) -> Option<String> {
    plock(&ORIGINS)
        .get(&(device.to_string(), property.to_string()))
        .cloned()
}

/// Adopts a stream's configuration onto the active release's `base`,
/// refusing values the release cannot present (a property whose erratum fix
/// came after it, as 8.0.1's `x-pcie-err-unc-mask` for 7.2), and records
/// where each adopted value was first set ([`origin`]).
pub fn adopt(base: &EffectiveConfig, m: &Manifest) -> Result<EffectiveConfig, PersonaError> {
    let stream = &m.config;
    let catalog = bconfig::catalog();
    let out =
        mconfig::adopt(base, stream, catalog).map_err(|e| PersonaError::Config(e.to_string()))?;
    let mut origins = Vec::new();
    for d in out.diff(base) {
        let Some(adopted) = d.left.as_ref() else {
            continue;
        };
        if !matrix::settable(catalog, release(), &d.type_name, &d.property) {
            return Err(PersonaError::NotSettable {
                release: release().to_string(),
                device: d.type_name.clone(),
                property: d.property.clone(),
                value: adopted.value.to_string(),
            });
        }
        if let Some(pv) = stream.get(&d.type_name).and_then(|p| p.get(&d.property)) {
            let o = origin_of(&pv.provenance, &m.source_release);
            origins.push(((d.type_name.clone(), d.property.clone()), o));
        }
    }
    plock(&ORIGINS).extend(origins);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The current tree agrees with 8.0.1, so provenance is the tree's.
        assert!(
            cfg.diff(&bconfig::catalog().effective("pc-7.2", &[]).unwrap())
                .is_empty()
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
        let relayed = format!("{STREAM}{ORIGIN_SEP}{first}");
        assert_eq!(origin_of(&relayed, "8.0.1"), first);
        assert_eq!(origin_of("stream", "8.1"), "a stream, before release 8.1");
    }

    #[test]
    fn every_lock_can_be_presented_for_every_machine_it_knows() {
        for (r, _) in matrix::locks::LOCKS {
            let p = persona(r).unwrap();
            for m in &p.lock.machine {
                let (cfg, ..) = effective_for(r, &m.name, &[]).unwrap();
                assert_eq!(cfg.machine, m.name);
            }
        }
    }
}

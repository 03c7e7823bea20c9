//! The one place where device configurations are built from the resolved
//! machine type (compat tables + `-global`/`-device` overrides). No device
//! default lives here: every value is read from the [`EffectiveConfig`].

use std::path::PathBuf;

use compat_runtime::{Catalog, EffectiveConfig, Knobs, Override, OverrideError, PropsError};
use devices::generated::props::{
    IsaSerialProps, PcieRootPortProps, VirtioBlkDeviceProps, VirtioMmioProps,
};
use devices::pci::PcieRootPortConfig;
use devices::serial::{SerialConfig, SerialOutput};
use devices::virtio::block::BlockConfig;

pub use super::cmdline::{DISK_TYPE, DiskSpec, DriveSpec};
use super::layout;
use crate::cpu::choice::CpuChoice;
use crate::vstate::cpuid::{CpuIdentity, ModelFacts};

/// The compat catalog compiled into this binary (`devices::generated`).
pub fn catalog() -> &'static Catalog {
    &devices::generated::CATALOG
}

/// Errors turning the command line into a machine configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown machine, device type or property, or a bad value.
    #[error(transparent)]
    Override(#[from] OverrideError),
    /// The generated property tables lack something this VMM needs.
    #[error("compat tables: {0}")]
    Props(#[from] PropsError),
    /// `--smp` out of range for the machine type.
    #[error(
        "--smp {requested}: machine type {machine} supports 1..={max} vCPUs (and this VMM at most 255)"
    )]
    Cpus {
        /// Requested.
        requested: u32,
        /// Machine type.
        machine: String,
        /// Its maximum.
        max: u32,
    },
    /// A `--drive`/`--device` does not fit.
    #[error(transparent)]
    Cmdline(Box<super::cmdline::CmdlineError>),
    /// A `--drive` option is malformed.
    #[error("--drive {0}")]
    Drive(String),
    /// `--drive`/`--device` instances do not fit together (ids, backends,
    /// a type that cannot be created).
    #[error("{0}")]
    Instance(String),
    /// Too many virtio-mmio devices for the layout.
    #[error("at most {max} virtio-mmio devices fit the memory map")]
    TooManyDevices {
        /// Limit.
        max: usize,
    },
    /// A property value this VMM does not implement.
    #[error("{0} is not supported by this VMM")]
    Unsupported(&'static str),
    /// `--cpu`, or a CPU this host cannot give.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::choice::ChoiceError),
    /// Reading this host's CPU failed.
    #[error("{0}")]
    Host(String),
    /// Memory size out of range.
    #[error("memory size {0} bytes is not supported (need 16 MiB .. 512 GiB, multiple of 4 KiB)")]
    Memory(u64),
}

/// What the user asked for on the command line.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// `-M` (versioned name or alias).
    pub machine: String,
    /// `--smp` (None: the machine type's default).
    pub cpus: Option<u32>,
    /// `-m` in bytes (None: the machine type's default).
    pub mem_bytes: Option<u64>,
    /// `--drive`s, in order.
    pub drives: Vec<DriveSpec>,
    /// The disks on them (`cmdline`).
    pub disks: Vec<DiskSpec>,
    /// `--cpu` (or `--host-cpu`), resolved against this host: the guest's
    /// CPU features (none: the host's own CPUID, as before `--cpu`).
    pub cpu: Option<CpuChoice>,
    /// `--cpu MODEL` for a named model: its device type, which the machine
    /// instantiates instead of its default CPU model (none: the default).
    pub cpu_model: Option<&'static str>,
    /// What this host offers a guest CPU (`--host-cpu` applied), when known.
    pub host_offer: Option<std::collections::BTreeSet<String>>,
    /// `--global`s, then `--device` settings of one-of-a-kind devices.
    pub overrides: Vec<Override>,
    /// `--serial`.
    pub serial: SerialOutput,
}

#[cfg(test)]
impl RunRequest {
    /// A request with no disks, no overrides and the host's CPU (tests).
    pub(crate) fn for_test(machine: &str, cpus: u32, mem_bytes: u64, serial: SerialOutput) -> Self {
        Self {
            machine: machine.into(),
            cpus: Some(cpus),
            mem_bytes: Some(mem_bytes),
            drives: vec![],
            disks: vec![],
            cpu: None,
            cpu_model: None,
            host_offer: None,
            overrides: vec![],
            serial,
        }
    }
}

/// A virtio-blk device and its image.
#[derive(Clone, Debug)]
pub struct BlockDevice {
    /// Its id (`virtio-blk0`, or `--device ...,id=`).
    pub id: String,
    /// Device configuration.
    pub config: BlockConfig,
    /// Raw image.
    pub file: PathBuf,
    /// Its own `--device` property values (on top of the machine type's).
    pub props: Vec<(String, String)>,
    /// Where they came from: `-device`, or `stream` once adopted.
    pub provenance: String,
    /// Its backend's `--drive id=`, if named.
    pub backend: Option<String>,
}

/// Everything needed to build (and rebuild on reset) the VM.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// The versioned machine type name (never an alias).
    pub machine: String,
    /// The effective property values, with provenance (travels with migration).
    pub effective: EffectiveConfig,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// The UART, if the machine type has one.
    pub serial: Option<SerialConfig>,
    /// virtio-blk devices (one per `--drive`, if the machine type has virtio-blk).
    pub blocks: Vec<BlockDevice>,
    /// The PCIe root port, if the machine type has one.
    pub root_port: Option<PcieRootPortConfig>,
    /// The CPU model's family, model and stepping (none: the machine type
    /// names no CPU model, the host's are shown).
    pub cpu: Option<ModelFacts>,
    /// The guest's CPU features if chosen (`--cpu`); none: the host's.
    pub cpu_choice: Option<CpuChoice>,
    /// The device types the machine instantiates (its `devices` knob, as
    /// the persona presents it): the part of `effective` a migration compares.
    pub device_types: Vec<&'static str>,
    /// Where each value adopted from a migration stream was first set
    /// (empty unless adopted): travels with the guest until it powers off.
    pub origins: Origins,
}

/// Values adopted from a stream: `(device type, property)` → where the
/// value was first set (`-global on release 8.0.1`, `release 8.0 (erratum
/// aer-uncor-mask)`), carried along a chain of migrations.
pub type Origins = std::collections::BTreeMap<(String, String), String>;

impl From<super::cmdline::CmdlineError> for ConfigError {
    fn from(e: super::cmdline::CmdlineError) -> Self {
        ConfigError::Cmdline(Box::new(e))
    }
}

/// Memory limits of this VMM (not machine defaults: the default size comes
/// from the machine type's knobs).
const MIN_MEM: u64 = 16 << 20;
const MAX_MEM: u64 = 512 << 30;

/// Resolves the machine type, applies overrides and builds every device config.
pub fn resolve(catalog: &Catalog, req: &RunRequest) -> Result<MachineConfig, ConfigError> {
    let machine = catalog.machine_or_err(&req.machine)?;
    let effective = catalog.effective(machine.name, &req.overrides)?;
    from_effective(&effective, &machine.knobs, req)
}

/// Builds device configs from an already effective configuration (also used
/// by an incoming migration, which receives the [`EffectiveConfig`]).
pub fn from_effective(
    effective: &EffectiveConfig,
    knobs: &Knobs,
    req: &RunRequest,
) -> Result<MachineConfig, ConfigError> {
    let cpus = req.cpus.unwrap_or(knobs.default_cpus);
    if cpus == 0 || cpus > knobs.max_cpus || cpus > u32::from(u8::MAX) {
        return Err(ConfigError::Cpus {
            requested: cpus,
            machine: effective.machine.clone(),
            max: knobs.max_cpus,
        });
    }
    let vcpus = cpus as u8;
    let mem_bytes = req.mem_bytes.unwrap_or(knobs.memory_mib << 20);
    if !(MIN_MEM..=MAX_MEM).contains(&mem_bytes) || !mem_bytes.is_multiple_of(4096) {
        return Err(ConfigError::Memory(mem_bytes));
    }
    let has = |t: &str| knobs.devices.contains(&t);

    let serial = if has(IsaSerialProps::TYPE_NAME) {
        let p = IsaSerialProps::from_config(effective)?;
        Some(SerialConfig {
            iobase: p.iobase,
            irq: u32::from(p.irq),
            output: req.serial.clone(),
        })
    } else {
        None
    };

    if has(VirtioMmioProps::TYPE_NAME) && VirtioMmioProps::from_config(effective)?.force_legacy {
        return Err(ConfigError::Unsupported(
            "virtio-mmio.force-legacy=on (legacy register layout)",
        ));
    }
    let mut blocks = Vec::new();
    if has(VirtioBlkDeviceProps::TYPE_NAME) {
        let p = VirtioBlkDeviceProps::from_config(effective)?;
        if req.disks.len() > layout::VIRTIO_MMIO_MAX {
            return Err(ConfigError::TooManyDevices {
                max: layout::VIRTIO_MMIO_MAX,
            });
        }
        for disk in &req.disks {
            let d = req
                .drives
                .get(disk.drive)
                .ok_or_else(|| ConfigError::Instance(format!("disk {} has no drive", disk.id)))?;
            let own = disk_props(effective, &disk.props)?;
            let p = own
                .as_ref()
                .map_or(Ok(p.clone()), VirtioBlkDeviceProps::from_config)?;
            blocks.push(BlockDevice {
                id: disk.id.clone(),
                config: block_config(&p, vcpus, d),
                file: d.file.clone(),
                props: disk.props.clone(),
                provenance: "-device".into(),
                backend: d.id.clone(),
            });
        }
    } else if !req.disks.is_empty() {
        return Err(ConfigError::Drive(format!(
            "machine type {} has no virtio-blk device",
            effective.machine
        )));
    }

    let root_port = if has(PcieRootPortProps::TYPE_NAME) {
        let p = PcieRootPortProps::from_config(effective)?;
        Some(PcieRootPortConfig {
            device: layout::ROOT_PORT_DEVICE,
            slot: p.slot,
            chassis: p.chassis,
            err_unc_mask: p.x_pcie_err_unc_mask,
            ext_tag: p.x_pcie_ext_tag,
            ari_nextfn_1: p.x_pcie_ari_nextfn_1,
        })
    } else {
        None
    };

    // The CPU model: `--cpu MODEL`, else the one the machine type
    // instantiates; its facts and features, unless `--cpu host|max` chose
    // the host's own.
    let device_types = with_cpu_model(knobs.devices, req.cpu_model);
    let cpu_type = device_types.iter().copied().find(|t| is_cpu_model(t));
    let named = cpu_type.filter(|_| req.cpu.is_none());
    let cpu = named.map(|t| model_facts(effective, t));
    let cpu_choice = match &req.cpu {
        Some(c) => Some(c.clone()),
        None => named.map(|t| model_choice(effective, t)),
    };
    if let (Some(c), Some(offer)) = (&cpu_choice, &req.host_offer) {
        crate::cpu::choice::enforce(catalog(), c, offer)?;
    }

    Ok(MachineConfig {
        cpu,
        cpu_choice,
        origins: Origins::new(),
        device_types,
        machine: effective.machine.clone(),
        effective: effective.clone(),
        vcpus,
        mem_bytes,
        serial,
        blocks,
        root_port,
    })
}

/// Gives disk `b` the property values `props` (adopted from a stream) on top
/// of the machine type's `effective` configuration; its backend (read-only
/// state) and serial stay.
pub fn reconfigure_disk(
    effective: &EffectiveConfig,
    vcpus: u8,
    b: &mut BlockDevice,
    props: Vec<(String, String)>,
) -> Result<(), ConfigError> {
    let own = disk_props(effective, &props)?;
    let p = VirtioBlkDeviceProps::from_config(own.as_ref().unwrap_or(effective))?;
    let drive = DriveSpec {
        id: None,
        file: b.file.clone(),
        read_only: b.config.read_only,
        serial: b.config.serial.clone(),
    };
    b.config = block_config(&p, vcpus, &drive);
    b.props = props;
    b.provenance = "stream".into();
    Ok(())
}

fn is_cpu_model(t: &str) -> bool {
    catalog().device_type(t).is_some_and(|d| d.cpu_model)
}

/// The device types a machine instantiates (`devices`, its knob) with CPU
/// model type `cpu_model` (`--cpu MODEL`) in place of its default model.
pub fn with_cpu_model(
    devices: &[&'static str],
    cpu_model: Option<&'static str>,
) -> Vec<&'static str> {
    let Some(c) = cpu_model else {
        return devices.to_vec();
    };
    let mut out: Vec<&'static str> = devices
        .iter()
        .map(|&t| if is_cpu_model(t) { c } else { t })
        .collect();
    if !out.contains(&c) {
        out.push(c);
    }
    out
}

/// What CPU model type `ty` says beyond its features, as its effective
/// properties say (a model without `vendor`, `level`, ... keeps the host's).
fn model_facts(effective: &EffectiveConfig, ty: &str) -> ModelFacts {
    use compat_runtime::Value;
    let uint = |p: &str| match effective.value(ty, p) {
        Some(Value::Uint(v)) => u32::try_from(*v).ok(),
        _ => None,
    };
    let text = |p: &str| match effective.value(ty, p) {
        Some(Value::Str(s)) => Some(s.to_string()),
        _ => None,
    };
    let identity = match (uint("family"), uint("model"), uint("stepping")) {
        (Some(family), Some(model), Some(stepping)) => Some(CpuIdentity {
            family,
            model,
            stepping,
        }),
        _ => None,
    };
    ModelFacts {
        identity,
        vendor: text("vendor"),
        level: uint("level"),
        xlevel: uint("xlevel"),
        model_id: text("model-id"),
    }
}

/// The features of CPU model type `ty` as its effective properties say
/// (`qemu64-x86_64-cpu` is model `qemu64`).
fn model_choice(effective: &EffectiveConfig, ty: &str) -> CpuChoice {
    let features = catalog()
        .cpu_features
        .iter()
        .filter(|f| effective.value(ty, f.name) == Some(&compat_runtime::Value::Bool(true)))
        .map(|f| f.name.to_string())
        .collect();
    CpuChoice {
        model: ty.trim_end_matches("-x86_64-cpu").to_string(),
        features,
    }
}

/// The configuration one disk sees: the machine type's with the disk's own
/// `--device` values on top (none: the machine type's as it is).
fn disk_props(
    effective: &EffectiveConfig,
    props: &[(String, String)],
) -> Result<Option<EffectiveConfig>, ConfigError> {
    if props.is_empty() {
        return Ok(None);
    }
    let mut own = effective.clone();
    let o = Override::Device {
        type_name: DISK_TYPE.to_string(),
        props: props.to_vec(),
    };
    catalog().apply(&mut own, &[o])?;
    Ok(Some(own))
}

/// virtio-blk: `num-queues=auto` becomes one queue per vCPU.
fn block_config(p: &VirtioBlkDeviceProps, vcpus: u8, d: &DriveSpec) -> BlockConfig {
    BlockConfig {
        num_queues: p.num_queues.resolve(|| u16::from(vcpus)),
        queue_size: p.queue_size,
        discard: p.discard,
        write_zeroes: p.write_zeroes,
        config_wce: p.config_wce,
        report_discard_granularity: p.report_discard_granularity,
        seg_max_adjust: p.seg_max_adjust,
        queue_reset: p.queue_reset,
        event_idx: p.event_idx,
        indirect_desc: p.indirect_desc,
        read_only: d.read_only,
        serial: d.serial.clone().or_else(|| p.serial.clone()),
    }
}

/// Parses a memory size: `256M`, `1G`, `65536K`, `1073741824` (bytes if no
/// suffix and ≥ 1 MiB, else MiB like the reference's `-m 512`).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return None,
            };
            (&t[..i], m)
        }
        _ => (t, 0),
    };
    let n: u64 = num.parse().ok()?;
    if mul == 0 {
        // The reference treats a bare number as MiB.
        return n.checked_mul(1 << 20);
    }
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("64"), Some(64 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn drives() {
        let d = DriveSpec::parse("file=/tmp/x.img,readonly=on").unwrap();
        assert_eq!(d.file, PathBuf::from("/tmp/x.img"));
        assert!(d.read_only);
        assert!(DriveSpec::parse("readonly=on").is_err());
        assert!(DriveSpec::parse("file=a,format=qcow2").is_err());
        assert!(DriveSpec::parse("file=a,bogus=1").is_err());
        assert!(DriveSpec::parse("file").is_err());
    }
}

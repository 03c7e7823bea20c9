//! `--drive` and `--device` as the reference spells them (`-drive if=none`,
//! `-device`):
//!
//! - `--drive id=ID,file=PATH[,readonly=on|off][,format=raw]` declares a
//!   backend only;
//! - `--device virtio-blk-device,drive=ID[,id=NAME][,PROP=VALUE...]` creates
//!   one disk on it, with its own property values on top of the machine
//!   type's (defaults < compat deltas < `--global` < this `--device`);
//! - `--drive file=PATH[,readonly=..][,serial=S]` without `id` is shorthand
//!   for a backend plus one disk with the machine type's properties;
//! - `--device TYPE,PROP=VALUE...` for a device the machine has exactly one
//!   of (`isa-serial`, `pcie-root-port`, ids `isa-serial0`,
//!   `pcie-root-port0`) configures that device.
//!
//! Disks are numbered shorthand drives first, then `--device` disks, in
//! command-line order; a disk without `id=` is `virtio-blk{N}`. A
//! destination waiting for a stream may declare backends no `--device` uses:
//! it adopts the stream's disks onto them, in order.

use std::path::PathBuf;

use compat_runtime::suggest::{did_you_mean, hint};
use compat_runtime::{Catalog, Override, OverrideError};

use super::layout::SINGLE_INSTANCE;

/// A `--drive` or `--device` that cannot be honoured (one line each).
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// Unknown type or property, or a bad value ("did you mean").
    #[error(transparent)]
    Override(#[from] OverrideError),
    /// A malformed `--drive`.
    #[error("--drive {0}")]
    Drive(String),
    /// Instances that do not fit together (ids, backends, a type that
    /// cannot be created).
    #[error("{0}")]
    Instance(String),
}

/// The disk type `--device` creates.
pub const DISK_TYPE: &str = "virtio-blk-device";

/// One `--drive`: a backend (with `id`) or the shorthand for backend + disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSpec {
    /// `id=`: a backend for `--device ...,drive=ID`; none: shorthand.
    pub id: Option<String>,
    /// Raw image path.
    pub file: PathBuf,
    /// Open read-only (the guest sees `VIRTIO_BLK_F_RO`).
    pub read_only: bool,
    /// Shorthand only: the disk's serial (beats the property value).
    pub serial: Option<String>,
}

/// One disk: a `virtio-blk-device` on a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// Its id (`id=`, or `virtio-blk{N}`).
    pub id: String,
    /// Index of its backend in the drive list.
    pub drive: usize,
    /// Its own `--device` property values, in order.
    pub props: Vec<(String, String)>,
}

/// The device instances the command line asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instances {
    /// Every `--drive`, in order.
    pub drives: Vec<DriveSpec>,
    /// Every disk, numbered as the module doc says.
    pub disks: Vec<DiskSpec>,
    /// `--device` settings of the machine's one-of-a-kind devices.
    pub singles: Vec<Override>,
}

fn bad(s: &str, why: String) -> CmdlineError {
    CmdlineError::Drive(format!("`{s}`: {why}"))
}

fn on_off(s: &str, k: &str, v: &str) -> Result<bool, CmdlineError> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(bad(s, format!("{k} must be on or off"))),
    }
}

impl DriveSpec {
    /// Parses the `--drive` argument.
    pub fn parse(s: &str) -> Result<Self, CmdlineError> {
        let (mut id, mut file, mut read_only, mut serial) = (None, None, false, None);
        for kv in s.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(s, format!("expected KEY=VALUE, got `{kv}`")))?;
            match k {
                "id" if valid_id(v) => id = Some(v.to_string()),
                "id" => return Err(bad(s, format!("`{v}` is not a valid id{ID_RULE}"))),
                "file" if !v.is_empty() => file = Some(PathBuf::from(v)),
                "readonly" | "read-only" => read_only = on_off(s, k, v)?,
                "format" if v == "raw" => {}
                "format" => return Err(bad(s, "only format=raw is supported".into())),
                "if" if v == "virtio" || v == "none" => {}
                "serial" => serial = Some(v.to_string()),
                _ => return Err(bad(s, format!("unknown or invalid option `{kv}`"))),
            }
        }
        let file = file.ok_or_else(|| bad(s, "file=PATH is required".into()))?;
        if id.is_some() && serial.is_some() {
            return Err(bad(
                s,
                "a backend (id=) has no serial; give it to the disk: --device virtio-blk-device,drive=ID,serial=S".into(),
            ));
        }
        Ok(Self {
            id,
            file,
            read_only,
            serial,
        })
    }
}

const ID_RULE: &str = " (letters, digits, `-`, `_`, `.`; starting with a letter)";

fn valid_id(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The id of the machine's one device of type `t` (`pcie-root-port0`).
pub fn single_id(t: &str) -> String {
    format!("{t}0")
}

/// Parses every `--drive` and `--device` into instances; `incoming`: a
/// destination, which may leave backends to the stream's disks.
pub fn parse(
    catalog: &Catalog,
    drives: &[String],
    devices: &[String],
    incoming: bool,
) -> Result<Instances, CmdlineError> {
    let mut out = Instances {
        drives: drives
            .iter()
            .map(|d| DriveSpec::parse(d))
            .collect::<Result<_, _>>()?,
        ..Instances::default()
    };
    let mut seen: Vec<Option<&str>> = Vec::new();
    for d in &out.drives {
        if let Some(id) = d.id.as_deref() {
            if seen.contains(&Some(id)) {
                return Err(CmdlineError::Instance(format!(
                    "two --drive have id `{id}`"
                )));
            }
            seen.push(Some(id));
        }
    }
    // Shorthand drives: a disk each, first.
    for (k, d) in out.drives.iter().enumerate() {
        if d.id.is_none() {
            out.disks.push(DiskSpec {
                id: String::new(),
                drive: k,
                props: Vec::new(),
            });
        }
    }
    let mut used = vec![false; out.drives.len()];
    for arg in devices {
        let Override::Device { type_name, props } = Override::parse_device(arg)? else {
            continue;
        };
        let ty = catalog.check_type(&type_name)?;
        let (mut id, mut drive, mut rest) = (None, None, Vec::new());
        for (k, v) in props {
            match k.as_str() {
                "id" if valid_id(&v) => id = Some(v),
                "id" => {
                    return Err(CmdlineError::Instance(format!(
                        "--device {arg}: `{v}` is not a valid id{ID_RULE}"
                    )));
                }
                "drive" => drive = Some(v),
                _ => {
                    catalog.check_value(&type_name, &k, &v)?;
                    rest.push((k, v));
                }
            }
        }
        if type_name == DISK_TYPE {
            let Some(want) = drive else {
                return Err(CmdlineError::Instance(format!(
                    "--device {arg}: a {DISK_TYPE} needs drive=ID, the id of a --drive id=ID,file=PATH"
                )));
            };
            let ids = out.drives.iter().filter_map(|d| d.id.as_deref());
            let Some(k) = out
                .drives
                .iter()
                .position(|d| d.id.as_deref() == Some(&*want))
            else {
                return Err(CmdlineError::Instance(format!(
                    "--device {arg}: no --drive has id `{want}`{}",
                    hint(&did_you_mean(&want, ids))
                )));
            };
            if std::mem::replace(&mut used[k], true) {
                return Err(CmdlineError::Instance(format!(
                    "--device {arg}: drive `{want}` is already used by another device"
                )));
            }
            out.disks.push(DiskSpec {
                id: id.unwrap_or_default(),
                drive: k,
                props: rest,
            });
        } else if SINGLE_INSTANCE.contains(&ty.name) {
            let own = single_id(ty.name);
            if let Some(other) = id.filter(|i| *i != own) {
                return Err(CmdlineError::Instance(format!(
                    "--device {arg}: the machine has one {type_name}, `{own}`; this VMM cannot add `{other}`"
                )));
            }
            if drive.is_some() {
                return Err(CmdlineError::Instance(format!(
                    "--device {arg}: a {type_name} has no drive"
                )));
            }
            out.singles.push(Override::Device {
                type_name,
                props: rest,
            });
        } else {
            return Err(not_creatable(catalog, &type_name, arg));
        }
    }
    for (k, d) in out.drives.iter().enumerate() {
        match &d.id {
            Some(_) if !used[k] && incoming => out.disks.push(DiskSpec {
                id: String::new(),
                drive: k,
                props: Vec::new(),
            }),
            Some(id) if !used[k] => {
                return Err(CmdlineError::Instance(format!(
                    "drive `{id}` is never used: add --device {DISK_TYPE},drive={id}"
                )));
            }
            _ => {}
        }
    }
    for (n, disk) in out.disks.iter_mut().enumerate() {
        if disk.id.is_empty() {
            disk.id = format!("virtio-blk{n}");
        }
    }
    let mut ids: Vec<String> = SINGLE_INSTANCE.iter().map(|t| single_id(t)).collect();
    for d in &out.disks {
        if ids.contains(&d.id) {
            return Err(CmdlineError::Instance(format!(
                "two devices have id `{}`",
                d.id
            )));
        }
        ids.push(d.id.clone());
    }
    Ok(out)
}

/// Why `--device TYPE` cannot create a device: abstract, or not one this
/// VMM builds.
fn not_creatable(catalog: &Catalog, t: &str, arg: &str) -> CmdlineError {
    let is_parent = catalog.device_types.iter().any(|d| d.parent == Some(t));
    let why = if is_parent {
        format!("{t} is an abstract type (set its properties with --global {t}.PROP=VALUE)")
    } else if t == "virtio-mmio" {
        "a virtio-mmio transport comes with each virtio-blk-device".to_string()
    } else if catalog.is_subtype(t, "x86_64-cpu") {
        format!("the vCPUs are the machine's; set the CPU model with --global {t}.PROP=VALUE")
    } else {
        format!(
            "this VMM cannot create a {t}; it creates {DISK_TYPE} and configures {}",
            SINGLE_INSTANCE.join(", ")
        )
    };
    CmdlineError::Instance(format!("--device {arg}: {why}"))
}

#[cfg(test)]
mod tests;

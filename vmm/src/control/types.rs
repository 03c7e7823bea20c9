//! What the control commands carry, whichever way they are asked: the
//! runtime's answers (`x-vmm-status`, `x-vmm-verify-ab`) and a migration's
//! settings.

use crate::builder::config::Origins;
use migration::compress::{BadCompression, Compression};
use migration::manifest::{DeviceInstance, PropValue};
use migration::precopy::{Params, Progress};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `--downtime-limit`, in milliseconds (like the reference).
pub const DEFAULT_DOWNTIME_LIMIT_MS: u64 = 300;

/// The answer to `x-vmm-verify-ab`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyAbResult {
    /// Pages checked.
    pub pages: u64,
    /// True if the image follows the a-b rule.
    pub consistent: bool,
    /// The first page's byte (the newest round).
    pub first: u8,
    /// Where the running pass was (first page of the older round), if mid-round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_at: Option<u64>,
    /// Why the image is inconsistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// The first inconsistent pages (at most 8): index, byte, predecessor's byte.
    #[serde(default)]
    pub bad_pages: Vec<BadPage>,
}

/// One page breaking the a-b rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadPage {
    /// Page index in the range.
    pub page: u64,
    /// Guest-physical address.
    pub addr: u64,
    /// Its byte.
    pub value: u8,
    /// The previous page's byte.
    pub prev: u8,
}

/// What a `migrate` command asks for (QMP's `migrate` with the
/// `migrate-set-parameters` in force, or `vmm migrate`'s options).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// `tcp:HOST:PORT`, `unix:PATH` or `file:PATH`.
    pub uri: String,
    /// Milliseconds; default 300.
    #[serde(default = "default_downtime")]
    pub downtime_limit: u64,
    /// Bytes per second; absent or null for unlimited.
    #[serde(default)]
    pub max_bandwidth: Option<u64>,
    /// Data channels besides the main connection (0..=16; 0: none).
    #[serde(default)]
    pub channels: u32,
    /// `none`, `zstd` or `zstd:LEVEL`; absent: none.
    #[serde(default)]
    pub compress: Option<String>,
    /// A `file:` URI may replace an existing file (otherwise refused).
    #[serde(default)]
    pub overwrite: bool,
    /// TLS on every connection (a sealed snapshot for `file:`).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// Migration credentials as the command line and QMP give them: the
/// reference's `tls-creds` (here `DIR` or `psk:FILE`, there being no
/// `object-add`), `tls-hostname` (the name the destination's certificate
/// must have; default the URI's host) and `tls-authz` (client subjects a
/// destination admits, `CN=...,O=...`; empty: any the CA signed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    pub creds: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub authz: Vec<String>,
}

impl TlsSettings {
    /// The source's side of a session with these credentials.
    pub fn client(&self) -> Result<migration::secure::TlsClient, String> {
        let creds =
            migration::secure::Creds::load(&self.creds).map_err(|e| format!("tls-creds: {e}"))?;
        migration::secure::TlsClient::new(creds, self.hostname.clone()).map_err(|e| e.to_string())
    }
}

fn default_downtime() -> u64 {
    DEFAULT_DOWNTIME_LIMIT_MS
}

impl MigrateRequest {
    /// The driver parameters this request asks for (a channel count or a
    /// compression method out of range is refused).
    pub fn params(&self) -> Result<Params, String> {
        let max = migration::stream::format::MAX_CHANNELS;
        if self.channels > max {
            return Err(format!("{} channels (0..={max} allowed)", self.channels));
        }
        let compression = match &self.compress {
            Some(c) => c.parse().map_err(|e: BadCompression| e.to_string())?,
            None => Compression::None,
        };
        let tls = match &self.tls {
            Some(t) => Some(migration::secure::SharedClient(std::sync::Arc::new(
                t.client()?,
            ))),
            None => None,
        };
        Ok(Params {
            downtime_limit: Duration::from_millis(self.downtime_limit),
            max_bandwidth: self.max_bandwidth,
            channels: self.channels,
            compression,
            tls,
            ..Params::default()
        })
    }
}

/// One guest-visible property whose value is pinned for the guest's lifetime
/// (it did not come from this build's defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedProp {
    pub device: String,
    pub property: String,
    pub value: String,
    pub provenance: String,
    /// For a value adopted from a stream: where it was first set, as far
    /// back as the streams say (`-global on release 8.0.1`, `release 8.0
    /// (erratum aer-uncor-mask)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl PinnedProp {
    /// The pinned properties of a running guest's configuration.
    pub fn of(cfg: &compat_runtime::EffectiveConfig, origins: &Origins) -> Vec<PinnedProp> {
        migration::config::pinned(cfg)
            .into_iter()
            .map(|(device, property, value, provenance)| PinnedProp {
                origin: origins.get(&(device.clone(), property.clone())).cloned(),
                device,
                property,
                value,
                provenance,
            })
            .collect()
    }
}

/// A running device instance as `status` (and `vmm ctl qtree`) shows it:
/// id, type, place, backend facts, and the effective value and provenance
/// of every property of its type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(flatten)]
    pub instance: DeviceInstance,
    #[serde(default)]
    pub props: BTreeMap<String, PropValue>,
}

impl DeviceInfo {
    /// Every instance of a running machine, with its type's properties.
    pub fn of(instances: Vec<DeviceInstance>, cfg: &compat_runtime::EffectiveConfig) -> Vec<Self> {
        let config = migration::config::from_effective(cfg);
        instances
            .into_iter()
            .map(|instance| {
                let mut props = config.get(&instance.type_name).cloned().unwrap_or_default();
                props.extend(instance.props.clone());
                DeviceInfo { props, instance }
            })
            .collect()
    }
}

/// The answer to `x-vmm-status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// `running`, `paused`, `migrating`, `postmigrate`, `incoming`...
    pub state: String,
    pub machine_type: String,
    pub release: String,
    #[serde(default)]
    pub pinned: Vec<PinnedProp>,
    /// The running device instances (`vmm ctl qtree`).
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
    /// The last progress of a migration in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Progress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_parameters_are_checked() {
        let mut r = MigrateRequest {
            uri: "tcp:h:1".into(),
            downtime_limit: 300,
            max_bandwidth: None,
            channels: 4,
            compress: Some("zstd:3".into()),
            overwrite: false,
            tls: None,
        };
        let p = r.params().unwrap();
        assert_eq!((p.channels, p.downtime_limit.as_millis()), (4, 300));
        r.channels = 17;
        assert!(r.params().unwrap_err().contains("17 channels"));
        r.channels = 0;
        r.compress = Some("lz4".into());
        assert!(r.params().is_err());
        r.compress = None;
        r.tls = Some(TlsSettings {
            creds: "/nonexistent".into(),
            ..TlsSettings::default()
        });
        assert!(r.params().unwrap_err().contains("tls-creds: /nonexistent"));
    }
}

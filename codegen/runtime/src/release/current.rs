//! The running build as a lock: what it presents for each of its machine
//! types, so it can stand in the matrix next to the frozen releases.

use super::lock::{Lock, LockMachine, LockSection};
use super::{MIN_STREAM_FORMAT, STREAM_FORMAT};
use crate::table::Catalog;

impl Catalog {
    /// This build's machine types, properties and sections as a lock named
    /// `release` (`next`: the unreleased tree).
    pub fn as_lock(&self, release: &str) -> Lock {
        let machine = self
            .machines()
            .map(|m| {
                let cfg = self.resolve(m);
                LockMachine {
                    name: m.name.to_string(),
                    max_cpus: m.knobs.max_cpus,
                    default_cpus: m.knobs.default_cpus,
                    memory_mib: m.knobs.memory_mib,
                    devices: m.knobs.devices.iter().map(|d| d.to_string()).collect(),
                    props: cfg
                        .devices
                        .iter()
                        .filter(|d| !d.props.is_empty())
                        .filter(|d| {
                            self.device_type(&d.type_name)
                                .is_none_or(|t| t.model_version().is_none())
                        })
                        .map(|d| {
                            let props = d
                                .props
                                .iter()
                                .map(|p| (p.name.clone(), p.value.to_string()))
                                .collect();
                            (d.type_name.clone(), props)
                        })
                        .collect(),
                }
            })
            .collect();
        Lock {
            release: release.to_string(),
            stream_format: STREAM_FORMAT,
            min_stream_format: MIN_STREAM_FORMAT,
            errata: Vec::new(),
            parents: self
                .device_types
                .iter()
                .filter_map(|d| Some((d.name.to_string(), d.parent?.to_string())))
                .collect(),
            machine,
            section: self
                .device_types
                .iter()
                .filter_map(|d| Some(LockSection::from_desc(d.name, d.vmstate?)))
                .collect(),
            cpu_model: self
                .device_types
                .iter()
                .filter(|d| d.model_version().is_some())
                .map(|d| {
                    let own = d.props.iter().filter(|p| p.owner == d.name);
                    let props = own.map(|p| (p.name.to_string(), p.default.to_string()));
                    (d.name.to_string(), props.collect())
                })
                .collect(),
        }
    }
}

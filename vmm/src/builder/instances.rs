//! The device instances a built machine presents to its guest: a stable id
//! each, the type, where the guest finds it, and the facts of its backend.
//! The same list goes into an outgoing manifest, is compared by a
//! destination (`migration::instances`) and is shown by `vmm ctl qtree`.
//!
//! Ids: `isa-serial0`, `pcie-root-port0` for the machine's one-of-a-kind
//! devices; a disk's is its `--device ...,id=` or `virtio-blk{N}` (`cmdline`).

use super::cmdline::{DISK_TYPE, single_id};
use super::{Machine, layout};
use devices::bus::lock;
use migration::manifest::{DeviceInstance, PropValue};

impl Machine {
    /// Every device instance of this machine, in a fixed order.
    pub fn instances(&self) -> Vec<DeviceInstance> {
        let cfg = self.config();
        let mut out = Vec::new();
        if let Some(s) = &cfg.serial {
            out.push(DeviceInstance {
                id: single_id("isa-serial"),
                type_name: "isa-serial".into(),
                addr: format!("io {:#x} irq {}", s.iobase, s.irq),
                facts: Default::default(),
                props: Default::default(),
                backend: None,
            });
        }
        for (i, (b, disk)) in self.devices().blocks.iter().zip(&cfg.blocks).enumerate() {
            let (base, gsi) = layout::virtio_mmio(i);
            let facts = lock(b)
                .device()
                .backend_facts()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let props = disk
                .props
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        PropValue::new(v.clone(), disk.provenance.clone()),
                    )
                })
                .collect();
            out.push(DeviceInstance {
                id: disk.id.clone(),
                type_name: DISK_TYPE.into(),
                addr: format!("virtio-mmio {base:#x} gsi {gsi}"),
                facts,
                props,
                backend: disk.backend.clone(),
            });
        }
        if let Some(rp) = &cfg.root_port {
            out.push(DeviceInstance {
                id: single_id("pcie-root-port"),
                type_name: "pcie-root-port".into(),
                addr: format!("pci 00:{:02x}.0", rp.device),
                facts: Default::default(),
                props: Default::default(),
                backend: None,
            });
        }
        out
    }
}

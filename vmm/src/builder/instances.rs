//! The device instances a built machine presents to its guest: a stable id
//! each, the type, where the guest finds it, and the facts of its backend.
//! The same list goes into an outgoing manifest, is compared by a
//! destination (`migration::instances`) and is shown by `vmm ctl qtree`.
//!
//! Ids are the type's short name and the instance's index among devices of
//! that type: `isa-serial0`, `virtio-blk0` (the first `--drive`),
//! `virtio-blk1`, `pcie-root-port0`.

use super::{Machine, layout};
use devices::bus::lock;
use migration::manifest::DeviceInstance;

impl Machine {
    /// Every device instance of this machine, in a fixed order.
    pub fn instances(&self) -> Vec<DeviceInstance> {
        let cfg = self.config();
        let mut out = Vec::new();
        if let Some(s) = &cfg.serial {
            out.push(DeviceInstance {
                id: "isa-serial0".into(),
                type_name: "isa-serial".into(),
                addr: format!("io {:#x} irq {}", s.iobase, s.irq),
                facts: Default::default(),
            });
        }
        for (i, b) in self.devices().blocks.iter().enumerate() {
            let (base, gsi) = layout::virtio_mmio(i);
            let facts = lock(b)
                .device()
                .backend_facts()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            out.push(DeviceInstance {
                id: format!("virtio-blk{i}"),
                type_name: "virtio-blk-device".into(),
                addr: format!("virtio-mmio {base:#x} gsi {gsi}"),
                facts,
            });
        }
        if let Some(rp) = &cfg.root_port {
            out.push(DeviceInstance {
                id: "pcie-root-port0".into(),
                type_name: "pcie-root-port".into(),
                addr: format!("pci 00:{:02x}.0", rp.device),
                facts: Default::default(),
            });
        }
        out
    }
}

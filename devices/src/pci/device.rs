use super::config_space::{CONFIG_SIZE, ConfigSpace};
use super::{
    AER_OFFSET, ConfigSpaceState, EcamState, PCI_ERR_UNC_MASK_DEFAULT, PCI_ERR_UNC_SUPPORTED,
    PCI_ERR_UNCOR_MASK, PcieRootPortConfig,
};
use crate::bus::BusDevice;

/// Bytes of ECAM for one bus (32 devices × 8 functions × 4 KiB).
pub const ECAM_BUS0_SIZE: u64 = 1 << 20;

const VENDOR_REDHAT: u16 = 0x1b36;
const DEVICE_GPEX_HOST: u16 = 0x0008;
const DEVICE_ROOT_PORT: u16 = 0x000c;
const PCIE_CAP: usize = 0x40;
const PCI_STATUS_CAP_LIST: u16 = 0x10;

struct Function {
    slot: u8,
    cfg: ConfigSpace,
}

/// The ECAM window of bus 0: host bridge at 00.0, the root port at its slot.
pub struct Ecam {
    functions: Vec<Function>,
    root_port_cfg: PcieRootPortConfig,
}

fn host_bridge() -> ConfigSpace {
    let mut c = ConfigSpace::new();
    c.set_u16(0x00, VENDOR_REDHAT);
    c.set_u16(0x02, DEVICE_GPEX_HOST);
    c.set_wmask_u16(0x04, 0x0547);
    c.set(0x0a, &[0x00, 0x06]); // class: bridge / host
    c
}

fn root_port(cfg: &PcieRootPortConfig) -> ConfigSpace {
    let mut c = ConfigSpace::new();
    c.set_u16(0x00, VENDOR_REDHAT);
    c.set_u16(0x02, DEVICE_ROOT_PORT);
    c.set_u16(0x06, PCI_STATUS_CAP_LIST);
    c.set_wmask_u16(0x04, 0x0547);
    c.set(0x0a, &[0x04, 0x06]); // class: bridge / PCI-to-PCI
    c.set(0x0e, &[0x01]); // header type 1
    // bus numbers (primary, secondary, subordinate) and latency are writable
    c.set_wmask_u32(0x18, 0x00ff_ffff);
    c.set(0x34, &[PCIE_CAP as u8]);
    // PCIe capability v2, root port, no next capability
    c.set(PCIE_CAP, &[0x10, 0x00]);
    // PCIe capabilities: version 2, root port, slot implemented
    c.set_u16(PCIE_CAP + 2, 0x0142);
    // Device capabilities: max payload 128 bytes, extended tags per property
    c.set_u32(PCIE_CAP + 0x04, if cfg.ext_tag { 1 << 5 } else { 0 });
    // Slot capabilities: physical slot number in bits 31:19
    c.set_u32(PCIE_CAP + 0x14, u32::from(cfg.slot & 0x1fff) << 19);
    // AER extended capability: ID 1, version 2, last
    c.set_u32(AER_OFFSET, 0x0002_0001);
    c.set_w1cmask_u32(AER_OFFSET + 0x04, PCI_ERR_UNC_SUPPORTED); // UNCOR_STATUS
    if cfg.err_unc_mask {
        c.set_u32(AER_OFFSET + PCI_ERR_UNCOR_MASK, PCI_ERR_UNC_MASK_DEFAULT);
        c.set_wmask_u32(AER_OFFSET + PCI_ERR_UNCOR_MASK, PCI_ERR_UNC_SUPPORTED);
    }
    // UNCOR_SEVER: QEMU's PCI_ERR_UNC_SEVERITY_DEFAULT, writable
    c.set_u32(
        AER_OFFSET + 0x0c,
        0x0000_0010 | 0x0000_0020 | 0x0000_2000 | 0x0002_0000 | 0x0004_0000 | 0x0040_0000,
    );
    c.set_wmask_u32(AER_OFFSET + 0x0c, PCI_ERR_UNC_SUPPORTED);
    c
}

impl Ecam {
    /// Builds bus 0 with the host bridge and one root port.
    pub fn new(root_port_cfg: &PcieRootPortConfig) -> Self {
        let mut functions = vec![Function {
            slot: 0,
            cfg: host_bridge(),
        }];
        if root_port_cfg.device != 0 && root_port_cfg.device < 32 {
            functions.push(Function {
                slot: root_port_cfg.device,
                cfg: root_port(root_port_cfg),
            });
        } else {
            tracing::warn!(
                "pcie-root-port device number {} unusable; not added",
                root_port_cfg.device
            );
        }
        Self {
            functions,
            root_port_cfg: root_port_cfg.clone(),
        }
    }

    /// The configuration the root port was built from.
    pub fn root_port_config(&self) -> &PcieRootPortConfig {
        &self.root_port_cfg
    }

    /// The device number of the root port, if it was added.
    pub fn root_port_slot(&self) -> Option<u8> {
        self.functions.iter().map(|f| f.slot).find(|&s| s != 0)
    }

    /// The config space of device `slot` (function 0) on bus 0.
    pub fn config_space(&self, slot: u8) -> Option<&ConfigSpace> {
        self.functions
            .iter()
            .find(|f| f.slot == slot)
            .map(|f| &f.cfg)
    }

    /// Mutable [`config_space`](Self::config_space) (device-side access).
    pub fn config_space_mut(&mut self, slot: u8) -> Option<&mut ConfigSpace> {
        self.functions
            .iter_mut()
            .find(|f| f.slot == slot)
            .map(|f| &mut f.cfg)
    }

    /// Config space contents of every function.
    pub fn state(&self) -> EcamState {
        EcamState {
            functions: self
                .functions
                .iter()
                .map(|f| ConfigSpaceState {
                    slot: f.slot,
                    data: f.cfg.data.clone(),
                })
                .collect(),
        }
    }

    /// Restores contents saved by [`state`](Self::state) (masks are kept).
    pub fn restore(&mut self, s: &EcamState) {
        for fs in &s.functions {
            if let Some(f) = self.functions.iter_mut().find(|f| f.slot == fs.slot)
                && fs.data.len() == CONFIG_SIZE
            {
                f.cfg.data.clone_from(&fs.data);
            }
        }
    }

    fn locate(&mut self, offset: u64) -> Option<(&mut ConfigSpace, usize)> {
        let dev = ((offset >> 15) & 0x1f) as u8;
        let func = (offset >> 12) & 0x7;
        let reg = (offset & 0xfff) as usize;
        if func != 0 {
            return None;
        }
        self.functions
            .iter_mut()
            .find(|f| f.slot == dev)
            .map(|f| (&mut f.cfg, reg))
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.locate(offset) {
            Some((cfg, reg)) => cfg.read(reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((cfg, reg)) = self.locate(offset) {
            cfg.write(reg, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(e: &mut Ecam, off: u64) -> u32 {
        let mut b = [0u8; 4];
        e.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn mask_off(slot: u8) -> u64 {
        (u64::from(slot) << 15) + (AER_OFFSET + PCI_ERR_UNCOR_MASK) as u64
    }

    #[test]
    fn aer_mask_follows_property() {
        let mut on = Ecam::new(&PcieRootPortConfig::for_test(1, 0, 0, true));
        assert_eq!(read32(&mut on, mask_off(1)), 0x0240_0000);
        on.write(mask_off(1), &0x0000_0010u32.to_le_bytes());
        assert_eq!(read32(&mut on, mask_off(1)), 0x10);
        let mut off = Ecam::new(&PcieRootPortConfig::for_test(1, 0, 0, false));
        assert_eq!(read32(&mut off, mask_off(1)), 0);
        off.write(mask_off(1), &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read32(&mut off, mask_off(1)), 0);
        assert_eq!(read32(&mut off, 1 << 15), 0x000c_1b36);
        assert_eq!(read32(&mut off, 2 << 15), 0xffff_ffff);
        assert_eq!(read32(&mut off, (1 << 15) + 0x100), 0x0002_0001);
    }

    #[test]
    fn w1c_status() {
        let mut e = Ecam::new(&PcieRootPortConfig::for_test(1, 0, 0, true));
        let st = (1u64 << 15) + 0x104;
        e.functions[1].cfg.set_u32(0x104, 0x30);
        e.write(st, &0x10u32.to_le_bytes());
        assert_eq!(read32(&mut e, st), 0x20);
    }

    /// Random config-space traffic never panics and the IDs stay read-only.
    #[test]
    fn random_ecam_traffic_never_panics() {
        let mut e = Ecam::new(&PcieRootPortConfig::for_test(1, 3, 1, true));
        let mut x: u64 = 0x0bad_cafe_dead_beef;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20000 {
            let off = rnd() % ECAM_BUS0_SIZE + if rnd() % 8 == 0 { ECAM_BUS0_SIZE } else { 0 };
            let len = [1usize, 2, 4, 8][(rnd() % 4) as usize];
            let v = rnd().to_le_bytes();
            if rnd() % 2 == 0 {
                e.write(off, &v[..len]);
            } else {
                let mut b = [0u8; 8];
                e.read(off, &mut b[..len]);
            }
        }
        assert_eq!(read32(&mut e, 1 << 15), 0x000c_1b36);
        assert_eq!(read32(&mut e, 0), 0x0008_1b36);
    }
}

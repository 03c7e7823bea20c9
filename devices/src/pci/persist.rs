//! [`Persist`] for the ECAM window: the `pcie-root-port` function's config
//! space ⇄ the generated [`PcieRootPortState`] (section `pcie-root-port`).
//!
//! Mapping: `config` = the root port's 4 KiB config space (the PCIe and AER
//! capabilities included); subsection `pcie-root-port/aer-mask` (gate
//! `x-pcie-err-unc-mask`) = the AER `PCI_ERR_UNCOR_MASK` register and its
//! guest-writable bits. On load, like the reference's PCI config check,
//! every bit the guest can neither write nor clear must equal this device's
//! (a different device, property or corrupt byte is named by offset); the
//! subsection's mask must match `config` and its writable bits this device's.
//! The write masks themselves are rebuilt from the configuration.
//!
//! The host bridge (00.0) has no VMState declaration: its config space is
//! constant except the command register, which is not migrated (see
//! docs/runtime.md, "Device state").

use super::{AER_OFFSET, Ecam, PCI_ERR_UNCOR_MASK};
use crate::generated::vmstate::{PCIE_ROOT_PORT, PcieRootPortAerMaskState, PcieRootPortState};
use crate::persist::{self, Persist, PersistError, Section, mismatch};
use compat_runtime::VmStateDesc;

const DEV: &str = PCIE_ROOT_PORT.name;
const MASK: usize = AER_OFFSET + PCI_ERR_UNCOR_MASK;

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

impl Persist for Ecam {
    /// `pcie-root-port` when the root port exists.
    fn descriptors(&self) -> Vec<&'static VmStateDesc> {
        match self.root_port_slot() {
            Some(_) => vec![&PCIE_ROOT_PORT],
            None => Vec::new(),
        }
    }

    fn gate(&self, property: &str) -> Option<bool> {
        let c = self.root_port_config();
        match property {
            "x-pcie-err-unc-mask" => Some(c.err_unc_mask),
            "x-pcie-ext-tag" => Some(c.ext_tag),
            "x-pcie-ari-nextfn-1" => Some(c.ari_nextfn_1),
            _ => None,
        }
    }

    fn save_sections(&self) -> Result<Vec<Section>, PersistError> {
        let Some(cfg) = self.root_port_slot().and_then(|s| self.config_space(s)) else {
            return Ok(Vec::new());
        };
        let gate = |p: &str| self.gate(p);
        let state = PcieRootPortState {
            config: cfg.data.clone(),
            sub_aer_mask: (gate("x-pcie-err-unc-mask") == Some(true)).then(|| {
                PcieRootPortAerMaskState {
                    uncor_mask: cfg.u32_at(MASK),
                    uncor_mask_wmask: u32_at(&cfg.wmask, MASK),
                }
            }),
        };
        Ok(vec![persist::encode(&state, gate)?])
    }

    fn restore_sections(&mut self, sections: &[Section]) -> Result<(), PersistError> {
        let picked = persist::pick(&self.descriptors(), sections)?;
        let Some(&section) = picked.first() else {
            return Ok(());
        };
        let v: PcieRootPortState = persist::decode(section, |p| self.gate(p))?;
        let slot = self.root_port_slot();
        let Some(cfg) = slot.and_then(|s| self.config_space_mut(s)) else {
            return Ok(());
        };
        if v.config.len() != cfg.data.len() {
            return Err(mismatch(
                DEV,
                "config",
                format_args!("{} bytes", v.config.len()),
                format_args!("{} bytes", cfg.data.len()),
            ));
        }
        let masks = cfg.wmask.iter().zip(&cfg.w1cmask);
        for (i, ((&s, &l), (&w, &c))) in v.config.iter().zip(&cfg.data).zip(masks).enumerate() {
            let fixed = !(w | c);
            if (s ^ l) & fixed != 0 {
                return Err(mismatch(
                    DEV,
                    format!("config[{i:#x}]"),
                    format_args!("{s:#04x}"),
                    format_args!("{l:#04x} (read-only bits {fixed:#04x})"),
                ));
            }
        }
        if let Some(a) = &v.sub_aer_mask {
            let in_config = u32_at(&v.config, MASK);
            if a.uncor_mask != in_config {
                return Err(mismatch(
                    DEV,
                    "uncor_mask",
                    format_args!("{:#010x}", a.uncor_mask),
                    format_args!("{in_config:#010x} (in the stream's config)"),
                ));
            }
            let local = u32_at(&cfg.wmask, MASK);
            if a.uncor_mask_wmask != local {
                return Err(mismatch(
                    DEV,
                    "uncor_mask_wmask",
                    format_args!("{:#010x}", a.uncor_mask_wmask),
                    format_args!("{local:#010x}"),
                ));
            }
        }
        cfg.data.clone_from(&v.config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::pci::{ECAM_BUS0_SIZE, PcieRootPortConfig};
    use crate::persist::testing::{hostile_bytes, with_version};

    fn ecam(err_unc_mask: bool) -> Ecam {
        Ecam::new(&PcieRootPortConfig::for_test(1, 3, 1, err_unc_mask))
    }

    fn w32(e: &mut Ecam, off: usize, v: u32) {
        e.write((1 << 15) + off as u64, &v.to_le_bytes());
    }

    /// Command register, bus numbers, AER mask and severity written by the
    /// guest; an uncorrectable error status bit raised by the device.
    fn busy(err_unc_mask: bool) -> Ecam {
        let mut e = ecam(err_unc_mask);
        w32(&mut e, 0x04, 0x0000_0507);
        w32(&mut e, 0x18, 0x0002_0100);
        w32(&mut e, MASK, 0x0000_1010);
        w32(&mut e, AER_OFFSET + 0x0c, 0x0004_0030);
        e.config_space_mut(1)
            .unwrap()
            .set_u32(AER_OFFSET + 4, 0x0000_1000);
        e
    }

    fn view(e: &mut Ecam) -> Vec<u32> {
        (0..ECAM_BUS0_SIZE / 4)
            .map(|i| {
                let mut b = [0u8; 4];
                e.read(i * 4, &mut b);
                u32::from_le_bytes(b)
            })
            .collect()
    }

    #[test]
    fn roundtrip_same_config_and_reads() {
        for on in [true, false] {
            let mut a = busy(on);
            let saved = a.save_sections().unwrap();
            assert_eq!(saved.len(), 1);
            assert_eq!(
                (saved[0].name.as_str(), saved[0].version_id),
                ("pcie-root-port", 1)
            );
            let mut b = ecam(on);
            b.restore_sections(&saved).unwrap();
            assert_eq!(a.config_space(1), b.config_space(1));
            let mask = b.config_space(1).unwrap().u32_at(MASK);
            assert_eq!(mask, if on { 0x1010 } else { 0 });
            assert_eq!(view(&mut a), view(&mut b));
            // still behaves the same (w1c, masks rebuilt from the config)
            for e in [&mut a, &mut b] {
                w32(e, AER_OFFSET + 4, 0x1000);
                w32(e, MASK, 0xffff_ffff);
            }
            assert_eq!(view(&mut a), view(&mut b));
            assert_eq!(b.save_sections().unwrap(), a.save_sections().unwrap());
        }
    }

    #[test]
    fn versions_outside_the_window_are_refused() {
        let saved = busy(true).save_sections().unwrap();
        for (v, both) in [(2, ["2", "1"]), (0, ["0", "1"])] {
            let msg = ecam(true)
                .restore_sections(&[with_version(&saved[0], v)])
                .unwrap_err()
                .to_string();
            assert!(msg.contains("pcie-root-port"), "{msg}");
            assert!(both.iter().all(|x| msg.contains(x)), "{msg}");
        }
    }

    #[test]
    fn aer_subsection_gate_and_checks() {
        let saved_on = busy(true).save_sections().unwrap();
        // gate off here: refused by name
        let e = ecam(false).restore_sections(&saved_on).unwrap_err();
        assert!(matches!(e, PersistError::GateOff { .. }), "{e}");
        assert!(e.to_string().contains("pcie-root-port/aer-mask"), "{e}");
        // missing subsection: fine
        let gate = |p: &str| {
            if p == "x-pcie-err-unc-mask" {
                Some(true)
            } else {
                None
            }
        };
        let mut v: PcieRootPortState = persist::decode(&saved_on[0], gate).unwrap();
        let with = v.clone();
        v.sub_aer_mask = None;
        let mut b = ecam(true);
        b.restore_sections(&[persist::encode(&v, gate).unwrap()])
            .unwrap();
        assert_eq!(b.config_space(1).unwrap().u32_at(MASK), 0x1010);
        // unknown subsection: refused by name
        let mut s = saved_on[0].clone();
        let at = s.data.windows(8).position(|w| w == b"aer-mask").unwrap();
        s.data[at..at + 8].copy_from_slice(b"aer-xxxx");
        let msg = ecam(true).restore_sections(&[s]).unwrap_err().to_string();
        assert!(msg.contains("pcie-root-port/aer-xxxx"), "{msg}");
        // subsection disagreeing with the config or the local write mask
        for (field, edit) in [("uncor_mask", 0usize), ("uncor_mask_wmask", 1)] {
            let mut w = with.clone();
            let sub = w.sub_aer_mask.as_mut().unwrap();
            if edit == 0 {
                sub.uncor_mask ^= 1;
            } else {
                sub.uncor_mask_wmask = 0;
            }
            let msg = ecam(true)
                .restore_sections(&[persist::encode(&w, gate).unwrap()])
                .unwrap_err()
                .to_string();
            assert!(msg.contains(&format!("`{field}`")), "{msg}");
        }
    }

    #[test]
    fn read_only_bits_must_match() {
        let saved = busy(true).save_sections().unwrap();
        // vendor id
        let mut v: PcieRootPortState = persist::decode(&saved[0], |_| Some(true)).unwrap();
        v.config[0] ^= 0xff;
        let s = persist::encode(&v, |_| Some(true)).unwrap();
        let msg = ecam(true).restore_sections(&[s]).unwrap_err().to_string();
        assert!(msg.contains("config[0x0]"), "{msg}");
        // a different `slot` property shows in the slot capabilities
        let other = Ecam::new(&PcieRootPortConfig::for_test(1, 4, 1, true));
        let msg = { other }.restore_sections(&saved).unwrap_err().to_string();
        assert!(msg.contains("config[0x56]"), "{msg}");
    }

    #[test]
    fn no_root_port_no_section() {
        let mut e = Ecam::new(&PcieRootPortConfig::for_test(0, 0, 0, true));
        assert!(e.save_sections().unwrap().is_empty());
        e.restore_sections(&[]).unwrap();
        let saved = busy(true).save_sections().unwrap();
        assert!(matches!(
            e.restore_sections(&saved),
            Err(PersistError::UnknownSection { .. })
        ));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let saved = busy(true).save_sections().unwrap();
        let (t, c) = hostile_bytes(&saved, || ecam(true));
        assert_eq!(t, saved[0].data.len());
        assert!(c > 0);
    }
}

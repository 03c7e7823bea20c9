//! The section [`KVM_VM_SECTION`]: the irqchip (PIC ×2, IOAPIC), PIT2 and
//! kvmclock, as serde of kvm-bindings' own structures.

use crate::vstate::vm::VmState;
use compat_runtime::vmstate::VmStateDesc;
use kvm_bindings::{kvm_clock_data, kvm_irqchip, kvm_pit_state2};
use migration::vm::VmError;
use serde::{Deserialize, Serialize};

/// Name of the section carrying the irqchip, PIT2 and kvmclock state.
pub const KVM_VM_SECTION: &str = "kvm-vm";

/// The VMState description of [`KVM_VM_SECTION`]: its bytes are a JSON
/// object (serde of kvm-bindings' `kvm_irqchip` ×3, `kvm_pit_state2`,
/// `kvm_clock_data`), versioned as a whole.
pub static KVM_VM_DESC: VmStateDesc = VmStateDesc {
    name: KVM_VM_SECTION,
    version_id: 1,
    minimum_version_id: 1,
    fields: &[],
    subsections: &[],
};

/// Upper bound on the [`KVM_VM_SECTION`] bytes accepted (it is about 10 KiB of JSON).
const MAX_KVM_VM_BYTES: usize = 256 << 10;

#[derive(Serialize, Deserialize)]
struct KvmVmWire {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

pub(super) fn encode_vm_state(s: &VmState) -> Result<Vec<u8>, VmError> {
    let w = KvmVmWire {
        pic_master: s.pic_master,
        pic_slave: s.pic_slave,
        ioapic: s.ioapic,
        pit: s.pit,
        clock: s.clock,
    };
    serde_json::to_vec(&w).map_err(|e| VmError::new(format!("section {KVM_VM_SECTION}: {e}")))
}

pub(super) fn decode_vm_state(data: &[u8]) -> Result<VmState, VmError> {
    if data.len() > MAX_KVM_VM_BYTES {
        return Err(VmError::new(format!(
            "section {KVM_VM_SECTION}: {} bytes, more than the {MAX_KVM_VM_BYTES} allowed",
            data.len()
        )));
    }
    let w: KvmVmWire = serde_json::from_slice(data)
        .map_err(|e| VmError::new(format!("section {KVM_VM_SECTION}: {e}")))?;
    Ok(VmState {
        pic_master: w.pic_master,
        pic_slave: w.pic_slave,
        ioapic: w.ioapic,
        pit: w.pit,
        clock: w.clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_vm_state_round_trip_and_bounds() {
        let mut st = VmState {
            pic_master: kvm_irqchip::default(),
            pic_slave: kvm_irqchip {
                chip_id: 1,
                ..Default::default()
            },
            ioapic: kvm_irqchip {
                chip_id: 2,
                ..Default::default()
            },
            pit: kvm_pit_state2::default(),
            clock: kvm_clock_data::default(),
        };
        st.clock.clock = 123_456_789;
        st.pit.flags = 1;
        let bytes = encode_vm_state(&st).unwrap();
        assert!(bytes.len() < MAX_KVM_VM_BYTES);
        let back = decode_vm_state(&bytes).unwrap();
        assert_eq!(back.clock.clock, 123_456_789);
        assert_eq!(back.pit.flags, 1);
        assert_eq!(back.ioapic.chip_id, 2);
        assert!(decode_vm_state(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode_vm_state(b"{}").is_err());
        assert!(decode_vm_state(&vec![b' '; MAX_KVM_VM_BYTES + 1]).is_err());
    }

    #[test]
    fn the_local_release_knows_the_kvm_vm_section() {
        assert!(
            crate::release::persona::Persona::current()
                .local_release(&[&KVM_VM_DESC])
                .sections
                .contains_key(KVM_VM_SECTION)
        );
    }
}

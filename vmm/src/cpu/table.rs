//! The guest's effective CPUID table (vCPU 0, as given to KVM) against a
//! destination's: the registers that say what the processor is (vendor,
//! family/model/stepping, highest leaves, brand string) and every register
//! that holds catalogued features must be equal, or the migration is
//! refused before any RAM moves. Other leaves (caches, address sizes, the
//! XSAVE layout, KVM's paravirtual leaves) are the host's; a difference
//! there is logged, naming the leaf, and does not refuse.

use compat_runtime::{Catalog, FeatureLoc};
use migration::manifest::CpuidLeaf;
use std::collections::{BTreeMap, BTreeSet};

const REGS: [&str; 4] = ["EAX", "EBX", "ECX", "EDX"];

/// Whether register `reg` of `(leaf, subleaf)` is compared strictly.
fn strict(features: &BTreeSet<(u32, u32, u8)>, leaf: u32, subleaf: u32, reg: u8) -> bool {
    match leaf {
        0 | 0x8000_0000 | 0x8000_0002..=0x8000_0004 => true,
        1 | 0x8000_0001 if reg == 0 => true,
        _ => features.contains(&(leaf, subleaf, reg)),
    }
}

/// What differs: `Err` lists the differences that would change the
/// guest's CPU, `Ok` those that only change host details.
pub fn compare(
    catalog: &Catalog,
    theirs: &[CpuidLeaf],
    ours: &[CpuidLeaf],
) -> Result<Vec<String>, String> {
    let features: BTreeSet<(u32, u32, u8)> = catalog
        .cpu_features
        .iter()
        .filter_map(|f| match f.loc {
            FeatureLoc::Cpuid {
                leaf, subleaf, reg, ..
            } => Some((leaf, subleaf, reg)),
            FeatureLoc::Msr { .. } => None,
        })
        .collect();
    let index = |t: &[CpuidLeaf]| -> BTreeMap<(u32, u32), [u32; 4]> {
        t.iter().map(|l| ((l.leaf, l.subleaf), l.regs)).collect()
    };
    let (a, b) = (index(theirs), index(ours));
    let keys: BTreeSet<(u32, u32)> = a.keys().chain(b.keys()).copied().collect();
    let (mut refuse, mut note) = (Vec::new(), Vec::new());
    for (leaf, subleaf) in keys {
        let x = a.get(&(leaf, subleaf)).copied().unwrap_or_default();
        let y = b.get(&(leaf, subleaf)).copied().unwrap_or_default();
        for reg in 0..4u8 {
            let (g, h) = (x[usize::from(reg)], y[usize::from(reg)]);
            if g == h {
                continue;
            }
            let line = format!(
                "CPUID[eax={leaf:02x}h,ecx={subleaf:02x}h].{}: guest {g:#010x}, here {h:#010x}",
                REGS[usize::from(reg)]
            );
            if strict(&features, leaf, subleaf, reg) {
                refuse.push(line);
            } else {
                note.push(line);
            }
        }
    }
    if refuse.is_empty() {
        Ok(note)
    } else {
        Err(refuse.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    fn leaf(leaf: u32, regs: [u32; 4]) -> CpuidLeaf {
        CpuidLeaf {
            leaf,
            subleaf: 0,
            regs,
        }
    }

    #[test]
    fn identity_and_feature_registers_refuse_other_leaves_are_noted() {
        let guest = [
            leaf(1, [0x663, 0, 1 << 21, 0]),
            leaf(0x8000_0008, [0x3030, 0, 0, 0]),
        ];
        assert_eq!(compare(&CATALOG, &guest, &guest), Ok(vec![]));
        let other_bits = [
            leaf(1, [0x663, 0, 1 << 21, 0]),
            leaf(0x8000_0008, [0x3028, 0, 0, 0]),
        ];
        let notes = compare(&CATALOG, &guest, &other_bits).unwrap();
        assert_eq!(
            notes,
            ["CPUID[eax=80000008h,ecx=00h].EAX: guest 0x00003030, here 0x00003028"]
        );
        let other_cpu = [leaf(1, [0x800f12, 0, 0, 0])];
        let e = compare(&CATALOG, &guest, &other_cpu).unwrap_err();
        assert!(
            e.contains("CPUID[eax=01h,ecx=00h].EAX: guest 0x00000663, here 0x00800f12")
                && e.contains("CPUID[eax=01h,ecx=00h].ECX: guest 0x00200000, here 0x00000000"),
            "{e}"
        );
    }
}

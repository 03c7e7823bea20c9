//! The feature catalogue read against CPUID leaves and feature MSRs.

use compat_runtime::{Catalog, CpuFeature, FeatureLoc};
use std::collections::BTreeMap;

/// CPUID as `(leaf, subleaf)` → `[eax, ebx, ecx, edx]`.
pub type Leaves = BTreeMap<(u32, u32), [u32; 4]>;

/// Feature MSRs: index → value.
pub type FeatureMsrs = BTreeMap<u32, u64>;

/// Whether the bit of `f` is set in `leaves`/`msrs` (absent leaf or MSR: no).
pub fn has(f: &CpuFeature, leaves: &Leaves, msrs: &FeatureMsrs) -> bool {
    match f.loc {
        FeatureLoc::Cpuid {
            leaf,
            subleaf,
            reg,
            bit,
        } => leaves
            .get(&(leaf, subleaf))
            .and_then(|r| r.get(usize::from(reg)))
            .is_some_and(|v| v & (1 << bit) != 0),
        FeatureLoc::Msr { index, bit } => msrs.get(&index).is_some_and(|v| v & (1 << bit) != 0),
    }
}

/// Every catalogued feature `leaves`/`msrs` have, in catalogue order.
pub fn present<'c>(
    catalog: &'c Catalog,
    leaves: &Leaves,
    msrs: &FeatureMsrs,
) -> Vec<&'c CpuFeature> {
    catalog
        .cpu_features
        .iter()
        .filter(|f| has(f, leaves, msrs))
        .collect()
}

/// The catalogued feature named `name` (or one of its aliases).
pub fn by_name<'c>(catalog: &'c Catalog, name: &str) -> Option<&'c CpuFeature> {
    catalog
        .cpu_features
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    #[test]
    fn features_are_read_from_their_bits() {
        let mut leaves = Leaves::new();
        // Leaf 1 ECX: x2apic (21) and cx16 (13); leaf 7.0 EDX: stibp (27).
        leaves.insert((1, 0), [0, 0, (1 << 21) | (1 << 13), 0]);
        leaves.insert((7, 0), [0, 0, 0, 1 << 27]);
        let msrs = FeatureMsrs::from([(0x10a, (1 << 8) | (1 << 5))]);
        let names: Vec<&str> = present(&CATALOG, &leaves, &msrs)
            .iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["cx16", "x2apic", "stibp", "mds-no", "taa-no"]);
        assert_eq!(by_name(&CATALOG, "sse4_2").map(|f| f.name), Some("sse4.2"));
        let hle = by_name(&CATALOG, "hle").expect("hle");
        assert_eq!(hle.loc.describe(), "CPUID[eax=07h,ecx=00h].EBX [bit 4]");
        assert!(!has(hle, &leaves, &msrs));
        assert!(!by_name(&CATALOG, "invtsc").expect("invtsc").migratable);
    }
}

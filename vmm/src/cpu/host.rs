//! What this host's KVM can give a guest (`vmm cpu host`): every catalogued
//! feature in `KVM_GET_SUPPORTED_CPUID` or the feature MSRs
//! (`KVM_GET_MSR_FEATURE_INDEX_LIST`, read with `KVM_GET_MSRS` on
//! `/dev/kvm`), and a fingerprint of the host.

use super::features::{FeatureMsrs, Leaves, present};
use crate::vstate::cpuid::CpuIdentity;
use compat_runtime::Catalog;
use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

/// Why the host could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `/dev/kvm` or one of its ioctls.
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HostError {
    move |source| HostError::Kvm { what, source }
}

/// This host as a guest CPU could see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// Vendor string (`AuthenticAMD`).
    pub vendor: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// `microcode` of `/proc/cpuinfo` (empty where the kernel hides it).
    pub microcode: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// This vmm's version.
    pub vmm: String,
    /// Every catalogued feature KVM offers, by the reference's name.
    pub features: Vec<String>,
}

/// The CPUID a guest can have here ([`crate::vstate::cpuid::usable`]) as
/// [`Leaves`], and the feature MSRs.
pub fn kvm_offers(kvm: &Kvm) -> Result<(Leaves, FeatureMsrs), HostError> {
    let cpuid = crate::vstate::cpuid::usable(kvm).map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let leaves = cpuid
        .as_slice()
        .iter()
        .map(|e| ((e.function, e.index), [e.eax, e.ebx, e.ecx, e.edx]))
        .collect();
    Ok((leaves, feature_msrs(kvm)?))
}

/// The feature MSRs (`KVM_GET_MSR_FEATURE_INDEX_LIST`) and their values.
pub fn feature_msrs(kvm: &Kvm) -> Result<FeatureMsrs, HostError> {
    let list = kvm
        .get_msr_feature_index_list()
        .map_err(kvm_err("KVM_GET_MSR_FEATURE_INDEX_LIST"))?;
    let mut msrs = FeatureMsrs::new();
    for &index in list.as_slice() {
        let entry = kvm_msr_entry {
            index,
            ..Default::default()
        };
        let Ok(mut one) = Msrs::from_entries(&[entry]) else {
            continue;
        };
        if kvm.get_msrs(&mut one).map_err(kvm_err("KVM_GET_MSRS"))? == 1 {
            msrs.insert(index, one.as_slice()[0].data);
        }
    }
    Ok(msrs)
}

fn vendor(leaves: &Leaves) -> String {
    let r = leaves.get(&(0, 0)).copied().unwrap_or_default();
    [r[1], r[3], r[2]]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(char::from)
        .collect()
}

fn cpuinfo_field(key: &str) -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == key))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// The catalogued, migratable CPUID features a guest can get here: this
/// host's KVM, restricted to those of `simulated` (a `vmm cpu host --json`
/// file, `vmm run --host-cpu`) if given. It can only take features away.
pub fn offered(
    catalog: &Catalog,
    simulated: Option<&HostCpu>,
) -> Result<std::collections::BTreeSet<String>, HostError> {
    let kvm = Kvm::new().map_err(kvm_err("cannot open /dev/kvm"))?;
    let (leaves, msrs) = kvm_offers(&kvm)?;
    let mut set = super::choice::host_features(catalog, &leaves, &msrs);
    if let Some(h) = simulated {
        set.retain(|f| h.features.contains(f));
    }
    Ok(set)
}

/// Reads this host.
pub fn read(catalog: &Catalog) -> Result<HostCpu, HostError> {
    let kvm = Kvm::new().map_err(kvm_err("cannot open /dev/kvm"))?;
    let (leaves, msrs) = kvm_offers(&kvm)?;
    Ok(describe(catalog, &leaves, &msrs))
}

/// A host from what its KVM offers (no I/O but `/proc`).
pub fn describe(catalog: &Catalog, leaves: &Leaves, msrs: &FeatureMsrs) -> HostCpu {
    let id = CpuIdentity::from_leaf1_eax(leaves.get(&(1, 0)).map_or(0, |r| r[0]));
    HostCpu {
        vendor: vendor(leaves),
        family: id.family,
        model: id.model,
        stepping: id.stepping,
        microcode: cpuinfo_field("microcode"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        vmm: env!("CARGO_PKG_VERSION").to_string(),
        features: present(catalog, leaves, msrs)
            .iter()
            .map(|f| f.name.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::generated::CATALOG;

    #[test]
    fn this_hosts_kvm_offers_what_the_issue_measured() {
        if !crate::vstate::testing::kvm_or_skip() {
            return;
        }
        let h = read(&CATALOG).expect("host");
        assert!(!h.vendor.is_empty() && h.family > 0, "{h:?}");
        for f in ["x2apic", "cx16", "tsc-deadline", "clflushopt"] {
            assert!(
                h.features.iter().any(|x| x == f),
                "{f} missing: {:?}",
                h.features
            );
        }
        // What a vCPU does not keep is not offered: a vCPU given every
        // offered CPUID bit keeps them all (the read-back finds no loss).
        let mem = std::sync::Arc::new(crate::vstate::memory::create(16 << 20).expect("memory"));
        let vm = crate::vstate::vm::Vm::new(mem).expect("vm");
        vm.create_vcpu(0, 1)
            .expect("every offered bit survives KVM_SET_CPUID2");
        // A feature this backend does not offer (measured: no SSE3 here) is absent
        // unless the host really gives it.
        let back: HostCpu = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}

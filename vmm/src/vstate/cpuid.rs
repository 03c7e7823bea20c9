//! Per-vCPU CPUID from `KVM_GET_SUPPORTED_CPUID`: APIC ids and a flat
//! topology (one socket, `count` cores, one thread each).

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

/// Hypervisor-present bit (leaf 1 ECX[31]).
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Hyper-threading / multi-core valid bit (leaf 1 EDX[28]).
const EDX_HTT: u32 = 1 << 28;

fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// What the CPU model says the processor is: leaf 1 EAX (and, as on AMD,
/// leaf 0x80000001 EAX), encoded as the manuals and the reference do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuIdentity {
    /// Family (above 0xf: base family 0xf plus the extended family).
    pub family: u32,
    /// Model (its high nibble goes to the extended model field).
    pub model: u32,
    /// Stepping (4 bits).
    pub stepping: u32,
}

impl CpuIdentity {
    /// Decodes leaf 1 EAX as the manuals say: the extended family counts when
    /// the family is 0xf, the extended model when it is 6 or 0xf.
    pub fn from_leaf1_eax(eax: u32) -> Self {
        let base = (eax >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((eax >> 20) & 0xff)
        } else {
            base
        };
        let mut model = (eax >> 4) & 0xf;
        if base == 0x6 || base == 0xf {
            model |= ((eax >> 16) & 0xf) << 4;
        }
        Self {
            family,
            model,
            stepping: eax & 0xf,
        }
    }

    /// Leaf 1 EAX: stepping [3:0], model [7:4], family [11:8], extended
    /// model [19:16], extended family [27:20].
    pub fn leaf1_eax(self) -> u32 {
        let family = if self.family > 0xf {
            0xf00 | ((self.family - 0xf).min(0xff) << 20)
        } else {
            self.family << 8
        };
        let model = ((self.model & 0xf) << 4) | (((self.model >> 4) & 0xf) << 16);
        family | model | (self.stepping & 0xf)
    }
}

/// The CPUID a guest can have on this host: `KVM_GET_SUPPORTED_CPUID`, less
/// what a scratch vCPU does not keep after `KVM_SET_CPUID2`. Some KVMs list
/// bits they then drop (measured here: `arch-capabilities`, leaf 7.0 EDX
/// bit 29, with the PVM backend), so no guest could ever see them; the VMM
/// must neither offer them nor count on them. Probed once per process (the
/// host's KVM does not change under it): start-up asks twice, for the host
/// offer and for the VM.
pub fn usable(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    static USABLE: std::sync::OnceLock<CpuId> = std::sync::OnceLock::new();
    if let Some(c) = USABLE.get() {
        return Ok(c.clone());
    }
    let c = probe_usable(kvm)?;
    Ok(USABLE.get_or_init(|| c).clone())
}

fn probe_usable(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
    let vm = kvm.create_vm()?;
    let vcpu = vm.create_vcpu(0)?;
    vcpu.set_cpuid2(&supported)?;
    let kept = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES)?;
    let mut out = supported;
    for e in out.as_mut_slice() {
        let k = kept
            .as_slice()
            .iter()
            .find(|b| b.function == e.function && b.index == e.index)
            .map_or([0; 4], |b| [b.eax, b.ebx, b.ecx, b.edx]);
        // Leaf 0xd EBX (subleaves 0, 1) follows XCR0/XSS: KVM rewrites it.
        let ebx = if e.function == 0xd && e.index <= 1 {
            e.ebx
        } else {
            e.ebx & k[1]
        };
        (e.eax, e.ebx, e.ecx, e.edx) = (e.eax & k[0], ebx, e.ecx & k[2], e.edx & k[3]);
    }
    Ok(out)
}

/// What a CPU model says beyond its features: identity, and (for models
/// that name them) vendor, highest leaves and brand string. `None` fields
/// keep the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelFacts {
    pub identity: Option<CpuIdentity>,
    /// 12 ASCII bytes (`AuthenticAMD`).
    pub vendor: Option<String>,
    /// Highest basic leaf (leaf 0 EAX).
    pub level: Option<u32>,
    /// Highest extended leaf (leaf 0x80000000 EAX).
    pub xlevel: Option<u32>,
    /// Brand string, leaves 0x80000002..=0x80000004 (up to 48 bytes).
    pub model_id: Option<String>,
}

/// Leaves that describe the processor rather than the topology.
const BRAND_LEAVES: std::ops::RangeInclusive<u32> = 0x8000_0002..=0x8000_0004;

/// Presents `m`'s vendor, highest leaves and brand string in `cpuid` (the
/// host's supported table): leaves above the model's highest are left out,
/// the highest leaf is the model's or, where this host has fewer, the
/// host's (it cannot describe leaves it does not have).
pub fn apply_model(cpuid: &mut CpuId, m: &ModelFacts) {
    let host_max = |base: u32| {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == base)
            .map_or(base, |e| e.eax)
    };
    let level = m.level.map(|l| l.min(host_max(0)));
    let xlevel = m.xlevel.map(|l| l.min(host_max(0x8000_0000)));
    let keep = |f: u32| match f {
        0..0x4000_0000 => level.is_none_or(|l| f <= l),
        0x8000_0000..=0x8fff_ffff => xlevel.is_none_or(|l| f <= l),
        _ => true,
    };
    let entries: Vec<_> = cpuid
        .as_slice()
        .iter()
        .filter(|e| keep(e.function))
        .copied()
        .collect();
    let vendor = m.vendor.as_deref().map(|v| {
        let mut b = [0u8; 12];
        for (d, s) in b.iter_mut().zip(v.bytes()) {
            *d = s;
        }
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        [w(0), w(4), w(8)]
    });
    let brand = m.model_id.as_deref().map(|id| {
        let mut b = [0u8; 48];
        for (d, s) in b.iter_mut().zip(id.bytes()) {
            *d = s;
        }
        b
    });
    let mut out = entries;
    for e in &mut out {
        match e.function {
            0 | 0x8000_0000 => {
                if let (0, Some(l)) = (e.function, level) {
                    e.eax = l;
                }
                if let (0x8000_0000, Some(l)) = (e.function, xlevel) {
                    e.eax = l;
                }
                if let Some([b, d, c]) = vendor {
                    (e.ebx, e.edx, e.ecx) = (b, d, c);
                }
            }
            f if BRAND_LEAVES.contains(&f) => {
                if let Some(b) = &brand {
                    let at = (f - 0x8000_0002) as usize * 16;
                    let w = |i: usize| {
                        u32::from_le_bytes([b[at + i], b[at + i + 1], b[at + i + 2], b[at + i + 3]])
                    };
                    (e.eax, e.ebx, e.ecx, e.edx) = (w(0), w(4), w(8), w(12));
                }
            }
            _ => {}
        }
    }
    if let Ok(c) = CpuId::from_entries(&out) {
        *cpuid = c;
    }
}

/// One CPUID bit: leaf, subleaf, register (0 EAX .. 3 EDX), bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidBit {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: u8,
    pub bit: u8,
}

impl CpuidBit {
    /// `CPUID[eax=07h,ecx=00h].EDX.arch-capabilities [bit 29]` (the
    /// catalogue's name where it has one).
    pub fn describe(&self) -> String {
        let loc = compat_runtime::FeatureLoc::Cpuid {
            leaf: self.leaf,
            subleaf: self.subleaf,
            reg: self.reg,
            bit: self.bit,
        };
        let name = devices::generated::CATALOG
            .cpu_features
            .iter()
            .find(|f| f.loc == loc)
            .map(|f| f.name);
        loc.describe_as(name)
    }
}

/// Bits KVM maintains itself after `KVM_SET_CPUID2` (they follow the
/// guest's CR4 and XCR0): OSXSAVE (leaf 1 ECX 27), OSPKE (leaf 7.0 ECX 4).
const DYNAMIC: [CpuidBit; 2] = [
    CpuidBit {
        leaf: 1,
        subleaf: 0,
        reg: 2,
        bit: 27,
    },
    CpuidBit {
        leaf: 7,
        subleaf: 0,
        reg: 2,
        bit: 4,
    },
];

/// Every bit set in `sent` that `back` (`KVM_GET_CPUID2` after
/// `KVM_SET_CPUID2`) lacks, but those KVM maintains itself ([`DYNAMIC`],
/// and leaf 0xd EBX of subleaves 0 and 1: the XSAVE area size for the
/// current XCR0/XSS).
pub fn dropped(sent: &CpuId, back: &CpuId) -> Vec<CpuidBit> {
    let mut out = Vec::new();
    for e in sent.as_slice() {
        let got = back
            .as_slice()
            .iter()
            .find(|b| b.function == e.function && b.index == e.index);
        let have = got.map_or([0; 4], |b| [b.eax, b.ebx, b.ecx, b.edx]);
        for (reg, (want, have)) in [e.eax, e.ebx, e.ecx, e.edx]
            .into_iter()
            .zip(have)
            .enumerate()
        {
            if e.function == 0xd && e.index <= 1 && reg == 1 {
                continue;
            }
            let missing = want & !have;
            for bit in (0..32u8).filter(|b| missing & (1 << b) != 0) {
                let b = CpuidBit {
                    leaf: e.function,
                    subleaf: e.index,
                    reg: reg as u8,
                    bit,
                };
                if !DYNAMIC.contains(&b) {
                    out.push(b);
                }
            }
        }
    }
    out
}

/// Clears `bits` in `cpuid` (the features a chosen CPU does not have).
pub fn clear_bits(cpuid: &mut CpuId, bits: &[CpuidBit]) {
    for e in cpuid.as_mut_slice() {
        for b in bits
            .iter()
            .filter(|b| b.leaf == e.function && b.subleaf == e.index)
        {
            let r = match b.reg {
                0 => &mut e.eax,
                1 => &mut e.ebx,
                2 => &mut e.ecx,
                _ => &mut e.edx,
            };
            *r &= !(1u32 << b.bit);
        }
    }
}

/// The 8-bit "logical processors per package" field of leaf 1 EBX.
fn logical_per_package(n: u32) -> u32 {
    n.next_power_of_two().min(0xff)
}

/// Adapts the supported CPUID for vCPU `index` of `count`; `identity`
/// (the CPU model's family, model, stepping) replaces the host's.
pub fn for_vcpu(supported: &CpuId, index: u8, count: u8, identity: Option<CpuIdentity>) -> CpuId {
    let mut cpuid = supported.clone();
    let apic = u32::from(index);
    let n = u32::from(count.max(1));
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x8000_0001 => {
                if let Some(id) = identity {
                    e.eax = id.leaf1_eax();
                }
            }
            0x1 => {
                if let Some(id) = identity {
                    e.eax = id.leaf1_eax();
                }
                // EBX: [31:24] initial APIC id, [23:16] logical processors, [15:8] CLFLUSH size/8
                e.ebx = (apic << 24) | (logical_per_package(n) << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR;
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1
                e.eax &= !(0x3f << 26);
                e.eax |= (n.next_power_of_two() - 1).min(0x3f) << 26;
            }
            0xb | 0x1f => {
                // Extended topology: level 0 = SMT (1 thread), level 1 = core (n cores).
                e.edx = apic;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = bits_for(n);
                        e.ebx = n;
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i;
                    }
                }
            }
            0x8000_0008 => {
                // ECX[7:0]: cores - 1; [15:12]: APIC id bits
                e.ecx = (e.ecx & !0xf0ff) | (bits_for(n) << 12) | (n - 1);
            }
            0x8000_001e => {
                e.eax = apic;
                e.ebx &= !0xff00; // one thread per core
                e.ebx = (e.ebx & !0xff) | apic;
                e.ecx &= !0xff;
            }
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_ids_and_counts() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        let c = for_vcpu(&base, 1, 2, None);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[1].edx, 1);
        assert_eq!(e[1].ebx, 2);
        assert_eq!(bits_for(3), 2);
    }

    #[test]
    fn many_vcpus_never_spill_into_the_apic_id() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 4,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        for count in [129u8, 200, 255] {
            let c = for_vcpu(&base, 7, count, None);
            let e = c.as_slice();
            assert_eq!(e[0].ebx >> 24, 7, "APIC id with {count} vCPUs");
            assert_eq!((e[0].ebx >> 16) & 0xff, 0xff);
            assert_eq!(e[1].eax >> 26, 0x3f);
        }
    }

    #[test]
    fn identity_encodes_like_the_reference() {
        // qemu64: family 15, model 107, stepping 1 -> 0x000f6b1 with ext model 6.
        let q = CpuIdentity {
            family: 15,
            model: 107,
            stepping: 1,
        };
        assert_eq!(q.leaf1_eax(), 0x0006_0fb1);
        let old = CpuIdentity {
            family: 6,
            model: 6,
            stepping: 3,
        };
        assert_eq!(old.leaf1_eax(), 0x0000_0663);
        let zen = CpuIdentity {
            family: 23,
            model: 1,
            stepping: 2,
        };
        assert_eq!(zen.leaf1_eax(), 0x0080_0f12, "the host's own leaf 1 EAX");
        for id in [q, old, zen] {
            assert_eq!(CpuIdentity::from_leaf1_eax(id.leaf1_eax()), id);
        }
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                eax: 0x0080_0f12,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0001,
                eax: 0x0080_0f12,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        let c = for_vcpu(&base, 0, 1, Some(old));
        assert_eq!(c.as_slice()[0].eax, 0x663);
        assert_eq!(c.as_slice()[1].eax, 0x663);
    }

    #[test]
    fn bits_kvm_drops_are_found_but_not_those_it_maintains() {
        let e = |function, index, ecx, edx| kvm_cpuid_entry2 {
            function,
            index,
            ecx,
            edx,
            ..Default::default()
        };
        let sent =
            CpuId::from_entries(&[e(1, 0, 1 << 27 | 1 << 21, 0), e(7, 0, 0, 1 << 29)]).unwrap();
        let back = CpuId::from_entries(&[e(1, 0, 1 << 21, 0), e(7, 0, 0, 0)]).unwrap();
        let d = dropped(&sent, &back);
        assert_eq!(
            d,
            [CpuidBit {
                leaf: 7,
                subleaf: 0,
                reg: 3,
                bit: 29
            }]
        );
        assert!(dropped(&sent, &sent).is_empty());
    }

    #[test]
    fn a_model_names_vendor_levels_and_brand() {
        let leaf = |function, eax| kvm_cpuid_entry2 {
            function,
            eax,
            ..Default::default()
        };
        let entries = [
            leaf(0, 0x10),
            leaf(0xd, 0),
            leaf(0x10, 0),
            leaf(0x4000_0000, 0x4000_0001),
            leaf(0x8000_0000, 0x8000_0021),
            leaf(0x8000_0002, 0),
            leaf(0x8000_0003, 0),
            leaf(0x8000_0004, 0),
            leaf(0x8000_0021, 0),
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        apply_model(
            &mut c,
            &ModelFacts {
                identity: None,
                vendor: Some("AuthenticAMD".into()),
                level: Some(0xd),
                xlevel: Some(0x8000_001e),
                model_id: Some("AMD EPYC Processor".into()),
            },
        );
        let fns: Vec<u32> = c.as_slice().iter().map(|e| e.function).collect();
        assert_eq!(
            fns,
            [
                0,
                0xd,
                0x4000_0000,
                0x8000_0000,
                0x8000_0002,
                0x8000_0003,
                0x8000_0004
            ]
        );
        let e = c.as_slice();
        assert_eq!((e[0].eax, e[3].eax), (0xd, 0x8000_001e));
        let vendor: Vec<u8> = [e[0].ebx, e[0].edx, e[0].ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(vendor, b"AuthenticAMD");
        let brand: Vec<u8> = e[4..7]
            .iter()
            .flat_map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert!(brand.starts_with(b"AMD EPYC Processor\0"));
        // A model above what this host has keeps the host's highest leaf.
        let mut c = CpuId::from_entries(&entries).unwrap();
        let more = ModelFacts {
            level: Some(0x20),
            ..Default::default()
        };
        apply_model(&mut c, &more);
        assert_eq!(c.as_slice()[0].eax, 0x10);
    }
}

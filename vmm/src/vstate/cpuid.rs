//! Per-vCPU CPUID from `KVM_GET_SUPPORTED_CPUID`: APIC ids and a flat
//! topology (one socket, `count` cores, one thread each).

use kvm_bindings::CpuId;

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

/// One CPUID bit: leaf, subleaf, register (0 EAX .. 3 EDX), bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidBit {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: u8,
    pub bit: u8,
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
}

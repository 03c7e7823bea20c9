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

/// Adapts the supported CPUID for vCPU `index` of `count`.
pub fn for_vcpu(supported: &CpuId, index: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    let apic = u32::from(index);
    let n = u32::from(count.max(1));
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors, [15:8] CLFLUSH size/8
                e.ebx = (apic << 24) | (n.next_power_of_two() << 16) | (8 << 8);
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
                e.eax |= (n.next_power_of_two() - 1) << 26;
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
        let c = for_vcpu(&base, 1, 2);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[1].edx, 1);
        assert_eq!(e[1].ebx, 2);
        assert_eq!(bits_for(3), 2);
    }
}

/// Configuration of the `pcie-root-port` device (from its resolved
/// `pci-device`/`pcie-root-port` properties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcieRootPortConfig {
    /// Device number on bus 0 (VMM layout, not a property).
    pub device: u8,
    /// `slot`: physical slot number in the PCIe Slot Capabilities.
    pub slot: u16,
    /// `chassis`: chassis number (slot identification).
    pub chassis: u8,
    /// `x-pcie-err-unc-mask`: AER `PCI_ERR_UNCOR_MASK` starts at QEMU's
    /// default mask and is guest-writable; off: 0 and read-only (QEMU ≤ 7.2).
    pub err_unc_mask: bool,
    /// `x-pcie-ext-tag`: Device Capabilities advertise Extended Tag Field support.
    pub ext_tag: bool,
    /// `x-pcie-ari-nextfn-1`: accepted for compatibility; this root port has
    /// no ARI capability, so it has no guest-visible effect here.
    pub ari_nextfn_1: bool,
}

/// Configuration of the PCIe host bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHostConfig {
    /// Guest-physical base of the ECAM window (bus 0 only).
    pub ecam_base: u64,
}

#[cfg(test)]
impl PcieRootPortConfig {
    /// A root port as the tests use it: extended tags on, `ari_nextfn_1` off.
    pub(crate) fn for_test(device: u8, slot: u16, chassis: u8, err_unc_mask: bool) -> Self {
        Self {
            device,
            slot,
            chassis,
            err_unc_mask,
            ext_tag: true,
            ari_nextfn_1: false,
        }
    }
}

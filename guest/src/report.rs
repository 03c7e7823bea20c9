//! The `report` workload's lines, gathered into one [`Report`]: memory map,
//! virtio devices and their features, PCI functions and their AER registers.

use crate::{parse_line, parse_num};
use std::collections::BTreeMap;

/// One PVH memory-map entry (`memmap:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    /// 1 = RAM, 2 = reserved, 3 = ACPI, 4 = NVS ...
    pub kind: u32,
}

/// One `virtio:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioDevice {
    pub index: u64,
    pub addr: u64,
    pub size: u64,
    pub irq: u64,
    pub magic: u64,
    pub version: u64,
    pub device_id: u64,
    pub vendor: u64,
}

/// What the guest reported about one virtio-blk device (`virtio-blk:`,
/// `virtio-blk-config:`, `virtio-blk-queue:` lines of the same index).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkInfo {
    pub index: u64,
    /// All 64 offered feature bits.
    pub features: u64,
    pub version_1: bool,
    pub ring_reset: bool,
    pub mq: bool,
    pub flush: bool,
    pub config_wce: bool,
    pub discard: bool,
    pub write_zeroes: bool,
    pub ro: bool,
    /// Every field of the `virtio-blk-config:` line except `index`
    /// (capacity, size_max, seg_max, blk_size, writeback, num_queues,
    /// max_discard_sectors, max_discard_seg, discard_sector_alignment,
    /// max_write_zeroes_sectors, max_write_zeroes_seg).
    pub config: BTreeMap<String, u64>,
    /// QueueNumMax of queue 0, 1, ...
    pub queue_max: Vec<u64>,
    /// The serial number the device answered `VIRTIO_BLK_T_GET_ID` with
    /// (`(none)` for an empty one), from the `virtio-blk-id:` line.
    pub serial: Option<String>,
}

impl BlkInfo {
    /// A config field by name (see [`BlkInfo::config`]).
    pub fn config(&self, name: &str) -> Option<u64> {
        self.config.get(name).copied()
    }

    /// `num_queues` as reported (1 when MQ is not offered).
    pub fn num_queues(&self) -> Option<u64> {
        self.config("num_queues")
    }
}

/// The `cpu:` line and the `cpuid:` leaves after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// Vendor string of leaf 0 (`AuthenticAMD`, `GenuineIntel`).
    pub vendor: String,
    /// Family, model and stepping decoded from leaf 1 EAX.
    pub family: u64,
    pub model: u64,
    pub stepping: u64,
    /// Leaf 0 EAX and leaf 0x80000000 EAX.
    pub max_leaf: u64,
    pub max_ext_leaf: u64,
    /// Leaf → `[eax, ebx, ecx, edx]` (1, 7 subleaf 0, 0xd subleaf 0,
    /// 0x80000001 where the maximum leaves reach).
    pub leaves: BTreeMap<u64, [u64; 4]>,
}

/// One `pci:` line (plus its `aer:` line, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// "00:DD.F"
    pub bdf: String,
    pub vendor: u16,
    pub device: u16,
    /// Class code, subclass, prog-if: `0xCCSSPP`.
    pub class: u32,
    pub header: u8,
    pub aer: Option<Aer>,
}

/// An `aer:` line: the AER extended capability of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aer {
    /// Config-space offset of the capability.
    pub cap: u16,
    /// PCI_ERR_UNCOR_MASK (cap + 8).
    pub uncor_mask: u32,
    /// PCI_ERR_UNCOR_SEVER (cap + 0xc).
    pub uncor_sever: u32,
}

/// The hardware report: every line up to `report: done`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The CPU as the guest's CPL 0 part read it (`cpu:` and `cpuid:` lines).
    pub cpu: Option<CpuInfo>,
    /// `boot: ok` seen.
    pub boot_ok: bool,
    /// `pvh: magic=ok` seen.
    pub pvh_ok: bool,
    /// The raw command line (`cmdline:` line).
    pub cmdline: Option<String>,
    pub memmap: Vec<MemmapEntry>,
    pub virtio: Vec<VirtioDevice>,
    pub blk: Vec<BlkInfo>,
    pub pci: Vec<PciFunction>,
    /// `report: done` seen.
    pub done: bool,
}

impl Report {
    /// The virtio-blk report of the device with this `index`.
    pub fn blk(&self, index: u64) -> Option<&BlkInfo> {
        self.blk.iter().find(|b| b.index == index)
    }

    /// The first PCI function with an AER capability.
    pub fn first_aer(&self) -> Option<(&PciFunction, Aer)> {
        self.pci.iter().find_map(|f| f.aer.map(|a| (f, a)))
    }
}

/// Parses the hardware report from the guest's serial output (any text;
/// lines after `report: done` and unknown lines are ignored).
pub fn parse_report(text: &str) -> Report {
    let mut r = Report::default();
    for raw in text.lines() {
        let Some(l) = parse_line(raw) else { continue };
        match l.key {
            "boot" => r.boot_ok |= l.rest.trim() == "ok",
            "pvh" => r.pvh_ok |= l.get("magic") == Some("ok"),
            "cpu" => {
                let get = |k| l.num(k).unwrap_or(0);
                r.cpu = Some(CpuInfo {
                    vendor: l.get("vendor").unwrap_or_default().to_string(),
                    family: get("family"),
                    model: get("model"),
                    stepping: get("stepping"),
                    max_leaf: get("max_leaf"),
                    max_ext_leaf: get("max_ext_leaf"),
                    leaves: BTreeMap::new(),
                });
            }
            "cpuid" => {
                if let (Some(cpu), Some(leaf)) = (r.cpu.as_mut(), l.num("leaf")) {
                    let get = |k| l.num(k).unwrap_or(0);
                    let regs = [get("eax"), get("ebx"), get("ecx"), get("edx")];
                    cpu.leaves.insert(leaf, regs);
                }
            }
            "cmdline" => r.cmdline = Some(l.rest.to_string()),
            "memmap" => {
                if let (Some(addr), Some(size), Some(kind)) =
                    (l.num("addr"), l.num("size"), l.num("type"))
                {
                    r.memmap.push(MemmapEntry {
                        addr,
                        size,
                        kind: kind as u32,
                    });
                }
            }
            "virtio" => {
                let get = |k| l.num(k).unwrap_or(0);
                r.virtio.push(VirtioDevice {
                    index: get("index"),
                    addr: get("addr"),
                    size: get("size"),
                    irq: get("irq"),
                    magic: get("magic"),
                    version: get("version"),
                    device_id: get("device"),
                    vendor: get("vendor"),
                });
            }
            "virtio-blk" => {
                let flag = |k| l.flag(k).unwrap_or(false);
                r.blk.push(BlkInfo {
                    index: l.num("index").unwrap_or(0),
                    features: l.num("features").unwrap_or(0),
                    version_1: flag("version_1"),
                    ring_reset: flag("ring_reset"),
                    mq: flag("mq"),
                    flush: flag("flush"),
                    config_wce: flag("config_wce"),
                    discard: flag("discard"),
                    write_zeroes: flag("write_zeroes"),
                    ro: flag("ro"),
                    ..BlkInfo::default()
                });
            }
            "virtio-blk-config" => {
                let index = l.num("index").unwrap_or(0);
                if let Some(b) = r.blk.iter_mut().rev().find(|b| b.index == index) {
                    for (k, v) in &l.fields {
                        if *k != "index"
                            && let Some(v) = parse_num(v)
                        {
                            b.config.insert((*k).to_string(), v);
                        }
                    }
                }
            }
            "virtio-blk-queue" => {
                let index = l.num("index").unwrap_or(0);
                if let (Some(b), Some(max)) = (
                    r.blk.iter_mut().rev().find(|b| b.index == index),
                    l.num("max"),
                ) {
                    b.queue_max.push(max);
                }
            }
            "virtio-blk-id" => {
                let index = l.num("index").unwrap_or(0);
                if let (Some(b), Some(serial)) = (
                    r.blk.iter_mut().rev().find(|b| b.index == index),
                    l.get("serial"),
                ) {
                    b.serial = Some(serial.to_string());
                }
            }
            "pci" => {
                let get = |k| l.num(k).unwrap_or(0);
                r.pci.push(PciFunction {
                    bdf: l.get("bdf").unwrap_or_default().to_string(),
                    vendor: get("vendor") as u16,
                    device: get("device") as u16,
                    class: get("class") as u32,
                    header: get("header") as u8,
                    aer: None,
                });
            }
            "aer" => {
                let bdf = l.get("bdf").unwrap_or_default();
                if let Some(f) = r.pci.iter_mut().rev().find(|f| f.bdf == bdf) {
                    f.aer = Some(Aer {
                        cap: l.num("cap").unwrap_or(0) as u16,
                        uncor_mask: l.num("uncor_mask").unwrap_or(0) as u32,
                        uncor_sever: l.num("uncor_sever").unwrap_or(0) as u32,
                    });
                }
            }
            "report" if l.rest.trim() == "done" => {
                r.done = true;
                break;
            }
            _ => {}
        }
    }
    r
}

//! The embedded guest: a small PVH-bootable x86-64 program (assembled from
//! `src/*.S` by `build.rs`) plus host-side helpers to read what it prints.
//!
//! The guest's command line and every serial line format are documented in
//! `guest/README.md`; the parsers here follow that document. All lines are
//! `key: k=v k=v ...`; numbers are decimal or `0x`-prefixed hexadecimal.

/// The PVH-bootable guest ELF, assembled and linked by `build.rs`.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmm-guest.elf"));

/// Path of the same ELF in the build directory (for tools that want a file).
pub const ELF_PATH: &str = concat!(env!("OUT_DIR"), "/vmm-guest.elf");

/// Test variant of [`ELF`] whose TSS I/O bitmap denies every port, so all
/// port I/O from CPL 3 traps (#GP) and is emulated by the guest's CPL 0
/// handler: exercises the path used where a hypervisor ignores the bitmap.
pub const ELF_TRAP_IO_PATH: &str = concat!(env!("OUT_DIR"), "/vmm-guest-trap-io.elf");

/// Guest-physical address the ELF's single loadable segment is linked at.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// QEMU microvm's PCIe ECAM base (`-M microvm,pcie=on`); ours is the same.
pub const QEMU_MICROVM_ECAM: u64 = 0xe000_0000;

/// Where QEMU 7.2 microvm (default `acpi=on`, 24 virtio-mmio transports)
/// puts the first `-device virtio-*-device`: the last transport. Pass it as
/// `virtio_mmio.device=512@0xfeb02e00:39` (QEMU only appends
/// `virtio_mmio.device=` itself with `acpi=off`).
pub const QEMU_MICROVM_FIRST_VIRTIO: u64 = 0xfeb0_2e00;

/// The `virtio_mmio.device=SIZE@ADDR:IRQ` command-line token (Linux syntax).
pub fn virtio_mmio_arg(size: u64, addr: u64, irq: u32) -> String {
    format!("virtio_mmio.device={size:#x}@{addr:#x}:{irq}")
}

/// Parses a guest number: decimal or `0x` hexadecimal.
pub fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// One serial line: `key: k=v k=v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The text before the first `": "` (or before a trailing `':'`).
    pub key: &'a str,
    /// The `k=v` fields in order (tokens without `=` are ignored).
    pub fields: Vec<(&'a str, &'a str)>,
    /// Everything after `"key: "`, unparsed (used for `cmdline:`).
    pub rest: &'a str,
}

impl<'a> Line<'a> {
    /// The value of field `k`.
    pub fn get(&self, k: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| *v)
    }

    /// The value of field `k` as a number (decimal or `0x` hex).
    pub fn num(&self, k: &str) -> Option<u64> {
        self.get(k).and_then(parse_num)
    }

    /// The value of field `k` as a 0/1 flag.
    pub fn flag(&self, k: &str) -> Option<bool> {
        match self.get(k)? {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        }
    }
}

/// Splits one serial line into key and fields; `None` for lines that are
/// not in `key: ...` form (e.g. empty lines).
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (key, rest) = match line.split_once(": ") {
        Some((k, r)) => (k, r),
        None => (line.strip_suffix(':')?, ""),
    };
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let fields = rest
        .split_whitespace()
        .filter_map(|tok| tok.split_once('='))
        .collect();
    Some(Line { key, fields, rest })
}

mod report;
mod workloads;

pub use report::*;
pub use workloads::*;

#[cfg(test)]
mod tests;

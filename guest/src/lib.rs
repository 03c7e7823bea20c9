//! The embedded guest: a small PVH-bootable x86-64 program (assembled from
//! `src/*.S` by `build.rs`) plus host-side helpers to read what it prints.
//!
//! The guest's command line and every serial line format are documented in
//! `guest/README.md`; the parsers here follow that document. All lines are
//! `key: k=v k=v ...`; numbers are decimal or `0x`-prefixed hexadecimal.

use std::collections::BTreeMap;

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

/// `ab: start=0x.. pages=N`: the range the `ab` workload increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbRange {
    /// Guest-physical address of the first page.
    pub start: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
}

/// Parses an `ab: start=0x.. pages=N` line.
pub fn parse_ab_start(line: &str) -> Option<AbRange> {
    let l = parse_line(line)?;
    (l.key == "ab").then_some(())?;
    Some(AbRange {
        start: l.num("start")?,
        pages: l.num("pages")?,
    })
}

/// Parses an `ab: pass=N` line: the number of completed passes.
pub fn parse_ab_pass(line: &str) -> Option<u64> {
    let l = parse_line(line)?;
    (l.key == "ab").then_some(())?;
    l.num("pass")
}

/// Checks the `ab` invariant on a snapshot of guest memory: `mem[0]` is
/// guest-physical address `mem_base`; every page's first byte equals its
/// predecessor's or is one less (mod 256), with at most one step (exactly
/// one while a pass is in progress, none between passes).
pub fn check_ab(mem: &[u8], mem_base: u64, range: AbRange) -> Result<(), String> {
    let byte = |page: u64| -> Result<u8, String> {
        let off = (range.start + page * 4096)
            .checked_sub(mem_base)
            .ok_or("range below the snapshot")? as usize;
        mem.get(off)
            .copied()
            .ok_or_else(|| format!("page {page} beyond the snapshot"))
    };
    let mut steps = 0;
    let mut prev = byte(0)?;
    for page in 1..range.pages {
        let b = byte(page)?;
        if b != prev {
            if b != prev.wrapping_sub(1) {
                return Err(format!("page {page}: {b} after {prev}"));
            }
            steps += 1;
            if steps > 1 {
                return Err(format!("second step at page {page}"));
            }
        }
        prev = b;
    }
    Ok(())
}

/// The final line of a finite `disk` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskResult {
    pub sectors: u64,
    /// FNV-1a 64 over the data read back, sector after sector.
    pub checksum: u64,
    pub verify_ok: bool,
    pub mismatches: u64,
    /// "ok", "unsupported" (VIRTIO_BLK_F_FLUSH not offered) or "error".
    pub flush: String,
}

/// Parses `disk: sectors=N checksum=0x.. verify=ok|fail mismatches=N flush=..`.
pub fn parse_disk_result(line: &str) -> Option<DiskResult> {
    let l = parse_line(line)?;
    (l.key == "disk").then_some(())?;
    Some(DiskResult {
        sectors: l.num("sectors")?,
        checksum: l.num("checksum")?,
        verify_ok: l.get("verify")? == "ok",
        mismatches: l.num("mismatches")?,
        flush: l.get("flush")?.to_string(),
    })
}

/// `disk: bad-request kind=.. status=.. device_status=0x..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// "short-header", "outside-ram" or "no-status".
    pub kind: String,
    /// The status byte the device wrote; `None` when the request was not
    /// completed in time (`status=none`) or could not carry a status
    /// (`status=completed`, kind no-status).
    pub status: Option<u8>,
    /// `status=completed`.
    pub completed: bool,
    /// The virtio Status register afterwards (0x40 = DEVICE_NEEDS_RESET).
    pub device_status: u32,
}

/// Parses a `disk: bad-request ...` line.
pub fn parse_bad_request(line: &str) -> Option<BadRequest> {
    let l = parse_line(line)?;
    (l.key == "disk" && l.rest.starts_with("bad-request ")).then_some(())?;
    let status = l.get("status")?;
    Some(BadRequest {
        kind: l.get("kind")?.to_string(),
        status: parse_num(status).map(|s| s as u8),
        completed: status == "completed",
        device_status: l.num("device_status")? as u32,
    })
}

/// `panic: vector=N rip=0x.. err=0x.. cr2=0x.. cs=0x..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panic {
    pub vector: u64,
    pub rip: u64,
    pub err: u64,
    pub cr2: u64,
    pub cs: u64,
}

/// Parses a `panic:` line.
pub fn parse_panic(line: &str) -> Option<Panic> {
    let l = parse_line(line)?;
    (l.key == "panic").then_some(())?;
    Some(Panic {
        vector: l.num("vector")?,
        rip: l.num("rip")?,
        err: l.num("err")?,
        cr2: l.num("cr2")?,
        cs: l.num("cs")?,
    })
}

/// Sector size the `disk` workload uses.
pub const SECTOR: usize = 512;

/// The 512 bytes the `disk` workload writes for write number `seq` to
/// `sector`: `"vmmguest seq=<seq> sector=<sector>\n"` then, for every later
/// offset `i`, the byte `(sector + seq + i) mod 256`.
pub fn sector_pattern(seq: u64, sector: u64) -> [u8; SECTOR] {
    let mut buf = [0u8; SECTOR];
    let header = format!("vmmguest seq={seq} sector={sector}\n");
    buf[..header.len()].copy_from_slice(header.as_bytes());
    for (i, b) in buf.iter_mut().enumerate().skip(header.len()) {
        *b = sector.wrapping_add(seq).wrapping_add(i as u64) as u8;
    }
    buf
}

/// Parses the header of a sector written by the `disk` workload and checks
/// the whole sector against [`sector_pattern`]: `Some((seq, sector))` if it
/// is intact.
pub fn check_sector(data: &[u8]) -> Option<(u64, u64)> {
    let end = data.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&data[..end]).ok()?;
    let rest = header.strip_prefix("vmmguest seq=")?;
    let (seq, sector) = rest.split_once(" sector=")?;
    let (seq, sector) = (seq.parse().ok()?, sector.parse().ok()?);
    (data.len() == SECTOR && data == sector_pattern(seq, sector)).then_some((seq, sector))
}

/// FNV-1a 64 as the guest computes `checksum=` (over `data` in order).
pub fn fnv1a64(data: impl IntoIterator<Item = u8>) -> u64 {
    data.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `checksum=` a finite `disk` run with `disk.count=count` and
/// `disk.start=start` on a disk of `capacity` sectors prints when all data
/// verified.
pub fn expected_disk_checksum(count: u64, start: u64, capacity: u64) -> u64 {
    let count = count.min(capacity);
    fnv1a64((0..count).flat_map(|seq| sector_pattern(seq, (start + seq) % capacity)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16le(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    fn u32le(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64le(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// (p_type, p_offset, p_paddr, p_filesz, p_memsz, p_align) of each program header.
    fn phdrs(elf: &[u8]) -> Vec<(u32, u64, u64, u64, u64, u64)> {
        let (phoff, phentsize, phnum) = (
            u64le(elf, 0x20) as usize,
            u16le(elf, 0x36) as usize,
            u16le(elf, 0x38) as usize,
        );
        (0..phnum)
            .map(|i| {
                let p = phoff + i * phentsize;
                (
                    u32le(elf, p),
                    u64le(elf, p + 8),
                    u64le(elf, p + 0x18),
                    u64le(elf, p + 0x20),
                    u64le(elf, p + 0x28),
                    u64le(elf, p + 0x30),
                )
            })
            .collect()
    }

    #[test]
    fn elf_is_x86_64_exec() {
        assert_eq!(&ELF[..4], b"\x7fELF");
        assert_eq!(ELF[4], 2, "ELFCLASS64");
        assert_eq!(u16le(ELF, 0x10), 2, "ET_EXEC");
        assert_eq!(u16le(ELF, 0x12), 62, "EM_X86_64");
        assert!(ELF.len() < 128 * 1024, "guest grew to {} bytes", ELF.len());
    }

    #[test]
    fn elf_loads_at_1mib() {
        let loads: Vec<_> = phdrs(ELF).into_iter().filter(|p| p.0 == 1).collect();
        assert_eq!(loads.len(), 1);
        let (_, off, paddr, filesz, memsz, _) = loads[0];
        assert_eq!(paddr, LOAD_ADDR);
        assert!(memsz >= filesz);
        assert!((off + filesz) as usize <= ELF.len());
    }

    #[test]
    fn elf_has_pvh_note_pointing_into_the_image() {
        let notes: Vec<_> = phdrs(ELF).into_iter().filter(|p| p.0 == 4).collect();
        assert_eq!(notes.len(), 1);
        let (_, off, _, filesz, _, align) = notes[0];
        assert_eq!(align, 4, "QEMU aligns the note name to p_align");
        let note = &ELF[off as usize..(off + filesz) as usize];
        let (namesz, descsz, ty) = (u32le(note, 0), u32le(note, 4), u32le(note, 8));
        assert_eq!((namesz, descsz, ty), (4, 4, 18), "XEN_ELFNOTE_PHYS32_ENTRY");
        assert_eq!(&note[12..16], b"Xen\0");
        let entry = u64::from(u32le(note, 16));
        let (_, _, paddr, filesz, _, _) =
            phdrs(ELF).into_iter().find(|p| p.0 == 1).expect("PT_LOAD");
        assert!(entry >= paddr && entry < paddr + filesz, "entry {entry:#x}");
        assert_eq!(entry, u64le(ELF, 0x18), "e_entry is the PVH entry too");
    }

    const SAMPLE: &str = "\
boot: ok
pvh: magic=ok version=1 memmap_entries=2
cmdline: workload=report virtio_mmio.device=512@0xfeb02e00:39 pci.ecam=0xe0000000
memmap: addr=0x0 size=0x9fc00 type=1
memmap: addr=0x100000 size=0x3f00000 type=1
virtio: index=0 addr=0xfeb02e00 size=0x200 irq=39 magic=0x74726976 version=2 device=2 vendor=0x554d4551
virtio-blk: index=0 features=0x10130007e54 version_1=1 ring_reset=1 mq=1 flush=1 config_wce=1 discard=1 write_zeroes=1 ro=0
virtio-blk-config: index=0 capacity=8 size_max=0 seg_max=254 blk_size=512 writeback=1 num_queues=3 max_discard_sectors=4194303 max_discard_seg=1 discard_sector_alignment=1 max_write_zeroes_sectors=4194303 max_write_zeroes_seg=1
virtio-blk-queue: index=0 queue=0 max=1024
virtio-blk-queue: index=0 queue=1 max=1024
virtio-blk-queue: index=0 queue=2 max=1024
pci: bdf=00:00.0 vendor=0x1b36 device=0x8 class=0x60000 header=0x0
pci: bdf=00:01.0 vendor=0x1b36 device=0xc class=0x60400 header=0x1
aer: bdf=00:01.0 cap=0x100 uncor_mask=0x0 uncor_sever=0x462030
report: done
pci: bdf=00:1f.0 vendor=0x1 device=0x1 class=0x0 header=0x0
";

    #[test]
    fn parses_a_report() {
        let r = parse_report(SAMPLE);
        assert!(r.boot_ok && r.pvh_ok && r.done);
        assert_eq!(
            r.cmdline.as_deref(),
            Some("workload=report virtio_mmio.device=512@0xfeb02e00:39 pci.ecam=0xe0000000")
        );
        assert_eq!(r.memmap.len(), 2);
        assert_eq!(
            r.memmap[1],
            MemmapEntry {
                addr: 0x100000,
                size: 0x3f00000,
                kind: 1
            }
        );
        assert_eq!(r.virtio.len(), 1);
        assert_eq!(r.virtio[0].addr, 0xfeb0_2e00);
        assert_eq!(r.virtio[0].device_id, 2);
        assert_eq!(r.virtio[0].version, 2);
        let b = r.blk(0).unwrap();
        assert!(b.ring_reset && b.mq && b.flush && !b.ro);
        assert_eq!(b.features >> 40 & 1, 1);
        assert_eq!(b.num_queues(), Some(3));
        assert_eq!(b.config("capacity"), Some(8));
        assert_eq!(b.config("max_discard_sectors"), Some(4194303));
        assert_eq!(b.queue_max, vec![1024, 1024, 1024]);
        assert_eq!(r.pci.len(), 2, "lines after `report: done` are ignored");
        assert_eq!(r.pci[1].class, 0x060400);
        let (f, aer) = r.first_aer().unwrap();
        assert_eq!(f.bdf, "00:01.0");
        assert_eq!(
            aer,
            Aer {
                cap: 0x100,
                uncor_mask: 0,
                uncor_sever: 0x462030
            }
        );
    }

    #[test]
    fn parses_lines() {
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("garbage without colon"), None);
        let l = parse_line("report: done\r\n").unwrap();
        assert_eq!((l.key, l.rest), ("report", "done"));
        assert_eq!(parse_line("idle: halted").unwrap().key, "idle");
        assert_eq!(parse_num("0x1f"), Some(31));
        assert_eq!(parse_num("31"), Some(31));
        assert_eq!(parse_num("x"), None);
        assert_eq!(
            virtio_mmio_arg(0x1000, 0xd000_0000, 5),
            "virtio_mmio.device=0x1000@0xd0000000:5"
        );
    }

    #[test]
    fn parses_workload_lines() {
        assert_eq!(
            parse_ab_start("ab: start=0x11f000 pages=4096"),
            Some(AbRange {
                start: 0x11f000,
                pages: 4096
            })
        );
        assert_eq!(parse_ab_pass("ab: pass=13722"), Some(13722));
        assert_eq!(parse_ab_pass("ab: start=0x11f000 pages=4096"), None);
        assert_eq!(
            parse_disk_result(
                "disk: sectors=64 checksum=0x59769084bd73ffc7 verify=ok mismatches=0 flush=ok"
            ),
            Some(DiskResult {
                sectors: 64,
                checksum: 0x59769084bd73ffc7,
                verify_ok: true,
                mismatches: 0,
                flush: "ok".into()
            })
        );
        let bad =
            parse_bad_request("disk: bad-request kind=short-header status=none device_status=0x4f")
                .unwrap();
        assert_eq!(
            (bad.kind.as_str(), bad.status, bad.device_status),
            ("short-header", None, 0x4f)
        );
        let bad =
            parse_bad_request("disk: bad-request kind=outside-ram status=1 device_status=0xf")
                .unwrap();
        assert_eq!(bad.status, Some(1));
        assert_eq!(
            parse_panic("panic: vector=6 rip=0x100646 err=0x0 cr2=0x0 cs=0x23"),
            Some(Panic {
                vector: 6,
                rip: 0x100646,
                err: 0,
                cr2: 0,
                cs: 0x23
            })
        );
    }

    #[test]
    fn sector_pattern_matches_the_guest() {
        let s = sector_pattern(0, 0);
        assert!(s.starts_with(b"vmmguest seq=0 sector=0\n"));
        assert_eq!(s[24], 24);
        assert_eq!(s[511], 255);
        assert_eq!(check_sector(&s), Some((0, 0)));
        let s = sector_pattern(70000, 12);
        assert_eq!(check_sector(&s), Some((70000, 12)));
        let mut t = s;
        t[300] ^= 1;
        assert_eq!(check_sector(&t), None);
        // Values printed by the guest under QEMU (8 MiB and 4 KiB disks).
        assert_eq!(expected_disk_checksum(64, 0, 16384), 0x59769084bd73ffc7);
        assert_eq!(expected_disk_checksum(100, 0, 8), 0x5969ddfef300c52d);
    }

    #[test]
    fn ab_checker() {
        let range = AbRange {
            start: 0x1000,
            pages: 4,
        };
        let mut mem = vec![0u8; 0x5000];
        let mut set = |vals: [u8; 4]| {
            for (i, v) in vals.iter().enumerate() {
                mem[0x1000 + i * 4096] = *v;
            }
            check_ab(&mem, 0, range)
        };
        assert!(set([5, 5, 5, 5]).is_ok());
        assert!(set([6, 6, 5, 5]).is_ok());
        assert!(set([0, 255, 255, 255]).is_ok());
        assert!(set([6, 5, 5, 4]).is_err());
        assert!(set([5, 6, 6, 6]).is_err());
        assert!(set([7, 5, 5, 5]).is_err());
    }
}

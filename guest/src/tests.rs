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
    let (_, _, paddr, filesz, _, _) = phdrs(ELF).into_iter().find(|p| p.0 == 1).expect("PT_LOAD");
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
        parse_bad_request("disk: bad-request kind=outside-ram status=1 device_status=0xf").unwrap();
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

#[test]
fn blk_id_lines_give_each_disk_its_serial() {
    let r = parse_report(
        "virtio-blk: index=0 features=0x1\nvirtio-blk-id: index=0 serial=AAA\n\
         virtio-blk: index=1 features=0x1\nvirtio-blk-id: index=1 serial=(none)\nreport: done\n",
    );
    assert_eq!(r.blk(0).and_then(|b| b.serial.as_deref()), Some("AAA"));
    assert_eq!(r.blk(1).and_then(|b| b.serial.as_deref()), Some("(none)"));
}

#[test]
fn cpu_lines_give_the_cpu_and_its_leaves() {
    let r = parse_report(
        "cpu: vendor=AuthenticAMD family=6 model=6 stepping=3 max_leaf=0xd max_ext_leaf=0x80000021\n\
         cpuid: leaf=0x1 eax=0x663 ebx=0x800 ecx=0xf7f83203 edx=0x178bfbff\n\
         cpuid: leaf=0x7 eax=0x0 ebx=0x209c01ab ecx=0x0 edx=0x0\nreport: done\n",
    );
    let c = r.cpu.expect("cpu");
    assert_eq!(
        (c.vendor.as_str(), c.family, c.model, c.stepping),
        ("AuthenticAMD", 6, 6, 3)
    );
    assert_eq!(c.max_ext_leaf, 0x8000_0021);
    assert_eq!(c.leaves[&1], [0x663, 0x800, 0xf7f8_3203, 0x178b_fbff]);
    assert_eq!(c.leaves[&7][1], 0x209c_01ab);
}

#[test]
fn parses_fill_lines() {
    let want = FillRange {
        start: 0x11f000,
        pages: 8192,
        seed: 0x5eed,
        kind: FillKind::Random,
    };
    assert_eq!(
        parse_fill_start("fill: start=0x11f000 pages=8192 kind=random seed=0x5eed"),
        Some(want)
    );
    assert_eq!(
        parse_fill_done("fill: done pages=8192 start=0x11f000 seed=0x5eed kind=random\n"),
        Some(want)
    );
    let text = parse_fill_done("fill: done pages=3 start=0x11f000 seed=0x0 kind=text").unwrap();
    assert_eq!((text.kind, text.pages, text.seed), (FillKind::Text, 3, 0));
    // Each parser takes only its own line.
    assert_eq!(
        parse_fill_start("fill: done pages=1 start=0x11f000 seed=0x1 kind=text"),
        None
    );
    assert_eq!(
        parse_fill_done("fill: start=0x11f000 pages=1 kind=text seed=0x1"),
        None
    );
    assert_eq!(parse_fill_done("fill: error=no-memory"), None);
    assert_eq!(
        parse_fill_done("fill: done pages=1 start=0x11f000 seed=0x1 kind=zeros"),
        None
    );
    assert_eq!(
        parse_fill_done("ab: done pages=1 start=0x11f000 seed=0x1 kind=text"),
        None
    );
    for kind in [FillKind::Random, FillKind::Text] {
        assert_eq!(FillKind::from_name(kind.as_str()), Some(kind));
    }
    assert_eq!(FillKind::Text.workload(), "fill.text");
}

#[test]
fn fill_prng_is_splitmix64() {
    // The reference splitmix64 sequence from state 0.
    assert_eq!(splitmix64(0, 1), 0xe220_a839_7b1d_cdaf);
    assert_eq!(splitmix64(0, 2), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(splitmix64(0, 3), 0x06c4_5d18_8009_454f);
    let page = fill_pages(FillKind::Random, FILL_DEFAULT_SEED)
        .nth(1)
        .unwrap();
    assert_eq!(page[..8], splitmix64(FILL_DEFAULT_SEED, 513).to_le_bytes());
}

#[test]
fn fill_random_pages_differ() {
    let pages: Vec<_> = fill_pages(FillKind::Random, 7).take(64).collect();
    for w in pages.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    // Different seeds, different data.
    assert_ne!(
        fill_pages(FillKind::Random, 7).next(),
        fill_pages(FillKind::Random, 8).next()
    );
}

#[test]
fn fill_text_pages_are_words() {
    let pages: Vec<_> = fill_pages(FillKind::Text, FILL_DEFAULT_SEED)
        .take(256)
        .collect();
    for w in pages.windows(2) {
        assert_ne!(w[0], w[1], "neighbouring pages differ");
    }
    let mut newlines = 0;
    let mut words = 0;
    for page in &pages {
        assert_eq!(page[PAGE - 1], b'\n');
        let text = std::str::from_utf8(page).unwrap();
        for line in text.lines() {
            newlines += 1;
            for w in line.split(' ').filter(|w| !w.is_empty()) {
                assert!(FILL_WORDS.contains(&w), "{w:?}");
                words += 1;
            }
        }
        // Only the page's tail (under 8 bytes) is padding.
        let body = text.trim_end_matches(['\n', ' ']).len();
        assert!(body > PAGE - 8 - 8, "{body}");
    }
    // About 1 word in 8 ends a line; every word is used.
    let ratio = words as f64 / newlines as f64;
    assert!(
        (6.0..9.0).contains(&ratio),
        "{words} words, {newlines} lines"
    );
    let all = pages.concat();
    let text = std::str::from_utf8(&all).unwrap();
    for w in FILL_WORDS {
        assert!(text.contains(&format!("{w} ")), "{w}");
    }
}

#[test]
fn fill_words_fit_the_guest_slots() {
    for w in FILL_WORDS {
        assert!((1..=7).contains(&w.len()), "{w}");
        assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w}");
    }
}

#[test]
fn fill_checker() {
    let range = FillRange {
        start: 0x2000,
        pages: 3,
        seed: 42,
        kind: FillKind::Text,
    };
    let mut mem = vec![0u8; 0x2000];
    for page in fill_pages(range.kind, range.seed).take(3) {
        mem.extend_from_slice(&page);
    }
    assert_eq!(check_fill(&mem, 0, &range), Ok(()));
    assert_eq!(check_fill(&mem[0x1000..], 0x1000, &range), Ok(()));
    assert!(check_fill(&mem, 0x3000, &range).is_err(), "range below");
    assert!(check_fill(&mem[..0x4000], 0, &range).is_err(), "short");
    mem[0x2000 + 2 * PAGE + 100] ^= 1;
    let err = check_fill(&mem, 0, &range).unwrap_err();
    assert!(err.starts_with("page 2 (at 0x4000), byte 100"), "{err}");
    let random = FillRange {
        kind: FillKind::Random,
        ..range
    };
    assert!(check_fill(&mem, 0, &random).is_err());
}

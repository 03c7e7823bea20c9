//! Round trips and hostile input.

use super::format::*;
use super::*;
use crate::PAGE_SIZE;
use crate::manifest::{GuestConfig, Manifest, PropValue, SectionInfo};
use proptest::prelude::*;

fn manifest(pages: u64, vcpus: u32, sections: &[(&str, u32)]) -> Manifest {
    let mut config = GuestConfig::new();
    config
        .entry("virtio-blk-pci".into())
        .or_default()
        .insert("num-queues".into(), PropValue::new("1", "hw_compat_5_1"));
    Manifest {
        format_version: FORMAT_VERSION,
        devices: Vec::new(),
        cpu: None,
        tsc_khz: None,
        cpuid: Vec::new(),
        channels: 0,
        compression: None,
        session: 0,
        source_release: "test".into(),
        machine_type: "pc-5.1".into(),
        ram_size: pages * PAGE_SIZE as u64,
        vcpus,
        config,
        sections: sections
            .iter()
            .map(|(n, v)| SectionInfo {
                name: n.to_string(),
                version_id: *v,
            })
            .collect(),
    }
}

/// What a decoded stream amounts to.
#[derive(Debug, PartialEq, Eq)]
struct Image {
    manifest: Manifest,
    ram: Vec<u8>,
    sections: Vec<Section>,
    vcpus: Vec<VcpuRecord>,
}

fn decode(bytes: &[u8]) -> Result<Image, DecodeError> {
    decode_with(bytes, Limits::default())
}

fn decode_with(bytes: &[u8], limits: Limits) -> Result<Image, DecodeError> {
    let mut d = Decoder::new(bytes, limits)?;
    let manifest = d.read_manifest()?;
    let mut ram = vec![0xAA; manifest.ram_size as usize];
    let (mut sections, mut vcpus) = (Vec::new(), Vec::new());
    loop {
        match d.next_record()? {
            Record::Pages { first_page, data } => {
                let at = first_page as usize * PAGE_SIZE;
                ram[at..at + data.len()].copy_from_slice(data);
            }
            Record::ZeroPages { first_page, count } => {
                let at = first_page as usize * PAGE_SIZE;
                ram[at..at + count as usize * PAGE_SIZE].fill(0);
            }
            Record::Section(s) => sections.push(s),
            Record::Vcpu(v) => vcpus.push(v),
            Record::Sync => {}
            Record::End => break,
            Record::Landed { .. } => unreachable!("this decoder lands nothing"),
        }
    }
    assert!(matches!(d.next_record(), Err(DecodeError::AfterEnd)));
    Ok(Image {
        manifest,
        ram,
        sections,
        vcpus,
    })
}

fn encode(img: &Image) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new()).unwrap();
    e.manifest(&img.manifest).unwrap();
    e.sync().unwrap();
    e.pages(0, &img.ram).unwrap();
    e.sync().unwrap();
    for s in &img.sections {
        e.section(s).unwrap();
    }
    for v in &img.vcpus {
        e.vcpu(v).unwrap();
    }
    e.end().unwrap()
}

/// A 96-page guest: data, zero runs, a long non-zero run, two sections, two vCPUs.
fn sample() -> Image {
    sample_of(96)
}

fn sample_of(pages: u64) -> Image {
    let mut ram = vec![0u8; pages as usize * PAGE_SIZE];
    for (i, b) in ram.iter_mut().enumerate() {
        let page = i / PAGE_SIZE;
        if page % 7 != 3 && !(40..50).contains(&page) {
            *b = (i * 31 % 253) as u8;
        }
    }
    Image {
        manifest: manifest(pages, 2, &[("serial", 1), ("virtio-blk/0", 2)]),
        ram,
        sections: vec![
            Section {
                name: "serial".into(),
                version_id: 1,
                data: vec![1, 2, 3],
            },
            Section {
                name: "virtio-blk/0".into(),
                version_id: 2,
                data: vec![9; 5000],
            },
        ],
        vcpus: (0..2)
            .map(|i| VcpuRecord {
                index: i,
                data: vec![i as u8; 3000],
            })
            .collect(),
    }
}

#[test]
fn round_trip_with_zero_pages() {
    let img = sample();
    let bytes = encode(&img);
    assert!(bytes.len() < img.ram.len(), "zero pages carry no data");
    assert_eq!(decode(&bytes).unwrap(), img);
    let mut e = Encoder::new(Vec::new()).unwrap();
    let st = e.pages(0, &img.ram).unwrap();
    assert_eq!(st.zero, 23);
    assert_eq!(st.normal, 96 - 23);
}

#[test]
fn truncated_at_every_4k_boundary_and_near_the_ends() {
    let bytes = encode(&sample());
    let cuts = (0..bytes.len())
        .step_by(4096)
        .chain(0..600)
        .chain(bytes.len() - 600..bytes.len());
    for cut in cuts {
        match decode(&bytes[..cut]) {
            Err(DecodeError::Truncated { offset }) => assert!(offset <= cut as u64),
            Err(DecodeError::BadMagic) if cut < 8 => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn single_byte_corruption_at_many_offsets() {
    // Smaller than `sample()` so that thousands of full decodes stay fast.
    let bytes = encode(&sample_of(20));
    let offsets = (0..1200)
        .chain((1200..bytes.len()).step_by(37))
        .chain(bytes.len() - 64..bytes.len());
    for at in offsets {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            assert!(
                decode(&bad).is_err(),
                "corruption {flip:#x} at {at} was accepted"
            );
        }
    }
}

#[test]
fn header_errors() {
    let mut bytes = encode(&sample());
    bytes[8] = 9;
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::UnsupportedVersion { found: 9, .. })
    ));
    assert!(matches!(
        decode(b"NOTASTREAM.."),
        Err(DecodeError::BadMagic)
    ));
    let mut e = Encoder::new(Vec::new()).unwrap();
    e.pages(0, &[1; PAGE_SIZE]).unwrap();
    assert!(matches!(
        decode(&e.end().unwrap()),
        Err(DecodeError::ManifestNotFirst {
            tag: TAG_PAGES,
            offset: 12
        })
    ));
}

#[test]
fn limits_from_the_manifest_and_the_decoder() {
    let img = sample();
    let bytes = encode(&img);
    let tight = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        decode_with(&bytes, l).unwrap_err()
    };
    assert!(matches!(
        tight(|l| l.max_manifest_len = 10),
        DecodeError::ManifestTooLarge { .. }
    ));
    assert!(matches!(
        tight(|l| l.max_ram_size = 4096),
        DecodeError::ManifestInvalid(_)
    ));
    assert!(matches!(
        tight(|l| l.max_vcpus = 1),
        DecodeError::ManifestInvalid(_)
    ));
    assert!(matches!(
        tight(|l| l.max_sections = 1),
        DecodeError::ManifestInvalid(_)
    ));
    assert!(matches!(
        tight(|l| l.max_section_len = 100),
        DecodeError::SectionTooLarge { .. }
    ));
    assert!(matches!(
        tight(|l| l.max_vcpu_len = 100),
        DecodeError::VcpuTooLarge { .. }
    ));
}

/// Encodes `img` but with `edit` applied to the records after the manifest.
fn stream_of(m: &Manifest, edit: impl FnOnce(&mut Encoder<Vec<u8>>)) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new()).unwrap();
    e.manifest(m).unwrap();
    edit(&mut e);
    e.end().unwrap()
}

#[test]
fn records_are_checked_against_the_manifest() {
    let m = manifest(4, 1, &[("serial", 1)]);
    let sec = |n: &str, v| Section {
        name: n.into(),
        version_id: v,
        data: vec![],
    };
    let vcpu = |i| VcpuRecord {
        index: i,
        data: vec![],
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            stream_of(&m, |e| {
                e.pages(3, &[1; 2 * PAGE_SIZE]).unwrap();
            }),
            "PageRange",
        ),
        (
            stream_of(&m, |e| {
                e.pages(u64::MAX, &[1; PAGE_SIZE]).unwrap();
            }),
            "PageRange",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("rtc", 1)).unwrap();
            }),
            "SectionNotInManifest",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("serial", 2)).unwrap();
            }),
            "SectionVersion",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("", 1)).unwrap();
            }),
            "BadSectionName",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("serial", 1)).unwrap();
                e.section(&sec("serial", 1)).unwrap();
            }),
            "SectionRepeated",
        ),
        (
            stream_of(&m, |e| {
                e.vcpu(&vcpu(1)).unwrap();
            }),
            "VcpuIndex",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("serial", 1)).unwrap();
                e.vcpu(&vcpu(0)).unwrap();
                e.vcpu(&vcpu(0)).unwrap();
            }),
            "VcpuRepeated",
        ),
        (
            stream_of(&m, |e| {
                e.vcpu(&vcpu(0)).unwrap();
            }),
            "MissingSection",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("serial", 1)).unwrap();
            }),
            "MissingVcpu",
        ),
        (
            stream_of(&m, |e| {
                e.vcpu(&vcpu(0)).unwrap();
                e.pages(0, &[1; PAGE_SIZE]).unwrap();
            }),
            "OutOfOrder",
        ),
        (
            stream_of(&m, |e| {
                e.section(&sec("serial", 1)).unwrap();
                e.sync().unwrap();
            }),
            "OutOfOrder",
        ),
    ];
    for (bytes, want) in cases {
        let got = format!("{:?}", decode(&bytes).unwrap_err());
        assert!(got.starts_with(want), "want {want}, got {got}");
    }
    let mut dup = m.clone();
    dup.sections.push(dup.sections[0].clone());
    assert!(matches!(
        decode(&stream_of(&dup, |_| {})),
        Err(DecodeError::SectionRepeated(_))
    ));
}

#[test]
fn lying_lengths_cost_only_what_arrives() {
    let m = manifest(4, 1, &[("serial", 1)]);
    let mut bytes = stream_of(&m, |_| {});
    bytes.truncate(bytes.len() - 5);
    // A section that claims 16 MiB and brings 3 bytes.
    bytes.push(TAG_SECTION);
    bytes.extend_from_slice(&6u16.to_le_bytes());
    bytes.extend_from_slice(b"serial");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&(16u32 << 20).to_le_bytes());
    bytes.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(decode(&bytes), Err(DecodeError::Truncated { .. })));
    // An unknown tag, and a zero-length page run.
    let mut b = stream_of(&m, |_| {});
    let n = b.len();
    b[n - 5] = 0x77;
    assert!(matches!(
        decode(&b),
        Err(DecodeError::UnknownTag { tag: 0x77, .. })
    ));
    let mut b = stream_of(&m, |_| {});
    b.truncate(n - 5);
    b.push(TAG_PAGES);
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        decode(&b),
        Err(DecodeError::BadRunLength { count: 0, .. })
    ));
}

fn arb_image() -> impl Strategy<Value = Image> {
    (
        1u64..24,
        1u32..4,
        proptest::collection::vec((0usize..3, any::<u8>()), 1..24),
    )
        .prop_flat_map(|(pages, vcpus, kinds)| {
            let secs =
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..4);
            (Just(pages), Just(vcpus), Just(kinds), secs)
        })
        .prop_map(|(pages, vcpus, kinds, secs)| {
            let mut ram = vec![0u8; pages as usize * PAGE_SIZE];
            for (p, page) in ram.chunks_mut(PAGE_SIZE).enumerate() {
                let (kind, v) = kinds[p % kinds.len()];
                match kind {
                    0 => {}
                    1 => page.fill(v | 1),
                    _ => page[PAGE_SIZE - 1] = v | 1,
                }
            }
            let names: Vec<String> = (0..secs.len()).map(|i| format!("dev{i}/0")).collect();
            let list: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 3)).collect();
            Image {
                manifest: manifest(pages, vcpus, &list),
                ram,
                sections: secs
                    .into_iter()
                    .zip(&names)
                    .map(|(data, n)| Section {
                        name: n.clone(),
                        version_id: 3,
                        data,
                    })
                    .collect(),
                vcpus: (0..vcpus)
                    .map(|i| VcpuRecord {
                        index: i,
                        data: vec![i as u8; 17],
                    })
                    .collect(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn proptest_round_trip(img in arb_image()) {
        prop_assert_eq!(decode(&encode(&img)).unwrap(), img);
    }

    #[test]
    fn proptest_arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut bytes = encode(&sample());
        bytes.truncate(700);
        bytes.extend_from_slice(&tail);
        prop_assert!(decode(&bytes).is_err());
    }
}

/// Hands out `ok` bytes, then times out like a socket with a read time-out.
struct Stalls<'a> {
    ok: &'a [u8],
}

impl std::io::Read for Stalls<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ok.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.ok.len());
        buf[..n].copy_from_slice(&self.ok[..n]);
        self.ok = &self.ok[n..];
        Ok(n)
    }
}

#[test]
fn a_silent_source_is_a_stall_not_a_hang() {
    let bytes = encode(&sample());
    for cut in [4, 100, 5000] {
        let r = Decoder::new(Stalls { ok: &bytes[..cut] }, Limits::default()).and_then(|mut d| {
            d.read_manifest()?;
            loop {
                if d.next_record()? == Record::End {
                    return Ok(());
                }
            }
        });
        assert!(
            matches!(r, Err(DecodeError::Stalled { .. })),
            "{cut}: {r:?}"
        );
    }
}

#[test]
fn raw_runs_land_in_guest_memory_and_a_corrupted_one_is_still_caught() {
    use crate::guest_ram::{GuestMemoryMmap, SharedRam};
    use std::sync::Arc;
    use vm_memory::{Bytes, GuestAddress};
    let pages = 64u64;
    let m = manifest(pages, 1, &[]);
    let data: Vec<u8> = (0..8 * PAGE_SIZE).map(|i| (i % 253) as u8 | 1).collect();
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out).unwrap();
    e.manifest(&m).unwrap();
    e.pages(3, &data).unwrap();
    e.vcpu(&VcpuRecord {
        index: 0,
        data: vec![1],
    })
    .unwrap();
    e.end().unwrap();
    let land = |bytes: &[u8]| -> (Result<u64, DecodeError>, Arc<GuestMemoryMmap>) {
        let ranges = [(GuestAddress(0), pages as usize * PAGE_SIZE)];
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&ranges).unwrap());
        let r = (|| {
            let mut d = Decoder::new(bytes, Limits::default())?;
            d.read_manifest()?;
            d.land_in(Arc::new(SharedRam::landing(mem.clone())));
            let mut landed = 0;
            loop {
                match d.next_record()? {
                    Record::Landed { first_page, count } => {
                        assert_eq!(first_page, 3);
                        landed += count;
                    }
                    Record::Pages { .. } => panic!("a raw run was copied, not landed"),
                    Record::End => return Ok(landed),
                    _ => {}
                }
            }
        })();
        (r, mem)
    };
    let (r, mem) = land(&out);
    assert_eq!(r.unwrap(), 8);
    let mut back = vec![0u8; data.len()];
    mem.read_slice(&mut back, GuestAddress(3 * PAGE_SIZE as u64))
        .unwrap();
    assert!(back == data, "the landed pages differ");
    // A flipped byte inside the landed data: the stream's checksum refuses it.
    let mut bad = out.clone();
    let at = bad.len() - 40 - data.len() / 2;
    bad[at] ^= 0x5a;
    assert!(matches!(land(&bad).0, Err(DecodeError::Checksum { .. })));
}

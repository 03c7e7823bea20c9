//! The other workloads' lines: `ab` (range, passes, the a-b rule), `fill`
//! (range, completion, a model of the data), `disk` (results, sector
//! patterns, checksums), malformed requests, panics.

use crate::{parse_line, parse_num};

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

/// What a `fill` workload writes: `workload=fill` (`kind=random`) or
/// `workload=fill.text` (`kind=text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FillKind {
    /// Incompressible: splitmix64 output, one qword after another.
    Random,
    /// Compressible, text-like: [`FILL_WORDS`] separated by spaces and
    /// newlines (zstd -1..-3 compress it 4.1-4.6x).
    Text,
}

impl FillKind {
    /// The `kind=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            FillKind::Random => "random",
            FillKind::Text => "text",
        }
    }

    /// Parses a `kind=` value.
    pub fn from_name(s: &str) -> Option<FillKind> {
        match s {
            "random" => Some(FillKind::Random),
            "text" => Some(FillKind::Text),
            _ => None,
        }
    }

    /// The `workload=` value that selects it.
    pub fn workload(self) -> &'static str {
        match self {
            FillKind::Random => "fill",
            FillKind::Text => "fill.text",
        }
    }
}

/// The seed the `fill` workloads use without `fill.seed=`.
pub const FILL_DEFAULT_SEED: u64 = 0x5eed;

/// The words of `fill.text`, indexed by the low 5 bits of a choice.
pub const FILL_WORDS: [&str; 32] = [
    "the", "and", "that", "with", "this", "from", "which", "have", "there", "would", "their",
    "about", "memory", "page", "guest", "host", "virtual", "machine", "migrate", "network",
    "kernel", "device", "driver", "system", "process", "state", "copy", "dirty", "source",
    "target", "stream", "bitmap",
];

/// The range a `fill` workload writes and how (its `fill: start=` and
/// `fill: done` lines carry the same fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillRange {
    /// Guest-physical address of the first page.
    pub start: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
    /// The PRNG seed (`fill.seed=`, default [`FILL_DEFAULT_SEED`]).
    pub seed: u64,
    pub kind: FillKind,
}

fn parse_fill_fields(l: &crate::Line<'_>) -> Option<FillRange> {
    Some(FillRange {
        start: l.num("start")?,
        pages: l.num("pages")?,
        seed: l.num("seed")?,
        kind: FillKind::from_name(l.get("kind")?)?,
    })
}

/// Parses `fill: start=0x.. pages=N kind=random|text seed=0x..`, printed
/// before the workload writes anything.
pub fn parse_fill_start(line: &str) -> Option<FillRange> {
    let l = parse_line(line)?;
    (l.key == "fill" && l.rest.starts_with("start=")).then_some(())?;
    parse_fill_fields(&l)
}

/// Parses `fill: done pages=N start=0x.. seed=0x.. kind=random|text`,
/// printed once every page of the range is written.
pub fn parse_fill_done(line: &str) -> Option<FillRange> {
    let l = parse_line(line)?;
    (l.key == "fill" && l.rest.starts_with("done ")).then_some(())?;
    parse_fill_fields(&l)
}

/// Output `n` (n >= 1) of the `fill` workloads' PRNG: splitmix64 as a
/// counter, `mix(seed + n * 0x9e3779b97f4a7c15)` (with seed 0, outputs 1,
/// 2, ... are the reference splitmix64 sequence).
pub fn splitmix64(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Size of the pages the `fill` workloads write.
pub const PAGE: usize = 4096;

/// The pages a `fill` workload writes, in address order (an endless
/// iterator: take the range's `pages`). See [`fill_pages`].
#[derive(Debug, Clone)]
pub struct FillPages {
    kind: FillKind,
    seed: u64,
    /// PRNG outputs used so far.
    n: u64,
    /// `Text`: the unused choices of output `n`, low byte first.
    bits: u64,
    left: u32,
}

/// The data of the `fill` workload of `kind` with `seed`, page after page
/// from the range's start:
/// - `Random`: qword `i` of the range (little-endian) is
///   `splitmix64(seed, i + 1)`.
/// - `Text`: each PRNG output gives 8 one-byte choices, low byte first; a
///   choice `c` is the word `FILL_WORDS[c & 31]` followed by `'\n'` if
///   `c < 0x20` (1 in 8), else `' '`. Each page gets words from offset 0
///   while 8 bytes still fit (`offset + 8 <= 4096`), the rest is spaces and
///   its last byte is `'\n'`; the choices run on across pages.
pub fn fill_pages(kind: FillKind, seed: u64) -> FillPages {
    FillPages {
        kind,
        seed,
        n: 0,
        bits: 0,
        left: 0,
    }
}

impl FillPages {
    fn choice(&mut self) -> u8 {
        if self.left == 0 {
            self.n += 1;
            self.bits = splitmix64(self.seed, self.n);
            self.left = 8;
        }
        let c = self.bits as u8;
        self.bits >>= 8;
        self.left -= 1;
        c
    }
}

impl Iterator for FillPages {
    type Item = [u8; PAGE];

    fn next(&mut self) -> Option<[u8; PAGE]> {
        let mut page = [b' '; PAGE];
        match self.kind {
            FillKind::Random => {
                for q in page.chunks_exact_mut(8) {
                    self.n += 1;
                    q.copy_from_slice(&splitmix64(self.seed, self.n).to_le_bytes());
                }
            }
            FillKind::Text => {
                let mut pos = 0;
                while pos + 8 <= PAGE {
                    let c = self.choice();
                    let w = FILL_WORDS[usize::from(c & 31)].as_bytes();
                    page[pos..pos + w.len()].copy_from_slice(w);
                    page[pos + w.len()] = if c < 0x20 { b'\n' } else { b' ' };
                    pos += w.len() + 1;
                }
                page[PAGE - 1] = b'\n';
            }
        }
        Some(page)
    }
}

/// Checks a snapshot of guest memory (`mem[0]` is guest-physical address
/// `mem_base`) against what the `fill` workload of `range` wrote (once its
/// `fill: done` line is out).
pub fn check_fill(mem: &[u8], mem_base: u64, range: &FillRange) -> Result<(), String> {
    let first = range
        .start
        .checked_sub(mem_base)
        .ok_or("range below the snapshot")?;
    let first = usize::try_from(first).map_err(|e| e.to_string())?;
    for (page, want) in (0..range.pages).zip(fill_pages(range.kind, range.seed)) {
        let off = usize::try_from(page)
            .ok()
            .and_then(|p| p.checked_mul(PAGE))
            .and_then(|o| o.checked_add(first))
            .ok_or("range too large")?;
        let got = mem
            .get(off..off + PAGE)
            .ok_or_else(|| format!("page {page} beyond the snapshot"))?;
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            return Err(format!(
                "page {page} (at {:#x}), byte {i}: {:#04x}, expected {:#04x}",
                range.start + page * PAGE as u64,
                got[i],
                want[i]
            ));
        }
    }
    Ok(())
}

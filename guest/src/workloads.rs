//! The other workloads' lines: `ab` (range, passes, the a-b rule), `disk`
//! (results, sector patterns, checksums), malformed requests, panics.

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

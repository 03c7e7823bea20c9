//! One virtio-blk request: header, data, status byte.

use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{Address, Bytes};

use super::SECTOR_SIZE;
use crate::GuestMemoryMmap;
use crate::disk::Disk;

pub(super) const T_IN: u32 = 0;
pub(super) const T_OUT: u32 = 1;
pub(super) const T_FLUSH: u32 = 4;
pub(super) const T_GET_ID: u32 = 8;
pub(super) const T_DISCARD: u32 = 11;
pub(super) const T_WRITE_ZEROES: u32 = 13;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const ID_BYTES: usize = 20;
/// Largest single data transfer we accept (keeps a hostile chain from making us allocate GiBs).
const MAX_TRANSFER: usize = 64 << 20;

/// What a request may do, decided by the device's config and negotiated features.
pub(super) struct Ctx<'a> {
    pub disk: &'a Disk,
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub discard: bool,
    pub write_zeroes: bool,
    pub writeback: bool,
    pub serial: &'a [u8],
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
}

#[derive(Debug)]
enum Fail {
    IoErr(String),
    Unsupp(String),
}

/// Processes one chain; returns the number of bytes written to guest memory
/// (the used-ring length). Never panics on guest input: a malformed chain
/// gets `VIRTIO_BLK_S_IOERR`/`UNSUPP` if it has a status byte, and a log line.
pub(super) fn handle<M>(ctx: &Ctx<'_>, mem: &GuestMemoryMmap, chain: DescriptorChain<M>) -> u32
where
    M: std::ops::Deref<Target = GuestMemoryMmap> + Clone,
{
    let head = chain.head_index();
    let mut reader = match Reader::new(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("virtio-blk: request {head}: bad readable descriptors: {e}");
            return status_only(mem, chain, S_IOERR, head);
        }
    };
    let mut writer = match Writer::new(mem, chain.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("virtio-blk: request {head}: bad writable descriptors: {e}");
            return status_only(mem, chain, S_IOERR, head);
        }
    };
    let avail = writer.available_bytes();
    if avail == 0 {
        tracing::warn!("virtio-blk: request {head}: no writable status byte; dropped");
        return 0;
    }
    let mut status_w = match writer.split_at(avail - 1) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("virtio-blk: request {head}: {e}");
            return 0;
        }
    };
    let result = execute(ctx, &mut reader, &mut writer);
    let status = match result {
        Ok(()) => S_OK,
        Err(Fail::IoErr(why)) => {
            tracing::warn!("virtio-blk: request {head}: I/O error status: {why}");
            S_IOERR
        }
        Err(Fail::Unsupp(why)) => {
            tracing::warn!("virtio-blk: request {head}: unsupported: {why}");
            S_UNSUPP
        }
    };
    if let Err(e) = status_w.write_all(&[status]) {
        tracing::warn!("virtio-blk: request {head}: cannot write status: {e}");
    }
    let written = writer.bytes_written() + status_w.bytes_written();
    u32::try_from(written).unwrap_or(u32::MAX)
}

/// A chain that cannot be processed: report `status` in the last byte of its
/// last writable descriptor if that byte is in guest RAM.
fn status_only<M>(mem: &GuestMemoryMmap, chain: DescriptorChain<M>, status: u8, head: u16) -> u32
where
    M: std::ops::Deref<Target = GuestMemoryMmap>,
{
    let Some(last) = chain.writable().last() else {
        tracing::warn!("virtio-blk: request {head}: no writable status byte either");
        return 0;
    };
    if last.len() == 0 {
        return 0;
    }
    let Some(addr) = last.addr().checked_add(u64::from(last.len()) - 1) else {
        return 0;
    };
    match mem.write_obj(status, addr) {
        Ok(()) => 1,
        Err(e) => {
            tracing::warn!("virtio-blk: request {head}: cannot write status: {e}");
            0
        }
    }
}

fn execute<B: vm_memory::bitmap::BitmapSlice>(
    ctx: &Ctx<'_>,
    reader: &mut Reader<'_, B>,
    writer: &mut Writer<'_, B>,
) -> Result<(), Fail> {
    let mut hdr = [0u8; 16];
    reader.read_exact(&mut hdr).map_err(|_| {
        Fail::IoErr(format!(
            "header shorter than 16 bytes ({})",
            reader.available_bytes()
        ))
    })?;
    let typ = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    match typ {
        T_IN => {
            let len = writer.available_bytes();
            let off = check_range(ctx, sector, len)?;
            let mut buf = vec![0u8; len];
            ctx.disk
                .read_at(&mut buf, off)
                .map_err(|e| Fail::IoErr(format!("read at {off:#x}: {e}")))?;
            writer
                .write_all(&buf)
                .map_err(|e| Fail::IoErr(format!("guest memory: {e}")))
        }
        T_OUT => {
            if ctx.read_only {
                return Err(Fail::IoErr("write to a read-only disk".into()));
            }
            let len = reader.available_bytes();
            let off = check_range(ctx, sector, len)?;
            let mut buf = vec![0u8; len];
            reader
                .read_exact(&mut buf)
                .map_err(|e| Fail::IoErr(format!("guest memory: {e}")))?;
            ctx.disk
                .write_at(&buf, off)
                .map_err(|e| Fail::IoErr(format!("write at {off:#x}: {e}")))?;
            if !ctx.writeback {
                ctx.disk
                    .sync_data()
                    .map_err(|e| Fail::IoErr(format!("write-through sync: {e}")))?;
            }
            Ok(())
        }
        T_FLUSH => ctx
            .disk
            .flush()
            .map_err(|e| Fail::IoErr(format!("flush: {e}"))),
        T_GET_ID => {
            let mut id = [0u8; ID_BYTES];
            let n = ctx.serial.len().min(ID_BYTES);
            id[..n].copy_from_slice(&ctx.serial[..n]);
            let n = writer.available_bytes().min(ID_BYTES);
            writer
                .write_all(&id[..n])
                .map_err(|e| Fail::IoErr(format!("guest memory: {e}")))
        }
        T_DISCARD if ctx.discard => zero_segments(ctx, reader, ctx.max_discard_sectors, true),
        T_WRITE_ZEROES if ctx.write_zeroes => {
            zero_segments(ctx, reader, ctx.max_write_zeroes_sectors, false)
        }
        other => Err(Fail::Unsupp(format!("request type {other}"))),
    }
}

fn check_range(ctx: &Ctx<'_>, sector: u64, len: usize) -> Result<u64, Fail> {
    if len > MAX_TRANSFER {
        return Err(Fail::IoErr(format!("transfer of {len} bytes too large")));
    }
    if !(len as u64).is_multiple_of(SECTOR_SIZE) {
        return Err(Fail::IoErr(format!(
            "length {len} not a multiple of {SECTOR_SIZE}"
        )));
    }
    let sectors = len as u64 / SECTOR_SIZE;
    match sector.checked_add(sectors) {
        Some(end) if end <= ctx.capacity_sectors => Ok(sector * SECTOR_SIZE),
        _ => Err(Fail::IoErr(format!(
            "sectors {sector}+{sectors} beyond capacity {}",
            ctx.capacity_sectors
        ))),
    }
}

/// Discard and write-zeroes: 16-byte segments (sector, num_sectors, flags).
/// Both zero the range (discarded contents are unspecified); a discard, or a
/// write-zeroes with the unmap flag, deallocates it where the file system can.
fn zero_segments<B: vm_memory::bitmap::BitmapSlice>(
    ctx: &Ctx<'_>,
    reader: &mut Reader<'_, B>,
    max_sectors: u32,
    discard: bool,
) -> Result<(), Fail> {
    if ctx.read_only {
        return Err(Fail::IoErr(
            "discard/write-zeroes on a read-only disk".into(),
        ));
    }
    if reader.available_bytes() == 0 || !reader.available_bytes().is_multiple_of(16) {
        return Err(Fail::IoErr(format!(
            "segment list of {} bytes",
            reader.available_bytes()
        )));
    }
    while reader.available_bytes() >= 16 {
        let mut seg = [0u8; 16];
        reader
            .read_exact(&mut seg)
            .map_err(|e| Fail::IoErr(format!("guest memory: {e}")))?;
        let sector = u64::from_le_bytes([
            seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
        ]);
        let num = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
        if num > max_sectors {
            return Err(Fail::IoErr(format!(
                "{num} sectors exceed the maximum {max_sectors}"
            )));
        }
        let off = check_range(ctx, sector, 0)?;
        if sector
            .checked_add(u64::from(num))
            .is_none_or(|e| e > ctx.capacity_sectors)
        {
            return Err(Fail::IoErr(format!(
                "segment {sector}+{num} beyond capacity"
            )));
        }
        let unmap = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]) & 1 != 0;
        ctx.disk
            .write_zeroes(off, u64::from(num) * SECTOR_SIZE, discard || unmap)
            .map_err(|e| Fail::IoErr(format!("zeroing at {off:#x}: {e}")))?;
    }
    Ok(())
}

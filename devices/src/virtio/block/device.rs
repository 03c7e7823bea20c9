use std::io;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use super::request::{self, Ctx};
use super::{BlockConfig, BlockState, SECTOR_SIZE};
use crate::GuestMemoryMmap;
use crate::disk::Disk;
use crate::virtio::{
    VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
    VirtioDevice, VirtioDeviceState,
};

const VIRTIO_ID_BLOCK: u32 = 2;
const F_SEG_MAX: u32 = 2;
const F_RO: u32 = 5;
const F_BLK_SIZE: u32 = 6;
const F_FLUSH: u32 = 9;
const F_TOPOLOGY: u32 = 10;
const F_CONFIG_WCE: u32 = 11;
const F_MQ: u32 = 12;
const F_DISCARD: u32 = 13;
const F_WRITE_ZEROES: u32 = 14;
/// Logical block size presented to the guest (raw images are byte-addressed).
const BLK_SIZE: u32 = 512;
/// Largest discard/write-zeroes request this model handles in one segment
/// (an implementation limit, like QEMU's `BDRV_REQUEST_MAX_SECTORS`).
const MAX_ZERO_SECTORS: u32 = 0x3f_ffff;
/// `seg_max` of the legacy layout (`seg-max-adjust=off`).
const LEGACY_SEG_MAX: u32 = 126;
/// Size of `struct virtio_blk_config` up to and including the write-zeroes fields.
const CONFIG_LEN: usize = 60;

/// Errors creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image's size could not be read.
    #[error("cannot stat disk image: {0}")]
    Stat(io::Error),
    /// `num-queues` resolved to 0.
    #[error("virtio-blk needs at least one queue")]
    NoQueues,
}

/// How a disk without a serial number is spelled in [`VirtioDevice::backend_facts`].
pub const NO_SERIAL: &str = "(none)";

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// A virtio-blk device on a raw image.
pub struct Block {
    config: BlockConfig,
    disk: Arc<Disk>,
    capacity_sectors: u64,
    acked_features: u64,
    writeback: u8,
}

impl Block {
    /// Creates the device; `disk` is opened read-write unless `config.read_only`.
    pub fn new(config: BlockConfig, disk: Arc<Disk>) -> Result<Self, BlockError> {
        if config.num_queues == 0 {
            return Err(BlockError::NoQueues);
        }
        let len = disk.len().map_err(BlockError::Stat)?;
        Ok(Self {
            capacity_sectors: len / SECTOR_SIZE,
            // Without CONFIG_WCE the cache mode is write-back (flushes are honoured).
            writeback: 1,
            acked_features: 0,
            config,
            disk,
        })
    }

    /// The device's own state.
    pub fn state(&self) -> BlockState {
        BlockState {
            acked_features: self.acked_features,
            writeback: self.writeback,
        }
    }

    /// Restores [`state`](Self::state).
    pub fn restore(&mut self, s: &BlockState) {
        self.acked_features = s.acked_features;
        self.writeback = s.writeback;
    }

    /// The configuration this device was built from.
    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let c = &self.config;
        let mut b = [0u8; CONFIG_LEN];
        b[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        // size_max (8) stays 0: VIRTIO_BLK_F_SIZE_MAX is not offered.
        let seg_max = if c.seg_max_adjust {
            u32::from(c.queue_size.saturating_sub(2)).max(1)
        } else {
            LEGACY_SEG_MAX
        };
        b[12..16].copy_from_slice(&seg_max.to_le_bytes());
        b[20..24].copy_from_slice(&BLK_SIZE.to_le_bytes());
        // topology: physical_block_exp 0, alignment 0, min_io_size 1, opt_io_size 0
        b[26..28].copy_from_slice(&1u16.to_le_bytes());
        b[32] = self.writeback;
        b[34..36].copy_from_slice(&c.num_queues.to_le_bytes());
        if c.discard {
            b[36..40].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes());
            b[40..44].copy_from_slice(&1u32.to_le_bytes());
            let align = if c.report_discard_granularity {
                BLK_SIZE / SECTOR_SIZE as u32
            } else {
                0
            };
            b[44..48].copy_from_slice(&align.to_le_bytes());
        }
        if c.write_zeroes {
            b[48..52].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes());
            b[52..56].copy_from_slice(&1u32.to_le_bytes());
            b[56] = 1; // write_zeroes_may_unmap
        }
        b
    }
}

fn bit(n: u32) -> u64 {
    1u64 << n
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.config.queue_size; usize::from(self.config.num_queues)]
    }

    fn avail_features(&self) -> u64 {
        let c = &self.config;
        let mut f = bit(VIRTIO_F_VERSION_1)
            | bit(F_SEG_MAX)
            | bit(F_BLK_SIZE)
            | bit(F_FLUSH)
            | bit(F_TOPOLOGY);
        let flags = [
            (c.read_only, F_RO),
            (c.config_wce, F_CONFIG_WCE),
            (c.num_queues > 1, F_MQ),
            (c.discard, F_DISCARD),
            (c.write_zeroes, F_WRITE_ZEROES),
            (c.indirect_desc, VIRTIO_RING_F_INDIRECT_DESC),
            (c.event_idx, VIRTIO_RING_F_EVENT_IDX),
            (c.queue_reset, VIRTIO_F_RING_RESET),
        ];
        for (on, b) in flags {
            if on {
                f |= bit(b);
            }
        }
        f
    }

    fn backend_facts(&self) -> Vec<(&'static str, String)> {
        vec![
            ("capacity_sectors", self.capacity_sectors.to_string()),
            ("logical_block_size", BLK_SIZE.to_string()),
            ("read_only", on_off(self.config.read_only).into()),
            (
                "serial",
                self.config
                    .serial
                    .clone()
                    .unwrap_or_else(|| NO_SERIAL.into()),
            ),
        ]
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
        // Like the reference: a driver that cannot flush gets write-through.
        if features & bit(F_FLUSH) == 0 {
            self.writeback = 0;
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let space = self.config_space();
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start < space.len() {
            let n = data.len().min(space.len() - start);
            data[..n].copy_from_slice(&space[start..start + n]);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `writeback` (offset 32) is writable, and only with CONFIG_WCE.
        if offset == 32 && data.len() == 1 && self.acked_features & bit(F_CONFIG_WCE) != 0 {
            self.writeback = u8::from(data[0] != 0);
        } else {
            tracing::debug!("virtio-blk: config write at {offset:#x} ignored");
        }
    }

    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let ctx = Ctx {
            disk: &self.disk,
            capacity_sectors: self.capacity_sectors,
            read_only: self.config.read_only,
            discard: self.acked_features & bit(F_DISCARD) != 0,
            write_zeroes: self.acked_features & bit(F_WRITE_ZEROES) != 0,
            writeback: self.writeback != 0,
            serial: self.config.serial.as_deref().unwrap_or("").as_bytes(),
            max_discard_sectors: MAX_ZERO_SECTORS,
            max_write_zeroes_sectors: MAX_ZERO_SECTORS,
        };
        let mut used = false;
        loop {
            if queue.event_idx_enabled() {
                let _ = queue.disable_notification(mem);
            }
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let len = request::handle(&ctx, mem, chain);
                if let Err(e) = queue.add_used(mem, head, len) {
                    tracing::warn!("virtio-blk: queue {index}: add_used({head}): {e}");
                }
                used = true;
            }
            if !queue.event_idx_enabled() {
                break;
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                _ => break,
            }
        }
        used
    }

    fn reset(&mut self) {
        self.acked_features = 0;
        self.writeback = 1;
    }

    fn state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Block(Block::state(self))
    }

    fn restore(&mut self, state: &VirtioDeviceState) -> bool {
        match state {
            VirtioDeviceState::Block(s) => {
                Block::restore(self, s);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    fn cfg() -> BlockConfig {
        BlockConfig {
            num_queues: 1,
            queue_size: 16,
            discard: true,
            write_zeroes: true,
            config_wce: true,
            report_discard_granularity: true,
            seg_max_adjust: true,
            queue_reset: true,
            event_idx: false,
            indirect_desc: true,
            read_only: false,
            serial: Some("disk-serial-0123456789abc".into()),
        }
    }

    struct Rig {
        mem: GuestMemoryMmap,
        queue: Queue,
        blk: Block,
        disk: std::path::PathBuf,
        next_desc: u16,
        avail_idx: u16,
    }

    impl Rig {
        fn new() -> Self {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            let disk = std::env::temp_dir().join(format!(
                "blk-test-{}-{:?}.img",
                std::process::id(),
                std::thread::current().id()
            ));
            let mut f = std::fs::File::create(&disk).unwrap();
            f.write_all(&vec![0xaa; 8 * 512]).unwrap();
            let file = Disk::open(&disk, false).unwrap();
            let mut blk = Block::new(cfg(), file).unwrap();
            blk.ack_features(blk.avail_features());
            let mut queue = Queue::new(16).unwrap();
            queue.set_size(16);
            queue.set_desc_table_address(Some(DESC as u32), Some(0));
            queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
            queue.set_used_ring_address(Some(USED as u32), Some(0));
            queue.set_ready(true);
            Self {
                mem,
                queue,
                blk,
                disk,
                next_desc: 0,
                avail_idx: 0,
            }
        }

        /// Adds a chain of (addr, len, writable) and processes the queue.
        /// Returns the used length.
        fn submit(&mut self, descs: &[(u64, u32, bool)]) -> u32 {
            let head = self.next_desc;
            for (i, &(addr, len, w)) in descs.iter().enumerate() {
                let idx = self.next_desc + i as u16;
                let mut flags = if w { F_WRITE } else { 0 };
                if i + 1 < descs.len() {
                    flags |= F_NEXT;
                }
                let base = GuestAddress(DESC + u64::from(idx) * 16);
                self.mem.write_obj(addr, base).unwrap();
                self.mem.write_obj(len, base.unchecked_add(8)).unwrap();
                self.mem.write_obj(flags, base.unchecked_add(12)).unwrap();
                self.mem.write_obj(idx + 1, base.unchecked_add(14)).unwrap();
            }
            self.next_desc += descs.len() as u16;
            let slot = u64::from(self.avail_idx % 16);
            self.mem
                .write_obj(head, GuestAddress(AVAIL + 4 + slot * 2))
                .unwrap();
            self.avail_idx += 1;
            self.mem
                .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
                .unwrap();
            assert!(self.blk.process_queue(0, &mut self.queue, &self.mem));
            let used_slot = u64::from((self.avail_idx - 1) % 16);
            let id: u32 = self
                .mem
                .read_obj(GuestAddress(USED + 4 + used_slot * 8))
                .unwrap();
            assert_eq!(id, u32::from(head));
            self.mem
                .read_obj(GuestAddress(USED + 8 + used_slot * 8))
                .unwrap()
        }

        fn header(&self, addr: u64, typ: u32, sector: u64) {
            self.mem.write_obj(typ, GuestAddress(addr)).unwrap();
            self.mem.write_obj(0u32, GuestAddress(addr + 4)).unwrap();
            self.mem.write_obj(sector, GuestAddress(addr + 8)).unwrap();
        }

        fn status(&self, addr: u64) -> u8 {
            self.mem.read_obj(GuestAddress(addr)).unwrap()
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.disk);
        }
    }

    #[test]
    fn read_write_flush_get_id() {
        let mut r = Rig::new();
        r.mem
            .write_slice(&[0x5a; 512], GuestAddress(0x10000))
            .unwrap();
        r.header(0x8000, request::T_OUT, 2);
        r.mem.write_obj(0xffu8, GuestAddress(0x9000)).unwrap();
        assert_eq!(
            r.submit(&[
                (0x8000, 16, false),
                (0x10000, 512, false),
                (0x9000, 1, true)
            ]),
            1
        );
        assert_eq!(r.status(0x9000), 0);
        assert_eq!(
            std::fs::read(&r.disk).unwrap()[2 * 512..3 * 512],
            [0x5a; 512]
        );

        // Device writes into guest memory are visible in the VMM dirty bitmap.
        let bitmap = |r: &Rig| vm_memory::MmapRegion::bitmap(r.mem.iter().next().unwrap()).clone();
        r.header(0x8000, request::T_IN, 2);
        assert!(!bitmap(&r).is_addr_set(0x20000));
        let chain = [
            (0x8000, 16, false),
            (0x20000, 1024, true),
            (0x9000, 1, true),
        ];
        assert_eq!(r.submit(&chain), 1025);
        assert!(bitmap(&r).is_addr_set(0x20000), "data page marked dirty");
        assert!(bitmap(&r).is_addr_set(0x9000), "status page marked dirty");
        assert!(
            bitmap(&r).is_addr_set(USED as usize),
            "used ring marked dirty"
        );
        let mut back = [0u8; 1024];
        r.mem.read_slice(&mut back, GuestAddress(0x20000)).unwrap();
        assert_eq!(back[..512], [0x5a; 512]);
        assert_eq!(back[512..], [0xaa; 512]);

        r.header(0x8000, request::T_FLUSH, 0);
        r.submit(&[(0x8000, 16, false), (0x9000, 1, true)]);
        assert_eq!(r.status(0x9000), 0);

        r.header(0x8000, request::T_GET_ID, 0);
        r.submit(&[(0x8000, 16, false), (0x30000, 20, true), (0x9000, 1, true)]);
        let mut id = [0u8; 20];
        r.mem.read_slice(&mut id, GuestAddress(0x30000)).unwrap();
        assert_eq!(&id, b"disk-serial-01234567");

        r.header(0x8000, request::T_WRITE_ZEROES, 0);
        r.mem.write_obj(2u64, GuestAddress(0x40000)).unwrap();
        r.mem.write_obj(1u32, GuestAddress(0x40008)).unwrap();
        r.mem.write_obj(0u32, GuestAddress(0x4000c)).unwrap();
        r.submit(&[(0x8000, 16, false), (0x40000, 16, false), (0x9000, 1, true)]);
        assert_eq!(r.status(0x9000), 0);
        assert_eq!(std::fs::read(&r.disk).unwrap()[2 * 512..3 * 512], [0; 512]);
    }

    #[test]
    fn malformed_requests_get_error_status() {
        let mut r = Rig::new();
        // unknown type → UNSUPP
        r.header(0x8000, 99, 0);
        r.submit(&[(0x8000, 16, false), (0x9000, 1, true)]);
        assert_eq!(r.status(0x9000), 2);
        // short header → IOERR
        r.submit(&[(0x8000, 8, false), (0x9000, 1, true)]);
        assert_eq!(r.status(0x9000), 1);
        // read beyond the end → IOERR
        r.header(0x8000, request::T_IN, 7);
        r.submit(&[
            (0x8000, 16, false),
            (0x20000, 1024, true),
            (0x9000, 1, true),
        ]);
        assert_eq!(r.status(0x9000), 1);
        // data outside RAM → IOERR in the status byte
        r.header(0x8000, request::T_IN, 0);
        r.submit(&[
            (0x8000, 16, false),
            (0x4000_0000_0000, 512, true),
            (0x9000, 1, true),
        ]);
        assert_eq!(r.status(0x9000), 1);
        // header outside RAM → IOERR
        r.submit(&[(0x4000_0000_0000, 16, false), (0x9000, 1, true)]);
        assert_eq!(r.status(0x9000), 1);
        // no status byte: completed with length 0, nothing written
        r.header(0x8000, request::T_IN, 0);
        assert_eq!(r.submit(&[(0x8000, 16, false), (0x10000, 512, false)]), 0);
        // unaligned write length → IOERR
        r.header(0x8000, request::T_OUT, 0);
        r.submit(&[
            (0x8000, 16, false),
            (0x10000, 100, false),
            (0x9000, 1, true),
        ]);
        assert_eq!(r.status(0x9000), 1);
    }

    #[test]
    fn features_and_config_follow_properties() {
        let r = Rig::new();
        let f = r.blk.avail_features();
        assert_ne!(f & bit(VIRTIO_F_RING_RESET), 0);
        assert_eq!(f & bit(F_MQ), 0);
        assert_eq!(f & bit(VIRTIO_RING_F_EVENT_IDX), 0);
        let mut c = cfg();
        c.queue_reset = false;
        c.num_queues = 4;
        c.discard = false;
        let file = Disk::open(&r.disk, true).unwrap();
        let b = Block::new(c, file).unwrap();
        let f = b.avail_features();
        assert_eq!(f & bit(VIRTIO_F_RING_RESET), 0);
        assert_ne!(f & bit(F_MQ), 0);
        assert_eq!(f & bit(F_DISCARD), 0);
        let mut nq = [0u8; 2];
        b.read_config(34, &mut nq);
        assert_eq!(u16::from_le_bytes(nq), 4);
        assert_eq!(b.queue_max_sizes().len(), 4);
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
    }

    /// Random descriptor tables, rings and headers: the device must never
    /// panic, whatever the guest writes.
    #[test]
    fn random_chains_never_panic() {
        let mut r = Rig::new();
        let mut processed = 0;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000u32 {
            for d in 0..16u64 {
                let base = GuestAddress(DESC + d * 16);
                let addr = match rnd() % 4 {
                    0 => rnd(),
                    1 => rnd() % (1 << 20),
                    _ => 0x10000 + (rnd() % 0x40) * 0x400,
                };
                let len = match rnd() % 4 {
                    0 => rnd() as u32,
                    1 => 0,
                    _ => (rnd() % 2048) as u32,
                };
                r.mem.write_obj(addr, base).unwrap();
                r.mem.write_obj(len, base.unchecked_add(8)).unwrap();
                r.mem
                    .write_obj((rnd() % 8) as u16, base.unchecked_add(12))
                    .unwrap();
                r.mem
                    .write_obj((rnd() % 20) as u16, base.unchecked_add(14))
                    .unwrap();
            }
            for a in (0x10000u64..0x20000).step_by(0x400) {
                let typ = [0u32, 1, 4, 8, 11, 13, 99][(rnd() % 7) as usize];
                r.header(a, typ, rnd() % 16);
            }
            let head = (rnd() % 18) as u16;
            let slot = u64::from(r.avail_idx % 16);
            r.mem
                .write_obj(head, GuestAddress(AVAIL + 4 + slot * 2))
                .unwrap();
            r.avail_idx = r
                .avail_idx
                .wrapping_add(if round % 97 == 0 { 40 } else { 1 });
            r.mem
                .write_obj(r.avail_idx, GuestAddress(AVAIL + 2))
                .unwrap();
            if r.blk.process_queue(0, &mut r.queue, &r.mem) {
                processed += 1;
            }
            // Resynchronise after a bogus avail index (the device refuses to move).
            r.queue.set_next_avail(r.avail_idx);
            r.queue.set_next_used(r.avail_idx);
        }
        assert!(
            processed > 1000,
            "only {processed} rounds reached the device"
        );
    }
}

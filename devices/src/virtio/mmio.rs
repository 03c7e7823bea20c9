use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{VIRTIO_F_RING_RESET, VIRTIO_RING_F_EVENT_IDX, VirtioDevice, VirtioDeviceState};
use crate::GuestMemoryMmap;
use crate::bus::BusDevice;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // "QEMU", what guests expect from the reference
const INT_VRING: u32 = 1;
const INT_CONFIG: u32 = 2;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_NEEDS_RESET: u32 = 64;
/// Size of one virtio-mmio window.
pub const MMIO_WINDOW: u64 = 0x1000;

/// One queue's registers, as plain data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Maximum size offered.
    pub max_size: u16,
    /// Size chosen by the driver.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Driver (available) ring address.
    pub avail_ring: u64,
    /// Device (used) ring address.
    pub used_ring: u64,
    /// Next available index the device will consume.
    pub next_avail: u16,
    /// Next used index the device will produce.
    pub next_used: u16,
    /// Event index negotiated.
    pub event_idx: bool,
}

/// The transport's registers and queues, as plain data for migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioTransportState {
    /// Device status register.
    pub status: u32,
    /// DeviceFeaturesSel.
    pub features_select: u32,
    /// DriverFeaturesSel.
    pub acked_features_select: u32,
    /// Features the driver wrote.
    pub acked_features: u64,
    /// QueueSel.
    pub queue_select: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// The queues.
    pub queues: Vec<QueueSnapshot>,
    /// The device behind the transport.
    pub device: VirtioDeviceState,
}

/// A virtio-mmio window (4 KiB) in front of one [`VirtioDevice`].
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemoryMmap>,
    irq: EventFd,
    queues: Vec<Queue>,
    status: u32,
    features_select: u32,
    acked_features_select: u32,
    acked_features: u64,
    queue_select: u32,
    interrupt_status: u32,
    config_generation: u32,
}

/// Errors building a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A queue size is not acceptable to virtio-queue (zero, too big, not a power of two).
    #[error("invalid virtio queue size {0}")]
    QueueSize(u16),
    /// The interrupt eventfd could not be duplicated.
    #[error("virtio interrupt eventfd: {0}")]
    EventFd(std::io::Error),
    /// Saved state is for a different device or queue count.
    #[error("saved virtio state does not match this device (type or queue count)")]
    StateMismatch,
}

impl MmioTransport {
    /// Puts `device` behind a virtio-mmio window; `irq` is the irqfd of its GSI.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: Arc<GuestMemoryMmap>,
        irq: &EventFd,
    ) -> Result<Self, TransportError> {
        let queues = device
            .queue_max_sizes()
            .into_iter()
            .map(|s| Queue::new(s).map_err(|_| TransportError::QueueSize(s)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            irq: irq.try_clone().map_err(TransportError::EventFd)?,
            queues,
            status: 0,
            features_select: 0,
            acked_features_select: 0,
            acked_features: 0,
            queue_select: 0,
            interrupt_status: 0,
            config_generation: 0,
        })
    }

    /// The transport's registers and queues.
    pub fn state(&self) -> MmioTransportState {
        MmioTransportState {
            status: self.status,
            features_select: self.features_select,
            acked_features_select: self.acked_features_select,
            acked_features: self.acked_features,
            queue_select: self.queue_select,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues: self
                .queues
                .iter()
                .map(|q| QueueSnapshot {
                    max_size: q.max_size(),
                    size: q.size(),
                    ready: q.ready(),
                    desc_table: q.desc_table(),
                    avail_ring: q.avail_ring(),
                    used_ring: q.used_ring(),
                    next_avail: q.next_avail(),
                    next_used: q.next_used(),
                    event_idx: q.event_idx_enabled(),
                })
                .collect(),
            device: self.device.state(),
        }
    }

    /// Restores registers and queues saved by [`state`](Self::state); the
    /// queue count must match the device's.
    pub fn restore(&mut self, s: &MmioTransportState) -> Result<(), TransportError> {
        if s.queues.len() != self.queues.len() {
            return Err(TransportError::StateMismatch);
        }
        if !self.device.restore(&s.device) {
            return Err(TransportError::StateMismatch);
        }
        for (q, qs) in self.queues.iter_mut().zip(&s.queues) {
            q.set_size(qs.size);
            q.set_desc_table_address(
                Some(qs.desc_table as u32),
                Some((qs.desc_table >> 32) as u32),
            );
            q.set_avail_ring_address(
                Some(qs.avail_ring as u32),
                Some((qs.avail_ring >> 32) as u32),
            );
            q.set_used_ring_address(Some(qs.used_ring as u32), Some((qs.used_ring >> 32) as u32));
            q.set_next_avail(qs.next_avail);
            q.set_next_used(qs.next_used);
            q.set_event_idx(qs.event_idx);
            q.set_ready(qs.ready);
        }
        self.status = s.status;
        self.features_select = s.features_select;
        self.acked_features_select = s.acked_features_select;
        self.acked_features = s.acked_features;
        self.queue_select = s.queue_select;
        self.interrupt_status = s.interrupt_status;
        self.config_generation = s.config_generation;
        Ok(())
    }

    /// The device behind the window.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.features_select = 0;
        self.acked_features_select = 0;
        self.acked_features = 0;
        self.queue_select = 0;
        self.interrupt_status = 0;
    }

    fn signal(&mut self, why: u32) {
        self.interrupt_status |= why;
        if let Err(e) = self.irq.write(1) {
            tracing::warn!("virtio-mmio: cannot raise interrupt: {e}");
        }
    }

    fn notify(&mut self, index: u32) {
        if self.status & STATUS_DRIVER_OK == 0 || self.status & STATUS_NEEDS_RESET != 0 {
            tracing::warn!("virtio-mmio: queue {index} notified before DRIVER_OK; ignored");
            return;
        }
        let mem = self.mem.clone();
        let Some(q) = self.queues.get_mut(index as usize) else {
            tracing::warn!("virtio-mmio: notify of nonexistent queue {index}");
            return;
        };
        if !q.ready() {
            return;
        }
        if !q.is_valid(mem.as_ref()) {
            tracing::warn!("virtio-mmio: queue {index} has invalid addresses; device needs reset");
            self.status |= STATUS_NEEDS_RESET;
            self.signal(INT_CONFIG);
            return;
        }
        let used = self.device.process_queue(index as usize, q, mem.as_ref());
        if used {
            let q = &mut self.queues[index as usize];
            let needs = q.needs_notification(mem.as_ref()).unwrap_or(true);
            if needs {
                self.signal(INT_VRING);
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => {
                let f = self.device.avail_features();
                match self.features_select {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x034 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x044 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt_status,
            0x070 => self.status,
            0x0c0 => 0, // QueueReset: reset completes synchronously
            0x0fc => self.config_generation,
            _ => {
                tracing::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    /// Features in effect: the driver's, once FEATURES_OK was accepted.
    fn negotiated(&self) -> u64 {
        if self.status & STATUS_FEATURES_OK != 0 {
            self.acked_features
        } else {
            0
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let features_ok = self.status & STATUS_FEATURES_OK != 0;
        match offset {
            0x014 => self.features_select = v,
            0x020 if !features_ok => match self.acked_features_select {
                0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            0x024 => self.acked_features_select = v,
            0x030 => self.queue_select = v,
            0x038 => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v.min(u32::from(u16::MAX)) as u16);
                }
            }
            0x044 => {
                let event_idx = self.negotiated() & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
                if let Some(q) = self.selected_queue() {
                    q.set_event_idx(event_idx);
                    q.set_ready(v == 1);
                }
            }
            0x050 => self.notify(v & 0xffff),
            0x064 => self.interrupt_status &= !v,
            0x070 => self.write_status(v),
            0x080 => self.set_queue_addr(|q| q.set_desc_table_address(Some(v), None)),
            0x084 => self.set_queue_addr(|q| q.set_desc_table_address(None, Some(v))),
            0x090 => self.set_queue_addr(|q| q.set_avail_ring_address(Some(v), None)),
            0x094 => self.set_queue_addr(|q| q.set_avail_ring_address(None, Some(v))),
            0x0a0 => self.set_queue_addr(|q| q.set_used_ring_address(Some(v), None)),
            0x0a4 => self.set_queue_addr(|q| q.set_used_ring_address(None, Some(v))),
            0x0c0 if v == 1 => {
                if self.negotiated() & (1 << VIRTIO_F_RING_RESET) != 0 {
                    if let Some(q) = self.selected_queue() {
                        q.reset();
                    }
                } else {
                    tracing::warn!("virtio-mmio: QueueReset without VIRTIO_F_RING_RESET; ignored");
                }
            }
            _ => tracing::debug!("virtio-mmio: write {v:#x} to register {offset:#x} ignored"),
        }
    }

    fn set_queue_addr(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            if q.ready() {
                tracing::warn!("virtio-mmio: queue address written while ready; ignored");
                return;
            }
            f(q);
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let offered = self.device.avail_features();
            if self.acked_features & !offered != 0 {
                tracing::warn!(
                    "virtio-mmio: driver acked unoffered features {:#x}; FEATURES_OK refused",
                    self.acked_features & !offered
                );
                self.status = v & !STATUS_FEATURES_OK;
                return;
            }
            self.device.ack_features(self.acked_features);
        }
        self.status = v;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::warn!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            self.device.write_config(offset - 0x100, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::warn!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::virtio::block::{Block, BlockConfig};
    use vm_memory::GuestAddress;

    /// Reads a 32-bit transport register (as the guest does).
    pub(crate) fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes a 32-bit transport register.
    pub(crate) fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn transport(queue_reset: bool) -> (MmioTransport, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "mmio-test-{}-{queue_reset}.img",
            std::process::id()
        ));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let file = crate::disk::Disk::open(&path, false).unwrap();
        let cfg = BlockConfig {
            num_queues: 2,
            queue_size: 64,
            discard: false,
            write_zeroes: false,
            config_wce: false,
            report_discard_granularity: false,
            seg_max_adjust: true,
            queue_reset,
            event_idx: true,
            indirect_desc: true,
            read_only: false,
            serial: None,
        };
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(Box::new(Block::new(cfg, file).unwrap()), mem, &evt).unwrap();
        (t, path)
    }

    #[test]
    fn registers_negotiation_queue_reset_and_state() {
        let (mut t, path) = transport(true);
        assert_eq!(rd(&mut t, 0x000), MAGIC);
        assert_eq!(rd(&mut t, 0x004), 2);
        assert_eq!(rd(&mut t, 0x008), 2);
        wr(&mut t, 0x014, 1);
        let hi = rd(&mut t, 0x010);
        assert_ne!(hi & (1 << (VIRTIO_F_RING_RESET - 32)), 0);
        wr(&mut t, 0x070, 1 | 2);
        wr(&mut t, 0x024, 1);
        wr(&mut t, 0x020, hi);
        wr(&mut t, 0x070, 1 | 2 | STATUS_FEATURES_OK);
        assert_ne!(rd(&mut t, 0x070) & STATUS_FEATURES_OK, 0);
        wr(&mut t, 0x030, 1);
        assert_eq!(rd(&mut t, 0x034), 64);
        wr(&mut t, 0x038, 32);
        wr(&mut t, 0x080, 0x1000);
        wr(&mut t, 0x044, 1);
        assert_eq!(rd(&mut t, 0x044), 1);
        let st = t.state();
        assert_eq!(st.queues[1].size, 32);
        assert_eq!(st.queues[1].desc_table, 0x1000);
        // QueueReset: the selected queue goes back to not ready.
        wr(&mut t, 0x0c0, 1);
        assert_eq!(rd(&mut t, 0x044), 0);
        t.restore(&st).unwrap();
        assert_eq!(rd(&mut t, 0x044), 1);
        assert_eq!(t.state(), st);
        // a nonexistent queue reads as absent
        wr(&mut t, 0x030, 7);
        assert_eq!(rd(&mut t, 0x034), 0);
        // reset
        wr(&mut t, 0x070, 0);
        assert_eq!(rd(&mut t, 0x070), 0);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn unoffered_features_are_refused_and_reset_needs_ring_reset() {
        let (mut t, path) = transport(false);
        wr(&mut t, 0x024, 1);
        wr(&mut t, 0x020, 1 << (VIRTIO_F_RING_RESET - 32));
        wr(&mut t, 0x070, 1 | 2 | STATUS_FEATURES_OK);
        assert_eq!(rd(&mut t, 0x070) & STATUS_FEATURES_OK, 0);
        wr(&mut t, 0x030, 0);
        wr(&mut t, 0x044, 1);
        wr(&mut t, 0x0c0, 1);
        assert_eq!(
            rd(&mut t, 0x044),
            1,
            "QueueReset ignored without the feature"
        );
        let _ = std::fs::remove_file(path);
    }

    /// Random register traffic (any offset, size, value) never panics.
    #[test]
    fn random_register_traffic_never_panics() {
        let (mut t, path) = transport(true);
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20000 {
            let off = match rnd() % 3 {
                0 => rnd() % 0x1000,
                _ => (rnd() % 0x40) * 4,
            };
            let len = [1usize, 2, 4, 8][(rnd() % 4) as usize];
            let v = rnd().to_le_bytes();
            if rnd() % 2 == 0 {
                t.write(off, &v[..len]);
            } else {
                let mut b = [0u8; 8];
                t.read(off, &mut b[..len]);
            }
        }
        let _ = std::fs::remove_file(path);
    }
}

//! [`Persist`] for a virtio-mmio transport and the device behind it:
//! [`MmioTransportState`] ⇄ two generated sections, `virtio-mmio`
//! ([`VirtioMmioState`]: the transport's own registers) then `virtio-blk`
//! ([`VirtioBlkDeviceState`]: virtio common state, the queues and the block
//! device's state).
//!
//! Mapping:
//!
//! | runtime | section field |
//! |---|---|
//! | `features_select`, `acked_features_select`, `acked_features` | `virtio-mmio.device_features_sel`, `driver_features_sel`, `driver_features` |
//! | `queue_select`, `interrupt_status`, `status` (u32) | `virtio-mmio.queue_sel`, `interrupt_status`, `status`; their low bits again in `virtio-blk.queue_sel` (u16), `isr` (u8), `status` (u8), checked for agreement on load |
//! | `config_generation` (u32, never above 255) | `virtio-blk.config_generation` (u8) |
//! | `queues[i]` ready/size/desc/avail/used/next_avail/next_used | `virtio-blk.queue_*[i]`, `next_avail[i]`, `next_used[i]`; `num_queues` must equal the local `num-queues` |
//! | `queues[i].max_size` | not sent: `queue-size` (the manifest compares it) |
//! | `queues[i].event_idx` | not sent (like the reference): on load, on for ready queues when `VIRTIO_RING_F_EVENT_IDX` was negotiated |
//! | `BlockState.acked_features`, `writeback` | `virtio-blk.features_acked`, `writeback` (v2; a v1 stream restores write-back) |
//! | (queue resets complete synchronously) | subsection `virtio-blk/queue-reset` (gate `queue_reset`): `reset_pending` 0; a set bit `i` on load resets queue `i` |

use super::{
    MmioTransport, MmioTransportState, QueueSnapshot, VIRTIO_F_RING_RESET, VIRTIO_RING_F_EVENT_IDX,
    VirtioDeviceState, block::BlockState,
};
use crate::generated::vmstate::{
    VIRTIO_BLK_DEVICE, VIRTIO_MMIO, VirtioBlkDeviceQueueResetState, VirtioBlkDeviceState,
    VirtioMmioState,
};
use crate::persist::{self, Persist, PersistError, Section, mismatch};
use compat_runtime::VmStateDesc;

const STATUS_FEATURES_OK: u32 = 8;
const BLK: &str = VIRTIO_BLK_DEVICE.name;
const MMIO: &str = VIRTIO_MMIO.name;

fn to_mmio(s: &MmioTransportState) -> VirtioMmioState {
    VirtioMmioState {
        device_features_sel: s.features_select,
        driver_features_sel: s.acked_features_select,
        driver_features: s.acked_features,
        queue_sel: s.queue_select,
        interrupt_status: s.interrupt_status,
        status: s.status,
    }
}

fn to_blk(
    s: &MmioTransportState,
    b: &BlockState,
    queue_reset: bool,
) -> Result<VirtioBlkDeviceState, PersistError> {
    let q = &s.queues;
    Ok(VirtioBlkDeviceState {
        status: s.status as u8,
        features_acked: b.acked_features,
        config_generation: persist::fit(
            BLK,
            "config_generation",
            "u8",
            u64::from(s.config_generation),
        )?,
        isr: s.interrupt_status as u8,
        queue_sel: s.queue_select as u16,
        num_queues: persist::fit(BLK, "num_queues", "u16", q.len() as u64)?,
        queue_ready: q.iter().map(|q| q.ready).collect(),
        queue_size: q.iter().map(|q| q.size).collect(),
        queue_desc: q.iter().map(|q| q.desc_table).collect(),
        queue_avail: q.iter().map(|q| q.avail_ring).collect(),
        queue_used: q.iter().map(|q| q.used_ring).collect(),
        next_avail: q.iter().map(|q| q.next_avail).collect(),
        next_used: q.iter().map(|q| q.next_used).collect(),
        writeback: b.writeback != 0,
        sub_queue_reset: queue_reset.then_some(VirtioBlkDeviceQueueResetState { reset_pending: 0 }),
    })
}

/// Builds the runtime state from the two sections, on top of `local` (the
/// fresh device's state: queue maximum sizes, device type).
fn from_sections(
    local: &MmioTransportState,
    m: &VirtioMmioState,
    b: &VirtioBlkDeviceState,
    version: u32,
) -> Result<MmioTransportState, PersistError> {
    if !matches!(local.device, VirtioDeviceState::Block(_)) {
        return Err(PersistError::UnknownSection {
            device: VIRTIO_MMIO.name.into(),
            name: BLK.into(),
            expected: "the section of the device behind this transport".into(),
        });
    }
    // The narrow copies in `virtio-blk` must agree with the transport's.
    let agree = [
        ("status", u64::from(b.status), u64::from(m.status as u8)),
        ("isr", u64::from(b.isr), u64::from(m.interrupt_status as u8)),
        (
            "queue_sel",
            u64::from(b.queue_sel),
            u64::from(m.queue_sel as u16),
        ),
    ];
    for (field, stream, implied) in agree {
        if stream != implied {
            return Err(mismatch(
                BLK,
                field,
                stream,
                format_args!("{implied} (from virtio-mmio)"),
            ));
        }
    }
    let n = local.queues.len();
    if usize::from(b.num_queues) != n {
        return Err(mismatch(BLK, "num_queues", b.num_queues, n));
    }
    let pending = b.sub_queue_reset.as_ref().map_or(0, |s| s.reset_pending);
    if n < 64 && pending >> n != 0 {
        return Err(PersistError::BadValue {
            device: BLK.into(),
            field: "reset_pending".into(),
            why: format!("{pending:#x} names queues beyond the {n} this device has"),
        });
    }
    let negotiated = if m.status & STATUS_FEATURES_OK != 0 {
        m.driver_features
    } else {
        0
    };
    let event_idx = negotiated & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
    let mut queues = Vec::with_capacity(n);
    for (i, lq) in local.queues.iter().enumerate() {
        let bad = |field: &str, why: String| PersistError::BadValue {
            device: BLK.into(),
            field: format!("{field}[{i}]"),
            why,
        };
        if pending & (1 << i) != 0 {
            // A reset the source had not completed: complete it here.
            queues.push(QueueSnapshot {
                max_size: lq.max_size,
                size: lq.max_size,
                ready: false,
                desc_table: 0,
                avail_ring: 0,
                used_ring: 0,
                next_avail: 0,
                next_used: 0,
                event_idx: false,
            });
            continue;
        }
        // The generic load gives every per-queue array `num_queues` elements;
        // still, never index stream data blindly.
        let at = |field: &str, v: Option<u64>| {
            v.ok_or_else(|| bad(field, format!("missing for queue {i} of {n}")))
        };
        let size = at("queue_size", b.queue_size.get(i).map(|&x| u64::from(x)))? as u16;
        let ready = at("queue_ready", b.queue_ready.get(i).map(|&x| u64::from(x)))? != 0;
        let desc = at("queue_desc", b.queue_desc.get(i).copied())?;
        let avail = at("queue_avail", b.queue_avail.get(i).copied())?;
        let used = at("queue_used", b.queue_used.get(i).copied())?;
        let next_avail = at("next_avail", b.next_avail.get(i).map(|&x| u64::from(x)))? as u16;
        let next_used = at("next_used", b.next_used.get(i).map(|&x| u64::from(x)))? as u16;
        if size == 0 || size > lq.max_size || !size.is_power_of_two() {
            return Err(bad(
                "queue_size",
                format!(
                    "{size} is not a power of two up to queue-size {}",
                    lq.max_size
                ),
            ));
        }
        let addrs = [
            ("queue_desc", desc, 16),
            ("queue_avail", avail, 2),
            ("queue_used", used, 4),
        ];
        for (field, a, align) in addrs {
            if a % align != 0 {
                return Err(bad(field, format!("{a:#x} is not {align}-byte aligned")));
            }
        }
        queues.push(QueueSnapshot {
            max_size: lq.max_size,
            size,
            ready,
            desc_table: desc,
            avail_ring: avail,
            used_ring: used,
            next_avail,
            next_used,
            event_idx: ready && event_idx,
        });
    }
    // `writeback` is new in version 2; older streams mean write-back.
    let writeback = if version >= 2 { b.writeback } else { true };
    Ok(MmioTransportState {
        status: m.status,
        features_select: m.device_features_sel,
        acked_features_select: m.driver_features_sel,
        acked_features: m.driver_features,
        queue_select: m.queue_sel,
        interrupt_status: m.interrupt_status,
        config_generation: u32::from(b.config_generation),
        queues,
        device: VirtioDeviceState::Block(BlockState {
            acked_features: b.features_acked,
            writeback: u8::from(writeback),
        }),
    })
}

impl Persist for MmioTransport {
    fn descriptors(&self) -> Vec<&'static VmStateDesc> {
        vec![&VIRTIO_MMIO, &VIRTIO_BLK_DEVICE]
    }

    /// `queue_reset` (and the other virtio feature properties) as offered by
    /// the device, which was built from them.
    fn gate(&self, property: &str) -> Option<bool> {
        let bit = match property {
            "queue_reset" => VIRTIO_F_RING_RESET,
            "event_idx" => VIRTIO_RING_F_EVENT_IDX,
            "indirect_desc" => super::VIRTIO_RING_F_INDIRECT_DESC,
            _ => return None,
        };
        Some(self.device().avail_features() & (1 << bit) != 0)
    }

    fn save_sections(&self) -> Result<Vec<Section>, PersistError> {
        let s = self.state();
        let VirtioDeviceState::Block(b) = &s.device;
        let gate = |p: &str| self.gate(p);
        let blk = to_blk(&s, b, gate("queue_reset") == Some(true))?;
        Ok(vec![
            persist::encode(&to_mmio(&s), gate)?,
            persist::encode(&blk, gate)?,
        ])
    }

    fn restore_sections(&mut self, sections: &[Section]) -> Result<(), PersistError> {
        let picked = persist::pick(&self.descriptors(), sections)?;
        let gate = |p: &str| self.gate(p);
        let m: VirtioMmioState = persist::decode(picked[0], gate)?;
        let b: VirtioBlkDeviceState = persist::decode(picked[1], gate)?;
        let st = from_sections(&self.state(), &m, &b, picked[1].version_id)?;
        // Queue counts and sizes are checked above; then the features.
        let offered = self.device().avail_features();
        for (section, field, acked) in [
            (MMIO, "driver_features", m.driver_features),
            (BLK, "features_acked", b.features_acked),
        ] {
            if acked & !offered != 0 {
                return Err(PersistError::Mismatch {
                    device: section.into(),
                    field: field.into(),
                    stream: format!("acked features {acked:#x}"),
                    local: format!(
                        "offered {offered:#x} (not offered: {:#x})",
                        acked & !offered
                    ),
                });
            }
        }
        MmioTransport::restore(self, &st).map_err(|e| PersistError::BadValue {
            device: BLK.into(),
            field: "num_queues".into(),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;

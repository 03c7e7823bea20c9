use super::*;
use crate::GuestMemoryMmap;
use crate::bus::BusDevice;
use crate::persist::testing::{hostile_bytes, with_version};
use crate::virtio::block::{Block, BlockConfig};
use crate::virtio::mmio::tests::{rd, wr};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const DESC1: u64 = 0x4000;
const AVAIL1: u64 = 0x5000;
const USED1: u64 = 0x6000;
const F_CONFIG_WCE: u32 = 11;

struct Rig {
    mem: Arc<GuestMemoryMmap>,
    disk: std::path::PathBuf,
}

impl Rig {
    fn new(name: &str) -> Self {
        let disk =
            std::env::temp_dir().join(format!("virtio-persist-{}-{name}.img", std::process::id()));
        std::fs::write(&disk, vec![0x11u8; 8 * 512]).unwrap();
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        Self { mem, disk }
    }

    fn transport(&self, num_queues: u16, queue_reset: bool) -> MmioTransport {
        let cfg = BlockConfig {
            num_queues,
            queue_size: 64,
            discard: true,
            write_zeroes: true,
            config_wce: true,
            report_discard_granularity: true,
            seg_max_adjust: true,
            queue_reset,
            event_idx: true,
            indirect_desc: true,
            read_only: false,
            serial: Some("persist".into()),
        };
        let file = crate::disk::Disk::open(&self.disk, false).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        MmioTransport::new(
            Box::new(Block::new(cfg, file).unwrap()),
            self.mem.clone(),
            &evt,
        )
        .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.disk);
    }
}

/// Everything a driver can read: registers for every queue selection and
/// the config space (reads have no side effects on this transport).
fn guest_view(t: &mut MmioTransport, queues: u32) -> Vec<u32> {
    let sel = rd_sel(t);
    let mut v = Vec::new();
    for q in 0..queues {
        wr(t, 0x030, q);
        for off in (0..0x100).step_by(4) {
            v.push(rd(t, off));
        }
    }
    for sel_f in 0..2 {
        wr(t, 0x014, sel_f);
        v.push(rd(t, 0x010));
    }
    for off in (0x100..0x140).step_by(4) {
        v.push(rd(t, off));
    }
    let mut wb = [0u8];
    t.read(0x100 + 32, &mut wb);
    v.push(u32::from(wb[0]));
    wr(t, 0x030, sel);
    v
}

fn rd_sel(t: &MmioTransport) -> u32 {
    t.state().queue_select
}

fn setup_queue(t: &mut MmioTransport, q: u32, size: u32, desc: u64, avail: u64, used: u64) {
    wr(t, 0x030, q);
    wr(t, 0x038, size);
    wr(t, 0x080, desc as u32);
    wr(t, 0x084, 0);
    wr(t, 0x090, avail as u32);
    wr(t, 0x094, 0);
    wr(t, 0x0a0, used as u32);
    wr(t, 0x0a4, 0);
    wr(t, 0x044, 1);
}

/// Feature negotiation (everything offered, CONFIG_WCE included), two
/// queues set up, DRIVER_OK, write-through selected through the config
/// space, one GET_ID request processed on queue 0.
fn drive(t: &mut MmioTransport, mem: &GuestMemoryMmap) {
    wr(t, 0x070, 1 | 2);
    wr(t, 0x014, 0);
    let lo = rd(t, 0x010);
    wr(t, 0x014, 1);
    let hi = rd(t, 0x010);
    wr(t, 0x024, 0);
    wr(t, 0x020, lo);
    wr(t, 0x024, 1);
    wr(t, 0x020, hi);
    wr(t, 0x070, 1 | 2 | 8);
    assert_eq!(rd(t, 0x070) & 8, 8, "FEATURES_OK accepted");
    setup_queue(t, 0, 16, DESC, AVAIL, USED);
    setup_queue(t, 1, 32, DESC1, AVAIL1, USED1);
    wr(t, 0x070, 1 | 2 | 4 | 8);
    assert_ne!(lo & (1 << F_CONFIG_WCE), 0);
    t.write(0x100 + 32, &[0]);
    submit_get_id(t, mem, 0);
    wr(t, 0x030, 1);
}

/// Puts a GET_ID request (descriptors from `2*n`) into queue 0 and notifies.
fn submit_get_id(t: &mut MmioTransport, mem: &GuestMemoryMmap, n: u16) {
    let hdr = 0x8000u64;
    mem.write_obj(8u32, GuestAddress(hdr)).unwrap(); // VIRTIO_BLK_T_GET_ID
    mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
    mem.write_obj(0u64, GuestAddress(hdr + 8)).unwrap();
    let chain = [(hdr, 16u32, 1u16), (0x9000, 20, 1 | 2), (0xa000, 1, 2)];
    let first = n * 3;
    for (i, &(addr, len, flags)) in chain.iter().enumerate() {
        let d = DESC + u64::from(first + i as u16) * 16;
        mem.write_obj(addr, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        mem.write_obj(first + i as u16 + 1, GuestAddress(d + 14))
            .unwrap();
    }
    mem.write_obj(first, GuestAddress(AVAIL + 4 + u64::from(n) * 2))
        .unwrap();
    mem.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
    wr(t, 0x050, 0);
    let used: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used, n + 1, "request {n} processed");
}

#[test]
fn roundtrip_after_negotiation_queue_setup_and_request() {
    let rig = Rig::new("roundtrip");
    let mut a = rig.transport(2, true);
    drive(&mut a, &rig.mem);
    let before = a.state();
    assert_eq!(before.queues[0].next_used, 1);
    assert_eq!(before.queues[1].size, 32);
    assert_ne!(before.interrupt_status, 0);
    let VirtioDeviceState::Block(bs) = &before.device;
    assert_eq!(bs.writeback, 0);

    let saved = a.save_sections().unwrap();
    assert_eq!(
        saved
            .iter()
            .map(|s| (s.name.as_str(), s.version_id))
            .collect::<Vec<_>>(),
        [("virtio-mmio", 1), ("virtio-blk", 2)]
    );
    let mut b = rig.transport(2, true);
    b.restore_sections(&saved).unwrap();
    assert_eq!(b.state(), before);
    assert_eq!(guest_view(&mut a, 2), guest_view(&mut b, 2));
    assert_eq!(b.save_sections().unwrap(), saved);

    // The restored device goes on where the source stopped.
    submit_get_id(&mut b, &rig.mem, 1);
    assert_eq!(b.state().queues[0].next_avail, 2);
    let mut id = [0u8; 7];
    rig.mem.read_slice(&mut id, GuestAddress(0x9000)).unwrap();
    assert_eq!(&id, b"persist");
}

#[test]
fn versions_outside_the_window_are_refused() {
    let rig = Rig::new("versions");
    let mut a = rig.transport(2, true);
    drive(&mut a, &rig.mem);
    let saved = a.save_sections().unwrap();
    let cases = [
        (1, 3, "3", "2"),
        (1, 0, "0", "1"),
        (0, 2, "2", "1"),
        (0, 0, "0", "1"),
    ];
    for (i, v, incoming, local) in cases {
        let mut s = saved.clone();
        s[i] = with_version(&s[i], v);
        let e = rig.transport(2, true).restore_sections(&s).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PersistError::Wire(_)), "{msg}");
        assert!(msg.contains(&saved[i].name), "{msg}");
        assert!(msg.contains(incoming) && msg.contains(local), "{msg}");
    }
}

#[test]
fn version_1_stream_restores_write_back() {
    let rig = Rig::new("v1");
    let mut a = rig.transport(1, false);
    drive1(&mut a);
    a.write(0x100 + 32, &[0]); // write-through
    let mut saved = a.save_sections().unwrap();
    // v2 ends with `writeback` (0), then the end marker (no subsection here).
    let blk = &mut saved[1];
    assert_eq!(blk.data[blk.data.len() - 2..], [0, 0]);
    let end = blk.data.len() - 2;
    blk.data.remove(end);
    *blk = with_version(blk, 1);
    let mut b = rig.transport(1, false);
    b.restore_sections(&saved).unwrap();
    let VirtioDeviceState::Block(bs) = b.state().device;
    assert_eq!(bs.writeback, 1);
}

/// One queue, negotiation without CONFIG_WCE handling.
fn drive1(t: &mut MmioTransport) {
    wr(t, 0x070, 3);
    wr(t, 0x014, 0);
    let lo = rd(t, 0x010);
    wr(t, 0x020, lo);
    wr(t, 0x070, 3 | 8);
    setup_queue(t, 0, 8, DESC, AVAIL, USED);
    wr(t, 0x070, 3 | 8 | 4);
}

#[test]
fn subsection_gate_off_here_is_refused_missing_is_fine() {
    let rig = Rig::new("gates");
    let mut on = rig.transport(2, true);
    drive(&mut on, &rig.mem);
    let saved_on = on.save_sections().unwrap();
    // queue_reset=off here: the stream's queue-reset subsection is refused.
    let e = rig
        .transport(2, false)
        .restore_sections(&saved_on)
        .unwrap_err();
    assert!(matches!(e, PersistError::GateOff { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("virtio-blk/queue-reset") && msg.contains("queue_reset"),
        "{msg}"
    );

    // A stream without the subsection loads where the gate is on.
    let mut off = rig.transport(2, false);
    drive1(&mut off);
    let saved_off = off.save_sections().unwrap();
    assert!(saved_off[1].data.len() < saved_on[1].data.len());
    rig.transport(2, true).restore_sections(&saved_off).unwrap();

    // An unknown subsection is refused by name.
    let mut s = saved_on.clone();
    let d = &mut s[1].data;
    let at = d.windows(11).position(|w| w == b"queue-reset").unwrap();
    d[at..at + 11].copy_from_slice(b"queue-xxxxx");
    let msg = rig
        .transport(2, true)
        .restore_sections(&s)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("virtio-blk/queue-xxxxx"), "{msg}");
}

#[test]
fn reset_pending_completes_the_reset_and_is_bounded() {
    let rig = Rig::new("reset");
    let mut a = rig.transport(2, true);
    drive(&mut a, &rig.mem);
    let mut m: VirtioMmioState = persist::decode(&a.save_sections().unwrap()[0], |_| None).unwrap();
    let gate = |p: &str| a.gate(p);
    let mut blk: VirtioBlkDeviceState =
        persist::decode(&a.save_sections().unwrap()[1], gate).unwrap();
    blk.sub_queue_reset = Some(VirtioBlkDeviceQueueResetState { reset_pending: 2 });
    let secs = vec![
        persist::encode(&m, gate).unwrap(),
        persist::encode(&blk, gate).unwrap(),
    ];
    let mut b = rig.transport(2, true);
    b.restore_sections(&secs).unwrap();
    let st = b.state();
    assert!(st.queues[0].ready && !st.queues[1].ready);
    assert_eq!(st.queues[1].size, 64);

    blk.sub_queue_reset = Some(VirtioBlkDeviceQueueResetState { reset_pending: 4 });
    let secs = vec![
        persist::encode(&m, gate).unwrap(),
        persist::encode(&blk, gate).unwrap(),
    ];
    let msg = rig
        .transport(2, true)
        .restore_sections(&secs)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("reset_pending"), "{msg}");

    // Transport and device copies of the status must agree.
    blk.sub_queue_reset = None;
    m.status ^= 1;
    let secs = vec![
        persist::encode(&m, gate).unwrap(),
        persist::encode(&blk, gate).unwrap(),
    ];
    let msg = rig
        .transport(2, true)
        .restore_sections(&secs)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`status`"), "{msg}");
}

#[test]
fn local_configuration_mismatches_are_named() {
    let rig = Rig::new("mismatch");
    let mut a = rig.transport(2, true);
    drive(&mut a, &rig.mem);
    let saved = a.save_sections().unwrap();
    let e = rig.transport(1, true).restore_sections(&saved).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("num_queues") && msg.contains('2') && msg.contains('1'),
        "{msg}"
    );

    // A queue size above the local queue-size, an unaligned ring.
    let gate = |p: &str| a.gate(p);
    let m: VirtioMmioState = persist::decode(&saved[0], gate).unwrap();
    let base: VirtioBlkDeviceState = persist::decode(&saved[1], gate).unwrap();
    let mut big = base.clone();
    big.queue_size[1] = 128;
    let mut odd = base.clone();
    odd.queue_used[0] = 0x3002;
    for (b, field) in [(big, "queue_size[1]"), (odd, "queue_used[0]")] {
        let secs = vec![
            persist::encode(&m, gate).unwrap(),
            persist::encode(&b, gate).unwrap(),
        ];
        let msg = rig
            .transport(2, true)
            .restore_sections(&secs)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(field), "{msg}");
    }
    // Sections out of order are fine; a foreign one is refused.
    let rev = [saved[1].clone(), saved[0].clone()];
    rig.transport(2, true).restore_sections(&rev).unwrap();
    let mut foreign = saved.clone();
    foreign.push(Section {
        name: "serial".into(),
        version_id: 3,
        data: vec![],
    });
    let msg = rig
        .transport(2, true)
        .restore_sections(&foreign)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`serial`"), "{msg}");
}

#[test]
fn hostile_bytes_never_panic() {
    let rig = Rig::new("hostile");
    let mut a = rig.transport(2, true);
    drive(&mut a, &rig.mem);
    let saved = a.save_sections().unwrap();
    let (t, c) = hostile_bytes(&saved, || rig.transport(2, true));
    assert_eq!(t, saved.iter().map(|s| s.data.len()).sum::<usize>());
    assert!(c > 0);
}

/// `VIRTIO_BLK_F_RO`: acked by a driver of a read-only disk.
const F_RO_BIT: u64 = 1 << 5;

#[test]
fn acked_features_must_be_offered_here() {
    let rig = Rig::new("acked");
    let mut a = rig.transport(2, true);
    drive(&mut a, &rig.mem);
    let saved = a.save_sections().unwrap();
    let gate = |p: &str| a.gate(p);
    let m: VirtioMmioState = persist::decode(&saved[0], gate).unwrap();
    let b: VirtioBlkDeviceState = persist::decode(&saved[1], gate).unwrap();
    // A source disk that was read-only: its driver acked F_RO, which this
    // read-write disk does not offer.
    let mut m_ro = m.clone();
    m_ro.driver_features |= F_RO_BIT;
    let mut b_ro = b.clone();
    b_ro.features_acked |= F_RO_BIT;
    for (mm, bb, field) in [
        (&m_ro, &b, "virtio-mmio: field `driver_features`"),
        (&m, &b_ro, "virtio-blk: field `features_acked`"),
    ] {
        let secs = vec![
            persist::encode(mm, gate).unwrap(),
            persist::encode(bb, gate).unwrap(),
        ];
        let mut dst = rig.transport(2, true);
        let before = dst.state();
        let msg = dst.restore_sections(&secs).unwrap_err().to_string();
        assert!(
            msg.contains(field) && msg.contains("not offered: 0x20"),
            "{msg}"
        );
        assert_eq!(dst.state(), before, "a refused load changes nothing");
    }
}

#[test]
fn a_disk_reports_its_backend_facts() {
    let rig = Rig::new("facts");
    let t = rig.transport(1, true);
    let facts = t.device().backend_facts();
    assert_eq!(
        facts,
        [
            ("capacity_sectors", "8".to_string()),
            ("logical_block_size", "512".to_string()),
            ("read_only", "off".to_string()),
            ("serial", "persist".to_string()),
        ]
    );
}

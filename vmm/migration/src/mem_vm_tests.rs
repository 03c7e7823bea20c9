//! The drivers over real vm-memory guest RAM (two regions, with a hole),
//! dirtied through vm-memory so its per-region bitmaps are the dirty log:
//! the path the KVM runtime takes, minus KVM.

use super::ab::check_ab;
use super::bitmap::DirtyBitmap;
use super::fake::{FakeSource, GuestSpec};
use super::guest_ram::{self, GuestMemoryMmap, RamLayout, take_vmm_dirty};
use super::incoming;
use super::manifest::Manifest;
use super::precopy::{self, CancelToken, Outcome, Params};
use super::stream::{Limits, Section, VcpuRecord};
use super::transport::{Incoming, Outgoing};
use super::vm::{MigrationSource, MigrationTarget, VmError};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress};

const PAGE: u64 = 4096;

fn memory() -> GuestMemoryMmap {
    let ranges = [
        (GuestAddress(0), 300 * PAGE as usize),
        (GuestAddress(1 << 22), 212 * PAGE as usize),
    ];
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

struct MemVm {
    mem: Arc<GuestMemoryMmap>,
    layout: RamLayout,
    paused: Arc<Mutex<bool>>,
    exit: Arc<AtomicBool>,
    guest: Option<std::thread::JoinHandle<()>>,
}

impl MemVm {
    /// Starts the `ab` workload over every page, through vm-memory.
    fn start() -> Self {
        let mem = Arc::new(memory());
        let layout = RamLayout::of(&mem);
        let paused = Arc::new(Mutex::new(false));
        let exit = Arc::new(AtomicBool::new(false));
        let (m, l, p, e) = (mem.clone(), layout.clone(), paused.clone(), exit.clone());
        let guest = std::thread::spawn(move || {
            while !e.load(Ordering::SeqCst) {
                for page in 0..l.pages() {
                    let Ok(gate) = p.lock() else { return };
                    if *gate {
                        drop(gate);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        break;
                    }
                    let (addr, _) = l.pieces(page, 1).unwrap()[0];
                    let v: u8 = m.read_obj(addr).unwrap();
                    m.write_obj(v.wrapping_add(1), addr).unwrap();
                }
            }
        });
        Self {
            mem,
            layout,
            paused,
            exit,
            guest: Some(guest),
        }
    }

    fn first_bytes(mem: &GuestMemoryMmap, layout: &RamLayout) -> Vec<u8> {
        (0..layout.pages())
            .map(|p| mem.read_obj(layout.pieces(p, 1).unwrap()[0].0).unwrap())
            .collect()
    }
}

impl Drop for MemVm {
    fn drop(&mut self) {
        self.exit.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.paused.lock() {
            *g = false;
        }
        if let Some(t) = self.guest.take() {
            let _ = t.join();
        }
    }
}

impl MigrationSource for MemVm {
    fn manifest(&mut self) -> Result<Manifest, VmError> {
        let mut m = FakeSource::new(GuestSpec {
            ab: false,
            ..GuestSpec::ab(1)
        })
        .manifest()?;
        m.ram_size = self.layout.ram_size();
        Ok(m)
    }
    fn read_pages(&mut self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        guest_ram::read_pages(&self.mem, &self.layout, first_page, buf)
    }
    fn start_dirty_tracking(&mut self) -> Result<(), VmError> {
        let _ = take_vmm_dirty(&self.mem);
        Ok(())
    }
    fn take_dirty_bitmap(&mut self) -> Result<DirtyBitmap, VmError> {
        Ok(self.layout.bitmap(&take_vmm_dirty(&self.mem)))
    }
    fn stop_dirty_tracking(&mut self) -> Result<(), VmError> {
        Ok(())
    }
    fn set_throttle(&mut self, _: u8) -> Result<(), VmError> {
        Ok(())
    }
    fn pause(&mut self) -> Result<(), VmError> {
        *self.paused.lock().map_err(VmError::new)? = true;
        Ok(())
    }
    fn resume(&mut self) -> Result<(), VmError> {
        *self.paused.lock().map_err(VmError::new)? = false;
        Ok(())
    }
    fn save_devices(&mut self) -> Result<Vec<Section>, VmError> {
        FakeSource::new(GuestSpec {
            ab: false,
            ..GuestSpec::ab(1)
        })
        .save_devices()
    }
    fn save_vcpus(&mut self) -> Result<Vec<VcpuRecord>, VmError> {
        FakeSource::new(GuestSpec {
            ab: false,
            ..GuestSpec::ab(1)
        })
        .save_vcpus()
    }
}

struct MemTarget {
    mem: GuestMemoryMmap,
    layout: RamLayout,
    started: bool,
}

impl MigrationTarget for MemTarget {
    fn validate(&mut self, m: &Manifest) -> Result<(), VmError> {
        if m.ram_size != self.layout.ram_size() {
            return Err(VmError::new("RAM size differs"));
        }
        Ok(())
    }
    fn write_pages(&mut self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        guest_ram::write_pages(&self.mem, &self.layout, first_page, data)
    }
    fn write_zero_pages(&mut self, first_page: u64, count: u64) -> Result<(), VmError> {
        guest_ram::write_zero_pages(&self.mem, &self.layout, first_page, count)
    }
    fn load_devices(&mut self, _: Vec<Section>) -> Result<(), VmError> {
        Ok(())
    }
    fn load_vcpus(&mut self, _: Vec<VcpuRecord>) -> Result<(), VmError> {
        Ok(())
    }
    fn start(&mut self) -> Result<(), VmError> {
        self.started = true;
        Ok(())
    }
}

#[test]
fn ab_over_vm_memory_regions_with_a_hole() {
    let mut src = MemVm::start();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (a, b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || {
        let mem = memory();
        let layout = RamLayout::of(&mem);
        // Stale data a zero run must clear.
        mem.write_slice(&[0x55; 4096 * 4], GuestAddress(0)).unwrap();
        let mut t = MemTarget {
            mem,
            layout,
            started: false,
        };
        let Incoming { reader, mut back } = Incoming::unix(b).unwrap();
        let back = back.as_mut().map(|w| w as &mut dyn std::io::Write);
        let r = incoming::receive(reader, back, &mut t, Limits::default());
        (t, r)
    });
    let sum = precopy::migrate(
        &mut src,
        Outgoing::unix(a).unwrap(),
        &Params::default(),
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap();
    let (t, r) = dest.join().unwrap();
    r.unwrap();
    assert!(t.started && sum.outcome == Outcome::Handover);
    let dst = MemVm::first_bytes(&t.mem, &t.layout);
    let src_bytes = MemVm::first_bytes(&src.mem, &src.layout);
    assert_eq!(
        dst, src_bytes,
        "destination differs from the stopped source"
    );
    if let Err(e) = check_ab(dst.iter().copied()) {
        panic!("inconsistent destination memory: {e}");
    }
    assert!(dst.iter().any(|b| *b != 0), "the workload ran");
}

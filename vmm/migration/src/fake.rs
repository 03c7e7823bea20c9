//! An in-memory VM for the migration tests: a "guest" thread runs the `ab`
//! workload over fake RAM, with KVM-like dirty logging, pause and throttle.

use super::PAGE_SIZE;
use super::bitmap::DirtyBitmap;
use super::compat_check::{self, IncomingConfig, LocalRelease, SectionSupport};
use super::manifest::{GuestConfig, Manifest, PropValue, SectionInfo};
use super::stream::{Section, VcpuRecord};
use super::vm::{MigrationSource, MigrationTarget, RamAccess, VmError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Pages before the `ab` range hold fixed non-zero data (the "guest image").
pub const IMAGE_PAGES: u64 = 8;

struct Shared {
    ram: Vec<AtomicU8>,
    dirty: Vec<AtomicU64>,
    tracking: AtomicBool,
    gate: Mutex<Gate>,
    cv: Condvar,
    rounds: AtomicU64,
}

impl Shared {
    fn read(&self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        let start = first_page as usize * PAGE_SIZE;
        let src = self
            .ram
            .get(start..start + buf.len())
            .ok_or_else(|| VmError::new("read past RAM"))?;
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.load(Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The source's RAM as its channel threads read it.
impl RamAccess for Shared {
    fn read_pages(&self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        self.read(first_page, buf)
    }

    fn write_pages(&self, _: u64, _: &[u8]) -> Result<(), VmError> {
        Err(VmError::new("the source's RAM is read-only here"))
    }

    fn write_zero_pages(&self, _: u64, _: u64) -> Result<(), VmError> {
        Err(VmError::new("the source's RAM is read-only here"))
    }
}

/// The destination's RAM while channel threads write it.
#[derive(Default)]
pub struct ChannelRam(Mutex<Vec<u8>>);

impl RamAccess for ChannelRam {
    fn read_pages(&self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        let ram = self.0.lock().map_err(|_| VmError::new("poisoned"))?;
        let at = first_page as usize * PAGE_SIZE;
        let src = ram
            .get(at..at + buf.len())
            .ok_or_else(|| VmError::new("read past RAM"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_pages(&self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        let mut ram = self.0.lock().map_err(|_| VmError::new("poisoned"))?;
        let at = first_page as usize * PAGE_SIZE;
        ram.get_mut(at..at + data.len())
            .ok_or_else(|| VmError::new("write past RAM"))?
            .copy_from_slice(data);
        Ok(())
    }

    fn write_zero_pages(&self, first_page: u64, count: u64) -> Result<(), VmError> {
        let mut ram = self.0.lock().map_err(|_| VmError::new("poisoned"))?;
        let at = first_page as usize * PAGE_SIZE;
        ram.get_mut(at..at + count as usize * PAGE_SIZE)
            .ok_or_else(|| VmError::new("write past RAM"))?
            .fill(0);
        Ok(())
    }
}

struct Gate {
    paused: bool,
    exit: bool,
    throttle: u8,
}

/// How the fake guest behaves.
#[derive(Clone)]
pub struct GuestSpec {
    pub pages: u64,
    /// Run the `ab` workload over pages `IMAGE_PAGES..pages`.
    pub ab: bool,
    /// Sleep this long after every 64 page increments (the dirty rate).
    pub pace: Duration,
    /// Whether the throttle slows the guest down.
    pub obeys_throttle: bool,
    /// Instead of the real dirty log, report these many dirty pages per call.
    pub script: Option<Vec<u64>>,
}

impl GuestSpec {
    pub fn ab(pages: u64) -> Self {
        Self {
            pages,
            ab: true,
            pace: Duration::from_micros(50),
            obeys_throttle: true,
            script: None,
        }
    }
}

pub struct FakeSource {
    s: Arc<Shared>,
    spec: GuestSpec,
    script: Option<VecDeque<u64>>,
    guest: Option<JoinHandle<()>>,
    pub machine_type: String,
    /// Save one vCPU fewer than the manifest announces (a runtime bug).
    pub lose_a_vcpu: bool,
    pub pauses: u32,
    pub resumes: u32,
}

impl FakeSource {
    pub fn new(spec: GuestSpec) -> Self {
        let bytes = (spec.pages as usize) * PAGE_SIZE;
        let ram: Vec<AtomicU8> = (0..bytes)
            .map(|i| {
                let page = (i / PAGE_SIZE) as u64;
                AtomicU8::new(if page < IMAGE_PAGES {
                    (i % 251) as u8 | 1
                } else {
                    0
                })
            })
            .collect();
        let s = Arc::new(Shared {
            ram,
            dirty: (0..spec.pages.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            tracking: AtomicBool::new(false),
            gate: Mutex::new(Gate {
                paused: false,
                exit: false,
                throttle: 0,
            }),
            cv: Condvar::new(),
            rounds: AtomicU64::new(0),
        });
        let guest = spec.ab.then(|| {
            let (s, spec) = (s.clone(), spec.clone());
            std::thread::spawn(move || guest_loop(&s, &spec))
        });
        Self {
            s,
            script: spec.script.clone().map(VecDeque::from),
            spec,
            guest,
            machine_type: "pc-8.2".into(),
            lose_a_vcpu: false,
            pauses: 0,
            resumes: 0,
        }
    }

    /// Completed `ab` rounds (the workload keeps counting while this grows).
    pub fn rounds(&self) -> u64 {
        self.s.rounds.load(Ordering::SeqCst)
    }

    pub fn is_paused(&self) -> bool {
        self.s.gate.lock().map(|g| g.paused).unwrap_or(true)
    }

    pub fn throttle(&self) -> u8 {
        self.s.gate.lock().map(|g| g.throttle).unwrap_or(0)
    }

    /// A copy of RAM (only meaningful while paused).
    pub fn ram(&self) -> Vec<u8> {
        self.s
            .ram
            .iter()
            .map(|b| b.load(Ordering::SeqCst))
            .collect()
    }

    /// Waits until the workload completed `n` more rounds (or panics after 20 s).
    pub fn wait_rounds(&self, n: u64) {
        let target = self.rounds() + n;
        for _ in 0..2000 {
            if self.rounds() >= target {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the guest stopped counting");
    }
}

fn guest_loop(s: &Shared, spec: &GuestSpec) {
    let mut n = 0u64;
    loop {
        for page in IMAGE_PAGES..spec.pages {
            let throttle = {
                let Ok(mut g) = s.gate.lock() else { return };
                while g.paused && !g.exit {
                    let Ok(ng) = s.cv.wait(g) else { return };
                    g = ng;
                }
                if g.exit {
                    return;
                }
                s.ram[page as usize * PAGE_SIZE].fetch_add(1, Ordering::SeqCst);
                if s.tracking.load(Ordering::SeqCst) {
                    s.dirty[(page / 64) as usize].fetch_or(1 << (page % 64), Ordering::SeqCst);
                }
                g.throttle
            };
            n += 1;
            if n.is_multiple_of(64) {
                // Throttled at t%, the guest runs (100 - t)% of the time; squared
                // so that a high throttle really starves it.
                let t = if spec.obeys_throttle {
                    u32::from(throttle.min(99))
                } else {
                    0
                };
                std::thread::sleep(spec.pace * (100 / (100 - t)).pow(2));
            }
        }
        s.rounds.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for FakeSource {
    fn drop(&mut self) {
        if let Ok(mut g) = self.s.gate.lock() {
            g.exit = true;
        }
        self.s.cv.notify_all();
        if let Some(t) = self.guest.take() {
            let _ = t.join();
        }
    }
}

pub fn config(machine_type: &str) -> GuestConfig {
    let mut c = GuestConfig::new();
    let q = if machine_type == "pc-5.1" { "1" } else { "2" };
    c.entry("virtio-blk-pci".into())
        .or_default()
        .insert("num-queues".into(), PropValue::new(q, "default"));
    c
}

impl MigrationSource for FakeSource {
    fn manifest(&mut self) -> Result<Manifest, VmError> {
        Ok(Manifest {
            format_version: 1,
            devices: Vec::new(),
            cpu: None,
            tsc_khz: None,
            cpuid: Vec::new(),
            channels: 0,
            compression: None,
            session: 0,
            source_release: "test".into(),
            machine_type: self.machine_type.clone(),
            ram_size: self.spec.pages * PAGE_SIZE as u64,
            vcpus: 2,
            config: config(&self.machine_type),
            sections: vec![
                SectionInfo {
                    name: "serial".into(),
                    version_id: 1,
                },
                SectionInfo {
                    name: "virtio-blk/0".into(),
                    version_id: 2,
                },
            ],
        })
    }

    fn read_pages(&mut self, first_page: u64, buf: &mut [u8]) -> Result<(), VmError> {
        self.s.read(first_page, buf)
    }

    fn ram(&self) -> Option<Arc<dyn RamAccess>> {
        Some(self.s.clone())
    }

    fn start_dirty_tracking(&mut self) -> Result<(), VmError> {
        self.s.tracking.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn take_dirty_bitmap(&mut self) -> Result<DirtyBitmap, VmError> {
        let pages = self.spec.pages;
        let words = self
            .s
            .dirty
            .iter()
            .map(|w| w.swap(0, Ordering::SeqCst))
            .collect();
        let mut map = DirtyBitmap::from_words(pages, words);
        if let Some(script) = self.script.as_mut() {
            map = DirtyBitmap::new(pages);
            for p in 0..script.pop_front().unwrap_or(0).min(pages) {
                map.set(p);
            }
        }
        Ok(map)
    }

    fn stop_dirty_tracking(&mut self) -> Result<(), VmError> {
        self.s.tracking.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn set_throttle(&mut self, percent: u8) -> Result<(), VmError> {
        self.s.gate.lock().map_err(VmError::new)?.throttle = percent;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), VmError> {
        self.pauses += 1;
        self.s.gate.lock().map_err(VmError::new)?.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.resumes += 1;
        self.s.gate.lock().map_err(VmError::new)?.paused = false;
        self.s.cv.notify_all();
        Ok(())
    }

    fn save_devices(&mut self) -> Result<Vec<Section>, VmError> {
        Ok(vec![
            Section {
                name: "serial".into(),
                version_id: 1,
                data: b"lsr=0x60".to_vec(),
            },
            Section {
                name: "virtio-blk/0".into(),
                version_id: 2,
                data: vec![7; 300],
            },
        ])
    }

    fn save_vcpus(&mut self) -> Result<Vec<VcpuRecord>, VmError> {
        let n = if self.lose_a_vcpu { 1 } else { 2 };
        Ok((0..n)
            .map(|i| VcpuRecord {
                index: i,
                data: vec![i as u8; 1000],
            })
            .collect())
    }
}

/// Where a fake destination fails on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailAt {
    #[default]
    Nowhere,
    /// `write_pages` fails after this many pages.
    Pages(u64),
    LoadVcpus,
}

#[derive(Default)]
pub struct FakeTarget {
    pub ram: Vec<u8>,
    pub local_machine: Option<String>,
    pub fail: FailAt,
    pub written: u64,
    pub sections: Vec<Section>,
    pub vcpus: Vec<VcpuRecord>,
    pub started: bool,
    pub manifest: Option<Manifest>,
    /// RAM the channel threads write (a stream with data channels); moved
    /// into `ram` when the guest starts.
    pub channel_ram: Option<Arc<ChannelRam>>,
}

impl FakeTarget {
    pub fn local() -> LocalRelease {
        LocalRelease {
            release: "test".into(),
            machine_types: ["pc-5.1".to_string(), "pc-8.2".to_string()].into(),
            sections: [
                (
                    "serial".to_string(),
                    SectionSupport {
                        version_id: 1,
                        minimum_version_id: 1,
                    },
                ),
                (
                    "virtio-blk".to_string(),
                    SectionSupport {
                        version_id: 2,
                        minimum_version_id: 2,
                    },
                ),
            ]
            .into(),
        }
    }
}

impl MigrationTarget for FakeTarget {
    fn validate(&mut self, m: &Manifest) -> Result<(), VmError> {
        let resolve = |t: &str| Ok(config(t));
        let how = match &self.local_machine {
            None => IncomingConfig::Adopt,
            Some(t) => IncomingConfig::Explicit {
                machine_type: Some(t.clone()),
                resolve: &resolve,
            },
        };
        compat_check::check(m, &Self::local(), &how).map_err(VmError::new)?;
        self.ram = vec![0xAA; m.ram_size as usize];
        if m.channels > 0 {
            let ram = ChannelRam(Mutex::new(std::mem::take(&mut self.ram)));
            self.channel_ram = Some(Arc::new(ram));
        }
        self.manifest = Some(m.clone());
        Ok(())
    }

    fn ram(&self) -> Option<Arc<dyn RamAccess>> {
        self.channel_ram.clone().map(|r| r as Arc<dyn RamAccess>)
    }

    fn write_pages(&mut self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        self.written += (data.len() / PAGE_SIZE) as u64;
        if let FailAt::Pages(n) = self.fail
            && self.written > n
        {
            return Err(VmError::new("out of memory (on purpose)"));
        }
        let at = first_page as usize * PAGE_SIZE;
        self.ram[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn write_zero_pages(&mut self, first_page: u64, count: u64) -> Result<(), VmError> {
        let at = first_page as usize * PAGE_SIZE;
        self.ram[at..at + count as usize * PAGE_SIZE].fill(0);
        Ok(())
    }

    fn load_devices(&mut self, sections: Vec<Section>) -> Result<(), VmError> {
        self.sections = sections;
        Ok(())
    }

    fn load_vcpus(&mut self, vcpus: Vec<VcpuRecord>) -> Result<(), VmError> {
        if self.fail == FailAt::LoadVcpus {
            return Err(VmError::new("KVM_SET_MSRS failed (on purpose)"));
        }
        self.vcpus = vcpus;
        Ok(())
    }

    fn start(&mut self) -> Result<(), VmError> {
        if let Some(r) = self.channel_ram.take() {
            self.ram = std::mem::take(&mut *r.0.lock().map_err(|_| VmError::new("poisoned"))?);
        }
        self.started = true;
        Ok(())
    }
}

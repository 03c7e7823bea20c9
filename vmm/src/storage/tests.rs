//! The mirror job against an in-memory target while a writer thread plays
//! the guest; the NBD server and client against each other over a socket.

use super::mirror::{Mirror, Status, Target};
use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn image(tag: &str, len: u64) -> PathBuf {
    let p = std::env::temp_dir().join(format!("storage-{tag}-{}.img", std::process::id()));
    let f = std::fs::File::create(&p).expect("create");
    f.set_len(len).expect("len");
    p
}

/// A target in memory that can be told to fail after some writes.
#[derive(Clone)]
struct MemTarget {
    data: Arc<Mutex<Vec<u8>>>,
    fail_after: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

impl MemTarget {
    fn new(len: u64) -> Self {
        Self {
            data: Arc::new(Mutex::new(vec![0xa5; len as usize])),
            fail_after: Arc::new(AtomicU64::new(u64::MAX)),
            writes: Arc::default(),
        }
    }
    fn count(&self) -> Result<(), String> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_after.load(Ordering::SeqCst) {
            return Err("connection reset by peer".into());
        }
        Ok(())
    }
}

impl Target for MemTarget {
    fn size(&self) -> u64 {
        lock(&self.data).len() as u64
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.count()?;
        lock(&self.data)[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), String> {
        self.count()?;
        lock(&self.data)[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn reads_zero(&mut self, offset: u64, len: u64) -> Result<bool, String> {
        Ok(lock(&self.data)[offset as usize..(offset + len) as usize]
            .iter()
            .all(|&b| b == 0))
    }
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

type Events = Arc<Mutex<Vec<(String, Value)>>>;

fn recorder() -> (Emit, Events) {
    let ev: Events = Arc::default();
    let e = ev.clone();
    (
        Arc::new(move |n: &str, d| lock(&e).push((n.to_string(), d))),
        ev,
    )
}

fn wait_event(ev: &Events, name: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Some((_, d)) = lock(ev).iter().find(|(n, _)| n == name) {
            return d.clone();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no {name}: {:?}", lock(ev));
}

/// A "guest" writing 4 KiB blocks with a counter at pseudo-random places
/// until told to stop.
fn writer(disk: Arc<Disk>, len: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % (len / 4096)) * 4096;
            disk.write_at(&[(n % 251) as u8 + 1; 4096], off)
                .expect("guest write");
            n += 1;
        }
        n
    })
}

#[test]
fn the_target_equals_the_disk_after_ready_while_the_guest_writes() {
    let p = image("mirror", 32 * MIB);
    let disk = Disk::open(&p, false).expect("open");
    disk.write_at(&[7; 65536], 3 * MIB).expect("data");
    let t = MemTarget::new(32 * MIB);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(disk.clone(), 32 * MIB, stop.clone());
    let (emit, ev) = recorder();
    let m = Mirror::start(
        "m0".into(),
        "d0".into(),
        disk.clone(),
        Box::new(t.clone()),
        emit,
    )
    .expect("start");
    let ready = wait_event(&ev, "BLOCK_JOB_READY");
    assert_eq!(ready["len"], 32 * MIB);
    assert_eq!(m.status(), Status::Ready);
    // Writes after READY go through before they complete.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let writes = w.join().expect("writer");
    assert!(writes > 0);
    m.cancel(false);
    let done = wait_event(&ev, "BLOCK_JOB_COMPLETED");
    assert!(done.get("error").is_none(), "{done}");
    assert!(lock(&ev).iter().all(|(n, _)| n != "BLOCK_JOB_CANCELLED"));
    let mut all = vec![0u8; 32 * MIB as usize];
    disk.read_at(&mut all, 0).expect("read");
    let got = lock(&t.data).clone();
    let first = got.iter().zip(&all).position(|(a, b)| a != b);
    assert!(
        first.is_none(),
        "target differs from the disk at {first:?}: {:?} vs {:?}",
        first.map(|i| got[i]),
        first.map(|i| all[i])
    );
    assert!(!disk.has_hook(), "the job let go of the disk");
    drop(disk);
    let _ = std::fs::remove_file(p);
}

#[test]
fn a_failing_target_fails_the_job_with_the_reason_and_the_disk_is_untouched() {
    let p = image("mirror-fail", 8 * MIB);
    let disk = Disk::open(&p, false).expect("open");
    for m in 0..8 {
        disk.write_at(&[m as u8 + 1; 4096], m * MIB).expect("data");
    }
    let t = MemTarget::new(8 * MIB);
    t.fail_after.store(3, Ordering::SeqCst);
    let (emit, ev) = recorder();
    let _m =
        Mirror::start("m1".into(), "d0".into(), disk.clone(), Box::new(t), emit).expect("start");
    let err = wait_event(&ev, "BLOCK_JOB_ERROR");
    assert_eq!(err["operation"], "write");
    let done = wait_event(&ev, "BLOCK_JOB_COMPLETED");
    assert!(
        done["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection reset")),
        "{done}"
    );
    // The guest's disk works and keeps what it had.
    disk.write_at(&[9; 512], 0)
        .expect("write after the failure");
    let mut b = [0u8; 4096];
    disk.read_at(&mut b, MIB).expect("read");
    assert_eq!(b, [2; 4096]);
    assert!(!disk.has_hook());
    drop(disk);
    let _ = std::fs::remove_file(p);
}

#[test]
fn wrong_size_busy_disk_and_cancel_before_ready() {
    let p = image("mirror-size", 4 * MIB);
    let disk = Disk::open(&p, false).expect("open");
    let (emit, ev) = recorder();
    let e = Mirror::start(
        "m".into(),
        "d0".into(),
        disk.clone(),
        Box::new(MemTarget::new(MIB)),
        emit.clone(),
    )
    .unwrap_err();
    assert!(
        e.contains("different sizes") && e.contains("4194304") && e.contains("1048576"),
        "{e}"
    );
    // A slow target: cancel before READY ends CANCELLED.
    struct Slow(MemTarget);
    impl Target for Slow {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn write(&mut self, o: u64, d: &[u8]) -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.write(o, d)
        }
        fn write_zeroes(&mut self, o: u64, l: u64) -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.write_zeroes(o, l)
        }
        fn reads_zero(&mut self, _: u64, _: u64) -> Result<bool, String> {
            Ok(false)
        }
        fn flush(&mut self) -> Result<(), String> {
            Ok(())
        }
    }
    let m = Mirror::start(
        "m".into(),
        "d0".into(),
        disk.clone(),
        Box::new(Slow(MemTarget::new(4 * MIB))),
        emit.clone(),
    )
    .expect("start");
    let busy = Mirror::start(
        "m2".into(),
        "d0".into(),
        disk.clone(),
        Box::new(MemTarget::new(4 * MIB)),
        emit,
    )
    .unwrap_err();
    assert!(busy.contains("busy"), "{busy}");
    assert!(
        m.complete()
            .unwrap_err()
            .contains("cannot accept command verb 'complete'")
    );
    m.cancel(false);
    wait_event(&ev, "BLOCK_JOB_CANCELLED");
    assert!(!disk.has_hook());
    drop(disk);
    let _ = std::fs::remove_file(p);
}

//! The drivers end to end over real sockets, with the fake VM.

use super::PAGE_SIZE;
use super::ab::check_ab_image;
use super::fake::{FailAt, FakeSource, FakeTarget, GuestSpec, IMAGE_PAGES};
use super::incoming::{self, IncomingError, IncomingSummary};
use super::precopy::{self, CancelToken, MigrateError, Outcome, Params, Progress, Summary};
use super::stream::Limits;
use super::transport::{self, Incoming, Outgoing, Uri};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

type DestResult = (FakeTarget, Result<IncomingSummary, IncomingError>);

fn destination(mut t: FakeTarget, conn: Incoming) -> thread::JoinHandle<DestResult> {
    thread::spawn(move || {
        let Incoming { reader, mut back } = conn;
        let r = incoming::receive(
            reader,
            back.as_mut().map(|b| b as &mut dyn std::io::Write),
            &mut t,
            Limits::default(),
        );
        (t, r)
    })
}

fn migrate_pair(
    src: &mut FakeSource,
    target: FakeTarget,
    params: &Params,
) -> (Result<Summary, MigrateError>, DestResult, Vec<Progress>) {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = destination(target, Incoming::unix(b).unwrap());
    let mut events = Vec::new();
    let r = precopy::migrate(
        src,
        Outgoing::unix(a).unwrap(),
        params,
        &mut |p| events.push(p.clone()),
        &CancelToken::default(),
    );
    (r, dest.join().unwrap(), events)
}

fn assert_ab_consistent(ram: &[u8], pages: u64) {
    let range = &ram[IMAGE_PAGES as usize * PAGE_SIZE..pages as usize * PAGE_SIZE];
    if let Err(e) = check_ab_image(range, PAGE_SIZE) {
        panic!("destination memory is inconsistent: {e}");
    }
}

#[test]
fn ab_workload_migrates_consistently_over_a_socket_pair() {
    let pages = 2048;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    src.wait_rounds(1);
    let (r, (t, dr), events) = migrate_pair(&mut src, FakeTarget::default(), &Params::default());
    let sum = r.unwrap();
    let dsum = dr.unwrap();
    assert_eq!(sum.outcome, Outcome::Handover);
    assert!(t.started);
    assert!(
        src.is_paused(),
        "the source keeps its copy stopped after handover"
    );
    assert_eq!(src.throttle(), 0);
    assert_ab_consistent(&t.ram, pages);
    // Every byte equals the source's stopped image.
    assert!(
        t.ram == src.ram(),
        "destination RAM differs from the stopped source"
    );
    assert_eq!(t.sections.len(), 2);
    assert_eq!(
        t.vcpus.iter().map(|v| v.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(sum.bytes, dsum.bytes);
    assert_eq!(sum.pages_normal, dsum.pages_normal);
    assert_eq!(sum.pages_zero, dsum.pages_zero);
    assert!(sum.pages_normal + sum.pages_zero >= pages);
    assert!(sum.iterations >= 1 && sum.downtime_ms <= sum.total_ms);
    assert!(!events.is_empty());
}

#[test]
fn ab_workload_migrates_over_tcp() {
    let pages = 1024;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    let l = transport::listen(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
    let uri = l.uri().unwrap();
    let dest = thread::spawn(move || {
        let mut t = FakeTarget::default();
        let r = incoming::receive_on(&l, &mut t);
        (t, r)
    });
    let sum = precopy::migrate_to(
        &mut src,
        &uri,
        &Params::default(),
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap();
    let (t, dr) = dest.join().unwrap();
    dr.unwrap();
    assert_eq!(sum.outcome, Outcome::Handover);
    assert_ab_consistent(&t.ram, pages);
}

#[test]
fn snapshot_to_file_and_restore() {
    let pages = 512;
    let dir = std::env::temp_dir().join(format!("vmm-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uri = Uri::File(dir.join("snap.bin"));
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    let sum = precopy::migrate_to(
        &mut src,
        &uri,
        &Params::default(),
        &mut |_| {},
        &CancelToken::default(),
    )
    .unwrap();
    assert_eq!(sum.outcome, Outcome::Snapshot);
    assert!(src.is_paused(), "a snapshot leaves the source stopped");
    let mut t = FakeTarget::default();
    let dr = incoming::receive_from(&uri, &mut t);
    assert_eq!(dr.unwrap().bytes, sum.bytes);
    let sr = src.ram();
    if let Some(i) = (0..sr.len()).find(|&i| sr[i] != t.ram[i]) {
        panic!(
            "byte {i} (page {}) differs: src {} dst {}",
            i / PAGE_SIZE,
            sr[i],
            t.ram[i]
        );
    }
    assert_ab_consistent(&t.ram, pages);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn refused_manifest_moves_no_ram_and_names_both_machine_types() {
    let mut src = FakeSource::new(GuestSpec::ab(256));
    src.machine_type = "pc-5.1".into();
    let target = FakeTarget {
        local_machine: Some("pc-8.2".into()),
        ..Default::default()
    };
    let (r, (t, dr), events) = migrate_pair(&mut src, target, &Params::default());
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("refused") && msg.contains("pc-5.1") && msg.contains("pc-8.2"),
        "{msg}"
    );
    assert!(matches!(dr, Err(IncomingError::Refused(_))));
    assert!(t.ram.is_empty() && !t.started);
    assert!(events.is_empty(), "no RAM iteration may start");
    assert_eq!(src.pauses, 0);
    src.wait_rounds(1);
}

#[test]
fn destination_failing_mid_stream_leaves_the_source_running_and_retryable() {
    let pages = 1024;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    let target = FakeTarget {
        fail: FailAt::Pages(100),
        ..Default::default()
    };
    let (r, (t, dr), _) = migrate_pair(&mut src, target, &Params::default());
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("out of memory (on purpose)"), "{msg}");
    assert!(matches!(dr, Err(IncomingError::Load(_))));
    assert!(!t.started && !src.is_paused());
    src.wait_rounds(1);
    // And it can migrate again.
    let (r, (t, dr), _) = migrate_pair(&mut src, FakeTarget::default(), &Params::default());
    r.unwrap();
    dr.unwrap();
    assert_ab_consistent(&t.ram, pages);
}

#[test]
fn destination_killed_mid_stream_repeatedly() {
    let pages = 1024;
    let mut src = FakeSource::new(GuestSpec::ab(pages));
    for cut in [1u64, 50, 4096, 100_000, 1_000_000, 3_000_000, 4_200_000] {
        let (a, mut b) = UnixStream::pair().unwrap();
        // The "destination" reads `cut` bytes and dies without a word.
        let dest = thread::spawn(move || {
            let mut sink = vec![0; cut as usize];
            let _ = b.read_exact(&mut sink);
        });
        let params = Params {
            accept_timeout: Duration::from_secs(1),
            ..Params::default()
        };
        let r = precopy::migrate(
            &mut src,
            Outgoing::unix(a).unwrap(),
            &params,
            &mut |_| {},
            &CancelToken::default(),
        );
        dest.join().unwrap();
        let e = r.unwrap_err();
        assert!(
            matches!(e, MigrateError::Send(_) | MigrateError::NoAnswer { .. }),
            "cut at {cut}: {e}"
        );
        assert!(!src.is_paused(), "cut at {cut}: the source guest must run");
        src.wait_rounds(1);
    }
}

#[test]
fn load_failure_after_the_stream_resumes_the_source() {
    let mut src = FakeSource::new(GuestSpec::ab(512));
    let target = FakeTarget {
        fail: FailAt::LoadVcpus,
        ..Default::default()
    };
    let (r, (t, _), _) = migrate_pair(&mut src, target, &Params::default());
    let e = r.unwrap_err();
    assert!(
        matches!(e, MigrateError::Destination(ref m) if m.contains("KVM_SET_MSRS")),
        "{e}"
    );
    assert!(!t.started);
    assert_eq!((src.pauses, src.resumes), (1, 1));
    src.wait_rounds(1);
}

#[test]
fn silent_destination_times_out_and_the_source_resumes() {
    let mut src = FakeSource::new(GuestSpec::ab(256));
    let (a, b) = UnixStream::pair().unwrap();
    // Accepts the manifest, reads everything, never says "running".
    let dest = thread::spawn(move || {
        let mut conn = Incoming::unix(b).unwrap();
        let mut back = conn.back.take().unwrap();
        let mut d = super::stream::Decoder::new(&mut conn.reader, Limits::default()).unwrap();
        d.read_manifest().unwrap();
        super::status::Status::Accepted.write_to(&mut back).unwrap();
        loop {
            match d.next_record().unwrap() {
                super::stream::Record::End => break,
                super::stream::Record::Sync => {
                    super::status::Status::Synced.write_to(&mut back).unwrap()
                }
                _ => {}
            }
        }
        thread::sleep(Duration::from_millis(600));
    });
    let params = Params {
        running_timeout: Duration::from_millis(200),
        ..Params::default()
    };
    let r = precopy::migrate(
        &mut src,
        Outgoing::unix(a).unwrap(),
        &params,
        &mut |_| {},
        &CancelToken::default(),
    );
    let e = r.unwrap_err();
    assert!(matches!(e, MigrateError::NoAnswer { .. }), "{e}");
    assert!(!src.is_paused());
    dest.join().unwrap();
}

#[test]
fn downtime_limit_is_an_upper_bound_not_a_target() {
    // Fits the (huge) limit from the first iteration, but keeps shrinking:
    // keep going until it stops shrinking.
    let spec = GuestSpec {
        ab: false,
        script: Some(vec![400, 200, 100, 50, 50, 49]),
        ..GuestSpec::ab(512)
    };
    let mut src = FakeSource::new(spec);
    let params = Params {
        downtime_limit: Duration::from_secs(100),
        ..Params::default()
    };
    let (r, (_, dr), events) = migrate_pair(&mut src, FakeTarget::default(), &params);
    dr.unwrap();
    let sum = r.unwrap();
    assert_eq!(sum.iterations, 5, "{events:?}");
    // An idle guest switches over as soon as nothing is dirty.
    let spec = GuestSpec {
        ab: false,
        script: Some(vec![]),
        ..GuestSpec::ab(512)
    };
    let mut src = FakeSource::new(spec);
    let (r, _, _) = migrate_pair(&mut src, FakeTarget::default(), &params);
    assert_eq!(r.unwrap().iterations, 1);
}

#[test]
fn fast_dirtier_converges_by_throttling() {
    let pages = 512;
    let spec = GuestSpec {
        pace: Duration::from_micros(20),
        ..GuestSpec::ab(pages)
    };
    let mut src = FakeSource::new(spec);
    // A capped link (8 MiB/s: 250 ms per pass of 2 MiB) that the guest
    // outruns, whatever this machine's speed.
    let params = Params {
        downtime_limit: Duration::from_millis(5),
        max_bandwidth: Some(8 << 20),
        ..Params::default()
    };
    let (r, (t, dr), _) = migrate_pair(&mut src, FakeTarget::default(), &params);
    let sum = r.unwrap();
    dr.unwrap();
    assert!(sum.max_throttle > 0, "{sum:?}");
    assert_eq!(src.throttle(), 0, "the throttle is removed afterwards");
    assert_ab_consistent(&t.ram, pages);
}

#[test]
fn a_guest_that_ignores_the_throttle_does_not_converge() {
    let spec = GuestSpec {
        pace: Duration::from_micros(1),
        obeys_throttle: false,
        ..GuestSpec::ab(512)
    };
    let mut src = FakeSource::new(spec);
    let params = Params {
        downtime_limit: Duration::ZERO,
        ..Params::default()
    };
    let (r, (t, _), _) = migrate_pair(&mut src, FakeTarget::default(), &params);
    let e = r.unwrap_err();
    assert!(e.to_string().starts_with("did not converge"), "{e}");
    assert!(!t.started && !src.is_paused());
    assert_eq!(src.throttle(), 0);
    src.wait_rounds(1);
}

#[test]
fn iteration_bound_is_explicit() {
    let spec = GuestSpec {
        ab: false,
        script: Some(vec![100; 50]),
        ..GuestSpec::ab(512)
    };
    let mut src = FakeSource::new(spec);
    let params = Params {
        downtime_limit: Duration::ZERO,
        max_iterations: 3,
        ..Params::default()
    };
    let (r, _, events) = migrate_pair(&mut src, FakeTarget::default(), &params);
    assert!(matches!(
        r,
        Err(MigrateError::DidNotConverge { iterations: 3, .. })
    ));
    assert_eq!(events.len(), 3);
}

#[test]
fn cancel_stops_the_migration_and_the_guest_runs() {
    let mut src = FakeSource::new(GuestSpec::ab(1024));
    let (a, b) = UnixStream::pair().unwrap();
    let dest = destination(FakeTarget::default(), Incoming::unix(b).unwrap());
    let cancel = CancelToken::default();
    let c2 = cancel.clone();
    let params = Params {
        downtime_limit: Duration::ZERO,
        ..Params::default()
    };
    let r = precopy::migrate(
        &mut src,
        Outgoing::unix(a).unwrap(),
        &params,
        &mut |p| {
            if p.iteration == 2 {
                c2.cancel();
            }
        },
        &cancel,
    );
    assert!(matches!(r, Err(MigrateError::Cancelled)));
    let (t, dr) = dest.join().unwrap();
    assert!(
        matches!(dr, Err(IncomingError::Decode(_))),
        "the destination sees a cut stream"
    );
    assert!(!t.started && !src.is_paused());
    src.wait_rounds(1);
}

#[test]
fn max_bandwidth_is_honoured() {
    // After one round every page is non-zero: the stream is over 1 MiB.
    let mut src = FakeSource::new(GuestSpec::ab(256));
    src.wait_rounds(1);
    let params = Params {
        max_bandwidth: Some(4 << 20),
        ..Params::default()
    };
    let t = std::time::Instant::now();
    let (r, _, _) = migrate_pair(&mut src, FakeTarget::default(), &params);
    let sum = r.unwrap();
    let expect = sum.bytes as f64 / (4 << 20) as f64;
    assert!(t.elapsed().as_secs_f64() >= expect * 0.8, "{sum:?}");
}

#[test]
fn state_that_contradicts_the_manifest_is_caught_at_the_source() {
    let mut src = FakeSource::new(GuestSpec::ab(256));
    src.lose_a_vcpu = true;
    let (r, (t, dr), _) = migrate_pair(&mut src, FakeTarget::default(), &Params::default());
    let e = r.unwrap_err().to_string();
    assert!(e.contains("saved vCPUs"), "{e}");
    assert!(dr.is_err() && !t.started);
    assert!(!src.is_paused());
}

/// A plain-memory guest that never dirties anything: measures the drivers,
/// the encoder and the decoder alone (`cargo test --release -- --ignored throughput`).
struct MemSource {
    ram: Vec<u8>,
}

impl super::vm::MigrationSource for MemSource {
    fn manifest(&mut self) -> Result<super::manifest::Manifest, super::vm::VmError> {
        let mut m = FakeSource::new(GuestSpec {
            ab: false,
            ..GuestSpec::ab(1)
        })
        .manifest()?;
        m.ram_size = self.ram.len() as u64;
        Ok(m)
    }
    fn read_pages(&mut self, first: u64, buf: &mut [u8]) -> Result<(), super::vm::VmError> {
        let at = first as usize * PAGE_SIZE;
        buf.copy_from_slice(&self.ram[at..at + buf.len()]);
        Ok(())
    }
    fn start_dirty_tracking(&mut self) -> Result<(), super::vm::VmError> {
        Ok(())
    }
    fn take_dirty_bitmap(&mut self) -> Result<super::bitmap::DirtyBitmap, super::vm::VmError> {
        Ok(super::bitmap::DirtyBitmap::new(
            (self.ram.len() / PAGE_SIZE) as u64,
        ))
    }
    fn stop_dirty_tracking(&mut self) -> Result<(), super::vm::VmError> {
        Ok(())
    }
    fn set_throttle(&mut self, _: u8) -> Result<(), super::vm::VmError> {
        Ok(())
    }
    fn pause(&mut self) -> Result<(), super::vm::VmError> {
        Ok(())
    }
    fn resume(&mut self) -> Result<(), super::vm::VmError> {
        Ok(())
    }
    fn save_devices(&mut self) -> Result<Vec<super::stream::Section>, super::vm::VmError> {
        FakeSource::new(GuestSpec {
            ab: false,
            ..GuestSpec::ab(1)
        })
        .save_devices()
    }
    fn save_vcpus(&mut self) -> Result<Vec<super::stream::VcpuRecord>, super::vm::VmError> {
        FakeSource::new(GuestSpec {
            ab: false,
            ..GuestSpec::ab(1)
        })
        .save_vcpus()
    }
}

#[test]
#[ignore = "a measurement; run in release"]
fn throughput() {
    use super::vm::MigrationSource;
    for (mib, nonzero_every) in [(256usize, 1usize), (1024, 1), (1024, 0)] {
        let mut ram = vec![0u8; mib << 20];
        if nonzero_every > 0 {
            for (i, p) in ram.chunks_mut(PAGE_SIZE).enumerate() {
                p[0] = (i % 251) as u8 | 1;
                p[PAGE_SIZE - 1] = 7;
            }
        }
        let mut src = MemSource { ram };
        let _ = src.manifest();
        let t = std::time::Instant::now();
        let (r, (_, dr), _) = migrate_pair_with(&mut src, &Params::default());
        let sum = r.unwrap();
        dr.unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{mib} MiB ({}): {:.0} ms total, {:.2} ms downtime, {:.0} MiB/s of guest RAM, {} bytes on the wire",
            if nonzero_every > 0 {
                "all pages non-zero"
            } else {
                "all zero"
            },
            secs * 1000.0,
            sum.downtime_ms,
            mib as f64 / secs,
            sum.bytes
        );
    }
}

fn migrate_pair_with(
    src: &mut MemSource,
    params: &Params,
) -> (Result<Summary, MigrateError>, DestResult, Vec<Progress>) {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = destination(FakeTarget::default(), Incoming::unix(b).unwrap());
    let r = precopy::migrate(
        src,
        Outgoing::unix(a).unwrap(),
        params,
        &mut |_| {},
        &CancelToken::default(),
    );
    (r, dest.join().unwrap(), Vec::new())
}

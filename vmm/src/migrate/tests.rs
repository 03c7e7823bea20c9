//! The adapters on real KVM: what a migration does when the running
//! machine cannot give up its whole state.

use super::MachineSource;
use crate::builder::Machine;
use crate::builder::config::{self, RunRequest};
use crate::release::persona::Persona;
use crate::vstate::testing::kvm_or_skip;
use crate::vstate::vcpu::VmEvent;
use devices::serial::SerialOutput;
use migration::precopy::{self, CancelToken, Params};
use migration::transport::Uri;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The highest `ab: pass=N` the guest has printed to `serial` so far.
fn last_pass(serial: &Path) -> u64 {
    std::fs::read_to_string(serial)
        .unwrap_or_default()
        .lines()
        .filter_map(vmm_guest::parse_ab_pass)
        .max()
        .unwrap_or(0)
}

/// Waits (bounded) until the guest passes `after`; fails if it stops.
fn pass_beyond(serial: &Path, after: u64, events: &Receiver<VmEvent>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = last_pass(serial);
        if p > after {
            return p;
        }
        assert!(Instant::now() < deadline, "the guest is stuck at pass {p}");
        if let Ok(e) = events.recv_timeout(Duration::from_millis(20)) {
            panic!("the guest stopped: {e:?}");
        }
    }
}

#[test]
fn a_migration_that_would_lose_an_msr_fails_and_the_source_keeps_running() {
    if !kvm_or_skip() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("vmm-msr-refused-{}", std::process::id()));
    let serial = tmp.with_extension("serial");
    let snapshot = tmp.with_extension("snap");
    let req = RunRequest::for_test("pc", 1, 32 << 20, SerialOutput::File(serial.clone()));
    let cfg = config::resolve(config::catalog(), &req).unwrap();
    let mut m = Machine::build(&cfg, vmm_guest::ELF, Some("workload=ab ab.mib=4"), true).unwrap();
    let (tx, events) = std::sync::mpsc::channel();
    m.start(tx).unwrap();
    let before = pass_beyond(&serial, 0, &events);

    m.vcpus().unwrap().ask_for_msr(0xdead_beef);
    let persona = Persona::current();
    let mut src = MachineSource::new(&m, &persona);
    let r = precopy::migrate_to(
        &mut src,
        &Uri::File(snapshot.clone()),
        &Params::default(),
        &mut |_| {},
        &CancelToken::default(),
    );
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("KVM_GET_MSRS") && e.contains("MSR 0xdeadbeef was refused"),
        "the migration must fail naming the MSR, got: {e:?}"
    );
    // The source resumed: the guest keeps counting.
    pass_beyond(&serial, before, &events);
    m.stop();
    let _ = std::fs::remove_file(&serial);
    let _ = std::fs::remove_file(&snapshot);
}

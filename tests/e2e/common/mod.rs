//! Support for the end-to-end tests, which all run the real `vmm` binary:
//!
//! - [`process`]: the process guard [`Vmm`] (kills and reaps on drop, also
//!   when a test panics; bounded waits for serial and stderr lines) and
//!   [`Finished`], how a process ended;
//! - [`paths`]: [`TempPath`], a scratch file, socket or snapshot removed on
//!   drop;
//! - [`control`]: `vmm ctl` / `vmm migrate` over a control socket, their
//!   JSON and diagnostics, and [`Running`], a `vmm run --control` guest;
//! - [`rng`]: [`Rng`], seeded random choices (the seed is printed);
//! - [`serial`]: the guest's serial lines through the guest crate's
//!   parsers (`ab` range and passes, hardware report).
//!
//! Tests that boot a guest start with [`require_kvm!`].

mod control;
mod paths;
mod process;
mod rng;
mod serial;

pub use control::{Running, ctl, flat, json_of, migrate};
pub use paths::TempPath;
pub use process::{Finished, Vmm, run, vmm_bin};
pub use rng::Rng;
pub use serial::{facts, hardware_report, max_pass};

use std::time::{Duration, Instant};

/// A guest's boot up to a serial line, a destination's listening, a
/// control socket's appearing.
pub const BOOT: Duration = Duration::from_secs(60);
/// A migration (or a destination's taking over).
pub const MIGRATE: Duration = Duration::from_secs(120);
/// A process's exit once it was told to (or a `vmm ctl` call).
pub const EXIT: Duration = Duration::from_secs(30);
/// A running `ab` guest prints a `pass=` line every 0.3–0.5 s.
pub const COUNTING: Duration = Duration::from_secs(10);

/// True if `/dev/kvm` is usable. Without it a test that boots a guest
/// cannot test anything: under `CI` it fails here (it must not pass
/// vacuously); elsewhere it prints `SKIP: ...` and the caller returns.
pub fn kvm_or_skip() -> bool {
    let err = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => return true,
        Err(e) => e,
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but /dev/kvm is not usable: {err} (this test boots a guest on KVM)");
    }
    eprintln!("SKIP: /dev/kvm is not usable: {err}");
    false
}

/// Returns from the calling test when `/dev/kvm` is not usable (see
/// [`kvm_or_skip`]: under `CI` the test fails instead).
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::common::kvm_or_skip() {
            return;
        }
    };
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

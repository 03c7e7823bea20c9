//! Kicking a vCPU thread out of `KVM_RUN`: a real-time signal whose
//! handler sets `immediate_exit` in the thread's `kvm_run`.

use std::cell::Cell;
use std::sync::Once;

use kvm_bindings::kvm_run;

use super::VcpuError;

thread_local! {
    /// This thread's `kvm_run`, while it runs a vCPU ([`publish`]).
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int) {
    // Async-signal-safe: a const-initialised thread-local read and one volatile store.
    let p = KVM_RUN.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is this thread's mmap'd kvm_run, published by
        // the vCPU thread before it runs and cleared before the VcpuFd can be
        // dropped; `immediate_exit` is a plain u8 KVM reads on entry.
        unsafe { std::ptr::write_volatile(&raw mut (*p).immediate_exit, 1) };
    }
}

/// The signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

pub(super) fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        // SAFETY: zeroed sigaction is a valid "no flags, empty mask" value;
        // the handler only performs async-signal-safe operations.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = kick_handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
                res = Err(VcpuError::Signal(std::io::Error::last_os_error()));
            }
        }
    });
    res
}

/// Publishes (or, with null, withdraws) the calling vCPU thread's
/// `kvm_run` for the kick handler.
pub(super) fn publish(run: *mut kvm_run) {
    KVM_RUN.with(|c| c.set(run));
}

/// Kicks every thread of `threads` (live pthreads of vCPU threads).
pub(super) fn kick_threads(threads: &[libc::pthread_t]) {
    for &t in threads {
        // SAFETY: callers pass pthreads that are not yet joined (the set
        // joins its threads only in `stop`, after the throttle thread), and
        // the signal's installed handler is async-signal-safe.
        unsafe { libc::pthread_kill(t, kick_signal()) };
    }
}

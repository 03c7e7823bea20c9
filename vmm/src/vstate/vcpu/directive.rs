//! What a vCPU thread is told to do, and the count of parked and exited
//! threads that [`super::set::VcpuSet`] waits on (shared with [`super::run`]).

use std::sync::{Condvar, Mutex};

/// What the vCPU threads are told to do (the guest's run state, as the
/// control socket reports it, is `crate::control::runtime::RunState`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Directive {
    /// Enter `KVM_RUN`.
    Run,
    /// Park outside `KVM_RUN` until told otherwise.
    Park,
    /// Leave the thread.
    Exit,
}

pub(super) struct Ctl {
    pub(super) directive: Directive,
    /// Throttle: while set, running vCPUs sit out (not counted as parked).
    pub(super) throttled: bool,
    pub(super) parked: usize,
    pub(super) exited: usize,
}

pub(super) struct Control {
    pub(super) ctl: Mutex<Ctl>,
    pub(super) cv: Condvar,
}

//! The running vCPUs: one thread each, paused and resumed together,
//! throttled to make pre-copy migration converge, stopped and joined.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::bus::lock;

use super::directive::{Control, Ctl, Directive};
use super::kick::{install_kick_handler, kick_threads};
use super::{ExitContext, Vcpu, VcpuError, VcpuState, VmEvent};

/// The running vCPUs: one thread each, with pause/resume/stop.
pub struct VcpuSet {
    vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Vec<JoinHandle<()>>,
    control: Arc<Control>,
    throttle_pct: Arc<std::sync::atomic::AtomicU8>,
    throttle_thread: Mutex<Option<JoinHandle<()>>>,
    /// Each vCPU thread's kernel thread id, once it started (0 before).
    tids: Arc<[std::sync::atomic::AtomicI64]>,
}

/// Length of one throttle cycle (run, then sit out).
pub const THROTTLE_PERIOD: Duration = Duration::from_millis(20);

/// How long [`VcpuSet::pause`] waits for every vCPU to park.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

impl VcpuSet {
    /// Starts one thread per vCPU. Exits that end the VM are sent on `events`.
    pub fn start(
        vcpus: Vec<Vcpu>,
        ctx: Arc<ExitContext>,
        events: Sender<VmEvent>,
    ) -> Result<Self, VcpuError> {
        Self::start_with(vcpus, ctx, events, false)
    }

    /// Like [`start`](Self::start), but the threads park before their first
    /// `KVM_RUN` if `paused` (an incoming migration restores state, then
    /// calls [`resume`](Self::resume)).
    pub fn start_with(
        vcpus: Vec<Vcpu>,
        ctx: Arc<ExitContext>,
        events: Sender<VmEvent>,
        paused: bool,
    ) -> Result<Self, VcpuError> {
        install_kick_handler()?;
        let control = Arc::new(Control {
            ctl: Mutex::new(Ctl {
                directive: if paused {
                    Directive::Park
                } else {
                    Directive::Run
                },
                throttled: false,
                parked: 0,
                exited: 0,
            }),
            cv: Condvar::new(),
        });
        let vcpus: Vec<_> = vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect();
        let mut set = Self {
            vcpus: vcpus.clone(),
            threads: Vec::new(),
            control: control.clone(),
            throttle_pct: Arc::new(std::sync::atomic::AtomicU8::new(0)),
            throttle_thread: Mutex::new(None),
            tids: (0..vcpus.len())
                .map(|_| std::sync::atomic::AtomicI64::new(0))
                .collect(),
        };
        for (slot, v) in vcpus.into_iter().enumerate() {
            let (ctx, events, control) = (ctx.clone(), events.clone(), control.clone());
            let idx = lock(&v).index;
            let tids = set.tids.clone();
            let h = std::thread::Builder::new()
                .name(format!("vcpu{idx}"))
                .spawn(move || {
                    // SAFETY: gettid has no preconditions and cannot fail.
                    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
                    tids[slot].store(tid, std::sync::atomic::Ordering::Relaxed);
                    super::run::vcpu_thread(v, ctx, events, control)
                })
                .map_err(VcpuError::Spawn)?;
            set.threads.push(h);
        }
        Ok(set)
    }

    /// Each vCPU's host thread id, in index order (0: not started yet).
    pub fn thread_ids(&self) -> Vec<i64> {
        self.tids
            .iter()
            .map(|t| t.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Number of vCPUs.
    pub fn len(&self) -> usize {
        self.vcpus.len()
    }

    /// True if there are no vCPUs.
    pub fn is_empty(&self) -> bool {
        self.vcpus.is_empty()
    }

    fn pthreads(&self) -> Vec<libc::pthread_t> {
        use std::os::unix::thread::JoinHandleExt;
        self.threads.iter().map(|t| t.as_pthread_t()).collect()
    }

    fn kick_all(&self) {
        kick_threads(&self.pthreads());
    }

    /// Stops every vCPU at an instruction boundary and waits until all are
    /// parked (outside `KVM_RUN`). Threads that already exited count as parked.
    pub fn pause(&self) -> Result<(), VcpuError> {
        {
            let mut c = lock(&self.control.ctl);
            if c.directive == Directive::Run {
                c.directive = Directive::Park;
            }
            // Wake vCPUs sitting out a throttle so they park.
            self.control.cv.notify_all();
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        let mut c = lock(&self.control.ctl);
        while c.parked + c.exited < self.threads.len() {
            drop(c);
            self.kick_all();
            c = lock(&self.control.ctl);
            let now = Instant::now();
            if now >= deadline {
                return Err(VcpuError::PauseTimeout(PAUSE_TIMEOUT));
            }
            let (g, _) = self
                .control
                .cv
                .wait_timeout(c, Duration::from_millis(10).min(deadline - now))
                .unwrap_or_else(|e| e.into_inner());
            c = g;
        }
        Ok(())
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        let mut c = lock(&self.control.ctl);
        if c.directive == Directive::Park {
            c.directive = Directive::Run;
        }
        self.control.cv.notify_all();
    }

    /// Runs `f` on every vCPU while paused (pause first). Use it to read or
    /// write [`VcpuState`] for migration.
    pub fn with_vcpus<R>(&self, mut f: impl FnMut(&Vcpu) -> R) -> Vec<R> {
        self.vcpus.iter().map(|v| f(&lock(v))).collect()
    }

    /// Saves every vCPU's state (pauses first if needed; stays paused).
    pub fn save_states(&self) -> Result<Vec<VcpuState>, VcpuError> {
        self.pause()?;
        self.with_vcpus(|v| v.save_state()).into_iter().collect()
    }

    /// Restores every vCPU's state (pauses first if needed; stays paused).
    pub fn restore_states(&self, states: &[VcpuState]) -> Result<(), VcpuError> {
        self.pause()?;
        for (v, s) in self.vcpus.iter().zip(states) {
            lock(v).restore_state(s)?;
        }
        Ok(())
    }

    /// Slows the guest down: vCPUs run `100 - percent`% of every
    /// [`THROTTLE_PERIOD`] and sit out the rest (kicked out of `KVM_RUN`).
    /// 0 removes the throttle; values above 99 are taken as 99. Independent
    /// of [`pause`](Self::pause). Used to make pre-copy migration converge.
    pub fn set_throttle(&self, percent: u8) -> Result<(), VcpuError> {
        use std::sync::atomic::Ordering;
        let pct = percent.min(99);
        self.throttle_pct.store(pct, Ordering::SeqCst);
        let mut slot = lock(&self.throttle_thread);
        if pct == 0 || slot.is_some() {
            return Ok(());
        }
        let threads = self.pthreads();
        let (control, pct) = (self.control.clone(), self.throttle_pct.clone());
        let h = std::thread::Builder::new()
            .name("vcpu-throttle".into())
            .spawn(move || {
                loop {
                    let p = u32::from(pct.load(Ordering::SeqCst));
                    if lock(&control.ctl).directive == Directive::Exit {
                        break;
                    }
                    if p == 0 {
                        std::thread::sleep(THROTTLE_PERIOD);
                        continue;
                    }
                    let off = THROTTLE_PERIOD * p / 100;
                    lock(&control.ctl).throttled = true;
                    kick_threads(&threads);
                    std::thread::sleep(off);
                    lock(&control.ctl).throttled = false;
                    control.cv.notify_all();
                    std::thread::sleep(THROTTLE_PERIOD - off);
                }
                lock(&control.ctl).throttled = false;
                control.cv.notify_all();
            })
            .map_err(VcpuError::Spawn)?;
        *slot = Some(h);
        Ok(())
    }

    /// Stops and joins every vCPU thread.
    pub fn stop(&mut self) {
        {
            let mut c = lock(&self.control.ctl);
            c.directive = Directive::Exit;
            self.control.cv.notify_all();
        }
        let throttle = lock(&self.throttle_thread).take();
        if let Some(t) = throttle {
            let _ = t.join();
        }
        // Kick until every thread has left KVM_RUN and exited.
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        loop {
            let done = lock(&self.control.ctl).exited >= self.threads.len();
            if done || Instant::now() >= deadline {
                break;
            }
            self.kick_all();
            let c = lock(&self.control.ctl);
            let _ = self.control.cv.wait_timeout(c, Duration::from_millis(5));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for VcpuSet {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

#[cfg(test)]
impl VcpuSet {
    /// Makes every vCPU save (and so demand) MSR `msr` too: a test's way to
    /// have KVM refuse part of the state.
    pub(crate) fn ask_for_msr(&self, msr: u32) {
        for v in &self.vcpus {
            let mut v = lock(v);
            let mut list = v.msr_index.to_vec();
            list.push(msr);
            v.msr_index = list.into();
        }
    }
}

//! vCPUs: PVH entry setup, the run loop (one thread each), pausing by signal
//! kick + `immediate_exit`, and the complete architectural state.

use std::cell::Cell;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    CpuId, Msrs, kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_run, kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use devices::bus::{Bus, lock};

/// Errors configuring a vCPU or moving its state.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A vCPU ioctl failed.
    #[error("vCPU {index}: {what} failed: {source}")]
    Kvm {
        /// vCPU index.
        index: u8,
        /// The ioctl.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Building an MSR list failed.
    #[error("vCPU {0}: cannot build the MSR list")]
    MsrList(u8),
    /// Spawning the vCPU thread failed.
    #[error("cannot spawn vCPU thread: {0}")]
    Spawn(std::io::Error),
    /// Installing the kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(std::io::Error),
    /// vCPUs did not stop in time.
    #[error("vCPUs did not pause within {0:?}")]
    PauseTimeout(Duration),
}

/// The complete state of one vCPU, as the probe verified resumes exactly on
/// this machine's KVM: regs, sregs, FPU, XSAVE, XCRs, the MSRs of
/// `KVM_GET_MSR_INDEX_LIST`, LAPIC, MP state, vCPU events, debug registers.
pub struct VcpuState {
    /// General-purpose registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// Legacy FPU/SSE state.
    pub fpu: kvm_fpu,
    /// XSAVE area.
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// MSRs that KVM could read (a subset of the index list).
    pub msrs: Vec<kvm_msr_entry>,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Multiprocessing state (runnable, halted, INIT-received...).
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs, SMI.
    pub events: kvm_vcpu_events,
    /// DR0-3, DR6, DR7.
    pub debug_regs: kvm_debugregs,
}

impl Clone for VcpuState {
    fn clone(&self) -> Self {
        Self {
            regs: self.regs,
            sregs: self.sregs,
            fpu: self.fpu,
            // The legacy 4 KiB XSAVE area only (no KVM_GET_XSAVE2 extension).
            xsave: kvm_xsave {
                region: self.xsave.region,
                ..Default::default()
            },
            xcrs: self.xcrs,
            msrs: self.msrs.clone(),
            lapic: self.lapic,
            mp_state: self.mp_state,
            events: self.events,
            debug_regs: self.debug_regs,
        }
    }
}

/// One vCPU file descriptor with its index.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    msr_index: Arc<[u32]>,
}

// MSR numbers set at PVH entry.
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Where the boot GDT goes and which selectors PVH entry uses.
#[derive(Clone, Copy, Debug)]
pub struct PvhEntry {
    /// 32-bit entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub entry: u64,
    /// Guest-physical address of `hvm_start_info` (loaded into EBX).
    pub start_info: u64,
    /// Guest-physical address of the 4-entry boot GDT written by the loader.
    pub gdt_addr: u64,
}

/// The boot GDT matching [`Vcpu::setup_pvh`]: null, 32-bit code (0x08),
/// 32-bit data (0x10), 32-bit TSS (0x18).
pub const BOOT_GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, index: u8, msr_index: Arc<[u32]>) -> Self {
        Self {
            fd,
            index,
            msr_index,
        }
    }

    fn err(&self, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError + use<> {
        let index = self.index;
        move |source| VcpuError::Kvm {
            index,
            what,
            source,
        }
    }

    /// The vCPU index (= APIC id).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The vCPU file descriptor.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Sets the CPUID for this vCPU from the supported list (APIC id, topology).
    pub fn configure_cpuid(&self, supported: &CpuId, count: u8) -> Result<(), VcpuError> {
        let c = super::cpuid::for_vcpu(supported, self.index, count);
        self.fd.set_cpuid2(&c).map_err(self.err("KVM_SET_CPUID2"))
    }

    /// Puts the vCPU in the PVH entry state: 32-bit protected mode, paging
    /// off, flat segments, EBX = start info; FPU, boot MSRs and LAPIC LINT0/1
    /// set up. Only the boot vCPU (index 0) runs; others wait for INIT/SIPI.
    pub fn setup_pvh(&self, boot: &PvhEntry) -> Result<(), VcpuError> {
        let mut sregs = self.fd.get_sregs().map_err(self.err("KVM_GET_SREGS"))?;
        let seg = |selector: u16, type_: u8| kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = seg(0x08, 0xb);
        let data = seg(0x10, 0x3);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            base: 0,
            limit: 0x67,
            selector: 0x18,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        sregs.gdt.base = boot.gdt_addr;
        sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.cr0 = 0x11; // PE | ET
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
        self.fd
            .set_sregs(&sregs)
            .map_err(self.err("KVM_SET_SREGS"))?;

        let regs = kvm_regs {
            rip: boot.entry,
            rbx: boot.start_info,
            rflags: 0x2,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(self.err("KVM_SET_REGS"))?;

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(self.err("KVM_SET_FPU"))?;

        let entries: Vec<kvm_msr_entry> = [
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_CSTAR, 0),
            (MSR_KERNEL_GS_BASE, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_LSTAR, 0),
            (MSR_IA32_TSC, 0),
            (MSR_IA32_MISC_ENABLE, 1),          // fast strings
            (MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // MTRRs on, default write-back
        ]
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::MsrList(self.index))?;
        self.fd.set_msrs(&msrs).map_err(self.err("KVM_SET_MSRS"))?;

        let mut lapic = self.fd.get_lapic().map_err(self.err("KVM_GET_LAPIC"))?;
        set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
        self.fd
            .set_lapic(&lapic)
            .map_err(self.err("KVM_SET_LAPIC"))?;
        Ok(())
    }

    /// Reads the complete vCPU state (the vCPU must not be running: pause first).
    pub fn save_state(&self) -> Result<VcpuState, VcpuError> {
        let fd = &self.fd;
        let entries: Vec<kvm_msr_entry> = self
            .msr_index
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::MsrList(self.index))?;
        let n = fd.get_msrs(&mut msrs).map_err(self.err("KVM_GET_MSRS"))?;
        let msrs = msrs.as_slice()[..n.min(msrs.as_slice().len())].to_vec();
        Ok(VcpuState {
            sregs: fd.get_sregs().map_err(self.err("KVM_GET_SREGS"))?,
            regs: fd.get_regs().map_err(self.err("KVM_GET_REGS"))?,
            fpu: fd.get_fpu().map_err(self.err("KVM_GET_FPU"))?,
            xsave: fd.get_xsave().map_err(self.err("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(self.err("KVM_GET_XCRS"))?,
            lapic: fd.get_lapic().map_err(self.err("KVM_GET_LAPIC"))?,
            msrs,
            mp_state: fd.get_mp_state().map_err(self.err("KVM_GET_MP_STATE"))?,
            events: fd
                .get_vcpu_events()
                .map_err(self.err("KVM_GET_VCPU_EVENTS"))?,
            debug_regs: fd.get_debug_regs().map_err(self.err("KVM_GET_DEBUGREGS"))?,
        })
    }

    /// Writes a state read by [`save_state`](Self::save_state) (same order as
    /// the probe that verified exact resumption: sregs, regs, FPU, XSAVE,
    /// XCRs, LAPIC, MSRs, MP state, events, debug registers).
    pub fn restore_state(&self, s: &VcpuState) -> Result<(), VcpuError> {
        let fd = &self.fd;
        fd.set_sregs(&s.sregs).map_err(self.err("KVM_SET_SREGS"))?;
        fd.set_regs(&s.regs).map_err(self.err("KVM_SET_REGS"))?;
        fd.set_fpu(&s.fpu).map_err(self.err("KVM_SET_FPU"))?;
        // SAFETY: `s.xsave` is a complete kvm_xsave read by KVM_GET_XSAVE on a
        // vCPU with the same CPUID; no XSAVE2 extended buffer is involved.
        unsafe { fd.set_xsave(&s.xsave) }.map_err(self.err("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&s.xcrs).map_err(self.err("KVM_SET_XCRS"))?;
        fd.set_lapic(&s.lapic).map_err(self.err("KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&s.msrs).map_err(|_| VcpuError::MsrList(self.index))?;
        fd.set_msrs(&msrs).map_err(self.err("KVM_SET_MSRS"))?;
        fd.set_mp_state(s.mp_state)
            .map_err(self.err("KVM_SET_MP_STATE"))?;
        fd.set_vcpu_events(&s.events)
            .map_err(self.err("KVM_SET_VCPU_EVENTS"))?;
        fd.set_debug_regs(&s.debug_regs)
            .map_err(self.err("KVM_SET_DEBUGREGS"))?;
        Ok(())
    }

    /// One-line register summary for crash reports.
    pub fn describe_regs(&self) -> String {
        let r = self.fd.get_regs();
        let s = self.fd.get_sregs();
        match (r, s) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                s.cs.selector,
                s.cr0,
                s.cr3,
                s.cr4,
                s.efer
            ),
            (Err(e), _) | (_, Err(e)) => format!("(registers unavailable: {e})"),
        }
    }
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, reg: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = lapic.regs[reg + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        lapic.regs[reg + i] = *x as _;
    }
}

/// Why the guest stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest powered off (port write or system event).
    PowerOff,
    /// The guest asked for a reset/reboot.
    Reset,
    /// The guest cannot continue: triple fault, emulation failure, entry failure.
    Crash {
        /// Which vCPU.
        vcpu: u8,
        /// The KVM exit and details.
        exit: String,
        /// Register summary at the time.
        regs: String,
    },
}

/// Port writes with a VM-wide meaning.
#[derive(Clone, Copy, Debug)]
pub struct PowerPorts {
    /// Power-off port (ACPI PM1a control convention).
    pub poweroff_port: u16,
    /// Value written to power off.
    pub poweroff_value: u16,
    /// Reset control register port.
    pub reset_port: u16,
    /// Value written to reset.
    pub reset_value: u8,
}

/// What a vCPU thread dispatches exits to.
pub struct ExitContext {
    /// Port I/O devices.
    pub pio: Bus,
    /// MMIO devices.
    pub mmio: Bus,
    /// Power-off and reset ports.
    pub power: PowerPorts,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RunState {
    Running,
    Paused,
    Stopping,
}

struct Ctl {
    state: RunState,
    /// Throttle: while set, Running vCPUs sit out (not counted as parked).
    throttled: bool,
    parked: usize,
    exited: usize,
}

struct Control {
    ctl: Mutex<Ctl>,
    cv: Condvar,
}

thread_local! {
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

fn install_kick_handler() -> Result<(), VcpuError> {
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

/// The running vCPUs: one thread each, with pause/resume/stop.
pub struct VcpuSet {
    vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Vec<JoinHandle<()>>,
    control: Arc<Control>,
    throttle_pct: Arc<std::sync::atomic::AtomicU8>,
    throttle_thread: Mutex<Option<JoinHandle<()>>>,
}

/// Length of one throttle cycle (run, then sit out).
pub const THROTTLE_PERIOD: Duration = Duration::from_millis(20);

fn kick_threads(threads: &[libc::pthread_t]) {
    for &t in threads {
        // SAFETY: the threads are joined only after the throttle thread (the
        // only other caller) has been joined, so every pthread_t is live.
        unsafe { libc::pthread_kill(t, kick_signal()) };
    }
}

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
                state: if paused {
                    RunState::Paused
                } else {
                    RunState::Running
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
        };
        for v in vcpus {
            let (ctx, events, control) = (ctx.clone(), events.clone(), control.clone());
            let idx = lock(&v).index;
            let h = std::thread::Builder::new()
                .name(format!("vcpu{idx}"))
                .spawn(move || vcpu_thread(v, ctx, events, control))
                .map_err(VcpuError::Spawn)?;
            set.threads.push(h);
        }
        Ok(set)
    }

    /// Number of vCPUs.
    pub fn len(&self) -> usize {
        self.vcpus.len()
    }

    /// True if there are no vCPUs.
    pub fn is_empty(&self) -> bool {
        self.vcpus.is_empty()
    }

    fn kick_all(&self) {
        for t in &self.threads {
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the pthread is alive until joined (we only join in
            // `stop`, after which `threads` is empty); a signal to it with
            // our installed handler is harmless.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
    }

    /// Stops every vCPU at an instruction boundary and waits until all are
    /// parked (outside `KVM_RUN`). Threads that already exited count as parked.
    pub fn pause(&self) -> Result<(), VcpuError> {
        {
            let mut c = lock(&self.control.ctl);
            if c.state == RunState::Running {
                c.state = RunState::Paused;
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
        if c.state == RunState::Paused {
            c.state = RunState::Running;
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
        use std::os::unix::thread::JoinHandleExt;
        let threads: Vec<libc::pthread_t> = self.threads.iter().map(|t| t.as_pthread_t()).collect();
        let (control, pct) = (self.control.clone(), self.throttle_pct.clone());
        let h = std::thread::Builder::new()
            .name("vcpu-throttle".into())
            .spawn(move || {
                loop {
                    let p = u32::from(pct.load(Ordering::SeqCst));
                    if lock(&control.ctl).state == RunState::Stopping {
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
            c.state = RunState::Stopping;
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

fn vcpu_thread(
    v: Arc<Mutex<Vcpu>>,
    ctx: Arc<ExitContext>,
    events: Sender<VmEvent>,
    control: Arc<Control>,
) {
    let ptr = lock(&v).fd.get_kvm_run() as *mut kvm_run;
    KVM_RUN.with(|c| c.set(ptr));
    run_loop(&v, &ctx, &events, &control);
    KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    let mut c = lock(&control.ctl);
    c.exited += 1;
    control.cv.notify_all();
}

fn run_loop(v: &Mutex<Vcpu>, ctx: &ExitContext, events: &Sender<VmEvent>, control: &Control) {
    loop {
        {
            let mut c = lock(&control.ctl);
            loop {
                match c.state {
                    RunState::Running if !c.throttled => break,
                    RunState::Running => {
                        c = control.cv.wait(c).unwrap_or_else(|e| e.into_inner());
                    }
                    RunState::Stopping => return,
                    RunState::Paused => {
                        c.parked += 1;
                        control.cv.notify_all();
                        while c.state == RunState::Paused {
                            c = control.cv.wait(c).unwrap_or_else(|e| e.into_inner());
                        }
                        c.parked -= 1;
                    }
                }
            }
        }
        let mut vcpu = lock(v);
        if let Some(ev) = run_once(&mut vcpu, ctx) {
            tracing::debug!("vcpu{}: {ev:?}", vcpu.index);
            let _ = events.send(ev);
            return;
        }
    }
}

/// Runs the vCPU until one exit; returns an event if the VM must stop.
fn run_once(vcpu: &mut Vcpu, ctx: &ExitContext) -> Option<VmEvent> {
    let index = vcpu.index;
    let crash = |vcpu: &Vcpu, exit: String| {
        Some(VmEvent::Crash {
            vcpu: index,
            exit,
            regs: vcpu.describe_regs(),
        })
    };
    match vcpu.fd.run() {
        Ok(VcpuExit::IoOut(port, data)) => {
            let p = ctx.power;
            if port == p.poweroff_port
                && data.len() >= 2
                && u16::from_le_bytes([data[0], data[1]]) == p.poweroff_value
            {
                return Some(VmEvent::PowerOff);
            }
            if port == p.reset_port && data.first() == Some(&p.reset_value) {
                return Some(VmEvent::Reset);
            }
            if !ctx.pio.write(u64::from(port), data) {
                tracing::trace!("vcpu{index}: out {port:#x} ignored");
            }
            None
        }
        Ok(VcpuExit::IoIn(port, data)) => {
            if !ctx.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
            None
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            if !ctx.mmio.read(addr, data) {
                tracing::debug!("vcpu{index}: MMIO read at unmapped {addr:#x}");
                data.fill(0xff);
            }
            None
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            if !ctx.mmio.write(addr, data) {
                tracing::debug!("vcpu{index}: MMIO write at unmapped {addr:#x}");
            }
            None
        }
        Ok(VcpuExit::Hlt) => None, // in-kernel LAPIC handles HLT; nothing to do
        Ok(VcpuExit::Shutdown) => crash(vcpu, "triple fault (KVM_EXIT_SHUTDOWN)".into()),
        Ok(VcpuExit::InternalError) => {
            // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the `internal`
            // member of the kvm_run exit union is the active one.
            let sub = unsafe { vcpu.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
            let what = match sub {
                1 => "emulation failure",
                2 => "simultaneous exceptions",
                3 => "delivery event failure",
                _ => "unknown",
            };
            crash(
                vcpu,
                format!("KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror {sub}: {what})"),
            )
        }
        Ok(VcpuExit::FailEntry(reason, cpu)) => crash(
            vcpu,
            format!(
                "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}, host cpu {cpu})"
            ),
        ),
        Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmEvent::PowerOff),
            kvm_bindings::KVM_SYSTEM_EVENT_RESET => Some(VmEvent::Reset),
            other => crash(
                vcpu,
                format!("system event {other} (KVM_EXIT_SYSTEM_EVENT)"),
            ),
        },
        Ok(VcpuExit::IrqWindowOpen | VcpuExit::Intr) => None,
        Ok(other) => {
            let what = format!("unexpected KVM exit {other:?}");
            crash(vcpu, what)
        }
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            vcpu.fd.set_kvm_immediate_exit(0);
            None
        }
        Err(e) => crash(vcpu, format!("KVM_RUN failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::{memory, vm::Vm};

    #[test]
    fn pvh_setup_and_state_roundtrip() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let mem = Arc::new(memory::create(4 << 20).unwrap());
        let vm = Vm::new(mem).unwrap();
        let v = vm.create_vcpu(0, 1).unwrap();
        v.setup_pvh(&PvhEntry {
            entry: 0x10_0000,
            start_info: 0x6000,
            gdt_addr: 0x500,
        })
        .unwrap();
        let s = v.save_state().unwrap();
        assert_eq!(s.regs.rip, 0x10_0000);
        assert_eq!(s.regs.rbx, 0x6000);
        assert_eq!(s.sregs.cr0 & 1, 1);
        assert!(!s.msrs.is_empty());
        let mut s2 = s.clone();
        s2.regs.rax = 42;
        v.restore_state(&s2).unwrap();
        assert_eq!(v.save_state().unwrap().regs.rax, 42);
        assert!(v.describe_regs().contains("rip=0x100000"));
    }

    #[test]
    fn lvt_mode() {
        let mut l = kvm_lapic_state::default();
        set_lvt_mode(&mut l, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(l.regs[APIC_LVT0 + 1] as u8, 7);
    }
}

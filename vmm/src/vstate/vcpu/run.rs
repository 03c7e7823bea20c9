//! A vCPU thread: park while told to, run, and dispatch each KVM exit to
//! the buses or turn it into a [`VmEvent`] that ends the VM.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuExit;

use devices::bus::{Bus, lock};

use super::Vcpu;
use super::directive::{Control, Directive};
use super::kick;

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
    /// The ACPI PM1a status register (16 bits at the power-off port - 4,
    /// as on the ICH9's PM block): `PWRBTN_STS` (bit 8) is set by the power
    /// button (`system_powerdown`), cleared by the guest writing 1.
    pub pm1_status: std::sync::atomic::AtomicU16,
}

/// `PWRBTN_STS` of the PM1 status register.
pub const PWRBTN_STS: u16 = 1 << 8;

impl ExitContext {
    fn pm1_port(&self) -> u16 {
        self.power.poweroff_port.wrapping_sub(4)
    }
}

pub(super) fn vcpu_thread(
    v: Arc<Mutex<Vcpu>>,
    ctx: Arc<ExitContext>,
    events: Sender<VmEvent>,
    control: Arc<Control>,
) {
    let ptr = lock(&v).fd.get_kvm_run() as *mut kvm_run;
    kick::publish(ptr);
    run_loop(&v, &ctx, &events, &control);
    kick::publish(std::ptr::null_mut());
    let mut c = lock(&control.ctl);
    c.exited += 1;
    control.cv.notify_all();
}

fn run_loop(v: &Mutex<Vcpu>, ctx: &ExitContext, events: &Sender<VmEvent>, control: &Control) {
    loop {
        {
            let mut c = lock(&control.ctl);
            loop {
                match c.directive {
                    Directive::Run if !c.throttled => break,
                    Directive::Run => {
                        c = control.cv.wait(c).unwrap_or_else(|e| e.into_inner());
                    }
                    Directive::Exit => return,
                    Directive::Park => {
                        c.parked += 1;
                        control.cv.notify_all();
                        while c.directive == Directive::Park {
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
            if port == ctx.pm1_port() && data.len() == 2 {
                let clear = u16::from_le_bytes([data[0], data[1]]);
                ctx.pm1_status
                    .fetch_and(!clear, std::sync::atomic::Ordering::SeqCst);
                return None;
            }
            if !ctx.pio.write(u64::from(port), data) {
                tracing::trace!("vcpu{index}: out {port:#x} ignored");
            }
            None
        }
        Ok(VcpuExit::IoIn(port, data)) if port == ctx.pm1_port() && data.len() == 2 => {
            let v = ctx.pm1_status.load(std::sync::atomic::Ordering::SeqCst);
            data.copy_from_slice(&v.to_le_bytes());
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

//! Builds a VM from a [`config::MachineConfig`]: memory, KVM VM, devices on
//! their buses, the guest loaded for PVH entry, vCPUs ready to run.
//!
//! [`Machine`] is the running VM's handle: start/pause/resume/stop the vCPUs
//! and reach every piece of state migration needs (see `vstate`).

pub mod cmdline;
pub mod config;
mod instances;
pub mod layout;

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use devices::bus::{Bus, BusError, lock};
use devices::disk::Disk;
use devices::pci::{ECAM_BUS0_SIZE, Ecam};
use devices::serial::{Serial, SerialError};
use devices::virtio::block::{Block, BlockError};
use devices::virtio::{MmioTransport, TransportError};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, BootError, Reserved};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{ExitContext, Vcpu, VcpuError, VcpuSet, VmEvent};
use crate::vstate::vm::{Vm, VmError};
use config::MachineConfig;

/// Errors building the VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The guest's TSC frequency cannot be set.
    #[error("TSC frequency: {0}")]
    Tsc(String),
    /// This host's CPU features could not be read.
    #[error("reading this host's CPU: {0}")]
    Cpu(String),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// KVM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Loading the guest.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The serial port.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// A disk image could not be opened.
    #[error("cannot open disk image {path}: {source}")]
    Disk {
        /// Image path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The block device.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The virtio transport.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Address conflicts.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// eventfd creation.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
}

/// The devices of a built VM, shared with the vCPU threads' buses.
#[derive(Default)]
pub struct Devices {
    /// The UART.
    pub serial: Option<Arc<Mutex<Serial>>>,
    /// virtio-blk transports, in `--drive` order.
    pub blocks: Vec<Arc<Mutex<MmioTransport>>>,
    /// The ECAM window (host bridge + root port).
    pub ecam: Option<Arc<Mutex<Ecam>>>,
}

/// A built VM: KVM objects, devices and (once started) vCPU threads.
pub struct Machine {
    config: MachineConfig,
    vm: Vm,
    devices: Devices,
    ctx: Arc<ExitContext>,
    pending_vcpus: Vec<Vcpu>,
    /// The guest's TSC frequency (`KVM_GET_TSC_KHZ`), if KVM says.
    tsc_khz: Option<u32>,
    vcpus: Option<VcpuSet>,
    cmdline: String,
}

/// Opens a disk image (must exist; read-write unless `read_only`): the one
/// [`Disk`] of the path, shared with an NBD export or a mirror job of it.
fn open_disk(path: &std::path::Path, read_only: bool) -> Result<Arc<Disk>, BuildError> {
    Disk::open(path, read_only).map_err(|source| BuildError::Disk {
        path: path.to_path_buf(),
        source,
    })
}

fn eventfd() -> Result<EventFd, BuildError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(BuildError::EventFd)
}

impl Machine {
    /// Builds the VM and loads `kernel` (a PVH ELF). `first_boot` truncates a
    /// serial output file; later boots (after a guest reset) append.
    pub fn build(
        config: &MachineConfig,
        kernel: &[u8],
        append: Option<&str>,
        first_boot: bool,
    ) -> Result<Self, BuildError> {
        // Open host resources first so user errors surface before KVM work.
        let disks = config
            .blocks
            .iter()
            .map(|b| open_disk(&b.file, b.config.read_only))
            .collect::<Result<Vec<_>, _>>()?;
        let serial_out = match &config.serial {
            Some(s) => Some(Serial::open_output(&s.output, first_boot)?),
            None => None,
        };

        let mem = Arc::new(memory::create(config.mem_bytes)?);
        let mut vm = Vm::new(mem.clone())?;
        if let Some(facts) = &config.cpu {
            vm.set_cpu_model(facts);
        }
        if let Some(choice) = &config.cpu_choice {
            let catalog = config::catalog();
            vm.clear_cpuid_bits(&crate::cpu::choice::cleared_bits(catalog, choice));
            // This host's feature MSRs are read only when the guest leaves
            // one of their bits out (not for the default model).
            if crate::cpu::choice::turns_msr_bits_off(catalog, choice) {
                let host_msrs = crate::cpu::host::feature_msrs(vm.kvm())
                    .map_err(|e| BuildError::Cpu(e.to_string()))?;
                let values = crate::cpu::choice::feature_msrs(catalog, choice, &host_msrs);
                vm.set_feature_msrs(values);
            }
        }
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let mut devices = Devices::default();

        if let (Some(sc), Some(out)) = (&config.serial, serial_out) {
            let evt = eventfd()?;
            vm.register_irqfd(&evt, sc.irq)?;
            let s = Arc::new(Mutex::new(Serial::new(out, &evt)?));
            pio.insert(s.clone(), u64::from(sc.iobase), 8)?;
            devices.serial = Some(s);
        }

        let mut virtio_cmdline = Vec::new();
        for (i, (b, disk)) in config.blocks.iter().zip(disks).enumerate() {
            let (addr, gsi) = layout::virtio_mmio(i);
            let evt = eventfd()?;
            vm.register_irqfd(&evt, gsi)?;
            let dev = Block::new(b.config.clone(), disk)?;
            let t = Arc::new(Mutex::new(MmioTransport::new(
                Box::new(dev),
                mem.clone(),
                &evt,
            )?));
            mmio.insert(t.clone(), addr, layout::VIRTIO_MMIO_SIZE)?;
            devices.blocks.push(t);
            virtio_cmdline.push((addr, layout::VIRTIO_MMIO_SIZE, gsi));
        }

        let mut reserved = Vec::new();
        let ecam = if let Some(rp) = &config.root_port {
            let e = Arc::new(Mutex::new(Ecam::new(rp)));
            mmio.insert(e.clone(), layout::ECAM_BASE, ECAM_BUS0_SIZE)?;
            devices.ecam = Some(e);
            reserved.push(Reserved {
                addr: layout::ECAM_BASE,
                len: ECAM_BUS0_SIZE,
            });
            Some(layout::ECAM_BASE)
        } else {
            None
        };

        let cmdline = boot::build_cmdline(&virtio_cmdline, ecam, append)?;
        let entry = boot::load_pvh(&mem, kernel, &cmdline, &reserved)?;
        let mut vcpus = Vec::new();
        for i in 0..config.vcpus {
            let v = vm.create_vcpu(i, config.vcpus)?;
            v.setup_pvh(&entry)?;
            vcpus.push(v);
        }
        let ctx = Arc::new(ExitContext {
            pio,
            mmio,
            power: layout::POWER,
            pm1_status: std::sync::atomic::AtomicU16::new(0),
        });
        let tsc_khz = vcpus.first().and_then(|v| v.fd().get_tsc_khz().ok());
        Ok(Self {
            tsc_khz,
            config: config.clone(),
            vm,
            devices,
            ctx,
            pending_vcpus: vcpus,
            vcpus: None,
            cmdline: cmdline
                .as_cstring()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }

    /// The guest's TSC frequency in kHz, if KVM reports it.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.tsc_khz
    }

    /// Runs the guest's TSC at `khz` (a migrated guest keeps its source's
    /// frequency); only before the vCPUs start. KVM may refuse (no TSC
    /// scaling on this host): the error says so.
    pub fn set_tsc_khz(&mut self, khz: u32) -> Result<(), BuildError> {
        if self.pending_vcpus.is_empty() {
            return Err(BuildError::Tsc("the vCPUs already run".into()));
        }
        for v in &self.pending_vcpus {
            v.fd().set_tsc_khz(khz).map_err(|e| {
                BuildError::Tsc(format!("vCPU {}: KVM_SET_TSC_KHZ {khz}: {e}", v.index()))
            })?;
        }
        self.tsc_khz = Some(khz);
        Ok(())
    }

    /// Starts the vCPU threads; VM-ending exits are sent on `events`.
    pub fn start(&mut self, events: Sender<VmEvent>) -> Result<(), BuildError> {
        let v = std::mem::take(&mut self.pending_vcpus);
        self.vcpus = Some(VcpuSet::start(v, self.ctx.clone(), events)?);
        Ok(())
    }

    /// Starts the vCPU threads parked (no guest instruction runs): restore
    /// memory, [`Vm::restore_state`], [`VcpuSet::restore_states`] and device
    /// state, then [`resume`](Self::resume). Used by an incoming migration.
    pub fn start_paused(&mut self, events: Sender<VmEvent>) -> Result<(), BuildError> {
        let v = std::mem::take(&mut self.pending_vcpus);
        let set = VcpuSet::start_with(v, self.ctx.clone(), events, true)?;
        set.pause()?;
        self.vcpus = Some(set);
        Ok(())
    }

    /// Pauses every vCPU (signal kick + `immediate_exit`), waiting until all
    /// are outside `KVM_RUN`.
    pub fn pause(&self) -> Result<(), VcpuError> {
        match &self.vcpus {
            Some(v) => v.pause(),
            None => Ok(()),
        }
    }

    /// Throttles the vCPUs to `100 - percent`% of the time (0: no throttle).
    pub fn set_throttle(&self, percent: u8) -> Result<(), VcpuError> {
        match &self.vcpus {
            Some(v) => v.set_throttle(percent),
            None => Ok(()),
        }
    }

    /// Presses the power button: sets `PWRBTN_STS` in the PM1 status
    /// register, which the guest reads and clears.
    pub fn press_power_button(&self) {
        self.ctx.pm1_status.fetch_or(
            crate::vstate::vcpu::PWRBTN_STS,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Resumes paused vCPUs.
    pub fn resume(&self) {
        if let Some(v) = &self.vcpus {
            v.resume();
        }
    }

    /// Stops and joins the vCPU threads and flushes the serial output.
    pub fn stop(&mut self) {
        if let Some(mut v) = self.vcpus.take() {
            v.stop();
        }
        if let Some(s) = &self.devices.serial {
            lock(s).flush();
        }
    }

    /// The KVM VM (memory, irqchip/PIT/clock state, dirty log).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The running vCPUs (state save/restore while paused).
    pub fn vcpus(&self) -> Option<&VcpuSet> {
        self.vcpus.as_ref()
    }

    /// The devices (each has `state()`/`restore()`).
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// The configuration this VM was built from.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// The guest command line the VMM built.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::config::{self, RunRequest};
    use super::*;
    use devices::serial::SerialOutput;
    use std::time::{Duration, Instant};

    /// Boots the embedded guest running the `ab` workload, then exercises
    /// what migration needs: pause (signal kick), every vCPU's state, VM
    /// state, KVM dirty log and the VMM dirty bitmap, resume, stop.
    #[test]
    fn pause_save_resume_with_running_guest() {
        if !crate::vstate::testing::kvm_or_skip() {
            return;
        }
        let out =
            std::env::temp_dir().join(format!("vmm-pause-test-{}.serial", std::process::id()));
        let req = RunRequest::for_test("pc", 2, 64 << 20, SerialOutput::File(out.clone()));
        let cfg = config::resolve(config::catalog(), &req).unwrap();
        let mut m =
            Machine::build(&cfg, vmm_guest::ELF, Some("workload=ab ab.mib=8"), true).unwrap();
        for s in m.vm().slots() {
            m.vm().set_dirty_logging(s.slot, true).unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        m.start(tx).unwrap();
        // Wait (bounded) until the guest reports progress from its workload.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.lines().any(|l| l.starts_with("ab:")) {
                break;
            }
            assert!(Instant::now() < deadline, "no ab progress:\n{text}");
            assert!(
                rx.recv_timeout(Duration::from_millis(20)).is_err(),
                "guest stopped early"
            );
        }
        let t = Instant::now();
        m.pause().unwrap();
        let pause_time = t.elapsed();
        assert!(
            pause_time < Duration::from_secs(1),
            "pause took {pause_time:?}"
        );
        let vcpus = m.vcpus().unwrap();
        let states = vcpus.save_states().unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].sregs.cs.dpl, 3, "the ab workload runs at CPL 3");
        let st1 = vcpus.save_states().unwrap();
        assert_eq!(
            states[0].regs.rip, st1[0].regs.rip,
            "paused vCPU did not move"
        );
        vcpus.restore_states(&states).unwrap();
        let vm_state = m.vm().save_state().unwrap();
        m.vm().restore_state(&vm_state).unwrap();
        let dirty: u32 = m
            .vm()
            .dirty_log(0)
            .unwrap()
            .iter()
            .map(|w| w.count_ones())
            .sum();
        assert!(dirty > 0, "the ab workload dirties pages");
        let vmm_dirty = memory::take_vmm_dirty(m.vm().memory());
        assert!(
            vmm_dirty[0].iter().any(|w| *w != 0),
            "the loader's writes are in the VMM bitmap"
        );
        let blk = m.devices().ecam.as_ref().map(|e| lock(e).state());
        assert!(blk.is_some());
        m.resume();
        m.pause().unwrap();
        m.resume();
        // Throttled at 90%: the guest still runs, pause still works.
        m.set_throttle(90).unwrap();
        let r0 = m.vcpus().unwrap().save_states().unwrap()[0].regs.rip;
        m.resume();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(
                rx.recv_timeout(Duration::from_millis(30)).is_err(),
                "guest stopped"
            );
            m.pause().unwrap();
            let r1 = m.vcpus().unwrap().save_states().unwrap()[0].regs.rip;
            m.resume();
            if r1 != r0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "throttled guest made no progress"
            );
        }
        m.set_throttle(0).unwrap();
        m.stop();
        let _ = std::fs::remove_file(out);
    }

    #[test]
    fn the_tsc_frequency_is_known_and_kept_or_refused_by_name() {
        if !crate::vstate::testing::kvm_or_skip() {
            return;
        }
        let req = RunRequest::for_test("pc", 1, 32 << 20, SerialOutput::File("/dev/null".into()));
        let cfg = config::resolve(config::catalog(), &req).unwrap();
        let mut m = Machine::build(&cfg, vmm_guest::ELF, None, true).unwrap();
        let khz = m.tsc_khz().expect("KVM reports the TSC frequency");
        assert!(khz > 100_000, "{khz} kHz");
        m.set_tsc_khz(khz).expect("its own frequency");
        assert_eq!(m.tsc_khz(), Some(khz));
        match m.set_tsc_khz(khz / 2) {
            Ok(()) => assert_eq!(m.tsc_khz(), Some(khz / 2)),
            Err(e) => assert!(e.to_string().contains("KVM_SET_TSC_KHZ"), "{e}"),
        }
        let (tx, _rx) = std::sync::mpsc::channel();
        m.start_paused(tx).unwrap();
        assert!(m.set_tsc_khz(khz).is_err(), "not once the vCPUs run");
        m.stop();
    }

    #[test]
    fn start_paused_runs_nothing_until_resume() {
        if !crate::vstate::testing::kvm_or_skip() {
            return;
        }
        let out =
            std::env::temp_dir().join(format!("vmm-paused-test-{}.serial", std::process::id()));
        let req = RunRequest::for_test("pc-7.2", 1, 32 << 20, SerialOutput::File(out.clone()));
        let cfg = config::resolve(config::catalog(), &req).unwrap();
        let mut m = Machine::build(&cfg, vmm_guest::ELF, Some("workload=report"), true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        m.start_paused(tx).unwrap();
        let st = m.vcpus().unwrap().save_states().unwrap();
        assert_eq!(
            st[0].sregs.cr0 & 0x8000_0000,
            0,
            "still at the PVH entry: paging off"
        );
        m.vcpus().unwrap().restore_states(&st).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        m.resume();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20)).unwrap(),
            VmEvent::PowerOff
        );
        m.stop();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("report: done"), "{text}");
        let _ = std::fs::remove_file(out);
    }
}

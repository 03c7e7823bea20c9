//! The destination machine, built paused from a stream's manifest.

use super::kvm_vm::{KVM_VM_DESC, KVM_VM_SECTION, decode_vm_state};
use super::sections::{section_infos, vm_err, with_devices};
use super::vcpu_codec;
use crate::builder::Machine;
use crate::builder::cmdline::DISK_TYPE;
use crate::builder::config::{self as bconfig, BlockDevice, MachineConfig, RunRequest};
use crate::cpu::choice::{self, CpuChoice};
use crate::release::lifecycle;
use crate::release::persona::Persona;
use crate::vstate::vcpu::VmEvent;
use compat_runtime::Override;
use compat_runtime::deprecation::MachineUse;
use devices::persist;
use devices::virtio::block::NO_SERIAL;
use migration::PAGE_SIZE;
use migration::compat_check::{self, IncomingConfig};
use migration::config as mconfig;
use migration::guest_ram::SharedRam;
use migration::instances;
use migration::manifest::MAX_CPUID_LEAVES;
use migration::manifest::{DeviceInstance, Manifest};
use migration::stream::{Section, VcpuRecord};
use migration::vm::RamAccess;
use migration::vm::{MigrationTarget, VmError};
use std::sync::mpsc::{Receiver, channel};

/// How the destination was configured on its command line.
#[derive(Clone, Debug)]
pub struct IncomingSettings {
    /// `-M` if given.
    pub machine: Option<String>,
    /// `--global`/`--device` overrides (empty and no `-M`: adopt the stream's).
    pub overrides: Vec<Override>,
    /// `--smp`/`-m` if given: must match the stream's.
    pub cpus: Option<u32>,
    /// `-m` in bytes if given.
    pub mem_bytes: Option<u64>,
    /// The rest of the request (drives, serial) used to build the machine.
    pub base: RunRequest,
    /// Whether `--cpu` was given (else a stream's chosen CPU is adopted).
    pub cpu_given: bool,
}

impl IncomingSettings {
    /// True when only `--incoming` (plus host resources) was given: adopt the stream.
    pub fn adopts(&self) -> bool {
        self.machine.is_none()
            && self.overrides.is_empty()
            && self.base.disks.iter().all(|d| d.props.is_empty())
    }
}

/// The destination machine being built from a stream.
pub struct MachineTarget<'a> {
    settings: IncomingSettings,
    persona: &'a Persona,
    kernel: &'a [u8],
    append: Option<&'a str>,
    machine: Option<Machine>,
    events: Option<Receiver<VmEvent>>,
    config: Option<MachineConfig>,
    adopted: bool,
    on_manifest: Option<Box<dyn FnMut() + 'a>>,
}

impl<'a> MachineTarget<'a> {
    /// A target that will build its machine with `kernel` (overwritten by the
    /// stream's RAM; only the device layout and the vCPUs matter).
    /// `persona` is what this destination presents (`--as-release R` or this build).
    pub fn new(
        settings: IncomingSettings,
        persona: &'a Persona,
        kernel: &'a [u8],
        append: Option<&'a str>,
    ) -> Self {
        Self {
            settings,
            persona,
            kernel,
            append,
            machine: None,
            events: None,
            config: None,
            adopted: false,
            on_manifest: None,
        }
    }

    /// Calls `f` when a stream's manifest arrives (before it is checked).
    pub fn on_manifest(mut self, f: impl FnMut() + 'a) -> Self {
        self.on_manifest = Some(Box::new(f));
        self
    }

    /// Whether the configuration was adopted from the stream.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The configuration the machine was built with (after `validate`).
    pub fn config(&self) -> Option<&MachineConfig> {
        self.config.as_ref()
    }

    /// The started machine and its event channel (after `start`).
    pub fn into_machine(self) -> Option<(Machine, Receiver<VmEvent>)> {
        Some((self.machine?, self.events?))
    }

    fn machine(&self) -> Result<&Machine, VmError> {
        self.machine
            .as_ref()
            .ok_or_else(|| VmError::new("no machine was built (manifest not validated)"))
    }

    fn resolve_config(&mut self, m: &Manifest) -> Result<MachineConfig, VmError> {
        let catalog = bconfig::catalog();
        let persona = self.persona;
        let local = persona.local_release(&[&KVM_VM_DESC]);
        let overrides = self.settings.overrides.clone();
        let cpu_model = self.settings.base.cpu_model;
        let resolve = |mt: &str| -> Result<_, String> {
            let machine = catalog.machine_or_err(mt).map_err(|e| e.to_string())?;
            let knobs = persona.knobs(machine).map_err(|e| e.to_string())?;
            let e = persona
                .effective(mt, &overrides)
                .map_err(|e| e.to_string())?;
            let devices = bconfig::with_cpu_model(knobs.devices, cpu_model);
            Ok(mconfig::instantiated(
                mconfig::from_effective(&e),
                &devices,
                catalog,
            ))
        };
        let how = if self.settings.adopts() {
            IncomingConfig::Adopt
        } else {
            IncomingConfig::Explicit {
                machine_type: self
                    .settings
                    .machine
                    .as_deref()
                    .map(|n| persona.machine_name(n).map(str::to_string))
                    .transpose()
                    .map_err(|e| VmError::new(format!("-M: {e}")))?,
                resolve: &resolve,
            }
        };
        let accepted = compat_check::check(m, &local, &how).map_err(VmError::new)?;
        let mut problems = Vec::new();
        if let Some(c) = self.settings.cpus.filter(|c| *c != m.vcpus) {
            problems.push(format!(
                "the stream's guest has {} vCPUs, this destination was started with --smp {c}",
                m.vcpus
            ));
        }
        if let Some(b) = self.settings.mem_bytes.filter(|b| *b != m.ram_size) {
            problems.push(format!(
                "the stream's guest has {} bytes of RAM, this destination was started with -m of {b} bytes",
                m.ram_size
            ));
        }
        if !problems.is_empty() {
            return Err(VmError::new(format!(
                "incompatible migration stream: {}",
                problems.join("; ")
            )));
        }
        let machine = catalog
            .machine_or_err(&accepted.machine_type)
            .map_err(VmError::new)?;
        lifecycle::admit(catalog, machine.name, MachineUse::Incoming).map_err(VmError::new)?;
        // As this build, or as `--as-release R` presents the machine type.
        let (effective, origins) = if accepted.adopted {
            let base = persona.base(machine).map_err(VmError::new)?;
            persona.adopt(&base, m).map_err(VmError::new)?
        } else {
            let e = persona.effective(machine.name, &overrides);
            (e.map_err(VmError::new)?, Default::default())
        };
        let knobs = persona.knobs(machine).map_err(VmError::new)?;
        // The guest's CPU (the stream's, checked against this host): a named
        // model is instantiated as such, `host`/`max` keep the host's facts.
        let guest = self.guest_cpu(m)?;
        let guest_model = guest
            .as_ref()
            .and_then(|g| choice::model_type(catalog, &g.model).ok())
            .map(|d| d.name);
        let req = RunRequest {
            cpu: guest.clone().filter(|_| guest_model.is_none()),
            cpu_model: guest_model.or(cpu_model),
            machine: machine.name.to_string(),
            cpus: Some(m.vcpus),
            mem_bytes: Some(m.ram_size),
            overrides: overrides.clone(),
            ..self.settings.base.clone()
        };
        let mut cfg = bconfig::from_effective(&effective, &knobs, &req)
            .map_err(|e| VmError::new(format!("configuring the destination: {e}")))?;
        cfg.origins = origins;
        cfg.cpu_choice = guest;
        if accepted.adopted {
            adopt_disks(&mut cfg, m).map_err(VmError::new)?;
        }
        self.adopted = accepted.adopted;
        Ok(cfg)
    }
}

impl MachineTarget<'_> {
    /// The guest's CPU here: the stream's (compared with `--cpu` if given,
    /// adopted otherwise), refused before any RAM moves when this host
    /// cannot give every feature of it.
    fn guest_cpu(&self, m: &Manifest) -> Result<Option<CpuChoice>, VmError> {
        let local = self
            .settings
            .base
            .cpu
            .as_ref()
            .filter(|_| self.settings.cpu_given);
        let Some(guest) = &m.cpu else {
            return match local {
                Some(_) => Err(VmError::new(
                    "incompatible migration stream: the guest has its source host's own CPU (no --cpu there); this destination was started with --cpu",
                )),
                None => Ok(None),
            };
        };
        if let Some(l) = local {
            let only = |a: &CpuChoice, b: &CpuChoice| -> Vec<String> {
                a.features.difference(&b.features).cloned().collect()
            };
            let (theirs, ours) = (only(guest, l), only(l, guest));
            if !theirs.is_empty() || !ours.is_empty() {
                return Err(VmError::new(format!(
                    "incompatible migration stream: the guest's CPU differs from this destination's --cpu: only the guest has [{}], only here [{}]",
                    theirs.join(", "),
                    ours.join(", ")
                )));
            }
        }
        let catalog = bconfig::catalog();
        let offered = match &self.settings.base.host_offer {
            Some(o) => o.clone(),
            None => crate::cpu::host::offered(catalog, None).map_err(VmError::new)?,
        };
        let lacking: Vec<&String> = guest.features.difference(&offered).collect();
        if let Err(e) = choice::enforce(catalog, guest, &offered) {
            let off: Vec<String> = lacking.iter().map(|f| format!("{f}=off")).collect();
            return Err(VmError::new(format!(
                "this host cannot present the guest's CPU: {e}; start the source with --cpu host,{} (or with the baseline of both hosts, vmm cpu baseline)",
                off.join(",")
            )));
        }
        Ok(Some(guest.clone()))
    }
}

/// A destination adopting the stream also adopts its disks, in order, onto
/// its own backends: each disk's id, its own property values (`--device
/// ...,num-queues=3` on the source) and its serial where the local `--drive`
/// gives none. Capacity and read-only state belong to the backend and must
/// match (compared later, with every instance).
fn adopt_disks(cfg: &mut MachineConfig, m: &Manifest) -> Result<(), String> {
    let streamed: Vec<_> = m
        .devices
        .iter()
        .filter(|d| d.type_name == DISK_TYPE)
        .collect();
    order_disks(&mut cfg.blocks, &streamed);
    let effective = cfg.effective.clone();
    let vcpus = cfg.vcpus;
    for (b, s) in cfg.blocks.iter_mut().zip(streamed) {
        b.id = s.id.clone();
        if b.config.serial.is_none() {
            let serial = s.facts.get("serial").filter(|v| v.as_str() != NO_SERIAL);
            b.config.serial = serial.cloned();
        }
        if b.props.is_empty() && !s.props.is_empty() {
            let props = s
                .props
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect();
            bconfig::reconfigure_disk(&effective, vcpus, b, props)
                .map_err(|e| format!("adopting disk {}: {e}", s.id))?;
        }
    }
    Ok(())
}

/// Puts the local disks in the stream's order: a disk whose backend is named
/// like a streamed disk's takes that disk's place, the others fill the
/// remaining places in their own order.
fn order_disks(blocks: &mut Vec<BlockDevice>, streamed: &[&DeviceInstance]) {
    let mut pool: Vec<Option<BlockDevice>> = blocks.drain(..).map(Some).collect();
    let mut placed: Vec<Option<BlockDevice>> = streamed
        .iter()
        .map(|s| {
            let name = s.backend.as_deref()?;
            let k = pool.iter().position(|b| {
                b.as_ref()
                    .is_some_and(|b| b.backend.as_deref() == Some(name))
            })?;
            pool[k].take()
        })
        .collect();
    let mut rest = pool.into_iter().flatten();
    for slot in &mut placed {
        if slot.is_none() {
            *slot = rest.next();
        }
    }
    blocks.extend(placed.into_iter().flatten());
    blocks.extend(rest);
}

impl MigrationTarget for MachineTarget<'_> {
    fn ram(&self) -> Option<std::sync::Arc<dyn RamAccess>> {
        let m = self.machine.as_ref()?;
        // Not started until the whole stream checked out: pages land in place.
        Some(std::sync::Arc::new(SharedRam::landing(
            m.vm().memory().clone(),
        )))
    }

    fn validate(&mut self, m: &Manifest) -> Result<(), VmError> {
        if let Some(f) = self.on_manifest.as_mut() {
            f();
        }
        let max = self.persona.max_stream_format();
        if m.format_version > max {
            return Err(VmError::new(format!(
                "incompatible migration stream: format {} (data channels or compression); release {} reads up to format {max}: migrate without --channels and --compress",
                m.format_version,
                self.persona.release()
            )));
        }
        let cfg = self.resolve_config(m)?;
        // Host resources: the stream's disks need as many here. A stream
        // that lists its instances is compared instance by instance below
        // (naming each missing disk); an older one by count.
        if m.devices.is_empty() {
            let streamed = m
                .sections
                .iter()
                .filter(|s| persist::base_name(&s.name) == "virtio-mmio")
                .count();
            if streamed != cfg.blocks.len() {
                return Err(VmError::new(format!(
                    "the stream's guest has {streamed} virtio-blk device(s) (sections virtio-mmio/N), this destination has {} --drive",
                    cfg.blocks.len()
                )));
            }
        }
        let mut machine = Machine::build(&cfg, self.kernel, self.append, true)
            .map_err(|e| vm_err("building the destination VM")(&e))?;
        // The guest's TSC keeps its source's frequency, or the stream is refused.
        if let (Some(theirs), Some(ours)) = (m.tsc_khz, machine.tsc_khz())
            && theirs != ours
        {
            machine.set_tsc_khz(theirs).map_err(|e| {
                VmError::new(format!(
                    "incompatible migration stream: the guest's TSC runs at {theirs} kHz, this host's at {ours} kHz, and it cannot be scaled here ({e})"
                ))
            })?;
        }
        // The guest's CPUID table, bit for bit where it says what the
        // processor is and what it has (an older source sends none).
        if m.cpuid.len() > MAX_CPUID_LEAVES {
            return Err(VmError::new(format!(
                "incompatible migration stream: {} CPUID entries (at most {MAX_CPUID_LEAVES})",
                m.cpuid.len()
            )));
        }
        if !m.cpuid.is_empty() {
            let notes = crate::cpu::table::compare(bconfig::catalog(), &m.cpuid, machine.vm().cpuid_table())
                .map_err(|e| VmError::new(format!("incompatible migration stream: this host would present another CPU to the guest: {e}")))?;
            for n in notes {
                tracing::warn!("the guest's CPUID differs here in a host detail: {n}");
            }
        }
        let ram = machine.vm().ram_pages() * PAGE_SIZE as u64;
        if ram != m.ram_size {
            return Err(VmError::new(format!(
                "the destination VM has {ram} bytes of RAM, the stream {}",
                m.ram_size
            )));
        }
        // The same instances, with the same backends (capacity, read-only,
        // serial), before any RAM moves. A stream that lists none (an older
        // source) is compared by its configuration only.
        if !m.devices.is_empty() {
            instances::check(&m.devices, &machine.instances()).map_err(VmError::new)?;
        }
        // Every section the stream lists must have an owner here, and every
        // section this machine needs must be in the stream.
        let local = section_infos(machine.devices())?;
        for s in &m.sections {
            if !local.iter().any(|l| l.name == s.name) {
                return Err(VmError::new(format!(
                    "section `{}` has no device on this destination",
                    s.name
                )));
            }
        }
        for l in &local {
            if m.section(&l.name).is_none() {
                return Err(VmError::new(format!(
                    "section `{}` is missing from the stream",
                    l.name
                )));
            }
        }
        let (tx, rx) = channel();
        machine
            .start_paused(tx)
            .map_err(|e| vm_err("starting the destination vCPUs paused")(&e))?;
        self.machine = Some(machine);
        self.events = Some(rx);
        self.config = Some(cfg);
        Ok(())
    }

    fn write_pages(&mut self, first_page: u64, data: &[u8]) -> Result<(), VmError> {
        self.machine()?
            .vm()
            .write_pages(first_page, data)
            .map_err(|e| vm_err("writing guest RAM")(&e))
    }

    fn write_zero_pages(&mut self, first_page: u64, count: u64) -> Result<(), VmError> {
        self.machine()?
            .vm()
            .zero_pages(first_page, count)
            .map_err(|e| vm_err("zeroing guest RAM")(&e))
    }

    fn load_devices(&mut self, sections: Vec<Section>) -> Result<(), VmError> {
        let m = self.machine()?;
        let mut vm_state = None;
        let mut by_device: Vec<Vec<persist::Section>> = Vec::new();
        // Route every section to its device (by name and instance).
        let mut routed = vec![false; sections.len()];
        with_devices(m.devices(), |inst, p| {
            let mine: Vec<persist::Section> = sections
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    let (base, i) = match s.name.split_once('/') {
                        Some((b, i)) => (b, Some(i)),
                        None => (s.name.as_str(), None),
                    };
                    let want = inst.map(|n| n.to_string());
                    p.owns(base) && i.map(str::to_string) == want
                })
                .map(|(k, s)| {
                    routed[k] = true;
                    persist::Section {
                        name: s.name.clone(),
                        version_id: s.version_id,
                        data: s.data.clone(),
                    }
                })
                .collect();
            by_device.push(mine);
            Ok(())
        })?;
        for (k, s) in sections.iter().enumerate() {
            if s.name == KVM_VM_SECTION {
                vm_state = Some(decode_vm_state(&s.data)?);
            } else if !routed[k] {
                return Err(VmError::new(format!(
                    "section `{}` has no device on this destination",
                    s.name
                )));
            }
        }
        let vm_state = vm_state
            .ok_or_else(|| VmError::new(format!("section `{KVM_VM_SECTION}` is missing")))?;
        let mut it = by_device.into_iter();
        with_devices(m.devices(), |inst, p| {
            let secs = it.next().unwrap_or_default();
            p.restore_sections(&secs).map_err(|e| match inst {
                Some(i) => VmError::new(format!("restoring device instance {i}: {e}")),
                None => VmError::new(format!("restoring device state: {e}")),
            })
        })?;
        m.vm()
            .restore_state(&vm_state)
            .map_err(|e| vm_err("restoring irqchip/PIT/clock")(&e))
    }

    fn load_vcpus(&mut self, vcpus: Vec<VcpuRecord>) -> Result<(), VmError> {
        let m = self.machine()?;
        let set = m
            .vcpus()
            .ok_or_else(|| VmError::new("the destination vCPUs were not created"))?;
        if vcpus.len() != set.len() {
            return Err(VmError::new(format!(
                "the stream has {} vCPU records, this destination {} vCPUs",
                vcpus.len(),
                set.len()
            )));
        }
        let states = vcpus
            .iter()
            .map(|v| {
                vcpu_codec::decode_vcpu(&v.data)
                    .map_err(|e| VmError::new(format!("vCPU {}: {e}", v.index)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        set.restore_states(&states)
            .map_err(|e| vm_err("restoring vCPU state")(&e))
    }

    fn start(&mut self) -> Result<(), VmError> {
        self.machine()?.resume();
        Ok(())
    }
}

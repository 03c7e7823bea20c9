//! `vmm run`: build a VM from a versioned machine type and run it until the
//! guest powers off (exit 0), crashes (non-zero, with the KVM exit and
//! registers), or an error occurs. A guest reset rebuilds and reboots the VM
//! in the same process with the same configuration.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use devices::bus::lock;
use devices::serial::Serial;

use compat_runtime::Override;
use devices::serial::SerialOutput;

use crate::builder::Machine;
use crate::builder::cmdline;
use crate::builder::config::{self, ConfigError, RunRequest};
use crate::control::events::Events;
use crate::control::runtime::{MachineHandler, RunEvent, RunShared, RunState};
use crate::control::server::ControlServer;
use crate::control::state::State;
use crate::migrate::IncomingSettings;
use crate::release::persona::Persona;
use crate::storage::{DriveInfo, Storage};
use crate::vstate::vcpu::VmEvent;

mod error;
mod incoming;
pub use error::RunError;
use incoming::Incoming;

/// Removes the control sockets when `run` returns, however it returns.
struct SocketsRemoved<'a>(&'a RunShared);

impl Drop for SocketsRemoved<'_> {
    fn drop(&mut self) {
        self.0.drop_sockets();
    }
}

/// Arguments of `vmm run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Machine type: versioned name (`pc-7.2`) or alias (`pc`); default `pc`
    /// (with `--incoming` alone: the stream's).
    #[arg(short = 'M', long = "machine")]
    pub machine: Option<String>,
    /// Number of vCPUs (`N` or `cpus=N`); default: the machine type's.
    #[arg(long)]
    pub smp: Option<String>,
    /// Guest RAM (`256M`, `1G`; a bare number is MiB); default: the machine type's.
    #[arg(short = 'm', long = "memory")]
    pub memory: Option<String>,
    /// A raw disk image: `id=ID,file=PATH[,readonly=on]` declares a backend
    /// for `--device virtio-blk-device,drive=ID`; `file=PATH[,readonly=on][,serial=S]`
    /// without `id` is a backend plus one virtio-blk disk.
    #[arg(long)]
    pub drive: Vec<String>,
    /// One device: `virtio-blk-device,drive=ID[,id=NAME][,PROP=VALUE...]`
    /// creates a disk; `isa-serial,...` or `pcie-root-port,...` configures
    /// the machine's one such device.
    #[arg(long)]
    pub device: Vec<String>,
    /// Property override for a type and its subtypes: `TYPE.prop=val`.
    #[arg(long)]
    pub global: Vec<String>,
    /// PVH ELF to boot (default: the embedded guest).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Appended to the command line the VMM builds.
    #[arg(long)]
    pub append: Option<String>,
    /// Serial output: `stdio` or `file:PATH`.
    #[arg(long, default_value = "stdio")]
    pub serial: String,
    /// A QMP socket (mode 0600) for `vmm ctl`, `vmm migrate` and any QMP
    /// client: shorthand for `--qmp unix:PATH,server=on,wait=off`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// A QMP socket (the reference's management protocol):
    /// `unix:PATH[,server=on][,wait=off]`.
    #[arg(long, value_name = "unix:PATH")]
    pub qmp: Option<String>,
    /// Wait for a migration stream (`tcp:HOST:PORT`, `unix:PATH`), restore
    /// a snapshot (`file:PATH`), or `defer`: wait for QMP's
    /// `migrate-incoming` to say where, instead of booting. Alone, it adopts the
    /// stream's machine type and configuration; with `-M`/`--device`/`--global`
    /// those must not contradict the stream.
    #[arg(long, value_name = "URI")]
    pub incoming: Option<String>,
    /// With `--incoming`: the source must authenticate with these
    /// credentials, TLS 1.3 on every connection: an x509 directory in the
    /// reference's layout (`ca-cert.pem`, `server-cert.pem`,
    /// `server-key.pem`...) or `psk:FILE` (`identity:hexkey` lines; also
    /// the key of a sealed `file:` snapshot). `vmm tls gen` writes a
    /// rehearsal set.
    #[arg(long, value_name = "DIR|psk:FILE")]
    pub tls_creds: Option<String>,
    /// With x509 `--tls-creds`: a client certificate subject the
    /// destination admits (`CN=source,O=vmm`); repeatable; none: any the
    /// CA signed.
    #[arg(long, value_name = "SUBJECT")]
    pub tls_authz: Vec<String>,
    /// The guest's CPU: `MODEL[,FEATURE=on|off][,+FEATURE][,-FEATURE]`, MODEL
    /// `qemu64` (the default: its features, as data) or `host` (the features
    /// this host's KVM offers, migratable only). A feature the host lacks is
    /// refused, exit 2.
    #[arg(long, value_name = "MODEL,...")]
    pub cpu: Option<String>,
    /// Simulation aid for tests and rehearsals: behave as if this host's KVM
    /// offered only the features of FILE (a `vmm cpu host --json` output).
    /// It can only take features away.
    #[arg(long = "host-cpu", value_name = "FILE")]
    pub host_cpu: Option<PathBuf>,
    /// Act as frozen release R (`compat/releases/R.lock.toml`): its property
    /// values, section versions, stream format, and R in the manifest.
    #[arg(long = "as-release", value_name = "R")]
    pub as_release: Option<String>,
}

/// `-M` when none is given.
pub const DEFAULT_MACHINE: &str = "pc";

/// Parses `--smp N` or `--smp cpus=N[,...]`.
fn parse_smp(s: &str) -> Result<u32, RunError> {
    let v = s
        .split(',')
        .find_map(|kv| match kv.split_once('=') {
            Some(("cpus", v)) => Some(v),
            None => Some(kv),
            _ => None,
        })
        .unwrap_or(s);
    v.trim().parse().map_err(|_| RunError::Smp(s.to_string()))
}

fn parse_serial(s: &str) -> Result<SerialOutput, RunError> {
    match s {
        "stdio" => Ok(SerialOutput::Stdio),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialOutput::File(PathBuf::from(p))),
            _ => Err(RunError::Serial(s.to_string())),
        },
    }
}

/// The drives by the names the block commands use: a `--drive id=`, else
/// the id of the disk on it.
fn drive_infos(req: &RunRequest) -> Vec<DriveInfo> {
    req.drives
        .iter()
        .enumerate()
        .map(|(i, drive)| {
            // The disk on it; a destination's shorthand drives get theirs
            // from the stream, in order (`virtio-blk{N}`).
            let device = req
                .disks
                .iter()
                .find(|d| d.drive == i)
                .map_or_else(|| format!("virtio-blk{i}"), |d| d.id.clone());
            DriveInfo {
                node: drive.id.clone().unwrap_or_else(|| device.clone()),
                device,
                path: drive.file.clone(),
                read_only: drive.read_only,
            }
        })
        .collect()
}

/// Turns CLI arguments into a request (no KVM involved).
pub fn request(args: &RunArgs) -> Result<RunRequest, RunError> {
    let mem_bytes = match &args.memory {
        Some(m) => Some(config::parse_size(m).ok_or_else(|| RunError::Memory(m.clone()))?),
        None => None,
    };
    let cpus = args.smp.as_deref().map(parse_smp).transpose()?;
    let incoming = args.incoming.is_some();
    let inst = cmdline::parse(config::catalog(), &args.drive, &args.device, incoming)
        .map_err(ConfigError::from)?;
    for d in &inst.drives {
        if !d.file.exists() {
            return Err(RunError::MissingImage(d.file.clone()));
        }
    }
    let mut overrides = Vec::new();
    for g in &args.global {
        overrides.push(Override::parse_global(g).map_err(ConfigError::from)?);
    }
    overrides.extend(inst.singles);
    let mut cpu_model = None;
    if let Some(spec) = args.cpu.as_deref()
        && let Some((ty, settings)) = crate::cpu::choice::model_settings(config::catalog(), spec)
            .map_err(ConfigError::from)?
    {
        cpu_model = Some(ty);
        overrides.extend(settings);
    }
    let (cpu, host_offer) = cpu_request(args, cpu_model.is_some())?;
    Ok(RunRequest {
        cpu,
        cpu_model,
        host_offer,
        machine: args
            .machine
            .clone()
            .unwrap_or_else(|| DEFAULT_MACHINE.to_string()),
        cpus,
        mem_bytes,
        drives: inst.drives,
        disks: inst.disks,
        overrides,
        serial: parse_serial(&args.serial)?,
    })
}

/// `--cpu`/`--host-cpu` resolved against this host, and what this host
/// offers (the machine's CPU model is enforced against it).
fn cpu_request(args: &RunArgs, named: bool) -> Result<CpuRequest, RunError> {
    let host_err = |e: String| RunError::Config(ConfigError::Host(e));
    let simulated = match &args.host_cpu {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| host_err(format!("--host-cpu {}: {e}", p.display())))?;
            let h: crate::cpu::host::HostCpu = serde_json::from_str(&text)
                .map_err(|e| host_err(format!("--host-cpu {}: {e}", p.display())))?;
            Some(h)
        }
        None => None,
    };
    let offered = crate::cpu::host::offered(config::catalog(), simulated.as_ref())
        .map_err(|e| host_err(e.to_string()))?;
    let spec = match (&args.cpu, &simulated) {
        // A named model: its feature settings are `--global`s on its type.
        (Some(_), _) if named => None,
        (Some(s), _) => Some(s.as_str()),
        (None, Some(_)) => Some(crate::cpu::choice::HOST_MODEL),
        (None, None) => None,
    };
    let cpu = spec
        .map(|s| crate::cpu::choice::parse(config::catalog(), s, &offered))
        .transpose()
        .map_err(ConfigError::from)?;
    Ok((cpu, Some(offered)))
}

type CpuRequest = (
    Option<crate::cpu::choice::CpuChoice>,
    Option<std::collections::BTreeSet<String>>,
);

fn load_kernel(path: Option<&Path>) -> Result<Vec<u8>, RunError> {
    match path {
        Some(p) => std::fs::read(p).map_err(|source| RunError::Kernel {
            path: p.to_path_buf(),
            source,
        }),
        None => Ok(vmm_guest::ELF.to_vec()),
    }
}

type SerialSlot = Arc<Mutex<Option<Arc<Mutex<Serial>>>>>;

/// Forwards the VMM's stdin to the current VM's UART (the VM is rebuilt on
/// reset, hence the slot). Ends at EOF (e.g. stdin is /dev/null).
fn forward_stdin(slot: SerialSlot) {
    let spawned = std::thread::Builder::new()
        .name("serial-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let serial = lock(&slot).clone();
                    let Some(serial) = serial else { return };
                    let sent = lock(&serial).enqueue_input(pending);
                    pending = &pending[sent..];
                    if sent == 0 {
                        // The guest has not drained its receive FIFO yet.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("serial input disabled: cannot spawn stdin thread: {e}");
    }
}

/// Forwards machine `generation`'s events to the main loop.
fn forward_events(generation: u64, rx: mpsc::Receiver<VmEvent>, tx: mpsc::Sender<RunEvent>) {
    let spawned = std::thread::Builder::new()
        .name("vm-events".into())
        .spawn(move || {
            while let Ok(e) = rx.recv() {
                if tx.send(RunEvent::Vm(generation, e)).is_err() {
                    return;
                }
            }
            let _ = tx.send(RunEvent::VcpusGone(generation));
        });
    if let Err(e) = spawned {
        tracing::error!("cannot spawn the VM event thread: {e}");
    }
}

/// The destination's settings from the command line.
fn incoming_settings(args: &RunArgs, req: &RunRequest) -> IncomingSettings {
    IncomingSettings {
        machine: args.machine.clone(),
        overrides: req.overrides.clone(),
        cpus: req.cpus,
        mem_bytes: req.mem_bytes,
        base: req.clone(),
        cpu_given: args.cpu.is_some(),
    }
}

/// Runs the VM until power-off (Ok) or a crash/error.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    let req = request(args)?;
    let persona = Persona::from_arg(args.as_release.as_deref())?;
    persona.check_machine(args.machine.as_deref())?;
    let incoming = args.incoming.as_deref().map(Incoming::parse).transpose()?;
    let tls = args
        .tls_creds
        .as_deref()
        .map(|c| incoming::required(c, &args.tls_authz))
        .transpose()
        .map_err(RunError::Tls)?;
    // A destination resolves its configuration from the stream.
    let mut cfg = match incoming {
        Some(_) => None,
        None => Some(persona.start(&req)?),
    };
    let kernel = load_kernel(args.kernel.as_deref())?;
    let (tx, main_rx) = mpsc::channel();
    let events = Arc::new(Events::default());
    let shared = Arc::new(RunShared::new(
        if incoming.is_some() {
            RunState::Incoming
        } else {
            RunState::Running
        },
        tx.clone(),
        persona.clone(),
        events.clone(),
    ));
    let storage = {
        let shared = shared.clone();
        Arc::new(Storage::new(
            drive_infos(&req),
            Arc::new(move |name: &str, data| shared.emit(name, data)),
        ))
    };
    let control = State::with_storage(Arc::new(MachineHandler(shared.clone())), events, storage);
    let mut sockets = args.control.iter().cloned().collect::<Vec<_>>();
    if let Some(arg) = &args.qmp {
        sockets.push(crate::control::qmp::parse_arg(arg).map_err(RunError::Qmp)?);
    }
    for path in &sockets {
        let server = ControlServer::bind(path)?;
        // Removes the socket when the run ends (the server thread never
        // returns), if it still is this process's.
        shared.keep_socket(server.guard());
        server.spawn(control.clone());
    }
    let _sockets = SocketsRemoved(&shared);
    let serial_output = match &cfg {
        Some(c) => c.serial.as_ref().map(|s| s.output.clone()),
        None => Some(req.serial.clone()),
    };
    // The stdin thread starts once the first UART exists (input before
    // that, e.g. while waiting for a stream, waits in the pipe).
    let stdin_slot: Option<SerialSlot> = match serial_output {
        Some(SerialOutput::Stdio) => Some(SerialSlot::default()),
        _ => None,
    };
    let mut stdin_started = false;
    let mut start_stdin = |slot: &SerialSlot| {
        if !stdin_started {
            stdin_started = true;
            forward_stdin(slot.clone());
        }
    };
    let mut generation = 0u64;
    if let Some(how) = &incoming {
        let Some((machine, rx, got)) =
            incoming::receive(how, args, &req, &persona, &kernel, &shared, tls.as_ref())?
        else {
            return Ok(());
        };
        cfg = got;
        if let Some(slot) = &stdin_slot {
            *lock(slot) = machine.devices().serial.clone();
            start_stdin(slot);
        }
        forward_events(generation, rx, tx.clone());
        *shared.write() = Some(machine);
        shared.set_state(RunState::Running);
        shared.set_incoming("completed");
        shared.emit("RESUME", serde_json::json!({}));
        eprintln!("incoming: running");
    }
    let cfg = cfg.ok_or(RunError::VcpusGone)?;
    let mut first = true;
    loop {
        if shared.read().is_none() {
            let (vtx, vrx) = mpsc::channel();
            let mut machine = Machine::build(&cfg, &kernel, args.append.as_deref(), first)?;
            tracing::info!(
                "{}: {} vCPUs, {} MiB, cmdline `{}`",
                cfg.machine,
                cfg.vcpus,
                cfg.mem_bytes >> 20,
                machine.cmdline()
            );
            if let Some(slot) = &stdin_slot {
                *lock(slot) = machine.devices().serial.clone();
                start_stdin(slot);
            }
            machine.start(vtx)?;
            forward_events(generation, vrx, tx.clone());
            *shared.write() = Some(machine);
            shared.set_state(RunState::Running);
        }
        let ev = main_rx.recv();
        let stop = || {
            if let Some(mut m) = shared.write().take() {
                m.stop();
            }
        };
        match ev {
            Ok(RunEvent::Vm(g, _) | RunEvent::VcpusGone(g)) if g != generation => {}
            Ok(RunEvent::Vm(_, VmEvent::PowerOff)) => {
                shared.emit(
                    "SHUTDOWN",
                    serde_json::json!({ "guest": true, "reason": "guest-shutdown" }),
                );
                stop();
                return Ok(());
            }
            Ok(RunEvent::Quit) => {
                stop();
                return Ok(());
            }
            Ok(RunEvent::MigratedAway) => {
                stop();
                tracing::info!("migrated: the guest runs on the destination");
                return Ok(());
            }
            Ok(RunEvent::Vm(_, VmEvent::Reset)) => {
                shared.emit(
                    "RESET",
                    serde_json::json!({ "guest": true, "reason": "guest-reset" }),
                );
                tracing::info!("guest reset: rebooting");
                stop();
                first = false;
                generation += 1;
            }
            Ok(RunEvent::Reset) => {
                tracing::info!("guest reset: rebooting");
                stop();
                first = false;
                generation += 1;
            }
            Ok(RunEvent::Vm(_, VmEvent::Crash { vcpu, exit, regs })) => {
                stop();
                return Err(RunError::GuestCrash { vcpu, exit, regs });
            }
            Ok(RunEvent::VcpusGone(_)) | Err(_) => {
                stop();
                return Err(RunError::VcpusGone);
            }
        }
    }
}

/// Entry point of `vmm run`: exit code 0 on guest power-off, 1 otherwise.
pub fn main(args: RunArgs) -> ExitCode {
    crate::cli::logger::init();
    super::exit_with(|| run(&args).map_err(miette::Report::new))
}

/// Entry point of `vmm guest-elf PATH`: writes the embedded guest ELF.
pub fn guest_elf(path: &Path) -> ExitCode {
    match std::fs::write(path, vmm_guest::ELF) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_and_serial() {
        assert_eq!(parse_smp("2").unwrap(), 2);
        assert_eq!(parse_smp("cpus=4,sockets=1").unwrap(), 4);
        assert!(parse_smp("two").is_err());
        assert_eq!(
            parse_serial("file:/x").unwrap(),
            SerialOutput::File("/x".into())
        );
        assert!(parse_serial("file:").is_err());
        assert!(parse_serial("tcp:1").is_err());
    }
}

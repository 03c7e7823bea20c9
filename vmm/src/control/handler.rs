//! What the runtime does for each control command. The QMP server
//! ([`super::qmp`]) validates a command's arguments and shapes its answer;
//! the handler does the work and sends the events it causes
//! ([`super::events::Events`]).

use super::types::{MigrateRequest, StatusInfo, TlsSettings, VerifyAbResult};
use compat_runtime::EffectiveConfig;
use migration::manifest::DeviceInstance;
use migration::precopy::{CancelToken, Progress, Summary};
use migration::vm::VmError;

/// A command whose answer was written, after which the process acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// `quit`: the process exits.
    Quit,
    /// An outgoing migration completed: the guest runs on the destination.
    Migrated,
}

/// One vCPU as `query-cpus-fast` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    /// Its index.
    pub index: u32,
    /// The host thread that runs it (0: not known).
    pub thread_id: i64,
}

/// What a running machine looks like to QOM (`qom-list`, `qom-get`).
#[derive(Clone, Debug)]
pub struct MachineView {
    /// Every property of every device type, with provenance.
    pub effective: EffectiveConfig,
    /// The device instances.
    pub instances: Vec<DeviceInstance>,
    /// The CPU model's type (`qemu64-x86_64-cpu`), if the machine has one.
    pub cpu_type: Option<String>,
    /// The vCPUs.
    pub vcpus: Vec<VcpuInfo>,
}

/// What the runtime does for each command. Called from the server's
/// connection threads, possibly concurrently (`migrate_cancel` and
/// `query-migrate` arrive while a migration runs).
pub trait ControlHandler: Send + Sync {
    /// State, machine type, pinned properties, devices, migration progress.
    fn status(&self) -> Result<StatusInfo, VmError>;
    /// The last progress of an outgoing migration in flight (what
    /// `query-migrate` polls: no device list built for it).
    fn migration_progress(&self) -> Option<Progress>;
    /// The running machine for QOM; `None` while waiting for a stream.
    fn view(&self) -> Option<MachineView>;
    /// Pauses the vCPUs.
    fn stop(&self) -> Result<(), VmError>;
    /// Resumes the vCPUs.
    fn cont(&self) -> Result<(), VmError>;
    /// Accepts `quit`; the process exits once the answer is written
    /// ([`answered`](Self::answered)).
    fn quit(&self) -> Result<(), VmError>;
    /// Runs an outgoing migration, calling `progress` as it goes and
    /// honouring `cancel`.
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError>;
    /// Starts listening for the incoming migration of a `--incoming defer`
    /// destination, requiring `tls` if given (else the command line's
    /// `--tls-creds`); returns once it listens (the URI it listens on).
    fn migrate_incoming(&self, uri: &str, tls: Option<TlsSettings>) -> Result<String, VmError>;
    /// The incoming migration's status (`setup`, `active`, `completed`,
    /// `failed`) and the URI it listens on, on a destination.
    fn incoming_status(&self) -> Option<(&'static str, Option<String>)>;
    /// Called once the successful answer to a command that ends something
    /// was written: the place to end the process without cutting the
    /// answer off.
    fn answered(&self, what: Answered);
    /// Checks the a-b workload's memory image (`pages` pages from
    /// guest-physical `start`) on a stopped guest.
    fn verify_ab(&self, start: u64, pages: u64) -> Result<VerifyAbResult, VmError>;
    /// Resets the guest as its own reset through port 0xcf9 would.
    fn system_reset(&self) -> Result<(), VmError>;
    /// Presses the power button (ACPI PM1 status PWRBTN_STS): the guest
    /// decides what to do.
    fn system_powerdown(&self) -> Result<(), VmError>;
}

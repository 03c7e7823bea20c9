//! What the runtime does for each control request, whichever protocol
//! carried it (the JSON lines of `--control`, QMP of `--qmp`).

use super::protocol::{MigrateRequest, Request, StatusInfo, VerifyAbResult};
use migration::precopy::{CancelToken, Progress, Summary};
use migration::vm::VmError;

/// What the runtime does for each request. Called from the server's
/// connection threads, possibly concurrently (`migrate-cancel` and `status`
/// arrive while `migrate` runs).
pub trait ControlHandler: Send + Sync {
    /// State, machine type, pinned properties, migration progress.
    fn status(&self) -> Result<StatusInfo, VmError>;
    /// Pauses the vCPUs.
    fn stop(&self) -> Result<(), VmError>;
    /// Resumes the vCPUs.
    fn cont(&self) -> Result<(), VmError>;
    /// Shuts the VM down; the process should exit once this returns.
    fn quit(&self) -> Result<(), VmError>;
    /// Runs an outgoing migration (typically `precopy::migrate_to`), calling
    /// `progress` as it goes and honouring `cancel`.
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError>;
    /// Called once the successful answer to `req` was written (or the client
    /// went away): the place to end the process after `quit` or a migration
    /// handed over, without cutting the answer off.
    fn answered(&self, req: &Request) {
        let _ = req;
    }
    /// Checks the a-b workload's memory image (`pages` pages from
    /// guest-physical `start`) on a stopped guest.
    fn verify_ab(&self, start: u64, pages: u64) -> Result<VerifyAbResult, VmError> {
        let _ = (start, pages);
        Err(VmError::new("verify-ab is not supported here"))
    }
    /// Resets the guest as its own reset through port 0xcf9 would.
    fn system_reset(&self) -> Result<(), VmError> {
        Err(VmError::new("system-reset is not supported here"))
    }
}

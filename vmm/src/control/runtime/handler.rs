//! [`ControlHandler`] over a [`RunShared`]: what each command does to the
//! running machine, and the QMP events it causes.

use super::{Deferred, RunEvent, RunShared, RunState};
use crate::control::handler::{Answered, ControlHandler, MachineView, VcpuInfo};
use crate::control::types::{DeviceInfo, MigrateRequest, PinnedProp, StatusInfo, VerifyAbResult};
use crate::migrate::MachineSource;
use devices::bus::lock;
use migration::precopy::{self, CancelToken, Outcome, Progress, Summary};
use migration::transport::Uri;
use migration::vm::VmError;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// [`ControlHandler`] over a [`RunShared`].
pub struct MachineHandler(pub Arc<RunShared>);

pub(super) fn no_machine() -> VmError {
    VmError::new("no guest is running (waiting for an incoming migration)")
}

/// How long `migrate-incoming` waits for the main loop to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

impl MachineHandler {
    fn running_or_paused(&self, what: &str) -> Result<(), VmError> {
        match self.0.state() {
            RunState::Running | RunState::Paused if self.0.read().is_some() => Ok(()),
            s => Err(VmError::new(format!(
                "cannot {what}: the VM is {}",
                s.name()
            ))),
        }
    }
}

impl ControlHandler for MachineHandler {
    fn status(&self) -> Result<StatusInfo, VmError> {
        let state = self.0.state();
        let migration = self.migration_progress();
        let guard = self.0.read();
        let (machine_type, pinned, devices) = match guard.as_ref() {
            Some(m) => (
                m.config().machine.clone(),
                PinnedProp::of(&m.config().effective, &m.config().origins),
                DeviceInfo::of(m.instances(), &m.config().effective),
            ),
            None => (String::new(), Vec::new(), Vec::new()),
        };
        Ok(StatusInfo {
            state: state.name().into(),
            machine_type,
            release: self.0.persona.release().into(),
            pinned,
            devices,
            migration,
        })
    }

    fn migration_progress(&self) -> Option<Progress> {
        let p = lock(&self.0.progress).clone();
        p.filter(|_| self.0.state() == RunState::Migrating)
    }

    fn view(&self) -> Option<MachineView> {
        let g = self.0.read();
        let m = g.as_ref()?;
        let cfg = m.config();
        let catalog = crate::builder::config::catalog();
        let cpu_type = cfg
            .device_types
            .iter()
            .find(|t| catalog.device_type(t).is_some_and(|d| d.cpu_model))
            .map(|t| t.to_string());
        let tids = m.vcpus().map(|v| v.thread_ids()).unwrap_or_default();
        let vcpus = (0..u32::from(cfg.vcpus))
            .map(|i| VcpuInfo {
                index: i,
                thread_id: tids.get(i as usize).copied().unwrap_or(0),
            })
            .collect();
        Some(MachineView {
            effective: cfg.effective.clone(),
            instances: m.instances(),
            cpu_type,
            vcpus,
        })
    }

    fn stop(&self) -> Result<(), VmError> {
        self.running_or_paused("stop")?;
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        m.pause()
            .map_err(|e| VmError::new(format!("pausing the vCPUs: {e}")))?;
        let was = self.0.state();
        self.0.set_state(RunState::Paused);
        if was == RunState::Running {
            self.0.emit("STOP", json!({}));
        }
        Ok(())
    }

    fn cont(&self) -> Result<(), VmError> {
        self.running_or_paused("continue")?;
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        m.resume();
        let was = self.0.state();
        self.0.set_state(RunState::Running);
        if was == RunState::Paused {
            self.0.emit("RESUME", json!({}));
        }
        Ok(())
    }

    fn quit(&self) -> Result<(), VmError> {
        // The main loop is told in `answered`, once the client has its answer.
        Ok(())
    }

    fn answered(&self, what: Answered) {
        match what {
            Answered::Quit => {
                self.0.emit(
                    "SHUTDOWN",
                    json!({ "guest": false, "reason": "host-qmp-quit" }),
                );
                let deferred = lock(&self.0.deferred).clone();
                match (self.0.state(), deferred) {
                    (RunState::Incoming, Some(tx)) => {
                        let _ = tx.send(Deferred::Quit);
                    }
                    // The main loop is inside the incoming migration and
                    // cannot be told: nothing runs yet, end here.
                    (RunState::Incoming, None) => self.0.exit_now(),
                    _ => self.0.send(RunEvent::Quit),
                }
            }
            Answered::Migrated if self.0.state() == RunState::Postmigrate => {
                self.0.send(RunEvent::MigratedAway)
            }
            Answered::Migrated => {}
        }
    }

    fn system_reset(&self) -> Result<(), VmError> {
        self.running_or_paused("reset")?;
        self.0.send(RunEvent::Reset);
        self.0.emit(
            "RESET",
            json!({ "guest": false, "reason": "host-qmp-system-reset" }),
        );
        Ok(())
    }

    fn system_powerdown(&self) -> Result<(), VmError> {
        self.running_or_paused("power down")?;
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        m.press_power_button();
        self.0.emit("POWERDOWN", json!({}));
        Ok(())
    }

    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError> {
        let uri: Uri = req.uri.parse().map_err(VmError::new)?;
        if let Uri::File(p) = &uri
            && !req.overwrite
            && std::fs::symlink_metadata(p).is_ok()
        {
            return Err(VmError::new(format!(
                "file:{} exists: a snapshot never replaces a file unless asked (`vmm migrate --overwrite`, QMP `x-overwrite: true`)",
                p.display()
            )));
        }
        let params = req.params().map_err(VmError::new)?;
        self.running_or_paused("migrate")?;
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        self.0.set_state(RunState::Migrating);
        let shared = &self.0;
        let mut on_progress = |p: &Progress| {
            *lock(&shared.progress) = Some(p.clone());
            progress(p);
        };
        let mut src = MachineSource::new(m, &self.0.persona);
        let r = precopy::migrate_to(&mut src, &uri, &params, &mut on_progress, cancel);
        *lock(&self.0.progress) = None;
        match r {
            Ok(s) => {
                match s.outcome {
                    // The process exits once the answer is written (`answered`).
                    Outcome::Handover => self.0.set_state(RunState::Postmigrate),
                    Outcome::Snapshot => self.0.set_state(RunState::Paused),
                }
                Ok(s)
            }
            Err(e) => {
                // The driver resumed the guest.
                self.0.set_state(RunState::Running);
                Err(VmError::new(e))
            }
        }
    }

    fn migrate_incoming(
        &self,
        uri: &str,
        tls: Option<crate::control::types::TlsSettings>,
    ) -> Result<String, VmError> {
        let tx = lock(&self.0.deferred).clone().ok_or_else(|| {
            VmError::new(
                "'-incoming' was not specified on the command line (start with `--incoming defer`)",
            )
        })?;
        uri.parse::<Uri>().map_err(VmError::new)?;
        let (reply, answer) = std::sync::mpsc::channel();
        tx.send(Deferred::Listen(uri.to_string(), tls, reply))
            .map_err(|_| VmError::new("the destination is no longer waiting"))?;
        match answer.recv_timeout(LISTEN_TIMEOUT) {
            Ok(r) => r.map_err(VmError::new),
            Err(_) => Err(VmError::new("the destination did not start listening")),
        }
    }

    fn incoming_status(&self) -> Option<(&'static str, Option<String>)> {
        lock(&self.0.incoming).clone()
    }

    fn verify_ab(&self, start: u64, pages: u64) -> Result<VerifyAbResult, VmError> {
        if self.0.state() != RunState::Paused {
            return Err(VmError::new(
                "verify-ab needs a stopped guest (`vmm ctl stop` first)",
            ));
        }
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        super::verify::verify_ab(m.vm().memory(), start, pages)
    }
}

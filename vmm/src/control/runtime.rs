//! The control handler over a running [`Machine`] (`vmm run --control PATH`).
//!
//! The machine lives in a [`RunShared`] slot shared with `vmm run`'s main
//! loop (which rebuilds it on a guest reset). Requests that end the run
//! (`quit`, a migration handed over to the destination) are sent to the
//! main loop as [`RunEvent`]s.

use super::protocol::{
    BadPage, DeviceInfo, MigrateRequest, PinnedProp, Request, StatusInfo, VerifyAbResult,
};
use super::server::ControlHandler;
use crate::builder::Machine;
use crate::migrate::MachineSource;
use crate::release::persona::Persona;
use crate::vstate::vcpu::VmEvent;
use migration::ab::{AbViolation, check_ab};
use migration::precopy::{self, CancelToken, Outcome, Progress, Summary};
use migration::transport::Uri;
use migration::vm::VmError;
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use vm_memory::{Bytes, GuestAddress};

/// What `vmm run`'s main loop waits for.
#[derive(Debug)]
pub enum RunEvent {
    /// An event of the machine of generation `.0` (a reset makes a new generation).
    Vm(u64, VmEvent),
    /// Every vCPU thread of generation `.0` ended without an event.
    VcpusGone(u64),
    /// The guest now runs on a migration destination: exit 0.
    MigratedAway,
    /// `quit`.
    Quit,
    /// `system-reset`: rebuild and reboot the guest, as a guest reset does.
    Reset,
}

/// The guest's run state, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for an incoming stream.
    Incoming,
    /// vCPUs running.
    Running,
    /// Stopped by `stop` or after a snapshot.
    Paused,
    /// An outgoing migration is in flight.
    Migrating,
    /// Handed over to the destination; this process is exiting.
    Postmigrate,
}

impl RunState {
    fn name(self) -> &'static str {
        match self {
            RunState::Incoming => "incoming",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Migrating => "migrating",
            RunState::Postmigrate => "postmigrate",
        }
    }
}

/// State shared by `vmm run`'s main loop and the control handler.
pub struct RunShared {
    persona: Persona,
    machine: RwLock<Option<Machine>>,
    state: Mutex<RunState>,
    progress: Mutex<Option<Progress>>,
    events: Mutex<Sender<RunEvent>>,
}

fn plock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunShared {
    /// An empty slot; `events` goes to the main loop; `persona` is what
    /// this process presents (in `status` and in outgoing manifests).
    pub fn new(state: RunState, events: Sender<RunEvent>, persona: Persona) -> Self {
        Self {
            persona,
            machine: RwLock::new(None),
            state: Mutex::new(state),
            progress: Mutex::new(None),
            events: Mutex::new(events),
        }
    }

    /// The machine, for reading (pause, migrate, status).
    pub fn read(&self) -> RwLockReadGuard<'_, Option<Machine>> {
        self.machine.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The machine, for replacing or stopping it.
    pub fn write(&self) -> RwLockWriteGuard<'_, Option<Machine>> {
        self.machine.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the run state.
    pub fn set_state(&self, s: RunState) {
        *plock(&self.state) = s;
    }

    /// The run state.
    pub fn state(&self) -> RunState {
        *plock(&self.state)
    }

    fn send(&self, e: RunEvent) {
        let _ = plock(&self.events).send(e);
    }
}

/// [`ControlHandler`] over a [`RunShared`].
pub struct MachineHandler(pub std::sync::Arc<RunShared>);

fn no_machine() -> VmError {
    VmError::new("no guest is running (waiting for an incoming migration)")
}

/// At most this many inconsistent pages are listed by `verify-ab`.
const MAX_BAD_PAGES: usize = 8;

impl ControlHandler for MachineHandler {
    fn status(&self) -> Result<StatusInfo, VmError> {
        let state = self.0.state();
        let migration = plock(&self.0.progress).clone();
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
            migration: if state == RunState::Migrating {
                migration
            } else {
                None
            },
        })
    }

    fn stop(&self) -> Result<(), VmError> {
        match self.0.state() {
            RunState::Running | RunState::Paused => {}
            s => return Err(VmError::new(format!("cannot stop: the VM is {}", s.name()))),
        }
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        m.pause()
            .map_err(|e| VmError::new(format!("pausing the vCPUs: {e}")))?;
        self.0.set_state(RunState::Paused);
        Ok(())
    }

    fn cont(&self) -> Result<(), VmError> {
        match self.0.state() {
            RunState::Running | RunState::Paused => {}
            s => {
                return Err(VmError::new(format!(
                    "cannot continue: the VM is {}",
                    s.name()
                )));
            }
        }
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        m.resume();
        self.0.set_state(RunState::Running);
        Ok(())
    }

    fn quit(&self) -> Result<(), VmError> {
        // The main loop is told in `answered`, once the client has its answer.
        Ok(())
    }

    fn answered(&self, req: &Request) {
        match req {
            Request::Quit => self.0.send(RunEvent::Quit),
            Request::Migrate(_) if self.0.state() == RunState::Postmigrate => {
                self.0.send(RunEvent::MigratedAway)
            }
            _ => {}
        }
    }

    fn system_reset(&self) -> Result<(), VmError> {
        match self.0.state() {
            RunState::Running | RunState::Paused if self.0.read().is_some() => {
                self.0.send(RunEvent::Reset);
                Ok(())
            }
            s => Err(VmError::new(format!(
                "cannot reset: the VM is {}",
                s.name()
            ))),
        }
    }

    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn FnMut(&Progress),
        cancel: &CancelToken,
    ) -> Result<Summary, VmError> {
        let uri: Uri = req.uri.parse().map_err(VmError::new)?;
        let before = self.0.state();
        match before {
            RunState::Running | RunState::Paused => {}
            s => {
                return Err(VmError::new(format!(
                    "cannot migrate: the VM is {}",
                    s.name()
                )));
            }
        }
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        self.0.set_state(RunState::Migrating);
        let shared = &self.0;
        let mut on_progress = |p: &Progress| {
            *plock(&shared.progress) = Some(p.clone());
            progress(p);
        };
        let mut src = MachineSource::new(m, &self.0.persona);
        let r = precopy::migrate_to(
            &mut src,
            &uri,
            &req.params().map_err(VmError::new)?,
            &mut on_progress,
            cancel,
        );
        *plock(&self.0.progress) = None;
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

    fn verify_ab(&self, start: u64, pages: u64) -> Result<VerifyAbResult, VmError> {
        if self.0.state() != RunState::Paused {
            return Err(VmError::new(
                "verify-ab needs a stopped guest (`vmm ctl stop` first)",
            ));
        }
        let g = self.0.read();
        let m = g.as_ref().ok_or_else(no_machine)?;
        let mem = m.vm().memory();
        let page = migration::PAGE_SIZE as u64;
        if !start.is_multiple_of(page) {
            return Err(VmError::new(format!(
                "start {start:#x} is not page-aligned"
            )));
        }
        let mut bytes = Vec::with_capacity(pages.min(1 << 28) as usize);
        for i in 0..pages {
            let addr = start + i * page;
            let b: u8 = mem
                .read_obj(GuestAddress(addr))
                .map_err(|e| VmError::new(format!("page {i} at {addr:#x}: {e}")))?;
            bytes.push(b);
        }
        let bad_pages = bytes
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[1] != w[0] && w[1] != w[0].wrapping_sub(1))
            .take(MAX_BAD_PAGES)
            .map(|(i, w)| BadPage {
                page: i as u64 + 1,
                addr: start + (i as u64 + 1) * page,
                value: w[1],
                prev: w[0],
            })
            .collect();
        let first = bytes.first().copied().unwrap_or(0);
        Ok(match check_ab(bytes.iter().copied()) {
            Ok(r) => VerifyAbResult {
                pages: r.pages as u64,
                consistent: true,
                first: r.first,
                step_at: r.step_at.map(|p| p as u64),
                violation: None,
                bad_pages: Vec::new(),
            },
            Err(v) => {
                let mut bad_pages: Vec<BadPage> = bad_pages;
                if let AbViolation::SecondStep { page: p, .. } = v
                    && bad_pages.is_empty()
                {
                    let p = p as u64;
                    bad_pages.push(BadPage {
                        page: p,
                        addr: start + p * page,
                        value: bytes[p as usize],
                        prev: bytes[p as usize - 1],
                    });
                }
                VerifyAbResult {
                    pages,
                    consistent: false,
                    first,
                    step_at: None,
                    violation: Some(v.to_string()),
                    bad_pages,
                }
            }
        })
    }
}

//! The control handler over a running [`Machine`] (`vmm run --qmp` /
//! `--control`).
//!
//! The machine lives in a [`RunShared`] slot shared with `vmm run`'s main
//! loop (which rebuilds it on a guest reset). Commands that end the run
//! (`quit`, a migration handed over to the destination) and a deferred
//! destination's `migrate-incoming` are sent to the main loop as
//! [`RunEvent`]s.

mod handler;
mod verify;

pub use handler::MachineHandler;

use super::events::Events;
use super::server::SocketGuard;
use crate::builder::Machine;
use crate::release::persona::Persona;
use crate::vstate::vcpu::VmEvent;
use devices::bus::lock;
use migration::precopy::Progress;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
    /// `system_reset`: rebuild and reboot the guest, as a guest reset does.
    Reset,
}

/// What a `--incoming defer` destination's main loop waits for.
#[derive(Debug)]
pub enum Deferred {
    /// `migrate-incoming URI` (with QMP's TLS parameters, if set): listen
    /// there, answer with the URI listened on (or why not) once listening.
    Listen(
        String,
        Option<crate::control::types::TlsSettings>,
        Sender<Result<String, String>>,
    ),
    /// `quit` before any stream came.
    Quit,
}

/// The guest's run state, as `query-status` reports it.
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
    /// QMP events to every connection.
    qmp: Arc<Events>,
    /// A `--incoming defer` destination's main loop, until it listens.
    deferred: Mutex<Option<Sender<Deferred>>>,
    /// The incoming migration's status and where it listens, on a destination.
    incoming: Mutex<Option<(&'static str, Option<String>)>>,
    /// The control sockets, removed by [`RunShared::exit_now`].
    sockets: Mutex<Vec<SocketGuard>>,
}

impl RunShared {
    /// An empty slot; `events` goes to the main loop, `qmp` to the QMP
    /// clients; `persona` is what this process presents (in status and in
    /// outgoing manifests).
    pub fn new(
        state: RunState,
        events: Sender<RunEvent>,
        persona: Persona,
        qmp: Arc<Events>,
    ) -> Self {
        Self {
            persona,
            machine: RwLock::new(None),
            state: Mutex::new(state),
            progress: Mutex::new(None),
            events: Mutex::new(events),
            qmp,
            deferred: Mutex::new(None),
            incoming: Mutex::new(None),
            sockets: Mutex::new(Vec::new()),
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
        *lock(&self.state) = s;
    }

    /// The run state.
    pub fn state(&self) -> RunState {
        *lock(&self.state)
    }

    /// Sends a QMP event to every connection.
    pub fn emit(&self, name: &str, data: serde_json::Value) {
        self.qmp.emit(name, data);
    }

    /// Records (and tells the QMP clients) the incoming migration's status.
    pub fn set_incoming(&self, status: &'static str) {
        let mut cur = lock(&self.incoming);
        let uri = cur.take().and_then(|(_, u)| u);
        *cur = Some((status, uri));
        drop(cur);
        self.emit("MIGRATION", serde_json::json!({ "status": status }));
    }

    /// The destination listens on `uri`.
    pub fn set_listening(&self, uri: String) {
        *lock(&self.incoming) = Some(("setup", Some(uri)));
    }

    /// A `--incoming defer` destination waits on `tx` for `migrate-incoming`.
    pub fn defer(&self, tx: Sender<Deferred>) {
        *lock(&self.deferred) = Some(tx);
    }

    /// The deferred destination started listening (or its wait ended).
    pub fn undefer(&self) {
        *lock(&self.deferred) = None;
    }

    /// Keeps a control socket's guard, for [`RunShared::exit_now`].
    pub fn keep_socket(&self, g: SocketGuard) {
        lock(&self.sockets).push(g);
    }

    /// Removes the control sockets (when the process ends).
    pub fn drop_sockets(&self) {
        lock(&self.sockets).clear();
    }

    /// Ends the process at once (exit 0) after removing its control
    /// sockets: `quit` on a destination whose main loop is inside an
    /// incoming migration that never came (no guest runs yet).
    pub fn exit_now(&self) -> ! {
        tracing::info!("quit while waiting for an incoming migration");
        self.drop_sockets();
        std::process::exit(0)
    }

    fn send(&self, e: RunEvent) {
        let _ = lock(&self.events).send(e);
    }
}

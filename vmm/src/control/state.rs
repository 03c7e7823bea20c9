//! What the connections of every control socket of a process share: the
//! handler, the event list, the migration in flight and QMP's migration
//! settings.

use super::events::Events;
use super::handler::ControlHandler;
use devices::bus::lock;
use migration::precopy::{CancelToken, Summary};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

/// Longest command accepted (one QMP object).
pub const MAX_COMMAND: usize = 64 << 10;

/// The control plane of one process: give it to each
/// [`super::server::ControlServer`] it serves.
pub struct State {
    pub(super) handler: Arc<dyn ControlHandler>,
    pub(super) events: Arc<Events>,
    /// The outgoing migration in flight: [`State::begin_migration`].
    migration: Mutex<Option<CancelToken>>,
    pub(super) quitting: AtomicBool,
    /// Connections served now, over every socket.
    pub(super) active: AtomicUsize,
    /// QMP's migration settings and last outcome.
    pub(super) qmp: Mutex<QmpMigration>,
    /// Drives, the NBD server, mirror jobs.
    pub(super) storage: Arc<crate::storage::Storage>,
}

impl State {
    /// The control plane over `handler`, sending events to `events`.
    pub fn new(handler: Arc<dyn ControlHandler>, events: Arc<Events>) -> Arc<Self> {
        Self::with_storage(handler, events, Arc::new(crate::storage::Storage::none()))
    }

    /// [`new`](Self::new) with the VMM's drives for the block commands.
    pub fn with_storage(
        handler: Arc<dyn ControlHandler>,
        events: Arc<Events>,
        storage: Arc<crate::storage::Storage>,
    ) -> Arc<Self> {
        Arc::new(Self {
            handler,
            events,
            migration: Mutex::new(None),
            quitting: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            qmp: Mutex::default(),
            storage,
        })
    }

    /// Registers a new outgoing migration: its cancel token, or an error
    /// while one runs.
    pub(super) fn begin_migration(&self) -> Result<CancelToken, String> {
        let mut cur = lock(&self.migration);
        if cur.is_some() {
            return Err("There's a migration process in progress".into());
        }
        let token = CancelToken::default();
        *cur = Some(token.clone());
        Ok(token)
    }

    /// The running migration ended.
    pub(super) fn end_migration(&self) {
        *lock(&self.migration) = None;
    }

    /// Cancels the running migration; false when none runs.
    pub(super) fn cancel_migration(&self) -> bool {
        lock(&self.migration)
            .as_ref()
            .map(CancelToken::cancel)
            .is_some()
    }

    /// QMP's migration settings.
    pub(super) fn qmp(&self) -> MutexGuard<'_, QmpMigration> {
        lock(&self.qmp)
    }
}

/// QMP's migration settings (`migrate-set-parameters`/`-capabilities`) and
/// the last outgoing migration's outcome (`query-migrate`).
#[derive(Debug)]
pub(super) struct QmpMigration {
    pub(super) downtime_limit: u64,
    pub(super) max_bandwidth: u64,
    pub(super) multifd: bool,
    pub(super) events: bool,
    pub(super) channels: u32,
    pub(super) compression: String,
    pub(super) zstd_level: u32,
    /// `tls-creds` (`DIR` or `psk:FILE`; empty: plain), `tls-hostname`,
    /// `tls-authz` (empty: any subject the CA signed).
    pub(super) tls_creds: String,
    pub(super) tls_hostname: String,
    pub(super) tls_authz: Vec<String>,
    /// `setup`, `active`, `device`, `completed`, `failed`, `cancelled`
    /// (none: never started).
    pub(super) status: Option<&'static str>,
    pub(super) started: Option<std::time::Instant>,
    pub(super) summary: Option<Summary>,
    pub(super) error: Option<String>,
}

impl QmpMigration {
    /// The TLS settings in force, if `tls-creds` is set.
    pub(super) fn tls(&self) -> Option<super::types::TlsSettings> {
        (!self.tls_creds.is_empty()).then(|| super::types::TlsSettings {
            creds: self.tls_creds.clone(),
            hostname: (!self.tls_hostname.is_empty()).then(|| self.tls_hostname.clone()),
            authz: self.tls_authz.clone(),
        })
    }
}

impl Default for QmpMigration {
    fn default() -> Self {
        Self {
            downtime_limit: super::types::DEFAULT_DOWNTIME_LIMIT_MS,
            max_bandwidth: 0,
            multifd: false,
            events: true,
            channels: 2,
            compression: "none".into(),
            zstd_level: 1,
            tls_creds: String::new(),
            tls_hostname: String::new(),
            tls_authz: Vec::new(),
            status: None,
            started: None,
            summary: None,
            error: None,
        }
    }
}

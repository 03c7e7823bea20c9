//! What the connections of a control server share, whichever protocol
//! they speak.

use super::handler::ControlHandler;
use migration::precopy::{CancelToken, Summary};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Longest request accepted (a line, or a QMP object).
pub(super) const MAX_LINE: u64 = 64 << 10;

/// What the connections of a server share.
pub(super) struct State {
    pub(super) handler: Arc<dyn ControlHandler>,
    /// The outgoing migration in flight: [`State::begin_migration`].
    pub(super) migration: Mutex<Option<CancelToken>>,
    pub(super) quitting: AtomicBool,
    /// QMP's migration settings and last outcome.
    pub(super) qmp: Mutex<QmpMigration>,
    pub(super) path: PathBuf,
}

impl State {
    /// Registers a new outgoing migration, started on any connection of
    /// either protocol: its cancel token, or an error while one runs.
    pub(super) fn begin_migration(&self) -> Result<CancelToken, String> {
        let mut cur = self.migration.lock().unwrap_or_else(|p| p.into_inner());
        if cur.is_some() {
            return Err("a migration is already running".into());
        }
        let token = CancelToken::default();
        *cur = Some(token.clone());
        Ok(token)
    }

    /// The running migration ended.
    pub(super) fn end_migration(&self) {
        *self.migration.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Cancels the running migration; false when none runs.
    pub(super) fn cancel_migration(&self) -> bool {
        let cur = self.migration.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(CancelToken::cancel).is_some()
    }
}

/// QMP's migration settings (`migrate-set-parameters`/`-capabilities`) and
/// the last migration's outcome (`query-migrate`).
#[derive(Debug)]
pub(super) struct QmpMigration {
    pub(super) downtime_limit: u64,
    pub(super) max_bandwidth: u64,
    pub(super) multifd: bool,
    pub(super) channels: u32,
    pub(super) compression: String,
    pub(super) zstd_level: u32,
    /// `active`, `completed`, `failed`, `cancelled` (none: never started).
    pub(super) status: Option<&'static str>,
    pub(super) summary: Option<Summary>,
    pub(super) error: Option<String>,
}

impl Default for QmpMigration {
    fn default() -> Self {
        Self {
            downtime_limit: super::protocol::DEFAULT_DOWNTIME_LIMIT_MS,
            max_bandwidth: 0,
            multifd: false,
            channels: 2,
            compression: "none".into(),
            zstd_level: 1,
            status: None,
            summary: None,
            error: None,
        }
    }
}

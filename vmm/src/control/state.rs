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
    pub(super) migration: Mutex<Option<CancelToken>>,
    pub(super) quitting: AtomicBool,
    /// QMP's migration settings and last outcome.
    pub(super) qmp: Mutex<QmpMigration>,
    pub(super) path: PathBuf,
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

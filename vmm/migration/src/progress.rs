//! What a migration is asked to do and what it reports: parameters,
//! progress events, the final summary and the cancel token.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Tuning of one migration.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Upper bound on the time the guest is stopped (default 300 ms).
    pub downtime_limit: Duration,
    /// Bytes per second; `None` for unlimited.
    pub max_bandwidth: Option<u64>,
    /// How long to wait for the destination's verdict on the manifest.
    pub accept_timeout: Duration,
    /// How long to wait for "running" once the stream is sent.
    pub running_timeout: Duration,
    /// Iterations before giving up with "did not converge".
    pub max_iterations: u32,
    /// Data channels besides the main connection (0: pages on the main one).
    pub channels: u32,
    /// Compression of page contents.
    pub compression: crate::compress::Compression,
    /// TLS on every connection (a sealed file for a snapshot); none: plain.
    pub tls: Option<crate::secure::SharedClient>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            downtime_limit: Duration::from_millis(300),
            max_bandwidth: None,
            accept_timeout: Duration::from_secs(10),
            running_timeout: Duration::from_secs(30),
            max_iterations: 100,
            channels: 0,
            compression: crate::compress::Compression::None,
            tls: None,
        }
    }
}

/// Where a migration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The guest runs; dirty pages are being sent.
    Precopy,
    /// The guest is stopped; the rest and the device state are being sent.
    Stopped,
}

/// Sent to the progress callback after every iteration and at switch-over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    pub iteration: u32,
    pub bytes: u64,
    pub pages_zero: u64,
    pub pages_normal: u64,
    /// Pages dirtied during the last iteration (still to send).
    pub dirty_pages: u64,
    /// Measured bytes per second.
    pub bandwidth: u64,
    /// `dirty_pages` at `bandwidth`, in milliseconds.
    pub expected_downtime_ms: f64,
    /// vCPU throttle in percent (auto-converge).
    pub throttle: u8,
}

/// How a migration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The destination runs the guest; the source's copy is stopped for good.
    Handover,
    /// A snapshot was written; the source guest stays stopped (`cont` resumes it).
    Snapshot,
}

/// The final report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub outcome: Outcome,
    pub total_ms: f64,
    /// vCPUs stopped here to "running" heard from the destination (or the snapshot written).
    pub downtime_ms: f64,
    pub bytes: u64,
    pub pages_zero: u64,
    pub pages_normal: u64,
    pub iterations: u32,
    pub max_throttle: u8,
}

/// Cancels a running migration from another thread (`migrate-cancel`).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// Requests cancellation; the driver notices within one page batch.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

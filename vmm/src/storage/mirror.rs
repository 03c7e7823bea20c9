//! A mirror job (`blockdev-mirror` / `drive-mirror` with `sync: full`):
//! copies a running guest's disk to a target while the guest writes, then
//! keeps the target in step until it is completed or cancelled.
//!
//! 1. A [`WriteHook`] on the [`Disk`] marks every range the guest changes
//!    in a dirty bitmap (64 KiB granules).
//! 2. The bulk pass walks the image by its extents: holes become zeroes on
//!    the target only where the target does not already read as zeroes
//!    (its block status), data ranges are read and sent (all-zero chunks as
//!    write-zeroes). Each chunk's dirty bits are cleared *before* it is read,
//!    so a guest write after the read is sent again.
//! 3. Dirty granules are re-sent in the background while that shrinks them;
//!    then the hook switches to writing every guest change to the target
//!    before the guest's request completes, the granules still dirty are
//!    sent (the same lock orders them against those writes), and the job is
//!    READY: the target never falls behind again.
//! 4. `block-job-cancel` on a READY job (or `block-job-complete`) flushes the
//!    target and ends with COMPLETED; before READY, or with `force`, it ends
//!    CANCELLED. A target error ends the job with the reason (ERROR, then
//!    COMPLETED with `error`); the guest runs on its own disk throughout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::disk::{Disk, WriteHook};

use super::Emit;

/// Dirty-tracking granule.
pub const GRANULE: u64 = 64 << 10;
/// Bytes per bulk-copy request.
const CHUNK: u64 = 1 << 20;
/// Background passes over the dirty granules before write-through.
const PASSES: usize = 8;
/// Dirty granules (16 MiB) few enough to send under write-through.
const SWITCH_GRANULES: u64 = 256;

/// Where a mirror writes: an NBD export, or a test double.
pub trait Target: Send {
    /// The target's size in bytes.
    fn size(&self) -> u64;
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String>;
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), String>;
    /// Whether `[offset, offset + len)` already reads as zeroes there.
    fn reads_zero(&mut self, offset: u64, len: u64) -> Result<bool, String>;
    fn flush(&mut self) -> Result<(), String>;
}

/// The QMP job status names this job passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Ready,
    Concluded,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Ready => "ready",
            Status::Concluded => "concluded",
        }
    }
}

/// How the job was asked to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    None,
    /// `block-job-complete`, or a graceful cancel of a READY job.
    Complete,
    /// A cancel before READY, or `force`.
    Cancel,
}

/// One mirror job.
pub struct Mirror {
    pub id: String,
    pub device: String,
    disk: Arc<Disk>,
    len: u64,
    target: Mutex<Box<dyn Target>>,
    dirty: Vec<AtomicU64>,
    /// After READY: the hook writes through to the target.
    sync: AtomicBool,
    /// Held (shared) by the hook from reading `sync` to marking or copying,
    /// and (exclusively) to switch `sync` on: no mark can land after the
    /// switch's drain has passed its granule.
    mode: std::sync::RwLock<()>,
    offset: AtomicU64,
    status: Mutex<Status>,
    ending: Mutex<Ending>,
    error: Mutex<Option<String>>,
    /// Bytes sent to the target (data, not zero requests).
    pub sent: AtomicU64,
    emit: Emit,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("id", &self.id)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

struct Hook(Arc<Mirror>);

impl WriteHook for Hook {
    fn changed(&self, disk: &Disk, offset: u64, len: u64) {
        let m = &self.0;
        let _mode = m
            .mode
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.sync.load(Ordering::SeqCst) {
            let r = m.copy(disk, offset, len);
            if let Err(e) = r {
                m.fail("write", e);
            }
        } else {
            m.mark(offset, len);
        }
    }
}

impl Mirror {
    /// Checks the target against the disk and starts the job's thread; the
    /// guest's writes are tracked from this call on.
    pub fn start(
        id: String,
        device: String,
        disk: Arc<Disk>,
        target: Box<dyn Target>,
        emit: Emit,
    ) -> Result<Arc<Mirror>, String> {
        let len = disk.len().map_err(|e| format!("{device}: {e}"))?;
        if target.size() != len {
            return Err(format!(
                "Source and target image have different sizes: {device} is {len} bytes, the target {} bytes",
                target.size()
            ));
        }
        if disk.has_hook() {
            return Err(format!("Node '{device}' is busy: a block job runs on it"));
        }
        let granules = len.div_ceil(GRANULE);
        let m = Arc::new(Mirror {
            id,
            device,
            disk: disk.clone(),
            len,
            target: Mutex::new(target),
            dirty: (0..granules.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            sync: AtomicBool::new(false),
            mode: std::sync::RwLock::new(()),
            offset: AtomicU64::new(0),
            status: Mutex::new(Status::Running),
            ending: Mutex::new(Ending::None),
            error: Mutex::new(None),
            sent: AtomicU64::new(0),
            emit,
        });
        disk.set_hook(Some(Arc::new(Hook(m.clone()))));
        (m.emit)(
            "JOB_STATUS_CHANGE",
            serde_json::json!({"id": m.id, "status": "created"}),
        );
        m.set_status(Status::Running);
        let job = m.clone();
        std::thread::Builder::new()
            .name(format!("mirror-{}", m.id))
            .spawn(move || job.run())
            .map_err(|e| e.to_string())?;
        Ok(m)
    }

    /// Progress: bytes known to be in step with the target.
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// Why it failed, if it did.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// `query-block-jobs`'s entry.
    pub fn info(&self) -> serde_json::Value {
        let status = self.status();
        serde_json::json!({
            "type": "mirror",
            "device": self.id,
            "len": self.len,
            "offset": self.offset(),
            "busy": status == Status::Running,
            "paused": false,
            "speed": 0,
            "io-status": if self.error().is_some() { "failed" } else { "ok" },
            "ready": status == Status::Ready,
            "status": status.name(),
            "auto-finalize": true,
            "auto-dismiss": true,
        })
    }

    /// `block-job-complete`: only once READY.
    pub fn complete(&self) -> Result<(), String> {
        match self.status() {
            Status::Ready => {
                *lock(&self.ending) = Ending::Complete;
                Ok(())
            }
            s => Err(format!(
                "Job '{}' in state '{}' cannot accept command verb 'complete'",
                self.id,
                s.name()
            )),
        }
    }

    /// `block-job-cancel`: a READY job ends in step (COMPLETED) unless
    /// `force`; otherwise it stops where it is (CANCELLED).
    pub fn cancel(&self, force: bool) {
        let ready = self.status() == Status::Ready;
        *lock(&self.ending) = if ready && !force {
            Ending::Complete
        } else {
            Ending::Cancel
        };
    }

    fn set_status(&self, s: Status) {
        *lock(&self.status) = s;
        (self.emit)(
            "JOB_STATUS_CHANGE",
            serde_json::json!({"id": self.id, "status": s.name()}),
        );
    }

    fn event_data(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "mirror",
            "device": self.id,
            "len": self.len,
            "offset": self.offset(),
            "speed": 0,
        })
    }

    fn mark(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / GRANULE;
        let last = (offset.saturating_add(len) - 1) / GRANULE;
        for g in first..=last.min(self.len.div_ceil(GRANULE).saturating_sub(1)) {
            if let Some(w) = self.dirty.get((g / 64) as usize) {
                w.fetch_or(1 << (g % 64), Ordering::SeqCst);
            }
        }
    }

    /// Clears and returns whether granule `g` was dirty.
    fn take(&self, g: u64) -> bool {
        let bit = 1u64 << (g % 64);
        self.dirty
            .get((g / 64) as usize)
            .is_some_and(|w| w.fetch_and(!bit, Ordering::SeqCst) & bit != 0)
    }

    fn dirty_count(&self) -> u64 {
        self.dirty
            .iter()
            .map(|w| u64::from(w.load(Ordering::SeqCst).count_ones()))
            .sum()
    }

    /// Sends `[offset, offset + len)` as the disk has it now, under the
    /// target lock (which orders it against every other copy).
    fn copy(&self, disk: &Disk, offset: u64, len: u64) -> Result<(), String> {
        let mut t = lock(&self.target);
        let end = offset.saturating_add(len).min(self.len);
        let mut at = offset;
        let mut buf = vec![0u8; CHUNK.min(end.saturating_sub(offset)) as usize];
        while at < end {
            let n = (end - at).min(CHUNK) as usize;
            let b = &mut buf[..n];
            disk.read_at(b, at)
                .map_err(|e| format!("reading {} at {at}: {e}", self.device))?;
            if b.iter().all(|&x| x == 0) {
                if !t.reads_zero(at, n as u64)? {
                    t.write_zeroes(at, n as u64)?;
                }
            } else {
                t.write(at, b)?;
                self.sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            at += n as u64;
        }
        Ok(())
    }

    fn fail(&self, operation: &str, why: String) {
        let mut e = lock(&self.error);
        if e.is_none() {
            tracing::warn!("mirror {}: {why}", self.id);
            *e = Some(why);
            drop(e);
            self.sync.store(false, Ordering::SeqCst);
            (self.emit)(
                "BLOCK_JOB_ERROR",
                serde_json::json!({"device": self.id, "operation": operation, "action": "report"}),
            );
        }
    }

    fn stopping(&self) -> Ending {
        *lock(&self.ending)
    }

    /// The job's thread.
    fn run(self: Arc<Self>) {
        let r = self.bulk().and_then(|()| self.converge());
        if let Err(e) = r {
            self.fail("write", e);
        }
        // READY (or failed, or cancelled): wait for the end.
        while self.error().is_none() && self.stopping() == Ending::None {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.finish();
    }

    fn bulk(&self) -> Result<(), String> {
        let extents = self
            .disk
            .extents(0, self.len)
            .map_err(|e| format!("{}: {e}", self.device))?;
        for x in extents {
            let mut at = x.offset;
            let end = x.offset + x.len;
            while at < end {
                if self.stopping() != Ending::None || self.error().is_some() {
                    return Ok(());
                }
                let n = (end - at).min(CHUNK);
                if x.data {
                    // Clear the granules first: a write after the read
                    // re-dirties them. Only those wholly inside the chunk:
                    // a granule it shares with a hole keeps its bit, or a
                    // write into the hole part would be lost to the zeroes.
                    for g in at.div_ceil(GRANULE)..(at + n) / GRANULE {
                        self.take(g);
                    }
                    self.copy(&self.disk, at, n)?;
                } else {
                    // A hole as the extents said at the start: zeroes, without
                    // reading, so the granules stay dirty if the guest wrote
                    // there since (they are sent with their data later).
                    let mut t = lock(&self.target);
                    if !t.reads_zero(at, n)? {
                        t.write_zeroes(at, n)?;
                    }
                }
                at += n;
                self.offset.store(at, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Re-sends dirty granules in the background while that shrinks them
    /// (at most [`PASSES`] passes, or until [`SWITCH_GRANULES`] are left),
    /// then switches to write-through and sends the rest: READY. A guest that
    /// writes faster than the target takes still converges, since from the
    /// switch on its writes dirty nothing.
    fn converge(&self) -> Result<(), String> {
        let granules = self.len.div_ceil(GRANULE);
        for _ in 0..PASSES {
            if self.stopping() != Ending::None || self.error().is_some() {
                return Ok(());
            }
            if self.dirty_count() <= SWITCH_GRANULES {
                break;
            }
            self.drain(granules)?;
        }
        if self.stopping() != Ending::None || self.error().is_some() {
            return Ok(());
        }
        // From here the hook writes through; granules dirtied before the
        // switch are sent under the same target lock.
        {
            let _all = self
                .mode
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.sync.store(true, Ordering::SeqCst);
        }
        self.drain(granules)?;
        self.offset.store(self.len, Ordering::SeqCst);
        self.set_status(Status::Ready);
        (self.emit)("BLOCK_JOB_READY", self.event_data());
        Ok(())
    }

    fn drain(&self, granules: u64) -> Result<(), String> {
        for g in 0..granules {
            if self.take(g) {
                self.copy(&self.disk, g * GRANULE, GRANULE)?;
            }
        }
        Ok(())
    }

    fn finish(&self) {
        self.sync.store(false, Ordering::SeqCst);
        self.disk.set_hook(None);
        let ending = self.stopping();
        let mut error = self.error();
        if error.is_none() && ending == Ending::Complete {
            // Everything is in step (write-through since READY): make it durable.
            if let Err(e) = lock(&self.target).flush() {
                self.fail("write", e.clone());
                error = Some(e);
            }
        }
        self.set_status(Status::Concluded);
        let mut data = self.event_data();
        match (error, ending) {
            (Some(e), _) => {
                data["error"] = serde_json::Value::String(e);
                (self.emit)("BLOCK_JOB_COMPLETED", data);
            }
            (None, Ending::Complete) => (self.emit)("BLOCK_JOB_COMPLETED", data),
            (None, _) => (self.emit)("BLOCK_JOB_CANCELLED", data),
        }
        (self.emit)(
            "JOB_STATUS_CHANGE",
            serde_json::json!({"id": self.id, "status": "null"}),
        );
    }
}

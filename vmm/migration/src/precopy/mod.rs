//! The source's driver: live pre-copy, switch-over, and the wait for "running".
//!
//! Every iteration sends the pages dirtied during the previous one and
//! measures the bandwidth. The switch-over happens once the remaining dirty
//! set fits the downtime limit at that bandwidth *and* stops shrinking: the
//! limit is an upper bound, not a target. A guest that dirties faster than
//! the link is throttled (auto-converge); past a bound the migration fails
//! with "did not converge" and the guest keeps running. Any failure after
//! the vCPUs stopped resumes them.

use super::PAGE_SIZE;
use super::bitmap::DirtyBitmap;
use super::channel::Senders;
use super::manifest::Manifest;
use super::status::{Status, StatusError};
use super::stream::format::MAX_RUN_PAGES;
use super::stream::{Encoder, Section, VcpuRecord};
use super::transport::{self, BackChannel, Outgoing, TransportError, Uri};
use super::vm::{MigrationSource, VmError};
use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant};

mod channels;

pub use super::progress::{CancelToken, Outcome, Params, Phase, Progress, Summary};

/// Why a migration failed. The source guest runs again in every case.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("sending the stream failed: {0}")]
    Send(io::Error),
    #[error("the destination failed: {0}")]
    Destination(String),
    #[error("the destination refused the stream: {0}")]
    Refused(String),
    #[error("no answer from the destination {waiting}: {source}")]
    NoAnswer {
        waiting: &'static str,
        source: StatusError,
    },
    #[error(
        "did not converge after {iterations} iterations: {dirty_pages} pages dirty, {bandwidth} bytes/s, vCPUs throttled {throttle}%"
    )]
    DidNotConverge {
        iterations: u32,
        dirty_pages: u64,
        bandwidth: u64,
        throttle: u8,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Channels(String),
    #[error("the source VM: {0}")]
    Vm(#[from] VmError),
    #[error("{0}; resuming the source guest failed too: {1}")]
    ResumeFailed(Box<MigrateError>, VmError),
}

/// Connects to `uri` and migrates.
pub fn migrate_to<S: MigrationSource + ?Sized>(
    src: &mut S,
    uri: &Uri,
    params: &Params,
    progress: &mut dyn FnMut(&Progress),
    cancel: &CancelToken,
) -> Result<Summary, MigrateError> {
    if params.channels > 0 && matches!(uri, Uri::File(_)) {
        return Err(MigrateError::Channels(
            "data channels need a tcp: or unix: destination (a file: snapshot is one stream)"
                .into(),
        ));
    }
    let tls = params.tls.as_ref().map(|t| &*t.0);
    let out = transport::connect_secure(uri, tls)?;
    run(src, out, Some(uri), params, progress, cancel)
}

/// Migrates over an open connection (no data channels: they would need a
/// URI to connect to). On error the guest is running again.
pub fn migrate<S: MigrationSource + ?Sized>(
    src: &mut S,
    out: Outgoing,
    params: &Params,
    progress: &mut dyn FnMut(&Progress),
    cancel: &CancelToken,
) -> Result<Summary, MigrateError> {
    run(src, out, None, params, progress, cancel)
}

fn run<S: MigrationSource + ?Sized>(
    src: &mut S,
    out: Outgoing,
    uri: Option<&Uri>,
    params: &Params,
    progress: &mut dyn FnMut(&Progress),
    cancel: &CancelToken,
) -> Result<Summary, MigrateError> {
    let mut d = Driver {
        uri,
        senders: None,
        channel_bytes: 0,
        src,
        params,
        progress,
        cancel,
        back: out.back,
        started: Instant::now(),
        tracking: false,
        paused: false,
        throttle: 0,
        max_throttle: 0,
        iteration: 0,
        zero: 0,
        normal: 0,
        bandwidth: 0,
        buf: vec![0; MAX_RUN_PAGES as usize * PAGE_SIZE],
    };
    let r = d.run(out.writer);
    d.finish(r)
}

type Writer = BufWriter<Box<dyn Write + Send>>;

struct Driver<'a, S: MigrationSource + ?Sized> {
    /// Where data channels connect to (none: pages on the main connection).
    uri: Option<&'a Uri>,
    /// The data channels' threads, once open.
    senders: Option<Senders>,
    /// What the data channels carried, once they ended.
    channel_bytes: u64,
    src: &'a mut S,
    params: &'a Params,
    progress: &'a mut dyn FnMut(&Progress),
    cancel: &'a CancelToken,
    back: Option<Box<dyn BackChannel>>,
    started: Instant,
    tracking: bool,
    paused: bool,
    throttle: u8,
    max_throttle: u8,
    iteration: u32,
    zero: u64,
    normal: u64,
    bandwidth: u64,
    buf: Vec<u8>,
}

/// Shrinking means the new dirty set is below this share of the one just sent.
const SHRINK: f64 = 0.9;
/// Iterations that fit the limit and keep shrinking before switching anyway.
const MAX_FITTING: u32 = 10;
/// Iterations without shrinking before the throttle goes up.
const STALLS_PER_STEP: u32 = 2;
const THROTTLE_FIRST: u8 = 20;
const THROTTLE_STEP: u8 = 10;
const THROTTLE_MAX: u8 = 99;
/// A long pass (the first one over all of RAM) reports progress this often.
const REPORT_EVERY: u64 = 64 << 20;

impl<S: MigrationSource + ?Sized> Driver<'_, S> {
    fn run(&mut self, w: Writer) -> Result<Summary, MigrateError> {
        let mut manifest = self.src.manifest()?;
        self.format_2(&mut manifest)?;
        let pages = manifest.pages();
        let mut enc = Encoder::versioned(w, manifest.format_version).map_err(MigrateError::Send)?;
        enc.compress(self.params.compression)
            .map_err(MigrateError::Send)?;
        enc.manifest(&manifest).map_err(|e| self.send_failed(e))?;
        enc.flush().map_err(|e| self.send_failed(e))?;
        if self.back.is_some() {
            match self.answer("on the manifest", self.params.accept_timeout)? {
                Status::Accepted => {}
                Status::Refused(m) => return Err(MigrateError::Refused(m)),
                Status::Failed(m) => return Err(MigrateError::Destination(m)),
                s => {
                    return Err(MigrateError::Destination(format!(
                        "answered {s:?} out of turn"
                    )));
                }
            }
        }
        self.open_channels(&manifest)?;
        self.src.start_dirty_tracking()?;
        self.tracking = true;
        let mut dirty = DirtyBitmap::full(pages);
        let mut stalls = 0;
        let mut fitting = 0;
        loop {
            self.iteration += 1;
            let sent = dirty.count();
            let (pass, before) = (Instant::now(), self.bytes(&enc));
            let (busy_bytes, mut busy) = self.send(&mut enc, &dirty)?;
            let t = Instant::now();
            enc.flush().map_err(|e| self.send_failed(e))?;
            self.flush_channels()?;
            busy += t.elapsed();
            self.measure(busy_bytes, busy);
            if self.bandwidth == 0 {
                // Nothing but zero pages so far: the whole pass is all we know.
                self.measure(self.bytes(&enc) - before, pass.elapsed());
            }
            dirty = checked(self.src.take_dirty_bitmap()?, pages)?;
            let left = dirty.count();
            let expected = self.expected(left);
            self.report(Phase::Precopy, self.bytes(&enc), left, expected);
            let shrinking = (left as f64) < sent as f64 * SHRINK;
            if expected <= self.params.downtime_limit {
                fitting += 1;
                if left == 0 || !shrinking || fitting >= MAX_FITTING {
                    break;
                }
            } else if !shrinking {
                stalls += 1;
                if stalls >= STALLS_PER_STEP {
                    stalls = 0;
                    if self.throttle == THROTTLE_MAX {
                        return Err(self.not_converged(left));
                    }
                    self.throttle = match self.throttle {
                        0 => THROTTLE_FIRST,
                        t => t.saturating_add(THROTTLE_STEP).min(THROTTLE_MAX),
                    };
                    self.max_throttle = self.throttle;
                    self.src.set_throttle(self.throttle)?;
                }
            }
            if self.iteration >= self.params.max_iterations {
                return Err(self.not_converged(left));
            }
        }
        self.switch_over(enc, &dirty, &manifest)
    }

    /// Stops the guest and sends what is left: `pending` (dirty, not yet sent)
    /// plus whatever was dirtied since, then the device and vCPU state.
    fn switch_over(
        &mut self,
        mut enc: Encoder<Writer>,
        pending: &DirtyBitmap,
        manifest: &Manifest,
    ) -> Result<Summary, MigrateError> {
        if self.back.is_some() {
            // Let the destination drain what is in flight (zero runs cost it
            // far more than their bytes) while the guest still runs, so the
            // downtime is only the rest. Every data channel first.
            if let Some(s) = &self.senders {
                let r = s.sync();
                r.map_err(|e| self.send_failed(io::Error::other(e)))?;
            }
            enc.sync()
                .and_then(|()| enc.flush())
                .map_err(|e| self.send_failed(e))?;
            match self.answer("at the sync point", self.params.running_timeout)? {
                Status::Synced => {}
                Status::Refused(m) | Status::Failed(m) => return Err(MigrateError::Destination(m)),
                s => {
                    return Err(MigrateError::Destination(format!(
                        "answered {s:?} out of turn"
                    )));
                }
            }
        }
        self.src.pause()?;
        self.paused = true;
        let stopped = Instant::now();
        let mut dirty = checked(self.src.take_dirty_bitmap()?, manifest.pages())?;
        dirty.or_with(pending);
        self.send(&mut enc, &dirty)?;
        if let Some(mut s) = self.senders.take() {
            let r = s.end();
            self.count_channels(&s);
            r.map_err(|e| self.send_failed(io::Error::other(e)))?;
        }
        let sections = self.src.save_devices()?;
        let vcpus = self.src.save_vcpus()?;
        check_state(manifest, &sections, &vcpus)?;
        for s in &sections {
            enc.section(s).map_err(|e| self.send_failed(e))?;
        }
        for v in &vcpus {
            enc.vcpu(v).map_err(|e| self.send_failed(e))?;
        }
        let bytes = enc.bytes_written() + 5 + self.channel_bytes;
        enc.end().map_err(|e| self.send_failed(e))?;
        self.report(Phase::Stopped, bytes, 0, Duration::ZERO);
        let outcome = if self.back.is_some() {
            match self.answer("after the stream", self.params.running_timeout)? {
                Status::Running => Outcome::Handover,
                Status::Refused(m) | Status::Failed(m) => return Err(MigrateError::Destination(m)),
                s => {
                    return Err(MigrateError::Destination(format!(
                        "answered {s:?} out of turn"
                    )));
                }
            }
        } else {
            Outcome::Snapshot
        };
        Ok(Summary {
            outcome,
            total_ms: ms(self.started.elapsed()),
            downtime_ms: ms(stopped.elapsed()),
            bytes,
            pages_zero: self.zero,
            pages_normal: self.normal,
            iterations: self.iteration,
            max_throttle: self.max_throttle,
        })
    }

    /// Sends every page of `dirty`, honouring cancel and the bandwidth cap;
    /// reports progress every [`REPORT_EVERY`] bytes of a long pass.
    ///
    /// Returns the page bytes and time of the batches that carried page
    /// contents: the cost of a dirty page, without the scanning of zero pages (an idle
    /// guest's first pass is mostly zero pages and would make the link look
    /// slow).
    fn send(
        &mut self,
        enc: &mut Encoder<Writer>,
        dirty: &DirtyBitmap,
    ) -> Result<(u64, Duration), MigrateError> {
        if let Some(s) = self.senders.take() {
            let r = self.send_channels(&s, enc, dirty);
            self.senders = Some(s);
            return r;
        }
        let t = Instant::now();
        let start = enc.bytes_written();
        let (mut busy_bytes, mut busy) = (0, Duration::ZERO);
        let mut left = dirty.count();
        let mut reported = start;
        for (first, count) in dirty.runs() {
            let mut p = first;
            while p < first + count {
                if self.cancel.is_cancelled() && !self.paused {
                    return Err(MigrateError::Cancelled);
                }
                let n = (first + count - p).min(u64::from(MAX_RUN_PAGES));
                let batch = Instant::now();
                let buf = &mut self.buf[..n as usize * PAGE_SIZE];
                self.src.read_pages(p, buf)?;
                let st = enc.pages(p, buf);
                let st = st.map_err(|e| self.send_failed(e))?;
                self.zero += st.zero;
                self.normal += st.normal;
                p += n;
                left -= n;
                let sent = enc.bytes_written();
                if let Some(max) = self.params.max_bandwidth.filter(|m| *m > 0) {
                    let due = Duration::from_secs_f64((sent - start) as f64 / max as f64);
                    if let Some(wait) = due.checked_sub(t.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                if st.normal > 0 {
                    // Page bytes moved, not wire bytes: with compression
                    // the link carries fewer bytes than the guest dirties.
                    busy_bytes += st.normal * PAGE_SIZE as u64;
                    busy += batch.elapsed();
                }
                if !self.paused && sent - reported >= REPORT_EVERY {
                    reported = sent;
                    self.report(Phase::Precopy, sent, left, self.expected(left));
                }
            }
        }
        Ok((busy_bytes, busy))
    }

    fn measure(&mut self, bytes: u64, took: Duration) {
        // Tiny passes measure latency, not bandwidth: keep the last estimate.
        if bytes >= (1 << 20) || (self.bandwidth == 0 && bytes > 0) {
            let secs = took.as_secs_f64().max(1e-6);
            self.bandwidth = ((bytes as f64 / secs) as u64).max(1);
        }
    }

    fn expected(&self, pages: u64) -> Duration {
        Duration::from_secs_f64((pages * PAGE_SIZE as u64) as f64 / self.bandwidth.max(1) as f64)
    }

    fn report(&mut self, phase: Phase, bytes: u64, dirty: u64, expected: Duration) {
        (self.progress)(&Progress {
            phase,
            iteration: self.iteration,
            bytes,
            pages_zero: self.zero,
            pages_normal: self.normal,
            dirty_pages: dirty,
            bandwidth: self.bandwidth,
            expected_downtime_ms: ms(expected),
            throttle: self.throttle,
        });
    }

    fn not_converged(&self, dirty_pages: u64) -> MigrateError {
        MigrateError::DidNotConverge {
            iterations: self.iteration,
            dirty_pages,
            bandwidth: self.bandwidth,
            throttle: self.throttle,
        }
    }

    /// Waits for the destination's next word.
    fn answer(&mut self, waiting: &'static str, timeout: Duration) -> Result<Status, MigrateError> {
        let Some(back) = self.back.as_mut() else {
            return Err(MigrateError::Destination("no return channel".into()));
        };
        let r = back
            .set_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(StatusError::Io)
            .and_then(|()| Status::read_from(back));
        r.map_err(|source| MigrateError::NoAnswer { waiting, source })
    }

    /// A write failed: the destination probably said why before going away.
    fn send_failed(&mut self, e: io::Error) -> MigrateError {
        if let Some(back) = self.back.as_mut()
            && back.set_timeout(Some(Duration::from_millis(200))).is_ok()
            && let Ok(Status::Refused(m) | Status::Failed(m)) = Status::read_from(back)
        {
            return MigrateError::Destination(format!("{m} (sending: {e})"));
        }
        MigrateError::Send(e)
    }

    fn finish(&mut self, r: Result<Summary, MigrateError>) -> Result<Summary, MigrateError> {
        if self.throttle > 0 {
            let _ = self.src.set_throttle(0);
        }
        if self.tracking {
            let _ = self.src.stop_dirty_tracking();
        }
        match r {
            Err(e) if self.paused => match self.src.resume() {
                Ok(()) => Err(e),
                Err(re) => Err(MigrateError::ResumeFailed(Box::new(e), re)),
            },
            r => r,
        }
    }
}

/// A bitmap of the wrong size would send pages the manifest does not have.
fn checked(map: DirtyBitmap, pages: u64) -> Result<DirtyBitmap, MigrateError> {
    if map.pages() != pages {
        return Err(MigrateError::Vm(VmError::new(format!(
            "dirty bitmap covers {} pages, the guest has {pages}",
            map.pages()
        ))));
    }
    Ok(map)
}

/// The saved state must be what the manifest announced, or the destination
/// would refuse the stream after the fact.
fn check_state(m: &Manifest, sections: &[Section], vcpus: &[VcpuRecord]) -> Result<(), VmError> {
    let mut names: Vec<(&str, u32)> = sections
        .iter()
        .map(|s| (s.name.as_str(), s.version_id))
        .collect();
    let mut want: Vec<(&str, u32)> = m
        .sections
        .iter()
        .map(|s| (s.name.as_str(), s.version_id))
        .collect();
    names.sort_unstable();
    want.sort_unstable();
    if names != want {
        return Err(VmError::new(format!(
            "saved device sections {names:?} differ from the manifest's {want:?}"
        )));
    }
    let mut idx: Vec<u32> = vcpus.iter().map(|v| v.index).collect();
    idx.sort_unstable();
    if idx != (0..m.vcpus).collect::<Vec<_>>() {
        return Err(VmError::new(format!(
            "saved vCPUs {idx:?} differ from the manifest's {}",
            m.vcpus
        )));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

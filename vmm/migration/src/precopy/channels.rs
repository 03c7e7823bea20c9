//! The driver's data channels (`--channels N`, stream format 2): opening
//! them once the destination accepted the manifest, queueing each pass's
//! stripes to their threads, and waiting for them.

use super::{Driver, MigrateError, Phase, REPORT_EVERY, Writer};
use crate::PAGE_SIZE;
use crate::bitmap::DirtyBitmap;
use crate::channel::{Senders, new_session};
use crate::manifest::Manifest;
use crate::stream::Encoder;
use crate::stream::format::{FORMAT_VERSION, MAX_CHANNELS, MAX_RUN_PAGES};
use crate::transport;
use crate::vm::MigrationSource;
use std::io::{self, Write};
use std::time::{Duration, Instant};

impl<S: MigrationSource + ?Sized> Driver<'_, S> {
    /// [`send`](Self::send) over the data channels: each stripe queued to
    /// its channel's thread (the caller waits for them at the pass's end).
    pub(super) fn send_channels(
        &mut self,
        s: &Senders,
        enc: &Encoder<Writer>,
        dirty: &DirtyBitmap,
    ) -> Result<(u64, Duration), MigrateError> {
        let t = Instant::now();
        let start = self.bytes_with(enc, s);
        let normal_before = s.stats().normal;
        let mut left = dirty.count();
        let mut reported = start;
        let batch = u64::from(MAX_RUN_PAGES) * 16;
        for (first, count) in dirty.runs() {
            let mut p = first;
            while p < first + count {
                if self.cancel.is_cancelled() && !self.paused {
                    return Err(MigrateError::Cancelled);
                }
                let n = (first + count - p).min(batch);
                s.send_run(p, n)
                    .map_err(|e| self.send_failed(io::Error::other(e)))?;
                p += n;
                left -= n;
                let sent = self.bytes_with(enc, s);
                if let Some(max) = self.params.max_bandwidth.filter(|m| *m > 0) {
                    let due = Duration::from_secs_f64((sent - start) as f64 / max as f64);
                    if let Some(wait) = due.checked_sub(t.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                if !self.paused && sent - reported >= REPORT_EVERY {
                    reported = sent;
                    let st = s.stats();
                    (self.zero, self.normal) = (st.zero, st.normal);
                    self.report(Phase::Precopy, sent, left, self.expected(left));
                }
            }
        }
        let st = s.stats();
        (self.zero, self.normal) = (st.zero, st.normal);
        if st.normal > normal_before {
            Ok(((st.normal - normal_before) * PAGE_SIZE as u64, t.elapsed()))
        } else {
            Ok((0, Duration::ZERO))
        }
    }

    /// Stream format 2 where channels or compression are asked for (format
    /// 1 otherwise, so every release can read the stream).
    pub(super) fn format_2(&mut self, m: &mut Manifest) -> Result<(), MigrateError> {
        let p = self.params;
        if p.channels == 0 && p.compression.method().is_none() {
            return Ok(());
        }
        if self.src.max_format() < FORMAT_VERSION {
            return Err(MigrateError::Channels(format!(
                "release {} writes stream format {}, which has no channels or compression (migrate without --channels and --compress)",
                m.source_release,
                self.src.max_format()
            )));
        }
        if p.channels > MAX_CHANNELS {
            return Err(MigrateError::Channels(format!(
                "{} channels (1..={} allowed)",
                p.channels, MAX_CHANNELS
            )));
        }
        if p.channels > 0 && self.uri.is_none() {
            return Err(MigrateError::Channels(
                "data channels need a destination URI to connect to".into(),
            ));
        }
        m.format_version = FORMAT_VERSION;
        m.channels = p.channels;
        m.compression = p.compression.method().map(str::to_string);
        if p.channels > 0 {
            m.session = new_session();
        }
        Ok(())
    }

    /// Connects the data channels (after the destination accepted the
    /// manifest) and starts their threads.
    pub(super) fn open_channels(&mut self, m: &Manifest) -> Result<(), MigrateError> {
        let Some(uri) = self.uri.filter(|_| m.channels > 0) else {
            return Ok(());
        };
        let ram = self.src.ram().ok_or_else(|| {
            MigrateError::Channels("this guest's RAM cannot be shared with channel threads".into())
        })?;
        let mut writers: Vec<Box<dyn Write + Send>> = Vec::new();
        for _ in 0..m.channels {
            let tls = self.params.tls.as_ref().map(|t| &*t.0);
            writers.push(Box::new(transport::connect_secure(uri, tls)?.writer));
        }
        let s = Senders::start(writers, m.session, self.params.compression, ram)
            .map_err(|e| self.send_failed(e))?;
        self.senders = Some(s);
        Ok(())
    }

    /// Waits until every channel sent what it was given.
    pub(super) fn flush_channels(&mut self) -> Result<(), MigrateError> {
        let r = self.senders.as_ref().map_or(Ok(()), Senders::flush);
        r.map_err(|e| self.send_failed(io::Error::other(e)))
    }

    /// What ended channels carried, for the summary.
    pub(super) fn count_channels(&mut self, s: &Senders) {
        self.channel_bytes = s.bytes();
        let st = s.stats();
        (self.zero, self.normal) = (st.zero, st.normal);
    }

    /// Bytes sent on every connection so far.
    pub(super) fn bytes(&self, enc: &Encoder<Writer>) -> u64 {
        match &self.senders {
            Some(s) => self.bytes_with(enc, s),
            None => enc.bytes_written() + self.channel_bytes,
        }
    }

    pub(super) fn bytes_with(&self, enc: &Encoder<Writer>, s: &Senders) -> u64 {
        enc.bytes_written() + s.bytes()
    }
}
